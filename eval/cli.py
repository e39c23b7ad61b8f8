"""`numba-demucs eval musdb|bsseval|report|compare`: scoring separations the way museval does."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from numba_demucs.errors import EvaluationError


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="BSS Eval v4 scores and MUSDB18-HQ runs")
    commands = parser.add_subparsers(dest="eval_command", required=True)

    musdb = commands.add_parser(
        "musdb", help="score a separator (or a folder of estimates) on MUSDB18-HQ",
        description="Separate (or read estimates), score every source with BSS Eval v4 and "
                    "write one museval-compatible JSON per track to RESULTS/SUBSET/TRACK.json. "
                    "Tracks already scored are skipped.")
    musdb.add_argument("--root", required=True, help="MUSDB18-HQ folder (with train/ and test/)")
    musdb.add_argument("--subset", default="test", choices=["train", "test"])
    musdb.add_argument("--tracks", nargs="+", metavar="NAME", help="only these tracks")
    musdb.add_argument("-n", "--name", dest="model", action="append", default=[],
                       metavar="NAME", help="pretrained model name to run (repeat it, or mix "
                                            "it with --checkpoint, to score several models)")
    musdb.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                       help="model checkpoint file to run (may be repeated)")
    musdb.add_argument("--estimates", help="folder of estimates DIR/TRACK/SOURCE.wav")
    musdb.add_argument("-o", "--output", required=True, help="results folder")
    separation = musdb.add_argument_group(
        "separation (with -n or --checkpoint; the defaults are demucs')")
    separation.add_argument("--shifts", type=int, default=1,
                            help="random time shifts averaged (default 1)")
    separation.add_argument("--overlap", type=float, default=0.25,
                            help="overlap between segments (default 0.25)")
    separation.add_argument("--no-split", action="store_true",
                            help="run the model on the whole track at once")
    separation.add_argument("--segment", type=float,
                            help="segment length in seconds (default: the model's)")
    separation.add_argument("--seed", type=int,
                            help="seed for the shift offsets (default: Python's random, as demucs)")
    musdb.add_argument("--jobs", type=int, default=1, help="tracks scored in parallel (processes)")
    musdb.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="send one task per track to this dask.distributed scheduler")
    musdb.add_argument("--force", action="store_true", help="score tracks already done again")
    musdb.add_argument("--no-progress", action="store_true", help="no progress bar")
    musdb.set_defaults(func=run_musdb)

    single = commands.add_parser(
        "bsseval", help="score one track's estimates against its reference stems",
        description="Pairs REFERENCE/NAME.wav with ESTIMATES/NAME.wav for every stem NAME of "
                    "the reference folder (mixture.wav excepted).")
    single.add_argument("--reference", required=True, help="folder of reference stems")
    single.add_argument("--estimates", required=True, help="folder of estimated stems")
    single.add_argument("-o", "--output", help="write museval-format JSON here")
    single.add_argument("--window", type=float, default=1.0, help="frame length in seconds")
    single.add_argument("--hop", type=float, default=1.0, help="frame hop in seconds")
    single.set_defaults(func=run_bsseval)

    report = commands.add_parser(
        "report", help="per-track table and SiSEC aggregate of one or more result folders",
        description="Median over frames, then median over tracks, per source and metric. "
                    "Reads our results and museval's own JSON output.")
    report.add_argument("results", help="results folder (or one JSON file)")
    report.add_argument("--compare", nargs="+", default=[], metavar="RESULTS",
                        help="other methods' results, shown side by side")
    report.add_argument("--csv", help="write per-track medians and the aggregate to this CSV")
    report.add_argument("--plot", help="write a per-source box plot of SDR to this PNG")
    report.set_defaults(func=run_report)

    from .compare import ALL_METRICS

    comparing = commands.add_parser(
        "compare", help="compare systems' result folders: per-track table, median "
                        "differences with bootstrap intervals, box plots",
        description="Reads museval-format result folders (ours, museval's own output, "
                    "published SiSEC 2018 submissions). The first folder is the baseline: "
                    "for every other system, per target and metric, the median over tracks of "
                    "the per-track difference (system - baseline) with a paired bootstrap "
                    "confidence interval over tracks.")
    comparing.add_argument("results", nargs="+", metavar="RESULTS",
                           help="result folders (or JSON files), the baseline first")
    comparing.add_argument("--metrics", nargs="+", default=["SDR", "SIR", "ISR", "SAR"],
                           choices=ALL_METRICS, metavar="METRIC",
                           help=f"metrics to show and compare, of {', '.join(ALL_METRICS)} "
                                "(default: SDR SIR ISR SAR)")
    comparing.add_argument("--resamples", type=int, default=10000,
                           help="bootstrap resamples (default 10000)")
    comparing.add_argument("--confidence", type=float, default=0.95,
                           help="confidence of the interval (default 0.95)")
    comparing.add_argument("--seed", type=int, default=0,
                           help="seed of the bootstrap draws (default 0)")
    comparing.add_argument("--plot", metavar="FILE",
                           help="write box plots (per-track values per system, differences "
                                "against the baseline) to this image (.png, .svg, .pdf)")
    comparing.set_defaults(func=run_compare)


def run_musdb(args) -> int:
    from . import musdb, report, runner
    from .tables import print_tables

    if args.jobs < 1:
        raise EvaluationError(f"--jobs must be at least 1, got {args.jobs}")
    systems = [(name, None) for name in args.model] + [(None, c) for c in args.checkpoint]
    if (args.estimates is None) == (not systems):
        raise EvaluationError("give either --estimates or models (-n NAME / --checkpoint FILE)")
    if args.estimates is not None and not os.path.isdir(args.estimates):
        raise EvaluationError(f"{args.estimates}: estimates folder not found")
    tracks = musdb.find_tracks(args.root, args.subset, args.tracks)
    options = runner.SeparationOptions(shifts=args.shifts, overlap=args.overlap,
                                       split=not args.no_split, segment=args.segment,
                                       seed=args.seed)
    output = Path(args.output)
    if args.estimates is not None or len(systems) == 1:
        # One system: results in OUT/SUBSET/TRACK.json, museval's layout, estimates not kept.
        model, checkpoint = systems[0] if systems else (None, None)
        runs = [(output.name, output,
                 [runner.TrackTask(track, estimates_dir=args.estimates, model=model,
                                   checkpoint=checkpoint, separation=options)
                  for track in tracks])]
    else:
        # Several models: OUT/MODEL/SUBSET/TRACK.json each, and each model's estimates kept
        # in OUT/estimates/MODEL/TRACK/SOURCE.wav, so a resumed run separates nothing twice.
        labels = [runner.model_label(model, checkpoint) for model, checkpoint in systems]
        for label in labels:
            if labels.count(label) > 1 or label == runner.ESTIMATES_FOLDER:
                raise EvaluationError(f"two models would share the results folder "
                                      f"{output / label}; rename a checkpoint"
                                      if label != runner.ESTIMATES_FOLDER else
                                      f"a model may not be named '{label}' (the folder of "
                                      "the kept estimates)")
        runs = [(label, output / label,
                 [runner.TrackTask(track, model=model, checkpoint=checkpoint,
                                   separation=options,
                                   keep_estimates=str(output / runner.ESTIMATES_FOLDER / label))
                  for track in tracks])
                for label, (model, checkpoint) in zip(labels, systems)]
    for _, folder, tasks in runs:
        if systems and runner.pending_tasks(tasks, folder, args.force):
            # Resolve and load every model before any track: a wrong name or a broken
            # checkpoint fails at once, and with --jobs 1 this process keeps the models.
            runner.load_separator(tasks[0].model, tasks[0].checkpoint)
    methods, any_failed = {}, False
    for label, folder, tasks in runs:
        summary = runner.run(tasks, folder, jobs=args.jobs, force=args.force,
                             dask_scheduler=args.dask_scheduler,
                             progress=not args.no_progress)
        prefix = f"{label}: " if len(runs) > 1 else ""
        print(prefix + summary.line(folder), file=sys.stderr)
        any_failed = any_failed or bool(summary.failed)
        failed = {failure.track.name for failure in summary.failed}
        results = {task.track.name: report.read_track(runner.result_path(folder, task.track))
                   for task in tasks if task.track.name not in failed}
        if results:
            methods[label] = results
    if methods:
        print_tables(methods)
    return 2 if any_failed else 0


def run_bsseval(args) -> int:
    import numpy as np

    from . import musdb, runner
    from .bsseval import bss_eval
    from .report import document_scores, read_track
    from .tables import print_tables
    from .whole_track import track_metrics

    reference = Path(args.reference)
    if not reference.is_dir():
        raise EvaluationError(f"{reference}: reference folder not found")
    if not Path(args.estimates).is_dir():
        raise EvaluationError(f"{args.estimates}: estimates folder not found")
    names = sorted(p.stem for p in reference.glob("*.wav") if p.stem != "mixture")
    if len(names) < 1:
        raise EvaluationError(f"{reference}: no reference stems (*.wav) inside")
    known = [s for s in musdb.SOURCES if s in names]
    names = known + [n for n in names if n not in known]
    references, rate = musdb.stack_stems(
        [(str(reference / f"{n}.wav"), musdb.read_audio(reference / f"{n}.wav")) for n in names])
    for name, audio in zip(names, references):
        if not np.any(audio.sum(axis=1) != 0):
            raise EvaluationError(f"{reference / (name + '.wav')}: the reference is silent "
                                  "(all zeros); BSS Eval is undefined for it")
    estimates = runner.load_estimates(args.estimates, names, references, rate)
    sdr, isr, sir, sar = bss_eval(references, estimates, sr=rate, window=args.window,
                                  hop=args.hop)
    document = runner.scores_document(names, sdr, isr, sir, sar, args.window, args.hop,
                                      track_metrics(references, estimates))
    if args.output:
        runner.write_json_atomically(args.output, document)
        scores = read_track(args.output)
    else:
        scores = document_scores(document)
    print_tables({reference.name: {reference.name: scores}}, per_track=False)
    return 0


def run_report(args) -> int:
    from . import report
    from .tables import print_tables

    paths = [args.results, *args.compare]
    names = report.method_names(paths)
    methods = {name: report.read_results(path) for name, path in zip(names, paths)}
    print_tables(methods)
    if args.csv:
        try:
            report.write_csv(args.csv, methods)
        except OSError as error:
            raise EvaluationError(f"{args.csv}: cannot write the CSV ({error})") from None
    if args.plot:
        report.plot(args.plot, methods)
    return 0


def run_compare(args) -> int:
    from . import compare, report

    if len(args.results) < 2:
        raise EvaluationError("eval compare needs at least two result folders")
    if args.resamples < 1:
        raise EvaluationError(f"--resamples must be at least 1, got {args.resamples}")
    if not 0 < args.confidence < 1:
        raise EvaluationError(f"--confidence must be between 0 and 1, got {args.confidence}")
    names = report.method_names(args.results)
    methods = {name: report.read_results(path) for name, path in zip(names, args.results)}
    metrics = tuple(dict.fromkeys(args.metrics))
    compare.print_comparison(methods, metrics, args.resamples, args.confidence, args.seed)
    if args.plot:
        compare.plot(args.plot, methods, metrics)
    return 0


def main(argv=None) -> int:
    """``numba-demucs`` with ``argv`` (``["eval", ...]``): the package CLI, errors handled there."""
    from numba_demucs.cli import main as package_main

    return package_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
