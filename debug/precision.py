"""Precision map: what rounding one layer's output to float16 or bfloat16 costs end to end.

For each trace point in turn, one float32 forward pass of one model segment runs with that
point's output (and only it) rounded to the lower precision and back to float32; the output
is compared with the same pass unrounded (SNR per source). Every pass, the unrounded one
included, runs under a trace capture, so the layers take the same code path and the only
difference is the rounding.

The greedy list lowers the cheapest points first while the predicted SNR stays at or above
the asked one: rounding errors of different layers are independent, so their error powers
add (the predicted noise-to-signal ratio of a set is the sum of its points'). A final pass
with the whole list rounded checks the prediction; while it falls short, the costliest point
of the list is dropped and the check runs again.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numba_demucs import trace
from numba_demucs.errors import NumbaDemucsError

from .stats import snr_db

DTYPES = ("float16", "bfloat16")


def to_bfloat16(array: np.ndarray) -> np.ndarray:
    """float32 ``array`` rounded to bfloat16 (8 significant bits, round to nearest, ties to even),
    returned as float32. NaN and Inf are kept."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    # adding 0x7FFF plus the kept part's lowest bit, then truncating, rounds half to even
    rounded = ((bits.astype(np.uint64) + 0x7FFF + lsb) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isfinite(array), out, array).astype(np.float32)


def lower(array: np.ndarray, dtype: str) -> np.ndarray | None:
    """``array`` (float32 or complex64) rounded to ``dtype`` and back; None for other dtypes."""
    array = np.asarray(array)
    if array.dtype == np.complex64:
        parts = np.ascontiguousarray(array).view(np.float32)
        return lower(parts, dtype).view(np.complex64).reshape(array.shape)
    if array.dtype != np.float32:
        return None
    if dtype == "float16":
        with np.errstate(over="ignore"):  # beyond 65504 float16 is Inf: that is what it costs
            return np.ascontiguousarray(array.astype(np.float16).astype(np.float32))
    if dtype == "bfloat16":
        return to_bfloat16(array)
    raise NumbaDemucsError(f"--dtype {dtype}: one of {', '.join(DTYPES)}")


def run_rounded(model, batch, positions=(), dtype="float16"):
    """``(output, names)``: one forward pass with the points at call ``positions`` (0-based, in
    forward order) rounded to ``dtype``; ``names`` lists every point reached, with its dtype."""
    positions = set(positions)
    names = []

    def replace(name, context, array):
        names.append((name, np.asarray(array).dtype))
        if len(names) - 1 in positions:
            return lower(array, dtype)
        return None

    with trace.capture(record=lambda *a: None, replace=replace):
        output = model(batch)[0]
    return np.asarray(output, dtype=np.float64), names


def sdr_cost(snr, sdr=10.0):
    """SDR lost (dB) when noise at ``snr`` dB below the output joins an estimate whose SDR is
    ``sdr``: the distortion power grows from 10^(-sdr/10) to 10^(-sdr/10) + 10^(-snr/10)."""
    snr = np.asarray(snr, dtype=np.float64)
    return 10 * np.log10(1 + 10 ** ((sdr - snr) / 10))


@dataclass
class PrecisionMap:
    dtype: str
    sources: list
    rows: list  # {"position", "name", "snr_db" (per source), "cost"}; cost = worst source's NSR
    min_snr: float
    greedy: list = field(default_factory=list)  # positions lowered together
    predicted_snr: float | None = None
    final_snr: np.ndarray | None = None
    checks: int = 0

    def sorted_rows(self):
        return sorted(self.rows, key=lambda r: (-r["cost"], r["position"]))


def precision_map(checkpoint, mix, dtype="float16", min_snr=60.0,
                  only: str | list[str] | None = None) -> PrecisionMap:
    """The precision map of the model in ``checkpoint`` on one segment of ``mix``.

    ``only`` (an fnmatch glob on point names, or a list of them: a point matching any one)
    restricts the points tried.
    """
    from numba_demucs.loading import load_model

    from .collect import segment_of

    globs = [only] if isinstance(only, str) else list(only or [])
    if dtype not in DTYPES:
        raise NumbaDemucsError(f"--dtype {dtype}: one of {', '.join(DTYPES)}")
    model = load_model(Path(checkpoint), dtype="float32")
    batch = np.asarray(segment_of(mix, model, True), dtype=np.float32)[None]
    baseline, names = run_rounded(model, batch)
    rows = []
    for position, (name, kind) in enumerate(names):
        if kind not in (np.float32, np.complex64) or (
                globs and not any(fnmatch.fnmatchcase(name, glob) for glob in globs)):
            continue
        output, _ = run_rounded(model, batch, [position], dtype)
        snr = snr_db(baseline, output)
        nsr = 10 ** (-snr / 10)
        rows.append({"position": position, "name": name, "snr_db": snr,
                     "nsr": nsr, "cost": float(np.max(nsr))})
    if not rows:
        raise NumbaDemucsError(f"no float32 trace point matches {' or '.join(globs)}")
    result = PrecisionMap(dtype, list(model.sources), rows, float(min_snr))

    # greedy: cheapest first while the predicted worst-source SNR stays >= min_snr
    chosen, total = [], np.zeros(len(model.sources))
    limit = 10 ** (-min_snr / 10)
    for row in sorted(rows, key=lambda r: (r["cost"], r["position"])):
        if np.all(np.isfinite(row["nsr"])) and np.max(total + row["nsr"]) <= limit:
            chosen.append(row)
            total = total + row["nsr"]
    while True:
        output, _ = run_rounded(model, batch, [r["position"] for r in chosen], dtype)
        result.checks += 1
        final = snr_db(baseline, output) if chosen else np.full(len(model.sources), np.inf)
        if np.min(final) >= min_snr or not chosen:
            break
        chosen.pop()  # the costliest of the list
        total = sum((r["nsr"] for r in chosen), np.zeros(len(model.sources)))
    result.greedy = sorted(r["position"] for r in chosen)
    with np.errstate(divide="ignore"):
        result.predicted_snr = float(-10 * np.log10(np.max(total))) if chosen else math.inf
    result.final_snr = final
    return result


def plot_map(result: PrecisionMap, path, top: int = 40) -> None:
    """Bars of the worst-source SNR of the ``top`` costliest points, costliest on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result.sorted_rows()[:top]
    figure = Figure(figsize=(9, 2 + 0.22 * len(rows)))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    worst = [float(np.min(r["snr_db"])) for r in rows]
    ax.barh(range(len(rows)), [w if math.isfinite(w) else 0 for w in worst], color="tab:red")
    ax.set_yticks(range(len(rows)), [f"{r['name']} #{r['position']}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(result.min_snr, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"end-to-end SNR (dB, worst source) with this point in {result.dtype}")
    figure.tight_layout()
    figure.savefig(path)
