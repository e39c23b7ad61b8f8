"""Stats-only diff judged against the per-point float32 rounding floor (diff.with_floor, FLOOR_FACTOR)."""
import copy
import json

import numpy as np
import pytest

from numba_demucs.debug.diff import FLOAT32_EPS, FLOOR_FACTOR, diff, floor_rtol, with_floor
from numba_demucs.debug.stats import tensor_stats
from numba_demucs.debug.traces import Trace, TraceError

HEADER = {"producer": "test", "model": "m", "checkpoint_sha256": "aa", "input_sha256": "bb",
          "dtype": "float32"}
NAMES = ["a", "b", "c", "d"]


def _exact():
    rng = np.random.default_rng(3)
    return [rng.standard_normal((4, 50)) + 1.0 for _ in NAMES]


def _trace(arrays, header=HEADER, dtype=np.float32):
    return Trace.from_arrays(dict(header, dtype=np.dtype(dtype).name),
                             [(n, {}, np.asarray(a, dtype=dtype)) for n, a in zip(NAMES, arrays)])


@pytest.fixture
def floored():
    """A float32 'reference' with its floor against the float64 one, as golden traces carry."""
    exact = _exact()
    return with_floor(_trace(exact), _trace(exact, dtype=np.float64))


def _shifted(trace, position, key, relative):
    """A copy of ``trace`` with statistic ``key`` of one record moved by ``relative`` x its scale."""
    records = copy.deepcopy(trace.records)
    r = records[position]
    n = r["count"]
    rms = r["l2"] / np.sqrt(n)
    scale = {"mean": rms, "std": rms, "sum": n * rms, "max": max(abs(r["min"]), abs(r["max"]))}[key]
    r[key] += relative * scale
    for record in records:
        record.pop("floor", None)
    return Trace(trace.header, records)


def test_floor_is_the_float32_against_float64_error_by_hand(floored):
    exact = _exact()
    for record, a in zip(floored.records, exact):
        a32 = a.astype(np.float32).astype(np.float64)
        rms = np.sqrt(np.mean(a ** 2))
        assert record["floor"]["mean"] == pytest.approx(abs(a32.mean() - a.mean()) / rms, rel=1e-6)
        assert record["floor"]["max"] == pytest.approx(abs(a32.max() - a.max()) / np.abs(a).max(),
                                                       rel=1e-6, abs=1e-20)
        # float32 storage alone: of the order of its epsilon, never more
        assert 0 < max(record["floor"].values()) < FLOAT32_EPS


def test_floor_survives_a_dump_round_trip(floored, tmp_path):
    floored.save(tmp_path / "g.jsonl")
    loaded = Trace.load(tmp_path / "g.jsonl")
    assert [r["floor"] for r in loaded.records] == [r["floor"] for r in floored.records]
    line = json.loads((tmp_path / "g.jsonl").read_text().splitlines()[1])
    assert set(line["floor"]) == {"min", "max", "mean", "std", "sum", "l2"}


def test_a_bad_floor_is_refused_naming_the_record():
    record = tensor_stats("x", np.ones(3))
    record["floor"] = {"median": 1.0}
    with pytest.raises(TraceError, match=r"record 0 \('x'\): floor"):
        Trace(HEADER, [record])


def test_per_point_tolerance_edges(floored):
    """A statistic just inside FLOOR_FACTOR x floor passes, just outside is named, at that point."""
    tol = floor_rtol(max(floored.records[2]["floor"].values()))
    assert tol == FLOOR_FACTOR * FLOAT32_EPS  # these floors are below one epsilon
    inside = diff(floored, _shifted(floored, 2, "mean", 0.9 * tol))
    assert inside.ok and inside.tolerance["floor_factor"] == FLOOR_FACTOR
    assert inside.points[2]["rtol"] == tol
    outside = diff(floored, _shifted(floored, 2, "mean", 1.1 * tol))
    assert outside.first_divergence == "c" and outside.points[2]["reasons"] == ["mean"]


def test_a_larger_floor_widens_only_its_point(floored):
    records = copy.deepcopy(floored.records)
    records[1]["floor"] = {"min": 1e-5, "max": 2e-5, "mean": None, "std": 0.0, "sum": 0.0, "l2": 0.0}
    wide = Trace(floored.header, records)
    assert diff(wide, _shifted(floored, 1, "max", 1e-3)).ok          # 1e-3 < 256 x 2e-5
    assert diff(wide, _shifted(floored, 2, "max", 1e-3)).first_divergence == "c"
    assert diff(wide, _shifted(floored, 1, "max", 1e-2)).first_divergence == "b"  # a 1 % error


def test_global_rtol_or_no_floor_keeps_the_old_rules(floored):
    shifted = _shifted(floored, 2, "mean", 5e-5)
    assert not diff(floored, shifted).ok                 # floor rules: 5e-5 > 256 eps
    assert diff(floored, shifted, use_floor=False).ok    # global 1e-4
    assert diff(floored, shifted, rtol=1e-4).ok
    assert diff(floored, shifted, rtol=1e-4).tolerance["floor_factor"] is None


def test_printed_digits_widen_the_tolerance(floored):
    """A printout with 4 significant digits may be off by half a unit in its 4th digit."""
    records = copy.deepcopy(floored.records)
    for r in records:
        r.pop("floor")
        for key in ("min", "max", "mean", "std", "sum", "l2"):
            r[key] = float(f"{r[key]:.4g}")
    printed = Trace(dict(floored.header, stat_digits=4), records)
    assert diff(floored, printed).ok
    assert not diff(floored, Trace(floored.header, records)).ok  # the same values taken as exact
    assert diff(floored, _shifted(printed, 3, "mean", 1e-2)).first_divergence == "d"


def _reshaped(record, shape, **changes):
    """``record`` as a port that keeps the tensor in ``shape`` would write it: the same
    values, so the arg-indices are the same flat positions in the new shape."""
    moved = dict(record, shape=list(shape), **changes)
    for key in ("argmin_index", "argmax_index"):
        flat = np.ravel_multi_index(tuple(record[key]), tuple(record["shape"]))
        moved[key] = [int(i) for i in np.unravel_index(flat, tuple(shape))]
    return moved


def test_one_sided_points_are_listed_and_a_shape_mismatch_is_named(floored):
    records = copy.deepcopy(floored.records)
    for r in records:
        r.pop("floor")
    records[1] = _reshaped(records[1], (2, 100))
    theirs = Trace(floored.header, records[:3] + [dict(records[3], name="extra")])
    result = diff(floored, theirs)
    assert result.first_divergence == "b"
    assert result.points[1]["reasons"][0] == "shape (4, 50) vs (2, 100)"
    assert [p["name"] for p in result.only_reference] == ["d"]
    assert [p["name"] for p in result.only_ours] == ["extra"]


def test_unknown_hashes_are_a_note_not_a_mismatch(floored):
    theirs = Trace(dict(HEADER, checkpoint_sha256=None, input_sha256=None), floored.records)
    result = diff(floored, theirs)
    assert result.header_mismatches == []
    assert any("checkpoint_sha256 unknown" in note for note in result.notes)


def test_floor_table_and_plot_show_error_floor_and_tolerance(floored, tmp_path):
    import io

    from rich.console import Console

    from numba_demucs.debug.render import plot, render_floor_table, render_table

    result = diff(floored, _shifted(floored, 2, "mean", 1e-2))
    out = io.StringIO()
    console = Console(file=out, width=200)
    render_floor_table(result, console)
    render_table(result, console)
    text = out.getvalue()
    assert "FIRST DIVERGENCE: mean" in text and f"{FLOOR_FACTOR:g} x float32 floor" in text
    row = next(line for line in text.splitlines() if "FIRST DIVERGENCE" in line)
    # error 1e-2 against a tolerance of 256 eps
    assert f"{1e-2 / (FLOOR_FACTOR * FLOAT32_EPS):.2f}" in row
    plot(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_a_permuted_layout_is_reported_not_judged(floored):
    """Statistics do not depend on the order of the axes: a port (or an exporter) keeping a
    tensor transposed is told apart from a wrong shape."""
    records = copy.deepcopy(floored.records)
    for r in records:
        r.pop("floor")
    records[1] = _reshaped(records[1], (50, 4))
    result = diff(floored, Trace(floored.header, records))
    assert result.ok and result.points[1]["layout"] == "layout (4, 50) vs (50, 4)"
    records[2] = _reshaped(records[2], (50, 4), mean=records[2]["mean"] * 1.01)
    result = diff(floored, Trace(floored.header, records))
    assert result.first_divergence == "c" and result.points[2]["reasons"] == ["mean"]
