"""`numba-demucs separate`: demucs' `separate` command line on the Numba model.

The flags, defaults and output layout are demucs 4.1's (`demucs/separate.py`); the
additions are `--checkpoint`, `--seed`, `--sample-rate`, `--resampler` and `-q`; for
Open-Unmix models, openunmix's `--niter`, `--wiener-win-len`, `--residual` (a flag here:
openunmix takes a name but writes the stem as "residual" anyway) and `--softmask`. A track
that cannot be read or written is reported on one line and the batch goes on; the exit
code is 2 when any track failed.
"""
from __future__ import annotations

import dataclasses
import glob
import sys
import time
from pathlib import Path

from .errors import NumbaDemucsError, UnsupportedModelError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "separate", help="separate tracks into stems (demucs' `separate`, without torch)",
        description="Separate the sources of the given tracks, as `demucs` does: stems go to "
                    "OUT/MODEL/TRACK/STEM.EXT. Folders are searched for audio files.")
    parser.add_argument("tracks", nargs="*", type=Path, help="audio files or folders")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("-n", "--name", default=None,
                       help="pretrained model name or signature (default: htdemucs)")
    model.add_argument("--checkpoint", type=Path,
                       help="a single model file (.th, .safetensors) or a bag .yaml")
    parser.add_argument("--repo", type=Path,
                        help="folder of models (.th / .safetensors) and bag yamls to take "
                             "-n NAME from, instead of downloading")
    parser.add_argument("--list-models", action="store_true",
                        help="list the models of the remote (or of --repo) and exit")
    parser.add_argument("-o", "--out", type=Path, default=Path("separated"),
                        help="output folder; a subfolder named after the model is made in it")
    parser.add_argument("--filename", default="{track}/{stem}.{ext}",
                        help='name of each output file under OUT/MODEL, with the fields '
                             '{track}, {trackext}, {stem}, {ext} (default "{track}/{stem}.{ext}")')
    parser.add_argument("--shifts", type=int, default=1,
                        help="random shifts averaged (equivariant stabilisation), default 1")
    parser.add_argument("--overlap", type=float, default=0.25, help="overlap between segments")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--no-split", action="store_false", dest="split",
                       help="run the whole track at once (memory grows with its length)")
    split.add_argument("--segment", type=float,
                       help="segment length in seconds (at most the model's)")
    parser.add_argument("--two-stems", dest="stem", metavar="STEM",
                        help="write only STEM and its complement")
    parser.add_argument("--other-method", choices=["none", "add", "minus"], default="add",
                        help='complement of --two-stems: "add" sums the other stems '
                             '(no_STEM), "minus" is the mix minus STEM (minus_STEM), '
                             '"none" writes none')
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument("--int24", action="store_true", help="24-bit wav/flac output")
    depth.add_argument("--float32", action="store_true", help="float32 wav output")
    parser.add_argument("--clip-mode", choices=["rescale", "clamp", "none"], default="rescale",
                        help="avoid clipping by rescaling a stem (default) or clamping it")
    container = parser.add_mutually_exclusive_group()
    container.add_argument("--flac", action="store_true", help="write flac")
    container.add_argument("--mp3", action="store_true", help="write mp3")
    parser.add_argument("--mp3-bitrate", type=int, default=320, help="mp3 bitrate (kbit/s)")
    parser.add_argument("-j", "--jobs", type=int, default=0,
                        help="segments separated at once in threads (default 0: one per core)")
    parser.add_argument("--seed", type=int,
                        help="seed for the random shifts (the offsets demucs draws after "
                             "random.seed(SEED))")
    parser.add_argument("--sample-rate", type=int, dest="samplerate",
                        help="sample rate of the stems (default: the input's)")
    parser.add_argument("--resampler", choices=["sinc", "soxr"], default="sinc",
                        help="sinc: demucs' resampler, same samples as demucs (default); "
                             "soxr: libsoxr very high quality")
    parser.add_argument("--stream", action="store_true",
                        help="read, separate and write block by block: the same stems in "
                             "memory that does not grow with the track's length")
    parser.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="separate on a dask.distributed cluster (tcp://HOST:PORT): one "
                             "task per track, stems written by the workers, which must see "
                             "the tracks, the model and OUT at the same paths")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    umx = parser.add_argument_group(
        "Open-Unmix (umxl, umxhq, umx)", "the Wiener post-filter, named as openunmix's own "
        "command line names it; a Demucs model refuses these")
    umx.add_argument("--niter", type=int, default=None,
                     help="EM iterations of the Wiener filter (default 1; 0: the raw masked "
                          "estimates)")
    umx.add_argument("--softmask", action="store_const", const=True, default=None,
                     help="start the EM from ratio masks instead of the mix's phase")
    umx.add_argument("--residual", action="store_const", const=True, default=None,
                     help='also write a "residual" stem: the mix minus all targets (the name '
                          "openunmix gives it)")
    umx.add_argument("--wiener-win-len", type=int, default=None, dest="wiener_win_len",
                     help="frames filtered at once (default 300; 0: the whole track)")
    parser.set_defaults(func=run)


OPEN_UNMIX_OPTIONS = {"niter": "--niter", "softmask": "--softmask", "residual": "--residual",
                      "wiener_win_len": "--wiener-win-len"}


def _model_options(args) -> dict:
    """The Open-Unmix options given on the command line (only those: a Demucs model refuses
    any), checked before a model is loaded."""
    options = {name: getattr(args, name) for name in OPEN_UNMIX_OPTIONS
               if getattr(args, name) is not None}
    for name in ("niter", "wiener_win_len"):
        if options.get(name, 0) < 0:
            raise NumbaDemucsError(f"{OPEN_UNMIX_OPTIONS[name]} must be >= 0, got {options[name]}")
    return options


def _list_models(repo) -> int:
    from . import pretrained

    for name, description in pretrained.list_models(repo).items():
        print(f"{name:24s} {description}")
    return 0


class _Progress:
    """A rich bar per track on a terminal, plain lines otherwise, nothing when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = not quiet and sys.stdout.isatty()
        self._bar = None

    def say(self, message: str) -> None:
        if not self.quiet:
            if self._bar is not None:
                self._bar.console.print(message, markup=False, highlight=False)
            else:
                print(message, flush=True)

    def track(self, label: str):
        return _TrackProgress(self, label)


class _TrackProgress:
    def __init__(self, owner: _Progress, label: str):
        self.owner = owner
        self.label = label
        self.finished = 0
        self.last_line = 0.0

    def __enter__(self):
        if self.owner.live:
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[segments]}"), TimeElapsedColumn(),
                                TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.owner._bar = self.bar
            self.task = self.bar.add_task(self.label, total=1.0, segments="")
        return self

    def __exit__(self, *exc):
        if self.owner.live:
            self.bar.stop()
            self.owner._bar = None
        return False

    def __call__(self, event: dict) -> None:
        # one event per model call; the total counts the calls of every pass
        self.finished += 1
        total = event["segments_total"]
        self._show(self.finished / total, f"segment {self.finished}/{total}")

    def _show(self, fraction: float, text: str) -> None:
        if self.owner.live:
            self.bar.update(self.task, completed=fraction, segments=text)
        elif not self.owner.quiet:
            now = time.monotonic()
            if fraction >= 1.0 or now - self.last_line >= 5.0:
                self.last_line = now
                print(f"{self.label}: {100 * fraction:5.1f}% ({text})", flush=True)


def run(args) -> int:
    from . import audio
    from .outputs import StemOutput
    from .separator import Separator

    if args.list_models:
        return _list_models(args.repo)
    if not args.tracks:
        raise NumbaDemucsError("no tracks given (see numba-demucs separate --help)")
    if args.shifts < 0:
        raise NumbaDemucsError(f"--shifts must be >= 0, got {args.shifts}")
    if not 0 <= args.overlap < 1:
        raise NumbaDemucsError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.samplerate is not None:
        audio.check_samplerate(args.samplerate, "--sample-rate")
    output_format = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    if args.float32 and output_format != "wav":
        raise NumbaDemucsError("--float32 applies to wav output only")
    output = StemOutput(filename=args.filename, two_stems=args.stem,
                        other_method=args.other_method, format=output_format,
                        bits=24 if args.int24 else 16, as_float=args.float32,
                        bitrate=args.mp3_bitrate, clip_mode=args.clip_mode,
                        samplerate=args.samplerate)
    progress = _Progress(args.quiet)
    model = args.checkpoint if args.checkpoint is not None else (args.name or "htdemucs")
    options = _model_options(args)
    try:
        separator = Separator(model, args.repo, shifts=args.shifts, overlap=args.overlap,
                              split=args.split, segment=args.segment, jobs=args.jobs,
                              seed=args.seed, resampler=args.resampler,
                              progress=not args.quiet, options=options)
    except UnsupportedModelError as error:
        given = [flag for name, flag in OPEN_UNMIX_OPTIONS.items() if name in options]
        if given and "only Open-Unmix models take" in str(error):
            raise UnsupportedModelError(f"{', '.join(given)}: only for Open-Unmix models "
                                        f"(umxl, umxhq, umx); {error}") from None
        raise
    output.check_model(separator.sources, separator.name)
    folder = args.out / separator.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NumbaDemucsError(f"{folder}: cannot create the output folder "
                               f"({error.strerror or error})") from None
    tracks = audio.find_tracks(args.tracks)
    progress.say(f"Separated tracks will be stored in {folder.resolve()}")
    failed = []
    if args.dask_scheduler:
        job = _WorkerJob(model=str(model), repo=None if args.repo is None else str(args.repo),
                         shifts=args.shifts, overlap=args.overlap, split=args.split,
                         segment=args.segment, jobs=args.jobs, seed=args.seed,
                         resampler=args.resampler, output=output, out=str(args.out),
                         stream=args.stream)
        failed = _run_dask(args.dask_scheduler, job, tracks, separator, progress)
        tracks_left = []
    else:
        tracks_left = tracks
    for track in tracks_left:
        try:
            details = audio.info(track)
            if details.channels > separator.audio_channels:
                progress.say(f"{track}: {details.channels} channels; as demucs does, only the "
                             f"first {separator.audio_channels} are separated")
            with progress.track(f"{track.name} ({separator.name})") as bar:
                separator.separate_file(track, args.out, output, stream=args.stream,
                                        callback=bar)
        except NumbaDemucsError as error:
            print(f"numba-demucs: error: {error}", file=sys.stderr, flush=True)
            failed.append(track)
    if len(tracks) > 1 or failed:  # the same summary with or without dask
        progress.say(f"{len(tracks) - len(failed)} of {len(tracks)} tracks separated"
                     + (f"; failed: {', '.join(str(t) for t in failed)}" if failed else ""))
    return 2 if failed else 0


# ----------------------------------------------------------------------------------------
# --dask-scheduler: one task per track on a dask.distributed cluster
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _WorkerJob:
    """What a dask worker needs to separate tracks as this command does (picklable)."""

    model: str
    repo: str | None
    shifts: int
    overlap: float
    split: bool
    segment: float | None
    jobs: int
    seed: int | None
    resampler: str
    output: object  # StemOutput
    out: str
    stream: bool


_SEPARATORS: dict = {}


def separate_on_worker(job: _WorkerJob, track: str) -> list:
    """One track on a dask worker: the model is loaded once per worker process, the stems
    are written by ``Separator.separate_file`` (each under a temporary name, then renamed).
    Returns the paths written, as strings."""
    from .separator import Separator

    key = (job.model, job.repo, job.shifts, job.overlap, job.split, job.segment, job.jobs,
           job.seed, job.resampler)
    if key not in _SEPARATORS:
        _SEPARATORS[key] = Separator(job.model, job.repo, shifts=job.shifts,
                                     overlap=job.overlap, split=job.split,
                                     segment=job.segment, jobs=job.jobs, seed=job.seed,
                                     resampler=job.resampler)
    written = _SEPARATORS[key].separate_file(track, job.out, job.output, stream=job.stream)
    return [str(path) for path in written.values()]


def _remove_temporaries(targets) -> None:
    """Temporaries left beside finished stems by a worker killed while writing them.

    Called once the track's task has completed elsewhere, so no rightful writer is left."""
    from ._files import TEMPORARY_SUFFIX

    for target in targets:
        target = Path(target)
        if target.parent.is_dir():
            for temporary in target.parent.glob(f".{glob.escape(target.name)}.*"
                                                f"{TEMPORARY_SUFFIX}"):
                temporary.unlink(missing_ok=True)


def _run_dask(address, job, tracks, separator, progress) -> list:
    """Separate ``tracks`` on the cluster at ``address``; returns the tracks that failed.

    A track that fails with a ``NumbaDemucsError`` is reported on one line and the others
    go on, as locally; a worker lost mid-track makes the scheduler run that track on
    another worker, whose stems replace whatever the lost one had renamed into place.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise NumbaDemucsError("--dask-scheduler needs dask.distributed "
                               "(pip install 'numba-demucs[eval]')") from None
    try:
        client = Client(address, timeout="20s")
    except OSError as error:
        raise NumbaDemucsError(f"cannot reach the dask scheduler at {address} "
                               f"({error})") from None
    failed = []
    with client:
        futures = [client.submit(separate_on_worker, job, str(track), pure=False)
                   for track in tracks]
        by_key = {future.key: track for future, track in zip(futures, tracks)}
        try:
            for future in as_completed(futures):
                track = by_key[future.key]
                if future.status == "error":
                    error = future.exception()
                    if not isinstance(error, NumbaDemucsError):
                        raise error
                    print(f"numba-demucs: error: {error}", file=sys.stderr, flush=True)
                    failed.append(track)
                else:
                    _remove_temporaries(future.result())
                    progress.say(f"{track}: separated ({separator.name})")
                # its stems are on disk: a worker lost later must not redo this track
                future.release()
        except BaseException:
            client.cancel(futures)
            raise
    return failed
