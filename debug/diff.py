"""Compare two traces point by point and name the first point where they part ways.

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
* When the reference's records carry a ``floor`` (the relative error PyTorch float32 makes
  at that point against PyTorch float64, ``with_floor``) and no global rtol is forced, each
  point gets its own rtol, ``FLOOR_FACTOR * max(floor, FLOAT32_EPS)``: statistics alone are
  then judged against what float32 rounding does at that very point. A side whose statistics
  were printed with few digits (header ``stat_digits``) adds half a unit in the last printed
  digit of each value to the tolerance.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .stats import FLOAT_KEYS
from .traces import Trace, context_key

# (rtol, atol) by dtype. float32: about 840 float32 epsilons (1.19e-7) of room for rounding
# error to grow through ~100 layers, normalisations and softmaxes, yet 100x below the 1e-2
# change that a 1 % weight error makes. float64: far above float64 rounding (4.5e6 eps) but an
# order of magnitude below one float32 rounding (6e-8), so a float32 step left inside a float64
# run is flagged. atol = rtol * 1e-8: it only acts on points whose magnitude is below 1e-8
# (the audio is in [-1, 1]), i.e. on numerically zero tensors, which would otherwise turn any
# rounding residue into an infinite relative error.
DEFAULT_TOLERANCES = {"float32": (1e-4, 1e-12), "float64": (1e-9, 1e-17)}

HEADER_IDENTITY_KEYS = ("model", "checkpoint_sha256", "input_sha256")

# Per-point tolerance from the float32 rounding floor. Measured on htdemucs (random perturbed
# weights, one segment, float32), the larger of the point's floor and one float32 epsilon as
# the unit: our port against PyTorch used at most 12.4 of it at full width (8.5 at the tests'
# toy width); ONNX Runtime running the exported core, 76 (a one-group GroupNorm over a whole
# time-branch tensor; 18 elsewhere). 256 leaves a correct float32 implementation 3x room
# beyond that, while a 1 % error in one layer (1e-2) stays 8x above the largest tolerance
# (256 x the largest floor, 4.8e-6) and 300x above the typical one (256 x 1.2e-7).
FLOOR_FACTOR = 256.0
FLOAT32_EPS = float(np.finfo(np.float32).eps)

# Band rule (``bands``): a point diverges when its statistic error exceeds band mean + K * std.
# With K = 8 runs, (error - mean) / (std * sqrt(1 + 1/8)) of a further rounding-only sample is
# Student-t with 7 degrees of freedom: P(t > 5) ~ 0.1 %, so a correct float32 run is flagged at
# about one point in a thousand. Measured on htdemucs (toy width, K = 8): PyTorch float32
# against float64 reaches at most mean + 3.3 std, and a 1.001 scaling of one layer sits
# thousands of std above its band (docs/debugging.md, "Noise bands").
BAND_K = 5.0
# The least tolerance a band gives, in float32 epsilons: min and max are single elements whose
# error is their last few roundings, which 8 runs resolve poorly (our own plain float32 run
# measured 3.5 eps at one max, over a band of mean + 5 std = 3.2 eps). 8 eps (9.5e-7) stays
# 10x below a 1e-5 relative error and 1000x below a 1.001 scaling.
BAND_MIN_EPS = 8.0


def default_tolerance(reference_dtype, ours_dtype) -> tuple[str, float, float]:
    """``(dtype_class, rtol, atol)``: float64 rules only when both sides ran in float64."""
    kind = "float64" if str(reference_dtype) == "float64" and str(ours_dtype) == "float64" else "float32"
    rtol, atol = DEFAULT_TOLERANCES[kind]
    return kind, rtol, atol


def point_label(name: str, context) -> str:
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


def _stat_error(ref_value, our_value, scale, k, rtol, atol, digits=(None, None)):
    """``(relative error, diverged)`` of one statistic, or ``(None, False)`` when undefined on both sides.

    ``digits`` (reference, ours): significant digits a side's values were printed with, or
    None for full precision; each printed value may be off by half a unit in its last digit.
    """
    if ref_value is None and our_value is None:
        return None, False
    if ref_value is None or our_value is None:
        return math.inf, True
    if not (math.isfinite(ref_value) and math.isfinite(our_value)):
        # an overflowed sum or L2 on both sides agrees only if it overflowed the same way
        same = ref_value == our_value or (math.isnan(ref_value) and math.isnan(our_value))
        return (0.0, False) if same else (math.inf, True)
    diff = abs(our_value - ref_value)
    printed = sum(0.5 * 10.0 ** (1 - d) * abs(v) for d, v in zip(digits, (ref_value, our_value)) if d)
    return _relative(diff, scale), diff > atol * k + rtol * scale + printed


def point_floor(record) -> float | None:
    """The float32 rounding floor of a record: the largest of its ``floor`` statistics, or None."""
    floor = record.get("floor")
    if not floor:
        return None
    values = [v for v in floor.values() if v is not None]
    return max(values, default=None)


def floor_rtol(floor: float) -> float:
    """The per-point rtol of a point whose float32 rounding floor is ``floor``."""
    return FLOOR_FACTOR * max(floor if math.isfinite(floor) else 0.0, FLOAT32_EPS)


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


def _compare(ref_rec, our_rec, ref_tensor, our_tensor, rtol, atol, digits=(None, None)) -> dict:
    reasons = []
    same_shape = list(ref_rec["shape"]) == list(our_rec["shape"])
    layout = None
    if not same_shape:
        if sorted(ref_rec["shape"]) == sorted(our_rec["shape"]):
            # The same axes in another order: a port's memory layout (channels-last, an
            # exporter that dropped a pair of transposes). Every statistic is invariant under
            # a permutation, so they are compared as they are; the layout is reported, not judged.
            layout = f"layout {tuple(ref_rec['shape'])} vs {tuple(our_rec['shape'])}"
        else:
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
                                      rtol, atol, digits)
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
        "floor": point_floor(ref_rec),
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
        "layout": layout,
    }


def _band_compare(ref_rec, our_rec, band, k, atol, digits) -> dict:
    """``_compare`` judged by a noise band: statistics only, tolerance ``band_tolerance``."""
    tolerance = band_tolerance(band, k)
    point = _compare(ref_rec, our_rec, None, None, math.inf, 0.0, digits)
    # keep the structural reasons (shape, NaN/Inf counts); the statistics are judged here
    reasons = [r for r in point["reasons"] if r not in FLOAT_KEYS]
    values = [v for v in point["errors"].values() if v is not None]
    error = max(values, default=None)
    printed = _printed_relative(ref_rec, our_rec, digits)
    if error is not None and error > tolerance + printed:
        reasons.append(f"band: error {error:.3g} > mean + {k:g} std = {tolerance:.3g}")
    point.update(reasons=reasons, status="diverged" if reasons else "ok", rtol=tolerance, atol=atol,
                 band=dict(band, k=float(k), tolerance=tolerance))
    return point


def _printed_relative(ref_rec, our_rec, digits) -> float:
    """Half a unit in the last printed digit of each printed side, as a relative error: every
    statistic's |value| is at most its scale (``_compare``), so this bounds the printing error."""
    return sum(0.5 * 10.0 ** (1 - d) for d in digits if d)


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
    """The outcome of ``diff``; ``points`` are in the reference's forward order."""

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


def _digits(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"stat_digits must be a positive integer or null, got {value!r}")
    return value


def with_floor(trace32: Trace, trace64: Trace) -> Trace:
    """``trace32`` with a ``floor`` on each record: its statistics' relative errors against
    ``trace64`` (PyTorch float64 on the same weights and input), as ``diff`` measures them.

    Records without a float64 counterpart get no floor. Tensors are kept.
    """
    rounding = diff(trace64, trace32, use_floor=False)
    # a non-finite floor (a statistic undefined on one side) says nothing about rounding
    floors = {p["position_ours"]: {k: (v if v is not None and math.isfinite(v) else None)
                                   for k, v in p["errors"].items()} for p in rounding.points}
    records = []
    for j, record in enumerate(trace32.records):
        record = dict(record)
        if j in floors:
            record["floor"] = floors[j]
        records.append(record)
    tensors = {j: trace32.tensor(j) for j in range(len(records))} if trace32.has_tensors else None
    return Trace(trace32.header, records, tensors, output=trace32.output, origin=trace32.origin)


def band_tolerance(band, k: float = BAND_K) -> float:
    """The largest statistic error a point with ``band`` may have: mean + k * std, and never
    below ``BAND_MIN_EPS`` float32 epsilons."""
    return max(band["mean"] + k * band["std"], BAND_MIN_EPS * FLOAT32_EPS)


def band_lookup(reference: Trace, bands: Trace) -> dict[int, dict]:
    """Reference record position -> the band of the same point (name, context, occurrence)."""
    found: dict[tuple, list] = {}
    for rec in bands.records:
        if rec.get("band"):
            found.setdefault((rec["name"], context_key(rec["context"])), []).append(rec["band"])
    seen: dict[tuple, int] = {}
    lookup = {}
    for i, rec in enumerate(reference.records):
        key = (rec["name"], context_key(rec["context"]))
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n < len(found.get(key, ())):
            lookup[i] = found[key][n]
    return lookup


def _tolerance_for(name, rtol, atol, overrides):
    for pattern, (o_rtol, o_atol) in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return (rtol if o_rtol is None else o_rtol), (atol if o_atol is None else o_atol)
    return rtol, atol


def _header_checks(reference: Trace, ours: Trace) -> tuple[list, list]:
    mismatches, notes = [], []
    # loaded traces name their files, as the user gave them
    files = (f" ({Path(reference.origin).name} vs {Path(ours.origin).name})"
             if reference.origin and ours.origin else "")
    for key in HEADER_IDENTITY_KEYS:
        a, b = reference.header.get(key), ours.header.get(key)
        if (a is None) != (b is None):
            # a port that does not know its checkpoint or input hash cannot contradict ours
            notes.append(f"{key} unknown on the {'reference' if a is None else 'other'} side")
        elif a != b:
            mismatches.append(f"{key} differs: reference {a!r}, ours {b!r}{files}; "
                              "the comparison may be meaningless")
    if reference.header.get("dtype") != ours.header.get("dtype"):
        notes.append(f"dtype: reference {reference.header.get('dtype')}, ours {ours.header.get('dtype')}")
    return mismatches, notes


def diff(reference: Trace, ours: Trace, rtol: float | None = None, atol: float | None = None,
         overrides: Mapping[str, tuple[float | None, float | None]] | None = None,
         use_floor: bool = True, bands: Trace | None = None, k: float = BAND_K) -> DiffResult:
    """Compare the trace ``ours`` against the trace ``reference``.

    Tensors enter the comparison for the points where both traces hold them.

    When the reference's records carry a ``floor`` (``with_floor``), ``use_floor`` is true,
    no ``rtol`` is given and the float32 rules apply, each point with a floor is judged with
    ``floor_rtol(its floor)`` instead of the global rtol (overrides still win). A header's
    ``stat_digits`` (a printout imported from text) widens every statistic's tolerance by half a
    unit in the last printed digit.

    ``bands`` (a trace written by ``noise.measure_bands``) replaces the statistic tolerances
    of every point it has a band for: the point diverges when its largest statistic error
    exceeds ``band_tolerance(band, k)`` (shapes and NaN/Inf counts are judged as always;
    tensors are not judged, the band measures statistics). Points without a band keep the
    rules above.

    ``rtol``/``atol`` replace the per-dtype defaults (``DEFAULT_TOLERANCES``, float32 rules
    unless both headers say float64); ``overrides`` maps name globs (fnmatch, case-sensitive)
    to ``(rtol, atol)`` for matching points, first matching pattern wins, None keeps the
    global value.
    """
    for side, value in (("reference", reference), ("ours", ours)):
        if not isinstance(value, Trace):
            raise TypeError(f"diff: {side} is a {type(value).__name__}, not a Trace "
                            "(Trace.load(path) reads a dump)")
    kind, default_rtol, default_atol = default_tolerance(reference.header.get("dtype"), ours.header.get("dtype"))
    floored = (use_floor and rtol is None and kind == "float32"
               and any(r.get("floor") for r in reference.records))
    rtol = default_rtol if rtol is None else float(rtol)
    atol = default_atol if atol is None else float(atol)
    mismatches, notes = _header_checks(reference, ours)
    result = DiffResult(header_mismatches=mismatches, notes=notes,
                        tolerance={"dtype": kind, "rtol": rtol, "atol": atol,
                                   "overrides": {k: list(v) for k, v in (overrides or {}).items()},
                                   "floor_factor": FLOOR_FACTOR if floored else None,
                                   "band_k": float(k) if bands is not None else None})
    banded = band_lookup(reference, bands) if bands is not None else {}
    for key in ("checkpoint_sha256", "input_sha256") if bands is not None else ():
        a, b = reference.header.get(key), bands.header.get(key)
        if a is not None and b is not None and a != b:
            mismatches.append(f"{key} differs: reference {a!r}, bands {b!r}; the bands were "
                              "measured on other weights or another input")
    if bands is not None and not banded:
        notes.append("no point of the reference has a band in the bands trace (names differ?)")
    digits = tuple(_digits(side.header.get("stat_digits")) for side in (reference, ours))

    # (name, context, occurrence) -> position in ours
    available: dict[tuple, list[int]] = {}
    for j, rec in enumerate(ours.records):
        available.setdefault((rec["name"], context_key(rec["context"])), []).append(j)
    used = [False] * len(ours.records)
    last_j, order_warned = -1, False

    for i, ref_rec in enumerate(reference.records):
        queue = available.get((ref_rec["name"], context_key(ref_rec["context"])))
        if not queue:
            result.only_reference.append({"name": ref_rec["name"], "context": ref_rec["context"], "position": i})
            continue
        j = queue.pop(0)
        used[j] = True
        if j < last_j and not order_warned:
            notes.append(f"order differs: {point_label(ref_rec['name'], ref_rec['context'])} comes earlier "
                         f"in ours than in the reference")
            order_warned = True
        last_j = max(last_j, j)
        floor = point_floor(ref_rec) if floored else None
        p_rtol, p_atol = _tolerance_for(ref_rec["name"], rtol if floor is None else floor_rtol(floor),
                                        atol, overrides)
        band = banded.get(i)
        if band is None:
            point = _compare(ref_rec, ours.records[j], reference.tensor(i), ours.tensor(j), p_rtol,
                             p_atol, digits)
            point["band"] = None
        else:
            point = _band_compare(ref_rec, ours.records[j], band, k, atol, digits)
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
