"""Show a diff: a rich table, a pandas DataFrame, a PNG plot or matplotlib axes.

The comparison itself (``diff.diff``) knows nothing of these; every function here takes the
``DiffResult`` it returns.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .diff import DiffResult, point_label
from .traces import context_key

def _fmt(value, digits=2, fmt="e"):
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return f"{value:.{digits}{fmt}}"


def render_table(result: DiffResult, console, only_diverged: bool = False) -> None:
    """Print the comparison as a rich table on ``console`` (a ``rich.console.Console``).

    Header mismatches come first, in a red panel; the first divergence is the red row, later
    diverged points (usually inheriting its error) are yellow, points within tolerance green.
    """
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    # names carry contexts like "[segment=1]", which rich would take for markup tags

    if result.header_mismatches:
        console.print(Panel(escape("\n".join(result.header_mismatches)), title="WARNING: dumps of different runs",
                            border_style="bold red", style="bold red"))
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/dim]", highlight=False)

    if result.tolerance.get("floor_factor"):
        rule = f"rtol {result.tolerance['floor_factor']:g} x float32 floor per point"
    else:
        rule = f"rtol {result.tolerance.get('rtol'):g}"
    table = Table(title=f"layer-by-layer diff ({rule}, "
                        f"atol {result.tolerance.get('atol'):g}, {result.tolerance.get('dtype')} rules)")
    for column, justify in (("#", "right"), ("point", "left"), ("shape", "left"), ("stat err", "right"),
                            ("rel L2", "right"), ("max abs", "right"), ("SNR dB", "right"),
                            ("NaN/Inf", "right"), ("status", "left")):
        table.add_column(column, justify=justify)
    styles = {"first_divergence": "bold red", "diverged": "yellow", "ok": "green"}
    for position, p in enumerate(result.points):
        if only_diverged and p["status"] == "ok":
            continue
        stat_errors = [e for e in p["errors"].values() if e is not None]
        tensor = p["tensor"] or {}
        shape = "×".join(map(str, p["shape_reference"]))
        if p["shape_ours"] != p["shape_reference"]:
            shape += " vs " + "×".join(map(str, p["shape_ours"]))
        status = {"first_divergence": "FIRST DIVERGENCE", "diverged": "diverged", "ok": "ok"}[p["status"]]
        if p["reasons"]:
            status += ": " + ", ".join(p["reasons"])
        table.add_row(str(position), escape(point_label(p["name"], p["context"])), shape,
                      _fmt(max(stat_errors, default=None)), _fmt(tensor.get("rel_l2")),
                      _fmt(tensor.get("max_abs_error")), _fmt(tensor.get("snr_db"), 1, "f"),
                      f"{p['nan_ours']}/{p['inf_ours']}" if (p["nan_ours"] or p["inf_ours"]
                                                              or p["nan_reference"] or p["inf_reference"])
                      else "", escape(status), style=styles[p["status"]])
    console.print(table)
    for side, items in (("reference", result.only_reference), ("ours", result.only_ours)):
        if items:
            console.print(f"[bold yellow]{len(items)} point(s) only in {side}:[/bold yellow] "
                          + escape(", ".join(point_label(x["name"], x["context"]) for x in items)), highlight=False)
    if result.first_divergence is None:
        console.print("[bold green]every common point within tolerance[/bold green]")
    else:
        p = result.points[result.first_divergence_position]
        console.print(f"[bold red]first divergence: {escape(point_label(p['name'], p['context']))} "
                      f"({escape(', '.join(p['reasons']))})[/bold red]", highlight=False)


def render_floor_table(result: DiffResult, console, only_diverged: bool = False,
                       limit: int | None = None, positions=None) -> None:
    """Per-layer error against the float32 rounding floor, one row per common point.

    ``error`` is the point's worst relative error (statistics, and tensors when both sides
    kept them), ``floor`` the float32 rounding floor of the reference at that point (PyTorch
    float32 against float64), ``tol`` the point's rtol and ``x tol`` how much of it is used
    (> 1: diverged). ``limit`` keeps the first rows (the first divergence is always shown);
    ``positions`` shows only those points (indices into ``result.points``).
    """
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="per-layer error against the float32 rounding floor")
    for column, justify in (("#", "right"), ("point", "left"), ("shape", "left"), ("error", "right"),
                            ("floor", "right"), ("tol", "right"), ("x tol", "right"), ("status", "left")):
        # module paths are what the reader is after: wrap them rather than cut them
        table.add_column(column, justify=justify, overflow="fold")
    styles = {"first_divergence": "bold red", "diverged": "yellow", "ok": "green"}
    shown = 0
    for position, p in enumerate(result.points):
        if only_diverged and p["status"] == "ok":
            continue
        if positions is not None and position not in positions:
            continue
        if limit is not None and shown >= limit and p["status"] != "first_divergence":
            continue
        shown += 1
        error = p["error"]
        used = None if error is None or not p["rtol"] else error / p["rtol"]
        status = {"first_divergence": "FIRST DIVERGENCE", "diverged": "diverged", "ok": "ok"}[p["status"]]
        if p["reasons"] and p["status"] == "first_divergence":
            # later points mostly inherit it; their reasons are in the JSON
            status += ": " + ", ".join(p["reasons"])
        if p.get("layout"):
            status += f" ({p['layout']})"
        table.add_row(str(position), escape(point_label(p["name"], p["context"])),
                      "×".join(map(str, p["shape_reference"])), _fmt(error), _fmt(p.get("floor")),
                      _fmt(p["rtol"]), _fmt(used, 2, "f"), escape(status), style=styles[p["status"]])
    console.print(table)


def _floor_values(result: DiffResult, floor) -> list:
    if floor is None:
        return [p.get("floor") for p in result.points]
    if isinstance(floor, DiffResult):
        by_key = {(p["name"], context_key(p["context"])): p["error"] for p in floor.points}
        return [by_key.get((p["name"], context_key(p["context"]))) for p in result.points]
    floor = list(floor)
    if len(floor) != len(result.points):
        raise ValueError(f"floor has {len(floor)} values for {len(result.points)} points")
    return floor


def plot(result: DiffResult, path, floor: Sequence[float | None] | DiffResult | None = None) -> None:
    """Write a PNG: error per point in forward order, log scale, first divergence marked.

    ``floor`` (a list parallel to ``result.points``, or the DiffResult of float32 against
    float64 reference dumps, matched by point) is drawn as a second line: the rounding error
    float32 itself makes at each point. Zero errors are drawn at the bottom of the axis,
    structural mismatches (shape, NaN/Inf counts) at the top.
    """
    # Figure + Agg canvas directly: no pyplot, so no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(4 + 0.12 * len(result.points), 40), 5), layout="constrained")
    FigureCanvasAgg(fig)
    draw_errors(fig.add_subplot(), result, floor)
    fig.savefig(path, format="png", dpi=110)


def draw_errors(ax, result: DiffResult,
                floor: Sequence[float | None] | DiffResult | None = None) -> None:
    """Draw what ``plot`` writes on a matplotlib ``ax`` (in a notebook, one from pyplot)."""
    n = len(result.points)
    errors = [p["error"] for p in result.points]
    finite = [e for e in errors if e is not None and math.isfinite(e) and e > 0]
    floor_vals = _floor_values(result, floor)
    if all(v is None for v in floor_vals):
        floor_vals = None  # neither given nor carried by the reference's records
    positive = finite + [p["rtol"] for p in result.points]
    if floor_vals:
        positive += [f for f in floor_vals if f is not None and math.isfinite(f) and f > 0]
    bottom = min(positive, default=1e-12) / 10
    top = max(positive, default=1.0) * 10

    def clip(values):
        return [np.nan if v is None else (bottom if v <= 0 else (top if not math.isfinite(v) else v))
                for v in values]

    x = np.arange(n)
    ax.plot(x, clip(errors), marker=".", linewidth=1, label="ours vs reference")
    if floor_vals is not None:
        ax.plot(x, clip(floor_vals), linewidth=1, color="tab:gray", label="float32 rounding floor")
    ax.step(x, [p["rtol"] for p in result.points], where="mid", linestyle="--", linewidth=0.8,
            color="tab:orange", label="rtol")
    if result.first_divergence_position is not None:
        k = result.first_divergence_position
        ax.axvline(k, color="red", linewidth=1)
        ax.annotate(f"first divergence: {result.first_divergence}", (k, top / 10), color="red",
                    rotation=90, ha="right", va="top", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))
    ax.set_ylabel("relative error (worst statistic or tensor)")
    ax.set_xlabel("trace point, forward order")
    step = max(1, n // 80)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([result.points[i]["name"] for i in range(0, n, step)], rotation=90, fontsize=6)
    ax.legend(loc="upper left", fontsize=8)


def points_frame(result: DiffResult, only_diverged: bool = False):
    """The diff as a pandas DataFrame, one row per point in forward order (``render_table``'s columns).

    ``error`` is the worst relative error of the point (what ``plot`` draws); ``rel_l2``,
    ``max_abs`` and ``snr_db`` are empty unless both dumps saved the tensors.
    """
    import pandas as pd

    rows = []
    for position, p in enumerate(result.points):
        if only_diverged and p["status"] == "ok":
            continue
        tensor = p["tensor"] or {}
        rows.append({
            "position": position,
            "point": p["name"],
            "context": " ".join(f"{k}={v}" for k, v in (p["context"] or {}).items()),
            "shape": "×".join(map(str, p["shape_reference"])),
            "error": p["error"],
            "rel_l2": tensor.get("rel_l2"),
            "max_abs": tensor.get("max_abs_error"),
            "snr_db": tensor.get("snr_db"),
            "status": p["status"],
            "reasons": ", ".join(p["reasons"]),
        })
    columns = ["position", "point", "context", "shape", "error", "rel_l2", "max_abs", "snr_db",
               "status", "reasons"]
    return pd.DataFrame(rows, columns=columns).set_index("position")
