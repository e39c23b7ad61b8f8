"""demucs.cpp printouts into traces: both printers' layouts, the name map, cut printouts (exit 2)."""
import math

import numpy as np
import pytest

from numba_demucs.cli import main
from numba_demucs.debug.importers import PrintoutError, read_demucs_cpp, read_name_map
from numba_demucs.debug.printer import print_demucs_cpp
from numba_demucs.debug.stats import tensor_stats
from numba_demucs.debug.traces import Trace

# As demucs.cpp's C++ helpers print (src/tensor.hpp): std::cout, 6 digits, "for tensor:" footer.
CPP = """\
loading model...
Debugging tensor!: x_enc_1
\tshape: (1, 2, 3)
\tmin: -0.285941
\tmax: 0.230387
\tmean: -2.47511e-05
\tstddev: 0.0555647
\tsum: -0.000148507
\tmin idx: (0, 1, 0)
\tmax idx: (0, 0, 2)
FINISHED DEBUG for tensor: x_enc_1
Debugging vector!: v
\tshape: (4)
\tmin: 1
\tmax: 4
\tmean: 2.5
\tstddev: 1.11803
\tsum: 10
\tmin idx: (0)
\tmax idx: (3)
FINISHED DEBUG for tensor: v
done
"""

# As its Python script prints (repr, torch.std unbiased, NumPy 2 index reprs, "FOR TENSOR").
PY = """\
Debugging tensor!: v
\tshape: (4,)
\tmin: 1.0
\tmax: 4.0
\tmean: 2.5
\tstddev: 1.2909944487358056
\tsum: 10.0
\tmin idx: (np.int64(0),)
\tmax idx: (np.int64(3),)
FINISHED DEBUG FOR TENSOR v
"""


def _write(tmp_path, text, name="p.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cpp_printout(tmp_path):
    trace = read_demucs_cpp(_write(tmp_path, CPP))
    assert [r["name"] for r in trace.records] == ["x_enc_1", "v"]
    r = trace.records[0]
    assert r["shape"] == [2, 3] and r["count"] == 6          # leading 1 dropped as in our records
    assert (r["min"], r["max"], r["mean"], r["std"], r["sum"]) == (-0.285941, 0.230387, -2.47511e-05,
                                                                    0.0555647, -0.000148507)
    assert r["l2"] == pytest.approx(math.sqrt(6 * (0.0555647 ** 2 + 2.47511e-05 ** 2)))
    assert r["argmin_index"] == [1, 0] and r["argmin"] == 3 and r["argmax"] == 2
    assert trace.header["stat_digits"] == 6 and trace.header["checkpoint_sha256"] is None
    v = trace.records[1]
    assert v["shape"] == [4] and v["argmax"] == 3 and v["std"] == 1.11803


def test_python_script_printout_with_unbiased_std(tmp_path):
    trace = read_demucs_cpp(_write(tmp_path, PY), std="unbiased")
    v = trace.records[0]
    x = np.arange(1.0, 5.0)
    assert v["std"] == pytest.approx(x.std(), rel=1e-15)       # population, from torch.std's unbiased
    assert v["l2"] == pytest.approx(np.linalg.norm(x), rel=1e-15)
    assert v["argmin_index"] == [0] and v["argmax_index"] == [3]
    assert trace.header["stat_digits"] is None                    # 17 digits: printed in full


def test_our_printer_round_trips_through_the_importer(tmp_path):
    a = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    record = tensor_stats("encoder.1", a[0])
    with open(tmp_path / "p.txt", "w") as f:
        print_demucs_cpp(record, file=f)
    back = read_demucs_cpp(tmp_path / "p.txt").records[0]
    for key in ("shape", "count", "min", "max", "mean", "std", "sum", "argmin", "argmax",
                "argmin_index", "argmax_index"):
        assert back[key] == record[key], key
    assert back["l2"] == pytest.approx(record["l2"], rel=1e-14)


def test_complex_blocks_become_real_and_imag_points(tmp_path):
    text = "Debugging tensor!: z\n\tshape: (2, 2)\n" + "".join(
        f"\t{k} {p}: {v}\n" for p, vals in (("real", (1, 2, 1.5, 0.5, 6)), ("imag", (-1, 1, 0, 1, 0)))
        for k, v in zip(("min", "max", "mean", "stddev", "sum"), vals)) + \
        "\tmin real idx: (0, 0)\n\tmax real idx: (1, 1)\n\tmin imag idx: (0, 1)\n\tmax imag idx: (1, 0)\n" \
        "FINISHED DEBUG for tensor: z\n"
    trace = read_demucs_cpp(_write(tmp_path, text), names={"z": "spec"})
    assert [r["name"] for r in trace.records] == ["spec.real", "spec.imag"]
    assert trace.records[0]["sum"] == 6 and trace.records[1]["argmax"] == 2


def test_name_map(tmp_path):
    path = _write(tmp_path, "# port name -> module path\nx_enc_1 = encoder.0\nv   -\n", "map.txt")
    names = read_name_map(path)
    assert names == {"x_enc_1": "encoder.0", "v": "-"}
    trace = read_demucs_cpp(_write(tmp_path, CPP), names)
    assert [r["name"] for r in trace.records] == ["encoder.0"]   # "-" drops the block
    with pytest.raises(PrintoutError, match=r"map.txt:2: expected"):
        read_name_map(_write(tmp_path, "a b\nonly_one\n", "map.txt"))


@pytest.mark.parametrize("text,line,what", [
    (CPP.split("\tmean: -2.47511e-05")[0], 5, "ends inside block 'x_enc_1'"),           # cut at EOF
    (CPP.replace("FINISHED DEBUG for tensor: x_enc_1\n", ""), 11, "block .x_enc_1. .line 2. has no FINISHED"),
    (CPP.replace("FINISHED DEBUG for tensor: v", "FINISHED DEBUG for tensor: w"), 21, "names 'w'"),
    (CPP.replace("\tsum: 10\n", "garbage\n"), 18, "unexpected line"),
    (CPP.replace("\tsum: 10\n", ""), 12, "lacks its 'sum' line"),
])
def test_a_cut_or_broken_printout_names_the_line(tmp_path, text, line, what):
    path = _write(tmp_path, text)
    with pytest.raises(PrintoutError, match=rf"p.txt:{line}: .*{what}"):
        read_demucs_cpp(path)


def test_cli_import_and_exit_2_on_a_cut_printout(tmp_path, capsys):
    out = tmp_path / "theirs.jsonl"
    assert main(["debug", "import", "--format", "demucs-cpp", str(_write(tmp_path, CPP)),
                 "-o", str(out)]) == 0
    assert len(Trace.load(out)) == 2
    cut = _write(tmp_path, CPP[: CPP.index("\tstddev: 1.11803")], "cut.txt")
    assert main(["debug", "import", "--format", "demucs-cpp", str(cut), "-o", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "cut.txt:16: the printout ends inside block 'v' (line 12)" in err
    assert not (tmp_path / "x.jsonl").exists()
