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


def test_debug_trace_reference_diff_round_trip(tiny_checkpoint, tmp_path):
    ours, ref = tmp_path / "ours.jsonl", tmp_path / "ref.jsonl"
    common = ["--checkpoint", str(tiny_checkpoint), "--seconds", "0.8", "--save-tensors"]
    assert run("debug", "trace", *common, "-o", str(ours)).returncode == 0
    assert run("debug", "reference", *common, "-o", str(ref)).returncode == 0
    assert ours.exists() and (tmp_path / "ours.npz").exists()
    report = tmp_path / "diff.json"
    result = run("debug", "diff", str(ref), str(ours), "--json", str(report), "--plot",
                 str(tmp_path / "diff.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    import json
    content = json.loads(report.read_text())
    assert content["first_divergence"] is None and len(content["points"]) > 500
    assert (tmp_path / "diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a dump cut in the middle is refused with a message naming it, exit code 2
    lines = ours.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[: len(lines) // 2]))
    result = run("debug", "diff", str(ref), str(cut))
    assert result.returncode == 2 and "cut.jsonl" in result.stderr


def test_debug_parity_isolate_runs(tiny_checkpoint):
    result = run("debug", "parity", "--checkpoint", str(tiny_checkpoint), "--segment-only",
                 "--isolate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "largest local error" in result.stdout


@pytest.mark.parametrize("architecture", ["hdemucs_mmi", "demucs_9a6b4851"])
def test_debug_tools_on_demucs_v3_and_v2(tmp_path, architecture):
    """parity --isolate --floor on an HDemucs (BLSTM, LocalState) and a Demucs checkpoint;
    trace, reference and diff on the HDemucs one (the HTDemucs test above covers the files)."""
    checkpoint = reference.save_th(reference.build_model(architecture, seed=2, channels=8,
                                                         segment=1), tmp_path)
    common = ["--checkpoint", str(checkpoint), "--seconds", "1"]
    if architecture == "hdemucs_mmi":
        ours, ref = tmp_path / "ours.jsonl", tmp_path / "ref.jsonl"
        assert run("debug", "trace", *common, "-o", str(ours)).returncode == 0
        assert run("debug", "reference", *common, "-o", str(ref)).returncode == 0
        result = run("debug", "diff", str(ref), str(ours))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no divergence" in result.stdout
        assert "encoder.4.dconv.layers.0.3.lstm" in ours.read_text()
    result = run("debug", "parity", *common, "--segment-only", "--isolate", "--floor",
                 "--plot", str(tmp_path / "parity.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "largest local error" in result.stdout and "parity holds" in result.stdout
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
