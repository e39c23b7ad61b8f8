"""debug precision on the toy-width htdemucs: the map's SNR for a point is that of a run with
only that point rounded (built here by hand), and the greedy list's final check keeps the
asked SNR. bfloat16 rounding is checked on hand-computed values.
"""
import json

import numpy as np
import pytest

import numba_demucs
from numba_demucs import trace
from numba_demucs.cli import main
from numba_demucs.debug import reference
from numba_demucs.debug.precision import precision_map, to_bfloat16

SECONDS = 0.3
ONLY = "encoder.0*"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    return reference.save_th(reference.build_model("htdemucs", seed=0, **reference.TINY), folder)


def test_bfloat16_rounds_to_nearest_even():
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-9), 3.0, np.inf, np.nan],
                 dtype=np.float32)
    expected = [1.0, 1 + 2**-6, 1 + 2**-7, -1.0, 3.0, np.inf, np.nan]
    np.testing.assert_array_equal(to_bfloat16(x), np.array(expected, dtype=np.float32))


def _hand_run(model, batch, position, dtype):
    count = [0]

    def replace(name, context, array):
        count[0] += 1
        if count[0] - 1 != position:
            return None
        if dtype == "float16":
            return np.asarray(array).astype(np.float16).astype(np.float32)
        return to_bfloat16(array)

    with trace.capture(tensors=False, replace=replace):
        return np.asarray(model(batch)[0], dtype=np.float64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_map_snr_equals_a_hand_rounded_run_and_greedy_keeps_the_snr(checkpoint, dtype):
    mix = reference.music_like_signal(SECONDS, seed=0)
    result = precision_map(checkpoint, mix, dtype, min_snr=70.0, only=ONLY)
    assert len(result.rows) >= 5 and all(r["name"].startswith("encoder.0") for r in result.rows)
    model = numba_demucs.load_model(checkpoint)
    batch = np.asarray(mix[:, : int(model.segment * model.samplerate)], dtype=np.float32)[None]
    base = _hand_run(model, batch, -1, dtype)
    for row in (result.sorted_rows()[0], result.sorted_rows()[-1]):
        out = _hand_run(model, batch, row["position"], dtype)
        snr = 10 * np.log10((base ** 2).sum(axis=(1, 2)) / ((base - out) ** 2).sum(axis=(1, 2)))
        np.testing.assert_allclose(row["snr_db"], snr, rtol=1e-12)
    assert np.all(result.final_snr >= 70.0) and result.greedy
    assert np.all(np.isfinite(result.final_snr))


def test_precision_cli(checkpoint, tmp_path, capsys):
    assert main(["debug", "precision", "--checkpoint", str(checkpoint), "--seconds", str(SECONDS),
                 "--dtype", "float16", "--min-snr", "80", "--only", ONLY, "--only", "tencoder.0",
                 "--plot",
                 str(tmp_path / "p.png"), "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "greedy:" in out and "costliest first" in out
    document = json.loads((tmp_path / "p.json").read_text())
    assert min(document["final_snr"]) >= 80.0
    snrs = [min(p["snr_db"]) for p in document["points"]]
    assert snrs == sorted(snrs)
    names = {p["name"] for p in document["points"]}  # either glob
    assert "tencoder.0" in names and len(names) >= 6
    assert all(name == "tencoder.0" or name.startswith("encoder.0") for name in names)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
