"""Breaking any single weight tensor of our model makes the float32 parity check fail.

Every parameter tensor in turn has its sign flipped (the kind of bug a wrong transpose or
a wrong sign convention makes; plain scaling would hide behind the normalisations that
follow most convolutions); the output must then fall below the 90 dB float32 parity bar,
while the unbroken model stays above it. This is what the fixture's perturbation is for:
with demucs' init values many of these tensors could be broken unnoticed.
"""
import pytest
import torch

from numba_demucs import load_model
from numba_demucs.debug import reference

from ..conftest import sign_flips_left_unnoticed, snr_db
from .test_small_models import SMALL, _segment_input


@pytest.fixture(scope="module")
def small_official(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutations")
    path = reference.save_th(reference.build_model("htdemucs", seed=11, **SMALL), folder)
    ours = load_model(path)
    mix = _segment_input(ours, seed=3)
    with torch.no_grad():
        expected = reference.load_reference(path)(torch.from_numpy(mix)[None])[0].numpy()
    return ours, mix, expected


def test_every_parameter_tensor_matters(small_official):
    ours, mix, expected = small_official
    assert snr_db(expected, ours.forward(mix)).min() >= 90
    names, unnoticed = sign_flips_left_unnoticed(ours, lambda model: model.forward(mix),
                                                 expected, 90)
    assert len(names) > 150
    assert not unnoticed, f"breaking these left parity intact: {unnoticed}"
    assert snr_db(expected, ours.forward(mix)).min() >= 90  # restored
