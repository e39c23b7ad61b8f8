"""Resumable MUSDB runs: one museval-compatible JSON per track, written atomically.

Results land in ``RESULTS/SUBSET/TRACK.json``, the layout museval writes and its
``EvalStore.add_eval_dir`` / ``MethodStore.add_eval_dir`` read back. A track whose JSON
exists is skipped, so an interrupted run continues where it stopped. Tracks are scored
in this process (``jobs=1``), in a local process pool, or as one task per track on a
dask.distributed cluster; in every case the JSON is written here, by the caller, so
workers only need to read the audio.
"""
from __future__ import annotations

import glob
import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from numba_demucs._files import TEMPORARY_SUFFIX, atomic_write, writer_pid
from numba_demucs.errors import EvaluationError

from .bsseval import bss_eval
from .whole_track import track_metrics
from .musdb import (SOURCES, Track, check_matches, load_mixture, load_stems, read_audio,
                    stack_stems, stem_location)

METRICS = ("SDR", "SIR", "ISR", "SAR")
ESTIMATES_FOLDER = "estimates"
"""Where ``eval musdb`` with several models keeps their estimates: ``OUT/estimates/MODEL``."""


@dataclass(frozen=True)
class SeparationOptions:
    """How the separator runs: ``numba_demucs.apply_model``'s options, demucs' defaults.

    ``seed`` fixes the random shift offsets (``apply_model(seed=...)``, the same offsets for
    every track); ``None`` draws them from Python's global ``random``, as demucs does.
    """

    shifts: int = 1
    overlap: float = 0.25
    split: bool = True
    segment: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class TrackTask:
    """What a worker needs to score one track: where the estimates come from.

    Exactly one of ``estimates_dir`` (a folder of ``TRACK/SOURCE.wav``), ``model`` (a
    pretrained model name) and ``checkpoint`` (a model file) is set.
    """

    track: Track
    estimates_dir: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    separation: SeparationOptions = SeparationOptions()
    window: float = 1.0
    hop: float = 1.0
    keep_estimates: str | None = None
    """With a model: a folder where the estimates are kept as ``FOLDER/TRACK/SOURCE.wav``
    (float32 WAV, written atomically by whoever separates) and reused when all are there."""


# ----------------------------------------------------------------------------------------
# museval's JSON
# ----------------------------------------------------------------------------------------


def _museval_number(value: float) -> float:
    """museval ``TrackStore._q``: infinities become NaN, the rest is rounded half-even to 1e-5."""
    if np.isinf(value):
        return float("nan")
    if np.isnan(value):
        return float("nan")
    return float(Decimal(float(value)).quantize(Decimal(".00001")))


PROTOCOLS = {
    "frames": "SDR, SIR, ISR, SAR: BSS Eval v4 images as museval.evaluate computes them "
              "(512-tap filters fitted over the whole track), one value per frame; SiSEC 2018 "
              "reports the median over frames, then the median over tracks ('cSDR')",
    "uSDR": "MDX 2021 challenge SDR: 10 log10((sum s^2 + 1e-7) / (sum (s - e)^2 + 1e-7)) "
            "over the whole track and all channels; the challenge reports the mean over tracks",
    "SI-SDR": "scale-invariant SDR (Le Roux et al. 2019) over the whole track, one scale for "
              "all channels, no mean removed; reported as the mean over tracks",
}
"""What each number of a result file is, written into every file (key ``protocols``)."""

TRACK_METRICS = ("uSDR", "SI-SDR")


def scores_document(names, sdr, isr, sir, sar, window=1.0, hop=1.0, whole=None) -> dict:
    """The per-track document museval's ``TrackStore`` writes (same keys, rounding, NaN).

    ``whole`` (``{"uSDR": (sources,), "SI-SDR": (sources,)}``) adds a ``track`` entry to
    every target; museval's readers ignore it, and ``protocols`` and ``scorer``.
    """
    targets = []
    for index, name in enumerate(names):
        frames = []
        for frame in range(sdr.shape[1]):
            frames.append({
                "time": frame * hop,
                "duration": window,
                "metrics": {
                    "SDR": _museval_number(sdr[index, frame]),
                    "SIR": _museval_number(sir[index, frame]),
                    "SAR": _museval_number(sar[index, frame]),
                    "ISR": _museval_number(isr[index, frame]),
                },
            })
        target = {"name": name, "frames": frames}
        if whole is not None:
            target["track"] = {metric: _museval_number(whole[metric][index])
                               for metric in TRACK_METRICS}
        targets.append(target)
    document = {"targets": targets, "scorer": "numba_demucs.eval.bss_eval (BSS Eval v4)"}
    if whole is not None:
        document["protocols"] = PROTOCOLS
    else:
        document["protocols"] = {"frames": PROTOCOLS["frames"]}
    return document


def write_json_atomically(path, document) -> None:
    """Write to a temporary name beside ``path`` and rename, so a crash leaves no half file."""
    atomic_write(path, json.dumps(document, indent=2), fsync=True)


def remove_stale_temporaries(output, tracks) -> list[Path]:
    """Delete ``.TRACK.json.PID-RANDOM.tmp`` files whose writer process is gone.

    Only a killed process (SIGKILL, power loss) leaves one, between writing and renaming;
    its track has no JSON yet and is scored again. A live writer's file is kept.
    """
    removed = []
    for track in tracks:
        final = result_path(output, track)
        if not final.parent.is_dir():
            continue
        for temporary in final.parent.glob(f".{glob.escape(final.name)}.*{TEMPORARY_SUFFIX}"):
            pid = writer_pid(temporary, final)
            if pid is not None and not _process_alive(pid):
                temporary.unlink(missing_ok=True)
                removed.append(temporary)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def result_path(output, track: Track) -> Path:
    return Path(output) / track.subset / f"{track.name}.json"


# ----------------------------------------------------------------------------------------
# Scoring one track (runs in a worker)
# ----------------------------------------------------------------------------------------


def load_estimates(folder, sources, references, rate) -> np.ndarray:
    """``FOLDER/SOURCE.wav`` for each source, checked against the references' shape."""
    loaded = []
    for source in sources:
        path = os.path.join(folder, f"{source}.wav")
        if not os.path.isfile(path):
            raise EvaluationError(f"{path}: missing estimate for source '{source}'")
        audio, other_rate = read_audio(path)
        check_matches(path, other_rate, audio.shape, rate, references.shape[1:],
                      "the references have")
        if not np.any(audio.sum(axis=1) != 0):
            raise EvaluationError(f"{path}: the estimate is silent (all zeros); BSS Eval is "
                                  "undefined for a silent estimate")
        loaded.append((path, (audio, rate)))
    return stack_stems(loaded)[0]


_MODELS: dict = {}


def load_separator(model: str | None = None, checkpoint: str | None = None):
    """The model to separate with, loaded once per process, the way ``separate`` loads it
    (``numba_demucs.separator``): a pretrained name (demucs or Open-Unmix) through the
    cache, download and checksums, a file through ``loading.load_file`` (checksum in a
    ``SIG-CHECKSUM.th`` name checked)."""
    key = ("name", model) if model is not None else ("file", checkpoint)
    if key in _MODELS:
        return _MODELS[key]
    from numba_demucs.separator import _load

    if model is None and checkpoint is None:
        raise EvaluationError("no model given: pass a model name or a checkpoint")
    loaded, _ = _load(model if model is not None else checkpoint, None, np.float32, False)
    _MODELS[key] = loaded
    return loaded


def model_label(model: str | None = None, checkpoint: str | None = None) -> str:
    """The folder name ``separate`` gives this model's stems: the name, or the checkpoint's
    file name without extension (the signature of a ``SIG-CHECKSUM.th``)."""
    from numba_demucs.separator import _SIGNED_NAME

    if model is not None:
        return model
    stem = Path(checkpoint).stem
    return stem.split("-")[0] if _SIGNED_NAME.fullmatch(stem) else stem


def normalised_apply(model, mixture: np.ndarray, options: SeparationOptions) -> np.ndarray:
    """The model on one mixture ``(channels, samples)`` at its rate, the way demucs separates.

    demucs (``demucs.api.Separator.separate_tensor``, which ``demucs.separate`` uses, and
    ``demucs.evaluate``) standardises the mixture by the mean and unbiased standard deviation
    of its mono downmix (plus 1e-8) before the model and undoes it on the outputs; the models
    are trained on standardised input. ``numba_demucs.Separator`` does exactly that.
    Returns ``(sources, channels, samples)`` in the model's source order.
    """
    from numba_demucs.separator import Separator

    separator = Separator(model, shifts=options.shifts, overlap=options.overlap,
                          split=options.split, segment=options.segment, seed=options.seed)
    return separator.separate_model_rate(mixture)


def separate(task: TrackTask, mixture: np.ndarray, rate: int, sources) -> np.ndarray:
    """Our separator on one mixture ``(channels, samples)`` -> ``(sources, samples, channels)``."""
    from numba_demucs.errors import NumbaDemucsError

    model = load_separator(task.model, task.checkpoint)
    described = task.model or task.checkpoint
    if int(model.samplerate) != rate:
        raise EvaluationError(f"{task.track.path}: model {described} runs at "
                              f"{model.samplerate} Hz but the track is {rate} Hz")
    missing = [s for s in sources if s not in model.sources]
    if missing:
        raise EvaluationError(f"model {described} does not produce {', '.join(missing)}")
    try:
        separated = normalised_apply(model, mixture, task.separation)
    except EvaluationError:
        raise
    except NumbaDemucsError as error:  # e.g. a mono mixture for a stereo model
        raise EvaluationError(f"{task.track.path}: {error}") from None
    order = [list(model.sources).index(s) for s in sources]
    return np.ascontiguousarray(np.asarray(separated)[order].transpose(0, 2, 1))


def kept_estimates(task: TrackTask, references, rate) -> np.ndarray:
    """The estimates of ``task.keep_estimates/TRACK``: separated and written there first
    unless every source's file is already there (a previous run wrote it).

    Each stem is a float32 WAV written under a temporary name and renamed, so a file under
    its final name is whole; a track with some stems missing (a run killed between two
    renames) is separated again. Scores are always computed on the files read back, so a
    resumed run scores exactly what a fresh one does.
    """
    import soundfile

    from numba_demucs._files import atomic_path

    track = task.track
    folder = Path(task.keep_estimates) / track.name
    if not all((folder / f"{source}.wav").is_file() for source in SOURCES):
        mixture, mix_rate = load_mixture(track)
        check_matches(stem_location(track, "mixture"), mix_rate, mixture.shape[::-1], rate,
                      references.shape[1:], "the stems have")
        model = load_separator(task.model, task.checkpoint)
        missing = [s for s in SOURCES if s not in model.sources]
        if missing:
            raise EvaluationError(f"model {task.model or task.checkpoint} does not produce "
                                  f"{', '.join(missing)}")
        separated = separate(task, mixture, rate, list(model.sources))
        for source, audio in zip(model.sources, separated):  # audio: (samples, channels)
            final = folder / f"{source}.wav"
            with atomic_path(final) as temporary:
                soundfile.write(str(temporary), audio, rate, subtype="FLOAT", format="WAV")
    return load_estimates(str(folder), SOURCES, references, rate)


def score_track(task: TrackTask) -> dict:
    """Score one track; returns the museval JSON document (written by the caller)."""
    track = task.track
    references, rate = load_stems(track, SOURCES)
    for source, audio in zip(SOURCES, references):
        if not np.any(audio.sum(axis=1) != 0):
            raise EvaluationError(f"{stem_location(track, source)}: the reference is silent "
                                  "(all zeros); BSS Eval is undefined for it")
    if task.estimates_dir is not None:
        estimates = load_estimates(os.path.join(task.estimates_dir, track.name), SOURCES,
                                   references, rate)
    elif task.keep_estimates is not None:
        estimates = kept_estimates(task, references, rate)
    else:
        mixture, mix_rate = load_mixture(track)
        # mixture is (channels, samples): its shape reversed is (samples, channels)
        check_matches(stem_location(track, "mixture"), mix_rate, mixture.shape[::-1], rate,
                      references.shape[1:], "the stems have")
        estimates = separate(task, mixture, rate, SOURCES)
    try:
        sdr, isr, sir, sar = bss_eval(references, estimates, sr=rate, window=task.window,
                                      hop=task.hop)
    except EvaluationError as error:
        raise EvaluationError(f"{track.path}: {error}") from None
    whole = track_metrics(references, estimates)
    return scores_document(SOURCES, sdr, isr, sir, sar, task.window, task.hop, whole)


# ----------------------------------------------------------------------------------------
# Running many tracks
# ----------------------------------------------------------------------------------------


def pending_tasks(tasks, output, force=False):
    """Tasks whose result file does not exist yet (all of them with ``force``)."""
    return [task for task in tasks if force or not result_path(output, task.track).exists()]


def _progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    disable=console is None)


@dataclass(frozen=True)
class TrackFailure:
    """A track that could not be scored, and why (the error's message, naming the file)."""

    track: Track
    message: str


@dataclass
class RunSummary:
    """What one ``run`` did: tracks scored now, skipped (JSON already there) and failed."""

    scored: list
    skipped: list
    failed: list

    def line(self, output) -> str:
        """``2 scored, 1 skipped (already in OUT), 1 failed: TRACK``, the command's last line."""
        parts = [f"{len(self.scored)} scored"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (already in {output})")
        if self.failed:
            parts.append(f"{len(self.failed)} failed: "
                         + ", ".join(failure.track.name for failure in self.failed))
        return ", ".join(parts)


def run(tasks, output, jobs=1, force=False, dask_scheduler=None, progress=True,
        on_track_done=None, console=None) -> RunSummary:
    """Score the tasks not done yet and write their JSON.

    A track whose audio is missing, unreadable or inconsistent (a ``NumbaDemucsError``
    from scoring it) is reported on one line of its own, above the progress bar, and the
    other tracks are scored; it gets no JSON, so the next run tries it again.
    ``on_track_done(track, path)`` is called after each JSON is in place; an exception
    from it, or any other exception from scoring, stops the run, and the finished tracks
    stay done. ``console`` is the rich console of the bar (default: stderr).
    """
    import sys

    from numba_demucs.errors import NumbaDemucsError

    remove_stale_temporaries(output, [task.track for task in tasks])
    todo = pending_tasks(tasks, output, force)
    pending = {id(task) for task in todo}
    summary = RunSummary(scored=[], skipped=[t.track for t in tasks if id(t) not in pending],
                         failed=[])
    if progress and console is None:
        from rich.console import Console

        console = Console(stderr=True)
    with _progress(console if progress else None) as bar:
        handle = bar.add_task(f"scoring {len(todo)} of {len(tasks)} tracks", total=len(todo))

        def say(message):
            if progress:  # printed above the bar, which is drawn again below it
                bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
            else:
                print(message, file=sys.stderr, flush=True)

        def record(task, document):
            path = result_path(output, task.track)
            write_json_atomically(path, document)
            summary.scored.append(task.track)
            bar.advance(handle)
            if on_track_done is not None:
                on_track_done(task.track, path)

        def fail(task, error):
            if not isinstance(error, NumbaDemucsError):
                raise error
            summary.failed.append(TrackFailure(task.track, str(error)))
            say(f"numba-demucs: error: {error}")
            bar.advance(handle)

        if dask_scheduler:
            _run_dask(todo, dask_scheduler, record, fail)
        elif jobs > 1 and len(todo) > 1:
            _run_pool(todo, jobs, record, fail)
        else:
            for task in todo:
                try:
                    document = score_track(task)
                except NumbaDemucsError as error:
                    fail(task, error)
                else:
                    record(task, document)
    return summary


def _run_pool(todo, jobs, record, fail):
    import multiprocessing

    # spawn, not fork: numba's thread pool must not be inherited half-initialised.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    futures = {pool.submit(score_track, task): task for task in todo}
    try:
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                task = futures.pop(future)
                error = future.exception()
                if error is None:
                    record(task, future.result())
                else:
                    fail(task, error)
    except BaseException:
        # Do not wait for the other tracks on an error or Ctrl-C; finished ones are saved.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(todo, address, record, fail):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise EvaluationError("--dask-scheduler needs dask.distributed "
                              "(pip install 'numba-demucs[eval]')") from None
    try:
        client = Client(address, timeout="20s")
    except OSError as error:
        raise EvaluationError(f"cannot reach the dask scheduler at {address} ({error})") from None
    with client:
        futures = client.map(score_track, todo, pure=False)
        by_key = {future.key: task for future, task in zip(futures, todo)}
        try:
            for future in as_completed(futures):
                task = by_key[future.key]
                if future.status == "error":
                    fail(task, future.exception())
                else:
                    record(task, future.result())
                # Drop the result from the worker once its JSON is written: a worker lost
                # later would otherwise make the scheduler compute this track again.
                future.release()
        except BaseException:
            client.cancel(futures)
            raise
