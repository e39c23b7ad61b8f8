"""The tables ``eval musdb``, ``eval bsseval`` and ``eval report`` print, each titled with the
protocol its numbers follow."""
from __future__ import annotations

import math

from .report import (MEAN_LABEL, MEAN_TARGETS, METRICS, TRACK_METRICS, aggregate,
                     mdx_aggregate, mean_of_sources, track_medians)

PER_TRACK_TITLE = ("Per track (dB): SDR, SIR, ISR, SAR median over frames (museval BSS Eval "
                   "v4); uSDR, SI-SDR over the whole track")
SISEC_TITLE = ("SiSEC 2018 aggregate (museval BSS Eval v4, 'cSDR'): median over frames, then "
               "median over tracks (dB)")
MDX_TITLE = "MDX 2021 aggregate: whole-track uSDR and SI-SDR, mean over tracks (dB)"


def _format(value) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _targets(per_method_targets):
    """Target names in first-seen order over ``[{target: ...}, ...]``."""
    targets = []
    for per_target in per_method_targets:
        targets.extend(t for t in per_target if t not in targets)
    return targets


def _has_track_metrics(medians) -> bool:
    return any(metric in scores for per_method in medians.values()
               for per_track in per_method.values() for scores in per_track.values()
               for metric in TRACK_METRICS)


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped to a file: do not squeeze the table into 80 columns
        console = Console(width=250)
    return console


def _aggregate_table(title, aggregates, metrics, mean_row):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("source")
    for name in aggregates:
        for metric in metrics:
            table.add_column(f"{name}\n{metric}", justify="right")
    targets = _targets(aggregates.values())
    for target in targets:
        row = [target]
        for per_target in aggregates.values():
            scores = per_target.get(target)
            row.extend(_format(scores[m]) if scores else "-" for m in metrics)
        table.add_row(*row)
    if mean_row and any(t in MEAN_TARGETS for t in targets):
        # Demucs and most papers quote this: the mean over the four MUSDB sources (never
        # accompaniment) of the aggregate.
        row = [MEAN_LABEL]
        for per_target in aggregates.values():
            means = mean_of_sources(per_target)
            row.extend(_format(means.get(m, math.nan)) for m in metrics)
        table.add_row(*row, style="bold")
    return table


def print_tables(methods, per_track=True) -> None:
    """``methods`` is ``{name: {track: {target: {metric: ...}}}}`` (``report.read_results``).

    With ``per_track``: the per-track table (methods side by side), the SiSEC aggregate and,
    when any file has whole-track metrics, the MDX aggregate. Without: one track's medians
    over frames and its whole-track metrics.
    """
    from rich.table import Table

    console = _console()
    medians = {name: track_medians(results) for name, results in methods.items()}
    with_track = _has_track_metrics(medians)
    columns = (*METRICS, *TRACK_METRICS) if with_track else METRICS
    if not per_track:
        table = Table(title="Median over frames (museval BSS Eval v4); uSDR, SI-SDR over the "
                            "whole track (dB)" if with_track else "Median over frames (dB)")
        table.add_column("source")
        for metric in columns:
            table.add_column(metric, justify="right")
        for per_method in medians.values():
            for per_track_scores in per_method.values():
                for target, scores in per_track_scores.items():
                    table.add_row(target, *(_format(scores.get(m, math.nan)) for m in columns))
        console.print(table)
        return
    table = Table(title=PER_TRACK_TITLE if with_track else "Median over frames, per track (dB)")
    table.add_column("track", no_wrap=True)
    table.add_column("source", no_wrap=True)
    for name in methods:
        for metric in columns:
            table.add_column(f"{name}\n{metric}", justify="right")
    for track in sorted({t for per_method in medians.values() for t in per_method}):
        for target in _targets(per_method.get(track, {}) for per_method in medians.values()):
            row = [track, target]
            for per_method in medians.values():
                scores = per_method.get(track, {}).get(target)
                row.extend(_format(scores[m]) if scores and m in scores else "-"
                           for m in columns)
            table.add_row(*row)
    console.print(table)
    console.print(_aggregate_table(
        SISEC_TITLE, {name: aggregate(results) for name, results in methods.items()},
        METRICS, mean_row=True))
    if with_track:
        console.print(_aggregate_table(
            MDX_TITLE, {name: mdx_aggregate(results) for name, results in methods.items()},
            TRACK_METRICS, mean_row=True))
