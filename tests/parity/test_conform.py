"""debug golden / conform: golden traces are reproducible bit for bit and conform against our
model and PyTorch; a demucs.cpp-format printout of PyTorch's own statistics conforms, the same
printout with one layer (and everything after it) scaled by 1.01 is named at that layer, and a
cut printout exits 2 naming the line.

Toy widths (reference.TINY: the official module trees and point names, 8 channels) keep each
PyTorch run to seconds; the full-width numbers behind FLOOR_FACTOR are in docs/debugging.md.
"""
import json

import pytest

from numba_demucs.cli import main
from numba_demucs.debug import collect
from numba_demucs.debug.cli import read_input
from numba_demucs.debug.golden import make_golden, read_golden
from numba_demucs.debug.printer import print_demucs_cpp

SECONDS = 0.3


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    make_golden("htdemucs", folder, seed=0, seconds=SECONDS, tiny=True)
    return read_golden(folder)


def _port_name(name):
    return "x_" + name.replace(".", "_")


def _printout(path, records, scale_from=None, precision=None):
    """A demucs.cpp-format printout of ``records`` under port-style names, with the statistics
    of every record from position ``scale_from`` on multiplied by 1.01."""
    with open(path, "w") as f:
        print("demucs.cpp-like port, one segment", file=f)
        for position, record in enumerate(records):
            record = dict(record)
            if scale_from is not None and position >= scale_from:
                for key in ("min", "max", "mean", "std", "sum"):
                    record[key] *= 1.01
            print_demucs_cpp(record, name=_port_name(record["name"]), file=f, precision=precision)
    return path


@pytest.fixture(scope="module")
def name_map(golden, tmp_path_factory):
    path = tmp_path_factory.mktemp("map") / "names.txt"
    path.write_text("# port variable -> PyTorch module path\n" + "".join(
        f"{_port_name(r['name'])} {r['name']}\n" for r in golden.trace.records))
    return path


@pytest.mark.parametrize("architecture", ["htdemucs", "htdemucs_6s"])
def test_golden_is_reproducible_and_conforms_against_ours_and_pytorch(architecture, tmp_path, golden):
    if architecture == "htdemucs":
        first = golden.folder
    else:
        first = tmp_path / "a"
        make_golden(architecture, first, seed=0, seconds=SECONDS, tiny=True)
    second = tmp_path / "b"
    make_golden(architecture, second, seed=0, seconds=SECONDS, tiny=True)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert len(names) == 4  # checkpoint, input.wav, reference.jsonl, manifest.json
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    g = read_golden(first)
    assert all("floor" in r for r in g.trace.records)
    assert g.trace.header["mode"] == "segment"
    mix = read_input(g.input)
    ours = collect.trace_ours(g.checkpoint, mix, "float32", segment_only=True)
    ours.save(tmp_path / "ours.jsonl")
    assert main(["debug", "conform", str(tmp_path / "ours.jsonl"), "--golden", str(first)]) == 0
    torch_side = collect.trace_reference(g.checkpoint, mix, "float32", segment_only=True)
    torch_side.save(tmp_path / "torch.jsonl")
    assert main(["debug", "conform", str(tmp_path / "torch.jsonl"), "--golden", str(first),
                 "--json", str(tmp_path / "d.json")]) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    assert len(result["points"]) == len(g.trace) and result["only_reference"] == []
    # PyTorch against its own golden trace: the same statistics, bit for bit
    assert all(p["error"] == 0 for p in result["points"])


def test_printout_of_pytorchs_own_stats_conforms(golden, name_map, tmp_path, capsys):
    printout = _printout(tmp_path / "port.txt", golden.trace.records)
    # the reference side computed here with PyTorch (float32, float64 for the floor)
    assert main(["debug", "conform", str(printout), "--names", str(name_map),
                 "--checkpoint", str(golden.checkpoint), "--input", str(golden.input),
                 "--plot", str(tmp_path / "c.png")]) == 0
    assert "conformant: 464 points" in capsys.readouterr().out
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # std::cout's 6 digits: allowed for by the printed-digits rule
    six = _printout(tmp_path / "six.txt", golden.trace.records, precision=6)
    assert main(["debug", "conform", str(six), "--names", str(name_map), "--golden", str(golden.folder)]) == 0
    # without the map no name matches: unusable, exit 2
    assert main(["debug", "conform", str(printout), "--golden", str(golden.folder)]) == 2
    assert "none of its 464 points matches" in capsys.readouterr().err


@pytest.mark.parametrize("layer", ["encoder.1.dconv.layers.0.3", "crosstransformer.layers_t.2",
                                   "output.sources"])
def test_one_scaled_layer_is_named_first(golden, name_map, tmp_path, capsys, layer):
    records = golden.trace.records
    k = [r["name"] for r in records].index(layer)
    printout = _printout(tmp_path / "port.txt", records, scale_from=k)
    assert main(["debug", "conform", str(printout), "--names", str(name_map),
                 "--golden", str(golden.folder), "--json", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    assert f"divergent: first divergence at {layer}" in out
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["first_divergence"] == layer
    statuses = [p["status"] for p in result["points"]]
    assert statuses[:k] == ["ok"] * k and statuses[k] == "first_divergence"


def test_a_cut_printout_exits_2_naming_the_line(golden, name_map, tmp_path, capsys):
    full = _printout(tmp_path / "port.txt", golden.trace.records).read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.txt"
    cut.write_text("".join(full[:105]))  # block 11 starts at line 102 (1 + 10 x 10 + 1), cut 3 lines in
    assert main(["debug", "conform", str(cut), "--names", str(name_map), "--golden", str(golden.folder)]) == 2
    assert "cut.txt:105: the printout ends inside block" in capsys.readouterr().err
    assert main(["debug", "import", "--format", "demucs-cpp", str(cut), "-o", str(tmp_path / "t.jsonl")]) == 2
    assert "cut.txt:105:" in capsys.readouterr().err


def test_a_changed_golden_file_is_refused(golden, tmp_path, capsys):
    import shutil

    copy = tmp_path / "g"
    shutil.copytree(golden.folder, copy)
    data = bytearray((copy / "input.wav").read_bytes())
    data[-1] ^= 1
    (copy / "input.wav").write_bytes(bytes(data))
    printout = _printout(tmp_path / "port.txt", golden.trace.records)
    assert main(["debug", "conform", str(printout), "--golden", str(copy)]) == 2
    assert "input.wav: changed since the golden folder was written" in capsys.readouterr().err
