"""Reading per-track results (ours or museval's) and the SiSEC aggregate.

SiSEC 2018 / museval aggregation: the median over a track's frames (NaN frames ignored,
as pandas' ``median`` does in ``EvalStore.agg_frames_scores``), then the median of those
per-track values over tracks, per source and metric.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from numba_demucs.errors import EvaluationError

METRICS = ("SDR", "SIR", "ISR", "SAR")


def _nanmedian(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmedian(values))


def _as_float(value, path) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"{path}: metric value {str(value)[:60]!r} is not a number")
    return float(value)


class _Overflow(ValueError):
    pass


def _parse_float(text: str) -> float:
    # museval writes NaN (and could write Infinity) as JSON constants; a literal such as
    # 1e400 is no float any writer made: refuse it rather than read it as inf
    value = float(text)
    if math.isinf(value):
        raise _Overflow(f"the number {text[:40]} overflows a float")
    return value


def read_track(path) -> dict:
    """``{target: {metric: frames array}}`` from one museval-format JSON file.

    Refused naming the file: unreadable or non-JSON text, JSON nested past the recursion
    limit, a number literal that overflows a float, a metric that is not a number, a target
    listed twice (it would silently replace the first)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(), parse_float=_parse_float)
        targets = document["targets"]
        if not isinstance(targets, list):
            raise TypeError("'targets' is not a list")
        scores = {}
        for target in targets:
            frames, name = target["frames"], target["name"]
            if not isinstance(name, str) or not isinstance(frames, list):
                raise TypeError("a target's name must be a string and its frames a list")
            if name in scores:
                raise EvaluationError(f"{path}: target {name[:60]!r} appears twice")
            scores[name] = {
                metric: np.array([_as_float(frame["metrics"][metric], path) for frame in frames])
                for metric in METRICS}
    except _Overflow as error:
        raise EvaluationError(f"{path}: not a readable results file ({error})") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise EvaluationError(f"{path}: not a readable results file "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    except (KeyError, TypeError, IndexError) as error:
        raise EvaluationError(f"{path}: not museval-format results ({type(error).__name__}: "
                              f"{str(error)[:200]})") from None
    return scores


def read_results(path) -> dict:
    """``{track: {target: {metric: frames}}}`` from a results folder (or one JSON file).

    Every ``*.json`` below the folder counts, named by its file stem as museval does;
    museval's own output folder reads the same way.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    else:
        raise EvaluationError(f"{path}: results folder not found")
    if not files:
        raise EvaluationError(f"{path}: no .json results inside")
    results = {}
    for file in files:
        if file.stem in results:
            raise EvaluationError(f"{file}: a second result for track {file.stem!r}")
        results[file.stem] = read_track(file)
    return results


def track_medians(results) -> dict:
    """``{track: {target: {metric: median over frames}}}``."""
    return {track: {target: {metric: _nanmedian(frames) for metric, frames in metrics.items()}
                    for target, metrics in targets.items()}
            for track, targets in results.items()}


def aggregate(results) -> dict:
    """``{target: {metric: median over tracks of the per-track frame medians}}``."""
    medians = track_medians(results)
    targets = []
    for per_track in medians.values():
        targets.extend(t for t in per_track if t not in targets)
    return {target: {metric: _nanmedian([per_track[target][metric]
                                         for per_track in medians.values()
                                         if target in per_track])
                     for metric in METRICS}
            for target in targets}


def method_names(paths) -> list[str]:
    """Folder names as method names (museval's ``MethodStore`` uses the same), made unique."""
    names = []
    for path in paths:
        name = Path(path).resolve().name
        if name in names:
            name = str(path)
        names.append(name)
    return names


def write_csv(path, methods) -> None:
    """Per-track medians and the aggregate (track ``*``) of every method, one row each."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "track", "target", *METRICS])
        for name, results in methods.items():
            for track, targets in track_medians(results).items():
                for target, metrics in targets.items():
                    writer.writerow([name, track, target, *(metrics[m] for m in METRICS)])
            for target, metrics in aggregate(results).items():
                writer.writerow([name, "*", target, *(metrics[m] for m in METRICS)])


def per_track_frame(methods):
    """Median over frames per track and source, methods side by side, as a pandas DataFrame.

    ``methods`` is ``{name: read_results(...)}``. Rows are ``(track, target)``, columns
    ``(method, metric)``: the table ``eval report`` prints first. A method without a track or
    target has NaN there.
    """
    import pandas as pd

    columns = {}
    for name, results in methods.items():
        for track, targets in track_medians(results).items():
            for target, metrics in targets.items():
                for metric in METRICS:
                    columns.setdefault((name, metric), {})[(track, target)] = metrics[metric]
    frame = pd.DataFrame(columns)
    frame.index.names = ["track", "target"]
    frame.columns.names = ["method", "metric"]
    return frame.sort_index(level="track", sort_remaining=False)


def aggregate_frame(methods, mean_of_sources=True):
    """The SiSEC aggregate per target, methods side by side, as a pandas DataFrame.

    With ``mean_of_sources`` a last row holds the mean over the targets, the single number
    Demucs and most papers quote.
    """
    import pandas as pd

    frame = pd.DataFrame({(name, metric): {target: scores[metric]
                                           for target, scores in aggregate(results).items()}
                          for name, results in methods.items() for metric in METRICS})
    frame.index.name = "target"
    frame.columns.names = ["method", "metric"]
    if mean_of_sources and len(frame) > 1:
        frame.loc["mean of sources"] = frame.mean(axis=0)
    return frame


def sdr_boxplots(methods, figure=None):
    """Draw one box plot per source of per-track median SDR, a box per method; returns the figure.

    ``figure`` is a matplotlib Figure to draw on (in a notebook, ``plt.figure(...)``); by
    default a new one is made without pyplot.
    """
    medians = {name: track_medians(results) for name, results in methods.items()}
    targets = []
    for per_method in medians.values():
        for per_track in per_method.values():
            targets.extend(t for t in per_track if t not in targets)
    if figure is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2 * len(targets), 4))
    axes = figure.subplots(1, len(targets), squeeze=False)
    for axis, target in zip(axes[0], targets):
        data = []
        for per_method in medians.values():
            values = [t[target]["SDR"] for t in per_method.values() if target in t]
            data.append([v for v in values if not math.isnan(v)])
        axis.boxplot(data)
        axis.set_xticks(range(1, len(medians) + 1), list(medians), rotation=30, ha="right")
        axis.set_title(target)
        axis.set_ylabel("SDR (dB), median over frames")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def plot(path, methods) -> None:
    """Write ``sdr_boxplots`` to a PNG."""
    try:
        # Agg canvas, no pyplot: a notebook calling this keeps its own backend.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise EvaluationError("--plot needs matplotlib (pip install 'numba-demucs[eval]')") \
            from None
    figure = sdr_boxplots(methods)
    FigureCanvasAgg(figure)
    try:
        figure.savefig(path)
    except OSError as error:
        raise EvaluationError(f"{path}: cannot write the plot ({error})") from None
