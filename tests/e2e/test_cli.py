"""The command line, run as a user runs it."""
import os
import subprocess
import sys
from fractions import Fraction

import pytest

from numba_demucs.debug import reference

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16,
            dconv_mode=3)


def run(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "numba_demucs.cli", *args], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return reference.save_safetensors(reference.build_model("htdemucs", seed=2, **TINY), folder)


@pytest.mark.parametrize("dtype,threshold", [("float32", "90"), ("float64", "200")])
def test_debug_parity_on_a_checkpoint(tiny_checkpoint, dtype, threshold):
    result = run("debug", "parity", "--checkpoint", str(tiny_checkpoint), "--seconds", "1.3",
                 "--dtype", dtype)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"parity holds (end-to-end threshold {threshold} dB" in result.stdout
    assert "no divergence" in result.stdout
    assert "vocals" in result.stdout


def test_debug_parity_bad_input_is_one_clear_line(tmp_path, tiny_checkpoint):
    bogus = tmp_path / "not-audio.wav"
    bogus.write_text("hello")
    result = run("debug", "parity", "--checkpoint", str(tiny_checkpoint), "--input", str(bogus))
    assert result.returncode == 2
    assert "not-audio.wav: cannot read audio" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run("debug", "parity", "--checkpoint", str(tmp_path / "none.th"))
    assert result.returncode == 2
    assert "none.th: no such checkpoint file" in result.stderr
