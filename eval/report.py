"""Reading per-track results (ours or museval's) and aggregating them two ways.

* SiSEC 2018 / museval (``aggregate``): the median over a track's frames (NaN frames
  ignored, as pandas' ``median`` does in ``EvalStore.agg_frames_scores``), then the median
  of those per-track values over tracks, per source and metric (SDR, SIR, ISR, SAR).
* MDX 2021 (``mdx_aggregate``): the whole-track uSDR (and SI-SDR) of every track, then the
  mean over tracks, per source. Only our files carry these (``track`` of each target);
  museval's own files have frames only.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from numba_demucs.errors import EvaluationError

METRICS = ("SDR", "SIR", "ISR", "SAR")
"""Framewise BSS Eval metrics, aggregated the SiSEC way."""
TRACK_METRICS = ("uSDR", "SI-SDR")
"""Whole-track metrics, aggregated the MDX way."""


MEAN_TARGETS = ("vocals", "drums", "bass", "other")
"""The targets "mean of sources" averages, as SiSEC 2018 and the Demucs papers report it.

An ``accompaniment`` target (museval scores one when such an estimate is given) is left out:
counting it would raise a typical submission's mean by more than a dB.
"""

MEAN_LABEL = "mean of " + ", ".join(MEAN_TARGETS)


def mean_of_sources(per_target) -> dict:
    """``{metric: mean over MEAN_TARGETS}`` of ``{target: {metric: value}}``; NaN where a
    method lacks one of the four (a mean over fewer would not be the published number)."""
    metrics = list(next(iter(per_target.values()), {}))
    if not all(target in per_target for target in MEAN_TARGETS):
        return {metric: math.nan for metric in metrics}
    return {metric: float(np.mean([per_target[t][metric] for t in MEAN_TARGETS]))
            for metric in metrics}


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
    """``{target: {metric: frames array or value}}`` from one museval-format JSON file.

    Refused naming the file: unreadable or non-JSON text, JSON nested past the recursion
    limit, a number literal that overflows a float, a metric that is not a number, a target
    listed twice (it would silently replace the first)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(), parse_float=_parse_float)
    except _Overflow as error:
        raise EvaluationError(f"{path}: not a readable results file ({error})") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise EvaluationError(f"{path}: not a readable results file "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    return document_scores(document, path)


def document_scores(document, path="results") -> dict:
    """``read_track`` of a document already in memory (``path`` names it in errors)."""
    try:
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
            for metric, value in (target.get("track") or {}).items():
                if metric in TRACK_METRICS:
                    scores[name][metric] = _as_float(value, path)
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise EvaluationError(f"{path}: not museval-format results ({type(error).__name__}: "
                              f"{str(error)[:200]})") from None
    return scores


def read_results(path) -> dict:
    """``{track: {target: {metric: frames or value}}}`` from a results folder (or one file).

    Frame metrics are arrays over frames; whole-track metrics (uSDR, SI-SDR), when the
    file has them, plain floats.

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
    """``{track: {target: {metric: median over frames}}}``; whole-track metrics as they are."""
    return {track: {target: {metric: _nanmedian(values) if metric in METRICS else values
                             for metric, values in metrics.items()}
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


def mdx_aggregate(results) -> dict:
    """``{target: {metric: mean over tracks}}`` of uSDR and SI-SDR (the MDX 2021 way).

    NaN for a target when one of the tracks that have it lacks the metric (a museval-format
    file): a mean over some of the tracks would not be comparable.
    """
    targets = []
    for per_track in results.values():
        targets.extend(t for t in per_track if t not in targets)
    means = {}
    for target in targets:
        means[target] = {}
        for metric in TRACK_METRICS:
            values = [per_track[target].get(metric, math.nan)
                      for per_track in results.values() if target in per_track]
            means[target][metric] = float(np.mean(values))
    return means


def method_names(paths) -> list[str]:
    """Folder names as method names (museval's ``MethodStore`` uses the same), made unique."""
    names = []
    for path in paths:
        name = Path(path).resolve().name
        if name in names:
            name = str(path)
        names.append(name)
    return names


SISEC_STATISTIC = "SiSEC 2018: median over frames, then median over tracks"
MDX_STATISTIC = "MDX 2021: whole track, then mean over tracks"


def write_csv(path, methods) -> None:
    """Every method's per-track values and both aggregates, one row per target.

    Column ``statistic`` says what a row holds: ``track`` (median over frames of SDR, SIR,
    ISR, SAR; the whole-track uSDR and SI-SDR), ``SISEC_STATISTIC`` (frame metrics only) or
    ``MDX_STATISTIC`` (uSDR, SI-SDR only); aggregate rows have track ``*``, and a last row
    per aggregate is the mean over vocals, drums, bass and other.
    """
    import csv

    columns = (*METRICS, *TRACK_METRICS)

    def cells(values):
        return [values.get(m, "") for m in columns]

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "track", "target", "statistic", *columns])
        for name, results in methods.items():
            for track, targets in track_medians(results).items():
                for target, metrics in targets.items():
                    writer.writerow([name, track, target, "track", *cells(metrics)])
            for statistic, per_target in ((SISEC_STATISTIC, aggregate(results)),
                                          (MDX_STATISTIC, mdx_aggregate(results))):
                rows = dict(per_target)
                if all(t in rows for t in MEAN_TARGETS):
                    rows[MEAN_LABEL] = mean_of_sources(per_target)
                for target, metrics in rows.items():
                    writer.writerow([name, "*", target, statistic, *cells(metrics)])


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
                for metric in (*METRICS, *TRACK_METRICS):
                    if metric in metrics:
                        columns.setdefault((name, metric), {})[(track, target)] = \
                            metrics[metric]
    frame = pd.DataFrame(columns)
    frame.index.names = ["track", "target"]
    frame.columns.names = ["method", "metric"]
    return frame.sort_index(level="track", sort_remaining=False)


def aggregate_frame(methods, mean_of_sources_row=True, protocol="SiSEC"):
    """An aggregate per target, methods side by side, as a pandas DataFrame.

    ``protocol="SiSEC"``: SDR, SIR, ISR, SAR, median over frames then over tracks;
    ``protocol="MDX"``: uSDR and SI-SDR, mean over tracks. With ``mean_of_sources_row`` a
    last row (``MEAN_LABEL``) holds the mean over vocals, drums, bass and other, the single
    number Demucs and most papers quote.
    """
    import pandas as pd

    if protocol == "SiSEC":
        function, metrics = aggregate, METRICS
    elif protocol == "MDX":
        function, metrics = mdx_aggregate, TRACK_METRICS
    else:
        raise ValueError(f"protocol must be 'SiSEC' or 'MDX', got {protocol!r}")
    aggregates = {name: function(results) for name, results in methods.items()}
    frame = pd.DataFrame({(name, metric): {target: scores[metric]
                                           for target, scores in per_target.items()}
                          for name, per_target in aggregates.items() for metric in metrics})
    frame.index.name = "target"
    frame.columns.names = ["method", "metric"]
    if mean_of_sources_row:
        frame.loc[MEAN_LABEL] = [mean_of_sources(aggregates[name])[metric]
                                 for name, metric in frame.columns]
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
