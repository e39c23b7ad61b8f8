"""Compare two dumps point by point and name the first point where they part ways.

The rules (why each scale, why these tolerances) are written up for users in
docs/debugging.md; the short version:

* Points are matched by (name, context), in the reference's forward order; a name that occurs
  several times under one context is matched occurrence by occurrence.
* Each statistic's error is measured against the size of that statistic for a tensor of this
  magnitude, never against the statistic itself: min/max against the largest |value|, mean and
  std against the RMS (so a zero-mean tensor's mean does not give an infinite relative error),
  sum against N * RMS, L2 against the L2 norm. All of these are the reference's.
* A point diverges when some error exceeds ``atol * k + rtol * scale`` (``k`` = 1, N or sqrt(N)
  to keep ``atol`` a per-element tolerance), when the NaN or Inf counts differ, or when the
  shapes differ. argmin/argmax are reported, never judged: rounding reorders near-ties.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .dumpfile import Dump
from .stats import FLOAT_KEYS

# (rtol, atol) by dtype. float32: about 840 float32 epsilons (1.19e-7) of room for rounding
# error to grow through ~100 layers, normalisations and softmaxes, yet 100x below the 1e-2
# change that a 1 % weight error makes. float64: far above float64 rounding (4.5e6 eps) but an
# order of magnitude below one float32 rounding (6e-8), so a float32 step left inside a float64
# run is flagged. atol = rtol * 1e-8: it only acts on points whose magnitude is below 1e-8
# (the audio is in [-1, 1]), i.e. on numerically zero tensors, which would otherwise turn any
# rounding residue into an infinite relative error.
DEFAULT_TOLERANCES = {"float32": (1e-4, 1e-12), "float64": (1e-9, 1e-17)}

HEADER_IDENTITY_KEYS = ("model", "checkpoint_sha256", "input_sha256")


def default_tolerance(reference_dtype, ours_dtype) -> tuple[str, float, float]:
    """``(dtype_class, rtol, atol)``: float64 rules only when both sides ran in float64."""
    kind = "float64" if str(reference_dtype) == "float64" and str(ours_dtype) == "float64" else "float32"
    rtol, atol = DEFAULT_TOLERANCES[kind]
    return kind, rtol, atol


def _context_key(context) -> str:
    return json.dumps(context or {}, sort_keys=True)


def _point_label(name: str, context) -> str:
    if not context:
        return name
    return f"{name} [{' '.join(f'{k}={v}' for k, v in context.items())}]"


def _finite_count(record) -> int:
    return int(record["count"]) - int(record["nan"]) - int(record["inf"])


def _relative(diff: float, scale: float) -> float:
    if diff == 0:
        return 0.0
    if scale == 0 or not math.isfinite(scale):
        return math.inf
    return diff / scale


def _stat_error(ref_value, our_value, scale, k, rtol, atol):
    """``(relative error, diverged)`` of one statistic, or ``(None, False)`` when undefined on both sides."""
    if ref_value is None and our_value is None:
        return None, False
    if ref_value is None or our_value is None:
        return math.inf, True
    if not (math.isfinite(ref_value) and math.isfinite(our_value)):
        # an overflowed sum or L2 on both sides agrees only if it overflowed the same way
        same = ref_value == our_value or (math.isnan(ref_value) and math.isnan(our_value))
        return (0.0, False) if same else (math.inf, True)
    diff = abs(our_value - ref_value)
    return _relative(diff, scale), diff > atol * k + rtol * scale


def _tensor_errors(ref: np.ndarray, ours: np.ndarray, rtol: float, atol: float):
    a = np.asarray(ref, dtype=np.float64).reshape(-1)
    b = np.asarray(ours, dtype=np.float64).reshape(-1)
    reasons = []
    if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.array_equal(np.isinf(a), np.isinf(b)):
        reasons.append("tensor: NaN/Inf at different positions")
    both = np.isfinite(a) & np.isfinite(b)
    if not both.all():
        a, b = a[both], b[both]
    if a.size == 0:
        return {"max_abs_error": None, "rel_l2": None, "snr_db": None}, None, reasons
    delta = b - a
    max_abs = float(np.max(np.abs(delta)))
    amax = float(np.max(np.abs(a)))
    ref_norm = float(np.sqrt(np.dot(a, a)))
    err_norm = float(np.sqrt(np.dot(delta, delta)))
    rel_l2 = _relative(err_norm, ref_norm)
    if err_norm == 0:
        snr = math.inf
    elif ref_norm == 0:
        snr = -math.inf
    else:
        snr = 20 * math.log10(ref_norm / err_norm)
    if err_norm > math.sqrt(a.size) * atol + rtol * ref_norm:
        reasons.append("tensor: relative L2 error")
    if max_abs > atol + rtol * amax:
        reasons.append("tensor: max abs error")
    worst = max(rel_l2, _relative(max_abs, amax))
    return {"max_abs_error": max_abs, "rel_l2": rel_l2, "snr_db": snr}, worst, reasons


def _compare(ref_rec, our_rec, ref_tensor, our_tensor, rtol, atol) -> dict:
    reasons = []
    same_shape = list(ref_rec["shape"]) == list(our_rec["shape"])
    if not same_shape:
        reasons.append(f"shape {tuple(ref_rec['shape'])} vs {tuple(our_rec['shape'])}")
    for key in ("nan", "inf"):
        if ref_rec[key] != our_rec[key]:
            reasons.append(f"{key} count {ref_rec[key]} vs {our_rec[key]}")
    structural = bool(reasons)

    n = _finite_count(ref_rec)
    l2 = ref_rec["l2"]
    rms = l2 / math.sqrt(n) if l2 is not None and n > 0 and math.isfinite(l2) else None
    amax = (max(abs(ref_rec["min"]), abs(ref_rec["max"]))
            if ref_rec["min"] is not None and ref_rec["max"] is not None else None)
    scales = {"min": (amax, 1), "max": (amax, 1), "mean": (rms, 1), "std": (rms, 1),
              "sum": (None if rms is None else n * rms, n),
              "l2": (None if rms is None else math.sqrt(n) * rms, math.sqrt(n))}
    errors = {}
    for key in FLOAT_KEYS:
        scale, k = scales[key]
        error, diverged = _stat_error(ref_rec[key], our_rec[key], 0.0 if scale is None else scale, k,
                                      rtol, atol)
        errors[key] = error
        if diverged:
            reasons.append(key)

    tensor = None
    worst = max((e for e in errors.values() if e is not None), default=None)
    if ref_tensor is not None and our_tensor is not None and same_shape \
            and tuple(ref_tensor.shape) == tuple(our_tensor.shape):
        tensor, tensor_worst, tensor_reasons = _tensor_errors(ref_tensor, our_tensor, rtol, atol)
        reasons.extend(tensor_reasons)
        if tensor_worst is not None:
            worst = tensor_worst if worst is None else max(worst, tensor_worst)
    if structural:
        # a point with a structural difference has no meaningful finite error; plot it on top
        worst = math.inf

    return {
        "name": ref_rec["name"],
        "context": ref_rec["context"],
        "index_reference": ref_rec.get("index"),
        "index_ours": our_rec.get("index"),
        "shape_reference": list(ref_rec["shape"]),
        "shape_ours": list(our_rec["shape"]),
        "dtype_reference": ref_rec["dtype"],
        "dtype_ours": our_rec["dtype"],
        "rtol": rtol,
        "atol": atol,
        "scale_rms": rms,
        "scale_max_abs": amax,
        "errors": errors,
        "error": worst,
        "tensor": tensor,
        "nan_reference": ref_rec["nan"], "nan_ours": our_rec["nan"],
        "inf_reference": ref_rec["inf"], "inf_ours": our_rec["inf"],
        "argmin_reference": ref_rec["argmin"], "argmin_ours": our_rec["argmin"],
        "argmax_reference": ref_rec["argmax"], "argmax_ours": our_rec["argmax"],
        "argmin_equal": ref_rec["argmin"] == our_rec["argmin"],
        "argmax_equal": ref_rec["argmax"] == our_rec["argmax"],
        "status": "diverged" if reasons else "ok",
        "reasons": reasons,
    }


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class DiffResult:
    """The outcome of ``diff_dumps``; ``points`` are in the reference's forward order."""

    points: list = field(default_factory=list)
    first_divergence: str | None = None
    first_divergence_context: dict | None = None
    first_divergence_position: int | None = None
    only_reference: list = field(default_factory=list)
    only_ours: list = field(default_factory=list)
    header_mismatches: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every point present on both sides is within tolerance."""
        return self.first_divergence is None

    def to_dict(self) -> dict:
        return {
            "first_divergence": self.first_divergence,
            "first_divergence_context": self.first_divergence_context,
            "first_divergence_position": self.first_divergence_position,
            "points": self.points,
            "only_reference": self.only_reference,
            "only_ours": self.only_ours,
            "header_mismatches": self.header_mismatches,
            "notes": self.notes,
            "tolerance": self.tolerance,
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON; non-finite floats are the strings "inf", "-inf", "nan" as in dumps."""
        return json.dumps(_json_safe(self.to_dict()), indent=indent, allow_nan=False)


def _tolerance_for(name, rtol, atol, overrides):
    for pattern, (o_rtol, o_atol) in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return (rtol if o_rtol is None else o_rtol), (atol if o_atol is None else o_atol)
    return rtol, atol


def _header_checks(reference: Dump, ours: Dump) -> tuple[list, list]:
    mismatches, notes = [], []
    for key in HEADER_IDENTITY_KEYS:
        a, b = reference.header.get(key), ours.header.get(key)
        if a != b:
            mismatches.append(f"{key} differs: reference {a!r}, ours {b!r} "
                              f"({reference.path.name} vs {ours.path.name}); the comparison may be meaningless")
    if reference.header.get("dtype") != ours.header.get("dtype"):
        notes.append(f"dtype: reference {reference.header.get('dtype')}, ours {ours.header.get('dtype')}")
    return mismatches, notes


def diff_dumps(reference: Dump, ours: Dump, rtol: float | None = None, atol: float | None = None,
               overrides: Mapping[str, tuple[float | None, float | None]] | None = None) -> DiffResult:
    """Compare ``ours`` against ``reference``.

    ``rtol``/``atol`` replace the per-dtype defaults (``DEFAULT_TOLERANCES``, float32 rules
    unless both headers say float64); ``overrides`` maps name globs (fnmatch, case-sensitive)
    to ``(rtol, atol)`` for matching points, first matching pattern wins, None keeps the
    global value.
    """
    kind, default_rtol, default_atol = default_tolerance(reference.header.get("dtype"), ours.header.get("dtype"))
    rtol = default_rtol if rtol is None else float(rtol)
    atol = default_atol if atol is None else float(atol)
    mismatches, notes = _header_checks(reference, ours)
    result = DiffResult(header_mismatches=mismatches, notes=notes,
                        tolerance={"dtype": kind, "rtol": rtol, "atol": atol,
                                   "overrides": {k: list(v) for k, v in (overrides or {}).items()}})

    # (name, context, occurrence) -> position in ours
    available: dict[tuple, list[int]] = {}
    for j, rec in enumerate(ours.records):
        available.setdefault((rec["name"], _context_key(rec["context"])), []).append(j)
    used = [False] * len(ours.records)
    last_j, order_warned = -1, False

    for i, ref_rec in enumerate(reference.records):
        queue = available.get((ref_rec["name"], _context_key(ref_rec["context"])))
        if not queue:
            result.only_reference.append({"name": ref_rec["name"], "context": ref_rec["context"], "position": i})
            continue
        j = queue.pop(0)
        used[j] = True
        if j < last_j and not order_warned:
            notes.append(f"order differs: {_point_label(ref_rec['name'], ref_rec['context'])} comes earlier "
                         f"in ours than in the reference")
            order_warned = True
        last_j = max(last_j, j)
        p_rtol, p_atol = _tolerance_for(ref_rec["name"], rtol, atol, overrides)
        point = _compare(ref_rec, ours.records[j], reference.tensor(i), ours.tensor(j), p_rtol, p_atol)
        point["position_reference"], point["position_ours"] = i, j
        if point["status"] == "diverged" and result.first_divergence is None:
            point["status"] = "first_divergence"
            result.first_divergence = point["name"]
            result.first_divergence_context = point["context"]
            result.first_divergence_position = len(result.points)
        result.points.append(point)

    result.only_ours = [{"name": rec["name"], "context": rec["context"], "position": j}
                        for j, rec in enumerate(ours.records) if not used[j]]
    return result


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

    table = Table(title=f"layer-by-layer diff (rtol {result.tolerance.get('rtol'):g}, "
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
        table.add_row(str(position), escape(_point_label(p["name"], p["context"])), shape,
                      _fmt(max(stat_errors, default=None)), _fmt(tensor.get("rel_l2")),
                      _fmt(tensor.get("max_abs_error")), _fmt(tensor.get("snr_db"), 1, "f"),
                      f"{p['nan_ours']}/{p['inf_ours']}" if (p["nan_ours"] or p["inf_ours"]
                                                              or p["nan_reference"] or p["inf_reference"])
                      else "", escape(status), style=styles[p["status"]])
    console.print(table)
    for side, items in (("reference", result.only_reference), ("ours", result.only_ours)):
        if items:
            console.print(f"[bold yellow]{len(items)} point(s) only in {side}:[/bold yellow] "
                          + escape(", ".join(_point_label(x["name"], x["context"]) for x in items)), highlight=False)
    if result.first_divergence is None:
        console.print("[bold green]every common point within tolerance[/bold green]")
    else:
        p = result.points[result.first_divergence_position]
        console.print(f"[bold red]first divergence: {escape(_point_label(p['name'], p['context']))} "
                      f"({escape(', '.join(p['reasons']))})[/bold red]", highlight=False)


def _floor_values(result: DiffResult, floor) -> list:
    if isinstance(floor, DiffResult):
        by_key = {(p["name"], _context_key(p["context"])): p["error"] for p in floor.points}
        return [by_key.get((p["name"], _context_key(p["context"]))) for p in result.points]
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
    floor_vals = _floor_values(result, floor) if floor is not None else None
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
