"""HDemucs (demucs v3) against demucs' PyTorch HDemucs.

The architectures of the published files (hdemucs_mmi's 75fc33f5; mdx's c511e2ab with the
magnitude spectrogram, the MDX padding bug and no GroupNorm; mdx_extra's 5d2d6c55 with the
magnitude spectrogram and GroupNorm; mdx's 7d865c68 with frequency bands, MultiWrap, in its
two outer layers) at 8 channels, with perturbed weights saved in float16
as the official files are; both sides load the same file. 5 s of audio put 215 steps into
the BLSTMs of encoder 4, so demucs' 200-step windows with stride 100 are in play. Through
apply_model: small hdemucs_mmi, c511e2ab and 7d865c68 on 20 s in 8 s segments (four chunks,
the last one shorter: HDemucs takes every chunk at its own length), and the full-width
hdemucs_mmi on 20 s (one chunk of its 40 s segment; 862 BLSTM steps in encoder 4).
"""
import numpy as np
import pytest
import torch

from numba_demucs import apply_model, load_model
from numba_demucs._threads import blas_threads
from numba_demucs.debug import reference

from ..conftest import snr_db

SMALL = dict(channels=8, segment=8)
ARCHITECTURES = ["hdemucs_mmi", "hdemucs_c511e2ab", "hdemucs_5d2d6c55", "hdemucs_7d865c68"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def small(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, reference.save_th(
        reference.build_model(request.param, seed=3, **SMALL), folder)


def _torch_apply(path, mix, dtype=np.float32):
    from demucs.apply import apply_model as torch_apply_model

    model = reference.load_reference(path)
    if dtype == np.float64:
        model = model.double()
    with torch.no_grad():
        return torch_apply_model(model, torch.from_numpy(mix.astype(dtype))[None], shifts=0,
                                 split=True, overlap=0.25)[0].numpy()


def test_float64_segment_parity(small):
    name, path = small
    mix = reference.music_like_signal(5, seed=1).astype(np.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = reference.load_reference(path).double()
        with torch.no_grad():
            expected = model(torch.from_numpy(mix)[None])[0].numpy()
    finally:
        torch.set_default_dtype(previous)
    with blas_threads(1):
        out = load_model(path, dtype=np.float64).forward(mix)
    snr = snr_db(expected, out)
    print(f"per-source SNR (dB): {np.round(snr, 1)}")  # shown by pytest -rP
    assert snr.min() >= 200, f"{name}: per-source SNR {snr}"


def test_float32_segment_parity(small):
    name, path = small
    mix = reference.music_like_signal(5, seed=2)
    with torch.no_grad():
        expected = reference.load_reference(path)(torch.from_numpy(mix)[None])[0].numpy()
    with blas_threads(1):
        out = load_model(path).forward(mix)
    snr = snr_db(expected, out)
    print(f"per-source SNR (dB): {np.round(snr, 1)}")  # shown by pytest -rP
    assert snr.min() >= 110, f"{name}: per-source SNR {snr}"


@pytest.mark.parametrize("architecture", ["hdemucs_mmi", "hdemucs_c511e2ab", "hdemucs_7d865c68"])
def test_float32_apply_model_parity_on_short_segments(tmp_path, architecture):
    """20 s in 8 s segments: four chunks, the last one shorter than the others."""
    path = reference.save_th(reference.build_model(architecture, seed=6, **SMALL), tmp_path)
    mix = reference.music_like_signal(20, seed=2)
    expected = _torch_apply(path, mix)
    ours = load_model(path)
    assert ours.segment == 8
    with blas_threads(1):
        out = apply_model(ours, mix[None], shifts=0, split=True, overlap=0.25, jobs=1)[0]
    snr = snr_db(expected, out)
    print(f"per-source SNR (dB): {np.round(snr, 1)}")  # shown by pytest -rP
    assert snr.min() >= 110, f"per-source SNR {snr}"


def test_parameter_names_are_the_state_dict_keys(small):
    name, path = small
    ours = load_model(path)
    assert {key for key, _ in ours.parameters()} == set(reference.load_reference(path).state_dict())


def test_full_width_hdemucs_mmi_through_apply_model(tmp_path):
    path = reference.save_th(reference.build_model("hdemucs_mmi", seed=5), tmp_path)
    mix = reference.music_like_signal(20, seed=4)
    expected = _torch_apply(path, mix)
    ours = load_model(path)
    assert ours.config.channels == 48 and ours.config.depth == 6
    out = apply_model(ours, mix[None], shifts=0, split=True, overlap=0.25)[0]
    snr = snr_db(expected, out)
    print(f"per-source SNR (dB): {np.round(snr, 1)}")  # shown by pytest -rP
    assert snr.min() >= 110, f"per-source SNR {snr}"
