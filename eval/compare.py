"""Comparing separation systems on the same tracks from their museval-format result folders.

Any folder of per-track JSON files in museval's format reads the same way: ours, museval's
own output (``eval_mus_track(..., output_dir=...)``) and the published SiSEC 2018
submissions. The first folder is the baseline; every other system is compared with it.

The statistic per target and metric: each track's value (the median over its frames for
SDR, SIR, ISR, SAR; the value itself for the whole-track uSDR and SI-SDR) for both systems,
their difference ``system - baseline`` per track, and the median of those differences over
the tracks both systems scored (a NaN on either side leaves the track out). Its confidence
interval is a paired percentile bootstrap over tracks: tracks drawn with replacement, the
same draw for both systems (so the pairing, and with it the song-to-song spread both
systems share, is kept), the median of differences recomputed per draw, and the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those medians taken.
The draws come from ``numpy.random.default_rng(seed)``: the same seed gives the same
interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from numba_demucs.errors import EvaluationError

from .report import MEAN_TARGETS, METRICS, TRACK_METRICS, track_medians

ALL_METRICS = (*METRICS, *TRACK_METRICS)
_CHUNK = 1 << 22
"""Bootstrap draws are made in blocks of about this many track indices (32 MiB of int64)."""


@dataclass(frozen=True)
class Difference:
    """``system - baseline`` for one target and metric, over the tracks both scored."""

    system: str
    baseline: str
    target: str
    metric: str
    tracks: int
    median: float
    low: float
    high: float


def bootstrap_median(differences, resamples=10000, confidence=0.95, seed=0):
    """``(median, low, high)``: the median of ``differences`` (one per track) and its paired
    percentile bootstrap interval at ``confidence``. NaN everywhere for no tracks."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1:
        raise ValueError("differences must be one value per track")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    count = differences.size
    if count == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples)
    block = max(1, _CHUNK // count)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        # (draws, tracks) indices: each row is one bootstrap sample of the tracks
        draws = rng.integers(0, count, size=(stop - start, count))
        medians[start:stop] = np.median(differences[draws], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [alpha, 1.0 - alpha])
    return float(np.median(differences)), float(low), float(high)


def paired_values(baseline, system, target, metric):
    """``(tracks, baseline values, system values)`` over the tracks where both have a finite
    value; ``baseline`` and ``system`` are ``track_medians`` results."""
    tracks, first, second = [], [], []
    for track in sorted(set(baseline) & set(system)):
        a = baseline[track].get(target, {}).get(metric, math.nan)
        b = system[track].get(target, {}).get(metric, math.nan)
        if np.isfinite(a) and np.isfinite(b):
            tracks.append(track)
            first.append(a)
            second.append(b)
    return tracks, np.array(first, dtype=np.float64), np.array(second, dtype=np.float64)


def targets_of(medians) -> list[str]:
    """Targets of every system, the four MUSDB sources first (in musdb's order), then the
    others (e.g. accompaniment) in first-seen order."""
    seen = []
    for per_system in medians.values():
        for per_track in per_system.values():
            seen.extend(t for t in per_track if t not in seen)
    return [t for t in MEAN_TARGETS if t in seen] + [t for t in seen if t not in MEAN_TARGETS]


def differences(methods, metrics=METRICS, resamples=10000, confidence=0.95,
                seed=0) -> list[Difference]:
    """Every system after the first against the first, per target and metric.

    ``methods`` is ``{name: report.read_results(...)}`` in order, the baseline first.
    """
    if len(methods) < 2:
        raise EvaluationError("comparing needs at least two result folders")
    medians = {name: track_medians(results) for name, results in methods.items()}
    names = list(medians)
    baseline = names[0]
    rows = []
    for system in names[1:]:
        if not set(medians[baseline]) & set(medians[system]):
            raise EvaluationError(f"{system} and {baseline} have no track in common")
        for target in targets_of(medians):
            for metric in metrics:
                _, a, b = paired_values(medians[baseline], medians[system], target, metric)
                median, low, high = bootstrap_median(b - a, resamples, confidence, seed)
                rows.append(Difference(system, baseline, target, metric, len(a), median,
                                       low, high))
    return rows


def _format(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def print_comparison(methods, metrics=METRICS, resamples=10000, confidence=0.95,
                     seed=0) -> list[Difference]:
    """The per-track table (track x target x metric, one column per system), then the
    per-target median differences with their intervals; returns the differences."""
    from rich.table import Table

    from .tables import _console

    rows = differences(methods, metrics, resamples, confidence, seed)
    medians = {name: track_medians(results) for name, results in methods.items()}
    console = _console()
    table = Table(title="Per track (dB): SDR, SIR, ISR, SAR median over frames (museval BSS "
                        "Eval v4); uSDR, SI-SDR over the whole track")
    for column in ("track", "target", "metric"):
        table.add_column(column, no_wrap=True)
    for name in medians:
        table.add_column(name, justify="right")
    targets = targets_of(medians)
    for track in sorted({t for per_system in medians.values() for t in per_system}):
        for target in targets:
            if not any(target in m.get(track, {}) for m in medians.values()):
                continue
            for metric in metrics:
                table.add_row(track, target, metric, *(
                    _format(m.get(track, {}).get(target, {}).get(metric)) for m in
                    medians.values()))
    console.print(table)
    percent = f"{100 * confidence:g}%"
    summary = Table(title=f"Median over tracks of the per-track difference (system - "
                          f"{rows[0].baseline}, dB), paired bootstrap {percent} interval "
                          f"({resamples} resamples, seed {seed})")
    for column in ("system", "target", "metric", "tracks"):
        summary.add_column(column, no_wrap=True)
    for column in ("median difference", f"{percent} low", f"{percent} high"):
        summary.add_column(column, justify="right")
    for row in rows:
        summary.add_row(row.system, row.target, row.metric, str(row.tracks),
                        _format(row.median), _format(row.low), _format(row.high))
    console.print(summary)
    return rows


def boxplots(methods, metrics=METRICS, figure=None):
    """One row of box plots per metric (a panel per target, a box per system, per-track
    values), and a last row of the per-track differences of the first metric against the
    first system, with a line at zero. Returns the matplotlib figure."""
    medians = {name: track_medians(results) for name, results in methods.items()}
    names = list(medians)
    targets = targets_of(medians)
    rows = len(metrics) + 1
    if figure is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2 * len(targets), 3.2 * rows))
    axes = figure.subplots(rows, len(targets), squeeze=False)
    for row, metric in enumerate(metrics):
        for axis, target in zip(axes[row], targets):
            data = []
            for name in names:
                values = [per_track[target].get(metric, math.nan)
                          for per_track in medians[name].values() if target in per_track]
                data.append([v for v in values if np.isfinite(v)])
            axis.boxplot(data)
            axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
            axis.set_title(f"{target} {metric}")
            axis.set_ylabel("dB")
            axis.grid(axis="y", alpha=0.3)
    metric = metrics[0]
    for axis, target in zip(axes[-1], targets):
        data = []
        for name in names[1:]:
            _, a, b = paired_values(medians[names[0]], medians[name], target, metric)
            data.append(b - a)
        axis.boxplot(data)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xticks(range(1, len(names)), names[1:], rotation=30, ha="right")
        axis.set_title(f"{target} {metric}: system - {names[0]}")
        axis.set_ylabel("dB")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def plot(path, methods, metrics=METRICS) -> None:
    """Write ``boxplots`` to ``path`` atomically; the format follows its suffix (PNG, SVG,
    PDF...), PNG when it has none."""
    from pathlib import Path

    from numba_demucs._files import atomic_path

    try:
        # Agg canvas, no pyplot: a notebook calling this keeps its own backend.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise EvaluationError("--plot needs matplotlib (pip install 'numba-demucs[eval]')") \
            from None
    figure = boxplots(methods, metrics)
    FigureCanvasAgg(figure)
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=fmt)
    except ValueError as error:  # matplotlib: unknown format
        raise EvaluationError(f"{path}: cannot write the plot ({error})") from None
    except OSError as error:
        raise EvaluationError(f"{path}: cannot write the plot ({error})") from None
