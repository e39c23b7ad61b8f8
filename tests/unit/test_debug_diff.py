"""Layer-by-layer diff: matching, tolerances, structural mismatches, outputs."""
import copy
import io
import json
import math

import numpy as np
import pytest
from rich.console import Console

from numba_demucs.debug.diff import DEFAULT_TOLERANCES, diff
from numba_demucs.debug.render import draw_errors, plot, points_frame, render_table
from numba_demucs.debug.stats import tensor_stats
from numba_demucs.debug.traces import Trace

HEADER = {"format": "numba-demucs-dump", "version": 1, "producer": "test", "model": "htdemucs",
          "checkpoint_sha256": "aa", "input_sha256": "bb", "dtype": "float32", "std": "population"}
NAMES = ["input.mix", "encoder.0", "encoder.1", "crosstransformer.layers.0", "decoder.0"]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    # non-zero means so a 1 % change of the mean is well above rtol against the RMS
    return [rng.standard_normal((2, 3, 5)) + 2.0 for _ in NAMES]


def _trace(records, header=HEADER, tensors=None):
    return Trace(header, copy.deepcopy(records), tensors)


def _records(arrays=None, names=NAMES, context=None):
    arrays = _arrays() if arrays is None else arrays
    return [tensor_stats(n, a, context, i) for i, (n, a) in enumerate(zip(names, arrays))]


def _scaled(record, factor):
    r = dict(record)
    for key in ("min", "max", "mean", "std", "sum", "l2"):
        r[key] *= factor
    return r


def test_identical_dumps_have_no_divergence():
    result = diff(_trace(_records()), _trace(_records()))
    assert result.ok and result.first_divergence is None
    assert [p["name"] for p in result.points] == NAMES
    assert all(p["status"] == "ok" and p["error"] == 0.0 for p in result.points)
    assert result.only_reference == [] and result.only_ours == [] and result.header_mismatches == []
    assert result.tolerance["rtol"] == DEFAULT_TOLERANCES["float32"][0]


def test_one_percent_change_in_the_middle_is_the_first_divergence():
    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    result = diff(_trace(_records()), _trace(ours))
    assert result.first_divergence == "encoder.1" and result.first_divergence_position == 2
    assert [p["status"] for p in result.points] == ["ok", "ok", "first_divergence", "ok", "ok"]
    assert not result.ok
    # the mean moved by 1 % of itself; its error is reported against the RMS (sqrt(mean^2+std^2))
    p = result.points[2]
    rec = _records()[2]
    rms = math.sqrt(rec["mean"] ** 2 + rec["std"] ** 2)
    assert p["errors"]["mean"] == pytest.approx(0.01 * abs(rec["mean"]) / rms, rel=1e-9)
    assert p["errors"]["l2"] == pytest.approx(0.01, rel=1e-9)
    assert {"mean", "std", "l2", "sum"} <= set(p["reasons"])


def test_later_divergences_do_not_move_the_first():
    ours = _records()
    ours[1] = _scaled(ours[1], 1.01)
    ours[4] = _scaled(ours[4], 1.5)
    result = diff(_trace(_records()), _trace(ours))
    assert result.first_divergence == "encoder.0"
    assert [p["status"] for p in result.points] == ["ok", "first_divergence", "ok", "ok", "diverged"]


def _alternating(mean_shift=0.0, sum_shift=0.0, std=1.0):
    # reference [1, -1, 1, -1]: mean 0, std 1, RMS 1, L2 2, sum 0, max |value| 1
    r = tensor_stats("x", np.array([1.0, -1.0, 1.0, -1.0]))
    r["mean"] += mean_shift
    r["sum"] += sum_shift
    r["std"] = std
    return r


@pytest.mark.parametrize("shift,diverges", [(0.9e-4, False), (1.1e-4, True)])
def test_mean_tolerance_edge_against_rms(shift, diverges):
    # rtol 1e-4 times RMS 1: a shift of the (zero) mean by 0.9e-4 passes, 1.1e-4 does not
    result = diff(_trace([_alternating()]), _trace([_alternating(mean_shift=shift)]), rtol=1e-4, atol=0.0)
    assert (result.first_divergence == "x") is diverges
    assert result.points[0]["errors"]["mean"] == pytest.approx(shift, rel=1e-9)  # finite, not inf


@pytest.mark.parametrize("shift,diverges", [(3.9e-4, False), (4.1e-4, True)])
def test_sum_tolerance_scales_with_count(shift, diverges):
    # sum is measured against N * RMS = 4
    result = diff(_trace([_alternating()]), _trace([_alternating(sum_shift=shift)]), rtol=1e-4, atol=0.0)
    assert (result.first_divergence == "x") is diverges
    assert result.points[0]["errors"]["sum"] == pytest.approx(shift / 4, rel=1e-9)


@pytest.mark.parametrize("mean,l2,diverges", [(0.9e-12, 0.0, False), (1.1e-12, 0.0, True),
                                              (0.0, 1.9e-12, False), (0.0, 2.1e-12, True)])
def test_atol_decides_for_an_all_zero_reference(mean, l2, diverges):
    # a zero tensor has scale 0, so only the float32 atol (1e-12 per element) applies;
    # L2 over N = 4 elements gets sqrt(4) * atol = 2e-12
    zero = tensor_stats("z", np.zeros(4, dtype=np.float32))
    ours = dict(zero, mean=mean, l2=l2)
    result = diff(_trace([zero]), _trace([ours]))
    assert result.tolerance["atol"] == 1e-12
    assert (result.first_divergence == "z") is diverges
    # any nonzero difference against a zero scale is an infinite *relative* error
    assert result.points[0]["error"] == math.inf


def test_float64_defaults_and_overrides():
    ref = _records()
    ours = _records()
    ours[2] = _scaled(ours[2], 1 + 1e-7)          # float32-sized rounding
    h64 = dict(HEADER, dtype="float64")
    assert diff(_trace(ref), _trace(ours)).ok                       # fine under float32 rules
    strict = diff(_trace(ref, h64), _trace(ours, h64))
    assert strict.tolerance["rtol"] == 1e-9 and strict.first_divergence == "encoder.1"
    # float32 rules as soon as one side ran in float32
    assert diff(_trace(ref, h64), _trace(ours)).tolerance["dtype"] == "float32"
    ours[2] = _scaled(_records()[2], 1.01)
    assert diff(_trace(ref), _trace(ours), overrides={"encoder.*": (0.1, None)}).ok
    assert not diff(_trace(ref), _trace(ours), overrides={"decoder.*": (0.1, None)}).ok


def _reshaped(record, shape):
    """The record tensor_stats makes of the same values in another shape."""
    return dict(record, shape=list(shape), **{
        f"{key}_index": [int(i) for i in np.unravel_index(record[key], shape)]
        for key in ("argmin", "argmax")})


def test_shape_mismatch():
    ours = _records()
    ours[3] = _reshaped(ours[3], (2, 15))
    result = diff(_trace(_records()), _trace(ours))
    assert result.first_divergence == "crosstransformer.layers.0"
    p = result.points[3]
    assert p["reasons"][0].startswith("shape (2, 3, 5) vs (2, 15)") and p["error"] == math.inf


def test_nan_count_change_is_reported():
    arrays = _arrays()
    ref = _records(arrays)
    arrays[1][0, 0, 0] = np.nan   # the other stats barely move, the count does
    result = diff(_trace(ref), _trace(_records(arrays)))
    assert result.first_divergence == "encoder.0"
    assert "nan count 0 vs 1" in result.points[1]["reasons"]
    assert result.points[1]["nan_ours"] == 1


def test_argmin_argmax_are_reported_not_judged():
    ours = _records()
    ours[0] = dict(ours[0], argmin=ours[0]["argmin"] + 1, argmax=ours[0]["argmax"] + 1)
    result = diff(_trace(_records()), _trace(ours))
    assert result.ok
    assert result.points[0]["argmin_equal"] is False and result.points[0]["argmax_equal"] is False


def test_points_on_one_side_only_and_context_matching():
    seg = [dict(r, context={"segment": s}) for s in (0, 1) for r in _records()[:2]]
    ours = [r for r in seg if not (r["name"] == "encoder.0" and r["context"] == {"segment": 1})]
    ours.append(dict(_records()[4], name="extra.point", context={"segment": 1}))
    ours.reverse()   # matched by (name, context), not by position
    result = diff(_trace(seg), _trace(ours))
    assert result.only_reference == [{"name": "encoder.0", "context": {"segment": 1}, "position": 3}]
    assert [(x["name"], x["context"]) for x in result.only_ours] == [("extra.point", {"segment": 1})]
    assert result.ok and len(result.points) == 3
    assert any("order differs" in n for n in result.notes)
    # a change under segment 1 is reported with its context
    changed = copy.deepcopy(seg)
    changed[2] = _scaled(changed[2], 1.01)
    result = diff(_trace(seg), _trace(changed))
    assert result.first_divergence == "input.mix" and result.first_divergence_context == {"segment": 1}


def test_header_mismatch_warns_and_still_diffs():
    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    result = diff(_trace(_records()), _trace(ours, dict(HEADER, input_sha256="cc", model="htdemucs_6s")))
    assert len(result.header_mismatches) == 2
    assert any("input_sha256" in m and "'bb'" in m and "'cc'" in m for m in result.header_mismatches)
    assert any("model" in m for m in result.header_mismatches)
    assert result.first_divergence == "encoder.1"


def test_json_output_structure():
    ours = _records()
    ours[2] = dict(ours[2], nan=3)
    result = diff(_trace(_records()), _trace(ours, dict(HEADER, checkpoint_sha256="zz")))
    doc = json.loads(result.to_json(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert {"first_divergence", "points", "only_reference", "only_ours", "header_mismatches"} <= set(doc)
    assert doc["first_divergence"] == "encoder.1"
    assert [p["name"] for p in doc["points"]] == NAMES
    assert doc["points"][2]["error"] == "inf" and doc["points"][2]["status"] == "first_divergence"
    assert doc["header_mismatches"][0].startswith("checkpoint_sha256 differs")
    assert json.loads(diff(_trace(_records()), _trace(_records())).to_json())["first_divergence"] is None


def test_tensor_errors_by_hand():
    # reference [3, 4] (norm 5), ours [3, 4.05]: max abs 0.05, rel L2 0.05/5 = 1e-2, SNR 40 dB
    ref_a, ours_a = np.array([3.0, 4.0]), np.array([3.0, 4.05])
    result = diff(_trace([tensor_stats("t", ref_a)], tensors=[ref_a]),
                  _trace([tensor_stats("t", ours_a)], tensors=[ours_a]))
    t = result.points[0]["tensor"]
    assert t["max_abs_error"] == pytest.approx(0.05, rel=1e-9)
    assert t["rel_l2"] == pytest.approx(1e-2, rel=1e-9)
    assert t["snr_db"] == pytest.approx(40.0, rel=1e-9)
    assert "tensor: relative L2 error" in result.points[0]["reasons"]


def test_tensors_catch_what_statistics_cannot():
    # a permutation keeps every statistic but argmin/argmax; only the tensors show it
    a = np.array([1.0, 2.0, 5.0, -3.0])
    b = a[::-1].copy()
    ref = _trace([tensor_stats("p", a)], tensors=[a])
    ours = _trace([tensor_stats("p", b)], tensors=[b])
    no_tensors = _trace([tensor_stats("p", b)])
    assert diff(ref, no_tensors).ok
    result = diff(ref, ours)
    assert result.first_divergence == "p"
    assert [r for r in result.points[0]["reasons"] if not r.startswith("tensor")] == []


def test_render_table():
    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    result = diff(_trace(_records()), _trace(ours, dict(HEADER, input_sha256="cc")))
    out = io.StringIO()
    console = Console(file=out, width=220, force_terminal=True, color_system="standard")
    render_table(result, console)
    text = out.getvalue()
    assert "WARNING" in text and "input_sha256" in text
    row = next(line for line in text.splitlines() if "FIRST DIVERGENCE" in line)
    assert "encoder.1" in row and "\x1b[1;31m" in row          # bold red
    ok_row = next(line for line in text.splitlines() if "input.mix" in line)
    assert "\x1b[32m" in ok_row                                   # green
    assert "first divergence: encoder.1" in text


def test_plot_writes_a_png(tmp_path):
    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    ours[3] = _reshaped(ours[3], (30,))     # an infinite error must not break the log axis
    result = diff(_trace(_records()), _trace(ours))
    plot(result, tmp_path / "diff.png", floor=[1e-7, 2e-7, None, 1e-7, 0.0])
    assert (tmp_path / "diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    floor = diff(_trace(_records()), _trace([_scaled(r, 1 + 1e-7) for r in _records()]))
    plot(result, tmp_path / "floor.png", floor=floor)
    assert (tmp_path / "floor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="floor has 2 values for 5 points"):
        plot(result, tmp_path / "bad.png", floor=[1.0, 2.0])


@pytest.mark.parametrize("shift,diverges", [(2.9e-4, False), (3.1e-4, True)])
def test_min_is_measured_against_the_largest_magnitude(shift, diverges):
    # [3, -1, -1, -1]: mean 0, RMS sqrt(3) ~ 1.73, max |value| 3. A shift of the min by 2.9e-4
    # is under rtol * 3 = 3e-4 (it would not be under rtol * RMS = 1.73e-4).
    ref = tensor_stats("m", np.array([3.0, -1.0, -1.0, -1.0]))
    ours = dict(ref, min=ref["min"] - shift)
    result = diff(_trace([ref]), _trace([ours]), rtol=1e-4, atol=0.0)
    assert (result.first_divergence == "m") is diverges
    assert result.points[0]["errors"]["min"] == pytest.approx(shift / 3, rel=1e-9)


def test_points_frame_has_one_row_per_point_and_marks_the_first_divergence():
    pd = pytest.importorskip("pandas")
    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    result = diff(_trace(_records()), _trace(ours))
    frame = points_frame(result)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["point"]) == NAMES and list(frame.index) == [0, 1, 2, 3, 4]
    assert frame.loc[2, "status"] == "first_divergence"
    assert frame.loc[2, "error"] == pytest.approx(result.points[2]["error"])
    assert frame.loc[0, "error"] == 0.0
    assert list(points_frame(result, only_diverged=True).index) == [2]


def test_draw_errors_marks_the_first_divergence_on_given_axes():
    from matplotlib.figure import Figure

    ours = _records()
    ours[2] = _scaled(ours[2], 1.01)
    ax = Figure().add_subplot()
    draw_errors(ax, diff(_trace(_records()), _trace(ours)))
    assert [line.get_xdata()[0] for line in ax.lines if line.get_color() == "red"] == [2]
    assert any("first divergence: encoder.1" in text.get_text() for text in ax.texts)


def test_bands_judge_each_point_by_mean_plus_k_std_with_an_8_eps_minimum():
    from numba_demucs.debug.traces import TraceError

    records = _records()
    bands = copy.deepcopy(records)
    eps = float(np.finfo(np.float32).eps)
    # encoder.0: mean + 5 std = 1e-5 + 5e-6 = 1.5e-5; encoder.1: tiny band, the 8 eps minimum
    for record, band in zip(bands, [None, (1e-5, 1e-6), (1e-9, 0.0), None, None]):
        if band is not None:
            record["band"] = {"mean": band[0], "std": band[1], "runs": 8}
    band_trace = _trace(bands)
    ours = copy.deepcopy(records)
    ours[1] = _scaled(records[1], 1 + 1.4e-5)   # relative error 1.4e-5 on max/min/sum: inside
    ours[2] = _scaled(records[2], 1 + 5 * eps)   # 5 eps < 8 eps: inside
    result = diff(_trace(records), _trace(ours), bands=band_trace)
    assert result.ok and result.tolerance["band_k"] == 5.0
    assert result.points[1]["rtol"] == pytest.approx(1.5e-5)
    assert result.points[2]["rtol"] == pytest.approx(8 * eps)
    assert result.points[0]["band"] is None and result.points[1]["band"]["k"] == 5.0
    ours[1] = _scaled(records[1], 1 + 1.6e-5)   # above mean + 5 std
    assert diff(_trace(records), _trace(ours), bands=band_trace).first_divergence == "encoder.0"
    # k = 7: 1e-5 + 7e-6 = 1.7e-5 lets it through
    assert diff(_trace(records), _trace(ours), bands=band_trace, k=7).ok
    # the global rtol (1e-4) would not see either
    assert diff(_trace(records), _trace(ours)).ok
    # bands of other weights: a header mismatch
    other = Trace(dict(HEADER, checkpoint_sha256="cc"), band_trace.records)
    assert diff(_trace(records), _trace(ours), bands=other).header_mismatches
    bad = copy.deepcopy(bands)
    bad[1]["band"] = {"mean": 1e-5}
    with pytest.raises(TraceError, match="band must be"):
        _trace(bad)
