"""HDemucs under the debugging tools: the golden ordered trace points (written from the
PyTorch side by make_golden.py), every point close to PyTorch's, every parameter tensor
mattering (a sign flip breaks float32 parity), and ``debug diff`` naming the broken layer.
"""
import numpy as np
import pytest
import torch

import numba_demucs
from numba_demucs import trace
from numba_demucs._threads import blas_threads
from numba_demucs.debug import reference
from numba_demucs.debug.parity import parity

from ..conftest import sign_flips_left_unnoticed, snr_db
from .test_trace import golden_names

SMALL = dict(channels=8, segment=8)


@pytest.fixture(scope="module")
def small_mmi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hdemucs-debug")
    path = reference.save_th(reference.build_model("hdemucs_mmi", seed=9, **SMALL), folder)
    mix = reference.music_like_signal(1.0, seed=7)
    return folder, path, mix


def test_module_tree_does_not_depend_on_channels():
    full = [n for n, _ in reference.build_model("hdemucs_mmi", perturb=False).named_modules()]
    small = [n for n, _ in reference.build_model("hdemucs_mmi", perturb=False,
                                                 **SMALL).named_modules()]
    assert full == small


def test_trace_points_are_golden_and_agree(small_mmi):
    _, path, mix = small_mmi
    theirs = []
    reference.run_reference(reference.load_reference(path), mix,
                            lambda name, context, array: theirs.append((name, array)),
                            segment_only=True)
    with trace.capture() as records:
        numba_demucs.load_model(path).forward(mix)
    expected = golden_names("hdemucs_mmi")
    assert [name for name, _ in theirs] == expected
    assert [name for name, _, _ in records] == expected
    for (name, want), (_, _, got) in zip(theirs, records):
        got = reference.leading_squeezed(got)
        assert got.shape == want.shape, name
        error = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
        assert error < 2e-5, f"{name}: relative L2 error {error:.3g}"


def test_every_parameter_tensor_matters(small_mmi):
    _, path, mix = small_mmi
    ours = numba_demucs.load_model(path)
    with torch.no_grad():
        expected = reference.load_reference(path)(torch.from_numpy(mix)[None])[0].numpy()
    with blas_threads(1):
        assert snr_db(expected, ours.forward(mix)).min() >= 110
        # a key bias adds the same k_b . q_s to every score of query s: the softmax over
        # the keys cannot see it, in PyTorch as here
        names, unnoticed = sign_flips_left_unnoticed(
            ours, lambda model: model.forward(mix), expected, 90, ignore=[".key.bias"])
        assert snr_db(expected, ours.forward(mix)).min() >= 110  # restored
    assert any(".lstm.weight_hh_l1_reverse" in n for n in names)
    assert any(".query_decay.weight" in n for n in names)
    assert not unnoticed, f"breaking these left parity intact: {unnoticed}"


MUTATIONS = [
    ("encoder.4.dconv.layers.0.3.lstm.weight_hh_l1_reverse", "encoder.4.dconv.layers.0.3.lstm"),
    ("encoder.5.dconv.layers.1.4.query_decay.weight", "encoder.5.dconv.layers.1.4.query_decay"),
    ("encoder.4.conv.weight", "encoder.4.conv"),            # the last frequency layer
    ("encoder.5.conv.weight", "encoder.5.conv"),            # the time layer on merged branches
    ("decoder.0.rewrite.weight", "decoder.0.rewrite"),      # the first (time) decoder
    ("decoder.1.conv_tr.weight", "decoder.1.conv_tr"),      # the last frequency layer's decoder
]


@pytest.fixture(scope="module")
def unbroken(small_mmi):
    _, path, mix = small_mmi
    report = parity(path, mix)
    assert report.passed and report.diff.ok
    assert report.reference.header["model"] == report.ours.header["model"] == \
        "HDemucs[drums,bass,other,vocals]"
    return report


@pytest.mark.parametrize("parameter,point", MUTATIONS)
def test_diff_names_the_scaled_layer(small_mmi, unbroken, parameter, point):
    _, path, mix = small_mmi
    model = numba_demucs.load_model(path)
    dict(model.parameters())[parameter] *= np.float32(1.01)
    result = parity(path, mix, model=model, reference=unbroken.reference).diff
    assert not result.ok
    assert result.first_divergence == point
    first = result.first_divergence_position
    assert all(p["status"] == "ok" for p in result.points[:first])
