"""The debugging loop on Open-Unmix: `debug diff` names the layer whose parameter we flipped,
and `debug trace|reference|diff|parity --isolate --floor` run on a folder of TARGET-HASH8.pth."""
import os
import subprocess
import sys

import numpy as np
import pytest

from numba_demucs.debug import collect_umx, reference_umx
from numba_demucs.debug.diff import diff
from numba_demucs.debug.reference import music_like_signal

# (parameter whose sign is flipped, the trace point that must be reported first)
MUTATIONS = [
    ("target_models.vocals.input_scale", "target_models.vocals.fc1"),  # not a module: fc1 sees it
    ("target_models.vocals.fc1.weight", "target_models.vocals.fc1"),
    ("target_models.drums.bn1.running_mean", "target_models.drums.bn1"),
    ("target_models.bass.lstm.weight_hh_l1_reverse", "target_models.bass.lstm"),
    ("target_models.vocals.lstm.bias_ih_l2", "target_models.vocals.lstm"),
    ("target_models.other.fc2.weight", "target_models.other.fc2"),
    ("target_models.drums.bn2.bias", "target_models.drums.bn2"),
    ("target_models.bass.fc3.weight", "target_models.bass.fc3"),
    ("target_models.other.bn3.weight", "target_models.other.bn3"),
    ("target_models.vocals.output_mean", "target_models.vocals"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umx-debug")
    reference_umx.save_targets(reference_umx.build_separator("umxl", seed=9, hidden_size=16),
                               folder / "repo")
    mix = music_like_signal(2.0, seed=3)
    return folder, mix, collect_umx.trace_reference(folder / "repo", mix)


def _diff_with(setup, edit):
    folder, mix, reference = setup
    model = collect_umx.load(folder / "repo")
    edit(dict(model.parameters()))
    return diff(reference, collect_umx.trace_ours(folder / "repo", mix, model=model))


def test_unbroken_model_has_no_divergence(setup):
    result = _diff_with(setup, lambda parameters: None)
    assert result.first_divergence is None and result.ok, result.first_divergence
    assert not result.only_ours and not result.only_reference and len(result.points) == 36  # 2 + 4 x 8 + wiener + istft


@pytest.mark.parametrize("parameter,point", MUTATIONS)
def test_flipped_parameter_is_the_first_divergence(setup, parameter, point):
    def edit(parameters):
        parameters[parameter] *= -1

    result = _diff_with(setup, edit)
    assert not result.ok and result.first_divergence == point
    assert all(p["status"] == "ok" for p in result.points[:result.first_divergence_position])


def test_debug_cli_on_openunmix(setup, tmp_path):
    folder, _, _ = setup
    env = {**os.environ, "COLUMNS": "200"}

    def run(*arguments):
        return subprocess.run([sys.executable, "-m", "numba_demucs.cli", "debug", *arguments],
                              capture_output=True, text=True, env=env)

    common = ["--checkpoint", str(folder / "repo"), "--seconds", "1.5"]
    for side in ("reference", "trace"):
        result = run(side, *common, "-o", str(tmp_path / f"{side}.jsonl"))
        assert result.returncode == 0, result.stderr
    result = run("diff", str(tmp_path / "reference.jsonl"), str(tmp_path / "trace.jsonl"))
    assert result.returncode == 0 and "no divergence over 36 points" in result.stdout, result.stdout
    result = run("parity", *common, "--isolate", "--floor", "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parity holds" in result.stdout and "largest local error" in result.stdout
    assert (tmp_path / "p.png").stat().st_size > 0
