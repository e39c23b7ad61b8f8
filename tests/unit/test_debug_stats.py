"""The trace record: hand-computed statistics, NaN/Inf handling, float64 accumulation."""
import math

import numpy as np
import pytest

from numba_demucs.debug.stats import RECORD_KEYS, tensor_stats


def test_small_array_by_hand():
    # [[1, 2], [3, -4]]: sum 2, mean 0.5, deviations 0.5 1.5 2.5 -4.5 -> squares sum 29,
    # population variance 29/4; L2 = sqrt(1 + 4 + 9 + 16).
    r = tensor_stats("enc", np.array([[1, 2], [3, -4]], dtype=np.float32),
                     context={"segment": 2, "shift": 0}, index=7)
    assert list(r) == list(RECORD_KEYS)
    assert r["name"] == "enc" and r["context"] == {"segment": 2, "shift": 0} and r["index"] == 7
    assert r["shape"] == [2, 2] and r["dtype"] == "float32" and r["count"] == 4
    assert r["min"] == -4.0 and r["max"] == 3.0
    assert r["sum"] == 2.0 and r["mean"] == 0.5
    assert r["std"] == pytest.approx(math.sqrt(7.25), rel=1e-15)
    assert r["l2"] == pytest.approx(math.sqrt(30.0), rel=1e-15)
    assert (r["argmin"], r["argmin_index"]) == (3, [1, 1])
    assert (r["argmax"], r["argmax_index"]) == (2, [1, 0])
    assert r["nan"] == 0 and r["inf"] == 0
    # every value is a plain Python type, so json.dumps takes the record as is
    assert all(type(r[k]) is float for k in ("min", "max", "mean", "std", "sum", "l2"))
    assert all(type(r[k]) is int for k in ("argmin", "argmax", "count", "nan", "inf"))


def test_defaults_and_context_is_copied():
    ctx = {"model": 1}
    r = tensor_stats("x", np.zeros(3), context=ctx)
    ctx["model"] = 5
    assert r["context"] == {"model": 1}
    assert tensor_stats("x", np.zeros(3))["context"] == {} and tensor_stats("x", np.zeros(3))["index"] is None


def test_nan_and_inf_are_counted_and_left_out():
    # finite values 1 and 3: mean 2, population std 1, sum 4, L2 sqrt(10)
    r = tensor_stats("x", np.array([np.nan, 3.0, np.inf, 1.0, -np.inf], dtype=np.float32))
    assert r["count"] == 5 and r["nan"] == 1 and r["inf"] == 2
    assert (r["min"], r["max"], r["mean"], r["std"], r["sum"]) == (1.0, 3.0, 2.0, 1.0, 4.0)
    assert r["l2"] == pytest.approx(math.sqrt(10.0), rel=1e-15)
    # the +inf at 2 and the -inf at 4 must not win argmax / argmin
    assert (r["argmin"], r["argmax"]) == (3, 1)


def test_no_finite_element_gives_none():
    r = tensor_stats("x", np.array([[np.nan, np.inf]]))
    assert r["nan"] == 1 and r["inf"] == 1 and r["count"] == 2
    for key in ("min", "max", "mean", "std", "sum", "l2", "argmin", "argmax", "argmin_index", "argmax_index"):
        assert r[key] is None, key
    empty = tensor_stats("e", np.zeros((0, 4), dtype=np.float32))
    assert empty["shape"] == [0, 4] and empty["count"] == 0 and empty["mean"] is None


def test_float32_input_accumulates_in_float64():
    # In float32, 1e8 + 1 rounds back to 1e8 (the spacing there is 8), so the float32 sum is 0;
    # the exact sum is 1.
    a = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    assert np.sum(a) == 0.0  # the trap the record must not fall into
    r = tensor_stats("x", a)
    assert r["sum"] == 1.0
    assert r["mean"] == pytest.approx(1 / 3, rel=1e-15)


def test_std_of_large_offset_does_not_cancel():
    # values 1e8 + {0, 1, 2}: E[x^2] - E[x]^2 would lose every digit in float64 at this size;
    # the population std is sqrt(2/3).
    r = tensor_stats("x", 1e8 + np.array([0.0, 1.0, 2.0]))
    assert r["std"] == pytest.approx(math.sqrt(2 / 3), rel=1e-12)


def test_flat_index_is_c_order_for_fortran_layout():
    a = np.asfortranarray(np.array([[0.0, 5.0, 0.0], [0.0, 0.0, -2.0]]))
    r = tensor_stats("x", a)
    assert (r["argmax"], r["argmax_index"]) == (1, [0, 1])
    assert (r["argmin"], r["argmin_index"]) == (5, [1, 2])


def test_integer_and_scalar_input():
    r = tensor_stats("i", np.array([2, 4], dtype=np.int16))
    assert r["dtype"] == "int16" and r["mean"] == 3.0 and r["std"] == 1.0
    s = tensor_stats("s", np.float32(-2.5))
    assert s["shape"] == [] and s["min"] == -2.5 and s["argmin_index"] == [] and s["l2"] == 2.5


def test_ties_give_first_occurrence():
    r = tensor_stats("x", np.array([1.0, -1.0, 1.0, -1.0]))
    assert r["argmax"] == 0 and r["argmin"] == 1


def test_complex_refused():
    with pytest.raises(TypeError, match="spec"):
        tensor_stats("spec", np.zeros(3, dtype=np.complex64))


def test_ten_million_elements():
    # Speed is a benchmark's business (benchmarks/bench_segment.py measures tracing cost).
    a = np.random.default_rng(0).standard_normal(10_000_000, dtype=np.float32)
    a[123] = np.nan
    r = tensor_stats("big", a)
    assert r["nan"] == 1 and r["count"] == 10_000_000
    assert abs(r["mean"]) < 1e-3 and r["std"] == pytest.approx(1.0, abs=1e-3)


# --- demucs.cpp-style printout (debug/printer.py) ---------------------------------------------

def test_print_demucs_cpp_exact_text():
    import io

    from numba_demucs.debug.printer import print_demucs_cpp

    # [[7, 1], [1, -1]]: sum 8, mean 2, deviations 5 -1 -1 -3 -> squares 36 / 4 = 9, std 3;
    # min -1 at (1, 1), max 7 at (0, 0)
    out = io.StringIO()
    print_demucs_cpp(np.array([[7, 1], [1, -1]], dtype=np.float32), "x_enc_1", file=out)
    assert out.getvalue() == (
        "Debugging tensor!: x_enc_1\n"
        "\tshape: (2, 2)\n"
        "\tmin: -1.0\n"
        "\tmax: 7.0\n"
        "\tmean: 2.0\n"
        "\tstddev: 3.0\n"
        "\tsum: 8.0\n"
        "\tmin idx: (1, 1)\n"
        "\tmax idx: (0, 0)\n"
        "FINISHED DEBUG FOR TENSOR x_enc_1\n"
    )


def test_print_demucs_cpp_record_precision_and_empty():
    import io

    from numba_demucs.debug.printer import print_demucs_cpp

    # mean of [0, 0, 1] is 1/3: six significant digits as std::cout prints by default
    out = io.StringIO()
    print_demucs_cpp(tensor_stats("third", np.array([0.0, 0.0, 1.0])), file=out, precision=6)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Debugging tensor!: third" and lines[1] == "\tshape: (3)"
    assert lines[4] == "\tmean: 0.333333" and lines[7] == "\tmin idx: (0)" and lines[8] == "\tmax idx: (2)"
    out = io.StringIO()
    print_demucs_cpp(np.full((1, 2), np.nan), "bad", file=out)
    lines = out.getvalue().splitlines()
    assert lines[2] == "\tmin: nan" and lines[7] == "\tmin idx: (-1, -1)"


def test_channel_stats_one_row_per_channel_along_the_axis():
    pytest.importorskip("pandas")
    from numba_demucs.debug.stats import channel_stats

    array = np.zeros((2, 3, 4))
    array[:, 1, :] = [1.0, -1.0, 3.0, -3.0]
    array[0, 2, 0] = np.nan
    frame = channel_stats(array, axis=1)
    assert list(frame.index) == [0, 1, 2]
    assert frame.loc[1, "mean"] == 0.0 and frame.loc[1, "max"] == 3.0 and frame.loc[1, "min"] == -3.0
    assert frame.loc[1, "rms"] == pytest.approx(np.sqrt(5.0))
    assert frame.loc[1, "std"] == pytest.approx(np.sqrt(5.0))
    assert frame.loc[2, "nonfinite"] == 1 and frame.loc[2, "mean"] == 0.0
