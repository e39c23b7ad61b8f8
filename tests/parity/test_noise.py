"""debug noise / --bands: measured float32 noise bands on the toy-width htdemucs.

The bands are reproducible bit for bit with one seed; PyTorch float32's own error against
PyTorch float64 (a rounding-only error the bands never saw) falls inside them at >= 99 % of
points; a single-layer break (the mutation tests' layers, scaled by 1.001 and by 1.00001)
falls outside the band first at that layer, where the global rtol (1e-4) sees only the 1.001.
"""
import numpy as np
import pytest

import numba_demucs
from numba_demucs.cli import main
from numba_demucs.debug import collect, reference
from numba_demucs.debug.diff import diff
from numba_demucs.debug.noise import random_round
from numba_demucs.debug.traces import Trace

SECONDS = 0.3

# (parameter to break, the trace point that must be reported first), from test_debug_mutations
MUTATIONS = [
    ("encoder.1.conv.weight", "encoder.1.conv"),
    ("tencoder.1.dconv.layers.0.0.weight", "tencoder.1.dconv.layers.0.0"),
    ("crosstransformer.layers.1.cross_attn.in_proj_weight", "crosstransformer.layers.1.cross_attn"),
    ("encoder.2.dconv.layers.1.6.scale", "encoder.2.dconv.layers.1.6"),
    ("decoder.1.conv_tr.weight", "decoder.1.conv_tr"),
    ("tdecoder.3.conv_tr.weight", "tdecoder.3.conv_tr"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise")
    checkpoint = reference.save_th(reference.build_model("htdemucs", seed=0, **reference.TINY), folder)
    mix = reference.music_like_signal(SECONDS, seed=0)
    paths = []
    for name in ("a.jsonl", "b.jsonl"):
        assert main(["debug", "noise", "--checkpoint", str(checkpoint), "--seconds", str(SECONDS),
                     "--runs", "8", "--seed", "1", "-o", str(folder / name)]) == 0
        paths.append(folder / name)
    r32 = collect.trace_reference(checkpoint, mix, "float32", segment_only=True)
    r64 = collect.trace_reference(checkpoint, mix, "float64", segment_only=True)
    return checkpoint, mix, paths, r32, r64


def test_random_round_moves_each_element_one_ulp():
    rng = np.random.default_rng(0)
    x = np.array([1.0, -3.5, 0.0, np.inf, 1e-3] * 200, dtype=np.float32)
    y = random_round(x, rng)
    steps = (y.view(np.int32).astype(np.int64) - x.view(np.int32).astype(np.int64))
    finite = np.isfinite(x) & (x != 0)
    assert set(np.abs(steps[finite])) == {1} and np.all(steps[~finite] == 0)
    assert 0.4 < np.mean(y[finite] > x[finite]) < 0.6
    assert random_round(np.zeros(3, dtype=np.float64), rng) is None


def test_bands_are_reproducible_and_cover_pytorch_float32(setup):
    checkpoint, mix, (a, b), r32, r64 = setup
    assert a.read_bytes() == b.read_bytes()
    bands = Trace.load(a)
    assert len(bands) == len(r32) == 464 and all(r["band"]["runs"] == 8 for r in bands.records)
    assert bands.header["bands"] == {"runs": 8, "seed": 1, "rounding": "one ulp up or down per element",
                                     "oracle": "numba-demucs float64"}
    result = diff(r64, r32, bands=bands)
    inside = np.mean([p["status"] == "ok" for p in result.points])
    assert len(result.points) == 464 and inside >= 0.99
    # the band is what rounding does: far below the global rtol, above one float32 epsilon
    means = np.array([r["band"]["mean"] for r in bands.records])
    assert np.median(means) > np.finfo(np.float32).eps and means.max() < 1e-5


@pytest.mark.parametrize("parameter,point", MUTATIONS)
def test_a_broken_layer_leaves_its_band_first(setup, parameter, point):
    checkpoint, mix, (a, _), r32, r64 = setup
    bands = Trace.load(a)
    for factor, global_catches in ((1.001, True), (1.00001, False)):
        model = numba_demucs.load_model(checkpoint)
        dict(model.parameters())[parameter] *= np.float32(factor)
        ours = collect.trace_ours(checkpoint, mix, "float32", segment_only=True, model=model)
        banded = diff(r64, ours, bands=bands)
        assert banded.first_divergence == point, factor
        first = banded.first_divergence_position
        assert all(p["status"] == "ok" for p in banded.points[:first])
        assert banded.points[first]["band"]["k"] == 5.0
        assert any(r.startswith("band: error") for r in banded.points[first]["reasons"])
        globally = diff(r32, ours, rtol=1e-4)
        assert globally.first_divergence == (point if global_catches else None), factor


def test_diff_and_conform_take_bands(setup, tmp_path, capsys):
    checkpoint, mix, (a, _), r32, r64 = setup
    r64.save(tmp_path / "r64.jsonl")
    r32.save(tmp_path / "r32.jsonl")
    model = numba_demucs.load_model(checkpoint)
    dict(model.parameters())["encoder.1.conv.weight"] *= np.float32(1.00001)
    collect.trace_ours(checkpoint, mix, "float32", segment_only=True, model=model).save(tmp_path / "m.jsonl")
    assert main(["debug", "diff", str(tmp_path / "r64.jsonl"), str(tmp_path / "m.jsonl")]) == 0
    assert main(["debug", "diff", str(tmp_path / "r64.jsonl"), str(tmp_path / "m.jsonl"),
                 "--bands", str(a)]) == 1
    assert main(["debug", "conform", str(tmp_path / "r32.jsonl"), "--checkpoint", str(checkpoint),
                 "--seconds", str(SECONDS), "--bands", str(a)]) == 0
    out = capsys.readouterr().out
    assert "divergent above mean + 5 std" in out and "conformant: 464 points" in out
    # a trace without bands is refused clearly
    assert main(["debug", "diff", str(tmp_path / "r64.jsonl"), str(tmp_path / "m.jsonl"),
                 "--bands", str(tmp_path / "r32.jsonl")]) == 2
