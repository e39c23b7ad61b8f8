"""`numba-demucs debug trace|reference|diff|parity`: the layer-by-layer debugging loop.

``trace`` and ``reference`` run our model and demucs' PyTorch model on the same input and
save their traces as dumps (one record per trace point); ``diff`` loads two dumps and names
the first point where they part ways; ``parity`` does all three in one go in memory, offline,
building seeded random official-architecture weights and a synthetic input when none are given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from numba_demucs.errors import AudioError, NumbaDemucsError


def _input_arguments(parser, checkpoint_required):
    if checkpoint_required:
        parser.add_argument("--checkpoint", type=Path, required=True,
                            help=".th or .safetensors model file, or a folder of Open-Unmix "
                                 "TARGET-HASH8.pth files")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="44.1 kHz audio file")
    source.add_argument("--seconds", type=float, default=10.0,
                        help="length of the synthesised input when no --input (default: 10)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--segment-only", action="store_true",
                        help="one model segment, no apply_model splitting")


def _diff_arguments(parser):
    parser.add_argument("--rtol", type=float, help="relative tolerance (default by dtype, see docs)")
    parser.add_argument("--atol", type=float, help="absolute tolerance per element")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the diff as JSON")
    parser.add_argument("--plot", type=Path, help="write the error per point as a PNG")
    parser.add_argument("--all", action="store_true", help="list every point, not only divergent ones")


def _band_arguments(parser):
    from .diff import BAND_K

    parser.add_argument("--bands", type=Path, help="noise bands ('debug noise'): a point diverges "
                                                   "when its error exceeds its band's mean + k std")
    parser.add_argument("--k", type=float, default=BAND_K,
                        help=f"standard deviations above the band mean (default {BAND_K:g})")


def _weights_arguments(parser):
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help=".th or .safetensors model file")
    weights.add_argument("--model-args", choices=["htdemucs", "htdemucs_6s", "defaults"],
                         help="official architecture with seeded random weights (needs torch)")
    parser.add_argument("--tiny", action="store_true", help="with --model-args: toy channel counts")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="44.1 kHz audio file (its first segment is used)")
    source.add_argument("--seconds", type=float, default=10.0,
                        help="length of the synthesised input when no --input (default: 10)")


def _checkpoint_of(args, folder):
    """The checkpoint to run: --checkpoint, or seeded random --model-args weights saved in ``folder``."""
    if args.checkpoint is not None:
        if args.tiny:
            raise NumbaDemucsError("--tiny goes with --model-args")
        return args.checkpoint
    from .parity import require_reference
    from . import reference

    require_reference()
    overrides = dict(reference.TINY) if args.tiny else {}
    return reference.save_th(reference.build_model(args.model_args, seed=args.seed, **overrides), folder)


def _load_bands(args):
    from .traces import Trace

    if args.bands is None:
        return None
    bands = Trace.load(args.bands)
    if not any(r.get("band") for r in bands.records):
        raise NumbaDemucsError(f"{args.bands}: no record carries a band (write one with 'debug noise')")
    return bands


def run_noise(args) -> int:
    import tempfile
    import time

    from rich.console import Console

    from .noise import measure_bands

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = _checkpoint_of(args, folder)
        start = time.perf_counter()
        bands = measure_bands(checkpoint, _mix(args), runs=args.runs, seed=args.seed)
        seconds = time.perf_counter() - start
    path = bands.save(args.output, dump_id=f"noise-{args.seed}-{args.runs}")
    console.print(f"{len(bands)} bands ({args.runs} runs, seed {args.seed}) written to {path} "
                  f"in {seconds:.1f} s", highlight=False)
    return 0


def run_precision(args) -> int:
    import json
    import tempfile
    import time

    from rich.console import Console
    from rich.table import Table

    from numba_demucs._files import atomic_write

    from .precision import plot_map, precision_map, sdr_cost

    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = _checkpoint_of(args, folder)
        start = time.perf_counter()
        result = precision_map(checkpoint, _mix(args), args.dtype, args.min_snr, args.only)
        seconds = time.perf_counter() - start
    rows = result.sorted_rows()
    table = Table(title=f"{args.dtype} at one point: end-to-end SNR vs float32, costliest first "
                        f"({len(rows)} points)")
    for column in ("#", "point", *result.sources, f"SDR cost at {args.sdr:g} dB"):
        table.add_column(column, justify="left" if column == "point" else "right",
                         overflow="fold" if column == "point" else "ellipsis")
    for row in rows[: args.rows]:
        snr = row["snr_db"]
        table.add_row(str(row["position"]), row["name"], *(f"{v:.1f}" for v in snr),
                      f"{float(np.max(sdr_cost(snr, args.sdr))):.2g}")
    console.print(table)
    names = {row["position"]: row["name"] for row in rows}
    final = ", ".join(f"{n} {v:.1f}" for n, v in zip(result.sources, result.final_snr))
    console.print(f"greedy: {len(result.greedy)} of {len(rows)} points in {args.dtype} together, "
                  f"predicted {result.predicted_snr:.1f} dB, checked: {final} dB "
                  f"(asked >= {args.min_snr:g}; {result.checks} check run(s); {seconds:.1f} s)",
                  highlight=False)
    if args.plot is not None:
        plot_map(result, args.plot)
    if args.json_path is not None:
        document = {"dtype": result.dtype, "sources": result.sources, "min_snr": result.min_snr,
                    "points": [{"position": r["position"], "name": r["name"],
                                "snr_db": [float(v) for v in r["snr_db"]]} for r in rows],
                    "greedy": [{"position": p, "name": names[p]} for p in result.greedy],
                    "predicted_snr": result.predicted_snr,
                    "final_snr": [float(v) for v in result.final_snr]}
        atomic_write(args.json_path, json.dumps(document, indent=1).encode())
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("debug", help="compare our model with the PyTorch reference",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="debug_command", required=True)

    for name, helptext in (("trace", "dump our model's trace points (or an ONNX core's, --onnx)"),
                           ("reference", "dump the PyTorch demucs model's trace points")):
        sub = commands.add_parser(name, help=helptext)
        _input_arguments(sub, checkpoint_required=name == "reference")
        if name == "trace":
            sub.add_argument("--checkpoint", type=Path,
                             help=".th or .safetensors model file, or a folder of Open-Unmix "
                                  "TARGET-HASH8.pth files")
            sub.add_argument("--onnx", type=Path,
                             help="trace this ONNX export of the HTDemucs core (STFT-free) in ONNX "
                                  "Runtime instead of our model, on one segment of the input")
        sub.add_argument("--save-tensors", action="store_true",
                         help="also save every tensor (sibling .npz; large)")
        sub.add_argument("-o", "--output", type=Path, required=True, help="dump file (.jsonl)")
        sub.set_defaults(func=run_dump, side=name)

    diff = commands.add_parser("diff", help="compare two dumps point by point")
    diff.add_argument("reference", type=Path)
    diff.add_argument("ours", type=Path)
    _diff_arguments(diff)
    _band_arguments(diff)
    diff.set_defaults(func=run_diff)

    noise = commands.add_parser("noise", help="measure per-point noise bands of float32 rounding "
                                              "(random rounding, K runs against float64)")
    _weights_arguments(noise)
    noise.add_argument("--runs", type=int, default=8, help="randomly rounded runs (>= 8, default 8)")
    noise.add_argument("--seed", type=int, default=0, help="seed of the rounding (and random weights)")
    noise.add_argument("-o", "--output", type=Path, required=True, help="bands dump file (.jsonl)")
    noise.set_defaults(func=run_noise)

    precision = commands.add_parser("precision", help="end-to-end cost of rounding each layer's "
                                                      "output to float16/bfloat16; greedy list")
    _weights_arguments(precision)
    precision.add_argument("--dtype", choices=["float16", "bfloat16"], required=True)
    precision.add_argument("--min-snr", type=float, default=60.0,
                           help="SNR (dB, every source, vs float32) the greedy list keeps (default 60)")
    precision.add_argument("--only", action="append", metavar="GLOB",
                           help="only points whose name matches this glob (fnmatch); repeat "
                                "for several")
    precision.add_argument("--seed", type=int, default=0, help="seed of --model-args weights")
    precision.add_argument("--sdr", type=float, default=10.0,
                           help="SDR (dB) of the model for the 'SDR cost' column (default 10)")
    precision.add_argument("--plot", type=Path, help="write the SNR per point as a PNG")
    precision.add_argument("--json", type=Path, dest="json_path", help="write the map as JSON")
    precision.add_argument("--rows", type=int, default=30, help="table rows (default 30)")
    precision.set_defaults(func=run_precision)

    show = commands.add_parser("print", help="print a dump's records as demucs.cpp prints tensors")
    show.add_argument("dump", type=Path)
    show.add_argument("--name", help="only points whose name starts with this")
    show.set_defaults(func=run_print)

    imported = commands.add_parser("import", help="turn another port's debug printout into a trace dump")
    imported.add_argument("printout", type=Path)
    imported.add_argument("--format", choices=["demucs-cpp"], required=True,
                          help="demucs-cpp: 'Debugging tensor!: NAME' ... 'FINISHED DEBUG ...' blocks")
    imported.add_argument("--names", type=Path,
                          help="map file: one 'PORT_NAME MODULE.PATH' per line ('-' drops a block); "
                               "names not in it are kept")
    imported.add_argument("--std", choices=["population", "unbiased"], default="population",
                          help="how the printout's stddev divides: population (demucs.cpp's C++ "
                               "helpers, default) or unbiased (torch.std, its Python script)")
    imported.add_argument("--digits", type=int,
                          help="significant digits the numbers were printed with (default: detected)")
    imported.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                          help="dtype the port ran in (default float32)")
    imported.add_argument("-o", "--output", type=Path, required=True, help="dump file (.jsonl)")
    imported.set_defaults(func=run_import)

    golden = commands.add_parser("golden", help="write golden reference traces (weights, input, "
                                                "PyTorch stats with the float32 floor) for a port")
    golden.add_argument("--model-args", default="htdemucs", choices=["htdemucs", "htdemucs_6s", "defaults"],
                        help="official architecture for random weights (default: htdemucs)")
    golden.add_argument("--seed", type=int, default=0, help="seed of the weights and input")
    golden.add_argument("--seconds", type=float,
                        help="length of the generated input (default: one model segment)")
    golden.add_argument("--tiny", action="store_true",
                        help="toy channel counts (same layers and point names; for tests)")
    golden.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    golden.set_defaults(func=run_golden)

    conform = commands.add_parser("conform", help="check a port's trace (dump or demucs.cpp "
                                                  "printout) against PyTorch, layer by layer")
    conform.add_argument("theirs", type=Path, help="their trace: a dump (.jsonl) or a printout")
    against = conform.add_mutually_exclusive_group(required=True)
    against.add_argument("--checkpoint", type=Path, help="the weights they ran (.th or .safetensors)")
    against.add_argument("--golden", type=Path, help="a folder written by 'debug golden'")
    conform.add_argument("--input", type=Path, help="the 44.1 kHz audio they ran (with --checkpoint)")
    conform.add_argument("--seconds", type=float, default=10.0,
                         help="length of the synthesised input when no --input (default: 10)")
    conform.add_argument("--names", type=Path, help="map file for a printout (see 'debug import')")
    conform.add_argument("--std", choices=["population", "unbiased"], default="population",
                         help="how a printout's stddev divides (see 'debug import')")
    conform.add_argument("--rtol", type=float,
                         help="one global rtol instead of the per-point floor rule")
    _band_arguments(conform)
    conform.add_argument("--json", type=Path, dest="json_path", help="write the diff as JSON")
    conform.add_argument("--plot", type=Path, help="write error and floor per point as a PNG")
    conform.add_argument("--all", action="store_true", help="list every point in the table")
    conform.set_defaults(func=run_conform)

    parity = commands.add_parser("parity", help="trace both sides and diff them in one go")
    weights = parity.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path,
                         help=".th or .safetensors model file, or a folder of Open-Unmix "
                              "TARGET-HASH8.pth files")
    weights.add_argument("--model-args", default="htdemucs",
                         choices=["htdemucs", "htdemucs_6s", "defaults", "hdemucs_mmi",
                                  "hdemucs_c511e2ab", "hdemucs_7d865c68", "hdemucs_5d2d6c55",
                                  "demucs_0d19c1c6", "demucs_9a6b4851", "umxl", "umxhq", "umx"],
                         help="official architecture for random weights (default: htdemucs)")
    parity.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parity.add_argument("--floor", action="store_true",
                        help="with --plot: also run the reference in float64 and draw the float32 "
                             "rounding floor (PyTorch float32 against PyTorch float64) per point")
    parity.add_argument("--isolate", action="store_true",
                        help="also run each of our layers on the reference's input and report "
                             "local (own) versus total (inherited) error; use with --segment-only "
                             "on full-size models, it keeps every reference tensor in memory")
    _input_arguments(parity, checkpoint_required=False)
    _diff_arguments(parity)
    parity.set_defaults(func=run_parity)


def read_input(path: Path, samplerate=44100, channels=2):
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from None
    if rate != samplerate:
        raise AudioError(f"{path}: sample rate {rate} Hz, the model needs {samplerate} Hz")
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    audio = audio.T
    if audio.shape[0] == 1 and channels == 2:
        audio = np.repeat(audio, 2, axis=0)
    if audio.shape[0] != channels:
        raise AudioError(f"{path}: {audio.shape[0]} channels, the model takes {channels}")
    return np.ascontiguousarray(audio)


def _mix(args):
    from .reference import music_like_signal

    if args.input is not None:
        return read_input(args.input)
    return music_like_signal(args.seconds)


def _collect(side, checkpoint, mix, args, save_tensors):
    from . import collect, collect_umx

    if collect_umx.is_openunmix_folder(checkpoint):
        if side == "reference":
            try:
                return collect_umx.trace_reference(checkpoint, mix, args.dtype, save_tensors)
            except ImportError as error:
                raise NumbaDemucsError(f"the reference side needs torch and openunmix "
                                       f"(pip install openunmix --no-deps): {error}") from None
        return collect_umx.trace_ours(checkpoint, mix, args.dtype, save_tensors)
    if side == "reference":
        try:
            return collect.trace_reference(checkpoint, mix, args.dtype, args.segment_only,
                                           save_tensors)
        except ImportError as error:
            raise NumbaDemucsError(
                f"the reference side needs the reference extra (torch, demucs): {error}") from None
    return collect.trace_ours(checkpoint, mix, args.dtype, args.segment_only, save_tensors)


def run_dump(args) -> int:
    from rich.console import Console

    mix = _mix(args)
    onnx = getattr(args, "onnx", None)
    if onnx is not None:
        if args.checkpoint is not None or args.save_tensors:
            raise NumbaDemucsError("--onnx traces the ONNX model alone: no --checkpoint, no --save-tensors")
        from .onnx_trace import trace_onnx

        trace = trace_onnx(onnx, mix)
    elif args.checkpoint is None:
        raise NumbaDemucsError("debug trace needs --checkpoint (our model) or --onnx (an ONNX core)")
    else:
        trace = _collect(args.side, args.checkpoint, mix, args, args.save_tensors)
    path = trace.save(args.output)
    Console(stderr=True).print(f"{len(trace)} trace points written to {path}")
    return 0


def _show_diff(result, args, console, floor=None):
    from .render import plot, render_table

    if args.all or not result.ok or result.only_reference or result.only_ours:
        render_table(result, console, only_diverged=not args.all)
    if args.json_path is not None:
        args.json_path.write_text(result.to_json())
    if args.plot is not None:
        plot(result, args.plot, floor=floor)
    if result.first_divergence is None:
        console.print(f"[green]no divergence[/] over {len(result.points)} points")
    else:
        console.print(f"[red]first divergence: {result.first_divergence}[/] "
                      f"{result.first_divergence_context or ''}")


def run_print(args) -> int:
    from .printer import print_demucs_cpp
    from .traces import Trace

    for record in Trace.load(args.dump).records:
        if args.name is None or record["name"].startswith(args.name):
            print_demucs_cpp(record)
    return 0


def run_import(args) -> int:
    from rich.console import Console

    from .importers import read_demucs_cpp, read_name_map

    names = read_name_map(args.names) if args.names is not None else None
    trace = read_demucs_cpp(args.printout, names, std=args.std, dtype=args.dtype, digits=args.digits)
    path = trace.save(args.output)
    digits = trace.header.get("stat_digits")
    Console(stderr=True).print(f"{len(trace)} trace points from {args.printout} written to {path} "
                               f"({'full precision' if digits is None else f'{digits} significant digits'})")
    return 0


def run_golden(args) -> int:
    from rich.console import Console

    from .golden import make_golden

    manifest = make_golden(args.model_args, args.output, seed=args.seed, seconds=args.seconds,
                           tiny=args.tiny)
    Console(stderr=True).print(f"golden {args.model_args} (seed {args.seed}, {manifest['seconds']:g} s"
                               f"{', tiny' if args.tiny else ''}): {manifest['points']} points, "
                               f"{manifest['checkpoint']}, {manifest['input']}, {manifest['trace']} "
                               f"in {args.output}")
    return 0


def run_conform(args) -> int:
    from rich.console import Console

    from .golden import conform, load_theirs, mode_of, read_golden, reference_with_floor
    from .render import plot, render_floor_table

    console = Console()
    theirs = load_theirs(args.theirs, args.names, args.std)
    if args.golden is not None:
        if args.input is not None:
            raise NumbaDemucsError("--input goes with --checkpoint; a golden folder has its own input")
        golden = read_golden(args.golden)
        reference = golden.trace
        if not mode_of(theirs):
            raise NumbaDemucsError(f"{args.theirs}: traced through apply_model (segment contexts); "
                                   f"golden traces are of one model call (--segment-only)")
    else:
        from .parity import require_reference

        require_reference()
        segment_only = mode_of(theirs)
        mix = _mix(args)
        reference = reference_with_floor(args.checkpoint, mix, segment_only)
        console.print(f"reference: PyTorch float32 (floor: float64), "
                      f"{'one model call' if segment_only else 'apply_model'}, {mix.shape[-1] / 44100:.2f} s")
    result = conform(theirs, reference, rtol=args.rtol, bands=_load_bands(args), k=args.k)
    if result.tolerance.get("band_k") is not None:
        console.print(f"noise bands from {args.bands}: divergent above mean + {args.k:g} std",
                      highlight=False, soft_wrap=True)
    if result.header_mismatches:
        render_table_header(result, console)
    for note in result.notes:
        console.print(f"note: {note}", style="dim", highlight=False, markup=False)
    render_floor_table(result, console, only_diverged=False,
                       positions=None if args.all else _table_positions(result))
    if theirs.header.get("stat_digits"):
        console.print(f"their statistics were printed with {theirs.header['stat_digits']} significant "
                      "digits: half a unit in the last digit is allowed on top of tol", style="dim",
                      highlight=False, markup=False)
    for side, items in (("reference", result.only_reference), ("theirs", result.only_ours)):
        if items:
            names = ", ".join(x["name"] for x in items[:8]) + (", ..." if len(items) > 8 else "")
            console.print(f"{len(items)} point(s) only in {side}: {names}", highlight=False, markup=False)
    if args.json_path is not None:
        args.json_path.write_text(result.to_json())
    if args.plot is not None:
        plot(result, args.plot)
    used = max((p["error"] / p["rtol"] for p in result.points
                if p["error"] is not None and p["rtol"]), default=0.0)
    if result.ok:
        console.print(f"[green]conformant[/]: {len(result.points)} points compared, every one "
                      f"within its tolerance (largest share used: {used:.2f})")
        return 0
    p = result.points[result.first_divergence_position]
    console.print(f"[red]divergent: first divergence at {p['name']}[/] {p['context'] or ''} "
                  f"({', '.join(p['reasons'])})", highlight=False)
    return 1


def render_table_header(result, console):
    from rich.panel import Panel

    console.print(Panel("\n".join(result.header_mismatches), title="header mismatch",
                        border_style="bold red"), markup=False)


def _table_positions(result, before=3, after=8, worst=10):
    """Rows worth reading: around the first divergence, else the points closest to their tolerance."""
    if result.first_divergence_position is not None:
        k = result.first_divergence_position
        return list(range(max(0, k - before), min(len(result.points), k + after + 1)))
    ratio = [(p["error"] / p["rtol"] if p["error"] is not None and p["rtol"] else 0.0, i)
             for i, p in enumerate(result.points)]
    return sorted(i for _, i in sorted(ratio, reverse=True)[:worst])


def run_diff(args) -> int:
    from rich.console import Console

    from .diff import diff
    from .traces import Trace

    with Trace.load(args.reference) as reference, Trace.load(args.ours) as ours:
        result = diff(reference, ours, rtol=args.rtol, atol=args.atol, bands=_load_bands(args), k=args.k)
        if args.bands is not None:
            Console().print(f"noise bands from {args.bands}: divergent above mean + {args.k:g} std",
                            highlight=False, soft_wrap=True)
        _show_diff(result, args, Console())
    return 0 if result.ok else 1


def run_parity(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .parity import parity, require_reference

    console = Console()
    mix = _mix(args)
    checkpoint = args.checkpoint
    if checkpoint is None:
        require_reference()
        checkpoint = args.model_args
        console.print(f"random [bold]{args.model_args}[/] weights, seed {args.seed}")
    report = parity(checkpoint, mix, dtype=args.dtype, segment_only=args.segment_only,
                    isolate=args.isolate, floor=args.floor, rtol=args.rtol, atol=args.atol,
                    seed=args.seed)
    result = report.diff
    _show_diff(result, args, console, report.floor)
    if report.isolation is not None:
        _print_isolation(console, report.isolation, result.tolerance["rtol"])

    table = Table(title=f"end-to-end, {report.dtype}, {report.seconds:.1f} s")
    table.add_column("source")
    table.add_column("SNR (dB)", justify="right")
    table.add_column("max |error|", justify="right")
    for name, value, worst in zip(report.sources, report.snr_db, report.max_abs_error):
        style = "green" if value >= report.threshold_db else "red"
        table.add_row(name, f"[{style}]{value:.1f}[/]", f"{worst:.3g}")
    console.print(table)
    console.print(("[green]parity holds" if report.passed else "[red]parity fails")
                  + f" (end-to-end threshold {report.threshold_db:.0f} dB, "
                    f"per-point rtol {result.tolerance['rtol']:g})")
    return 0 if report.passed else 1


def _print_isolation(console, rows, rtol):
    """Table of the points whose own (local) error exceeds ``rtol``, next to their total error."""
    from rich.table import Table

    flagged = [row for row in rows if row["local"] > rtol]
    table = Table(title=f"local vs total error (relative L2), {len(flagged)} of {len(rows)} "
                        f"points with local error > {rtol:g}")
    for column in ("point", "context", "local", "total"):
        table.add_column(column, justify="left" if column in ("point", "context") else "right")
    for row in flagged[:40]:
        table.add_row(row["name"], str(row["context"] or ""), f"[red]{row['local']:.2e}[/]",
                      f"{row['total']:.2e}")
    if flagged:
        console.print(table)
    worst = max(rows, key=lambda row: row["local"])
    console.print(f"largest local error: {worst['name']} {worst['context'] or ''} "
                  f"({worst['local']:.2e}); largest total: "
                  f"{max(row['total'] for row in rows):.2e}")
