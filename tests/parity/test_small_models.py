"""Small HTDemucs variants against demucs' PyTorch HTDemucs, one segment, float64 and float32.

Each variant switches on a different constructor branch (GroupNorm layers, cross-first
transformer, post-norm, ReLU, no layer scale, no rewrite, no frequency embedding, a
wider encoder context, mono, branches merged before the transformer). Weights are random and perturbed
(LayerScale scales in U(0.05, 0.5), norm affines off identity), saved in float16 as the
official files are, and loaded by each side from the same file.
"""
from fractions import Fraction

import numpy as np
import pytest
import torch

from numba_demucs import load_model
from numba_demucs.debug import reference

from ..conftest import snr_db

# dconv_comp=4 keeps two channels inside the outer DConv branches (one would make their conv
# bias vanish under the one-group GroupNorm that follows, for any implementation).
SMALL = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), bottom_channels=32, dconv_mode=3)

VARIANTS = {
    "official-shape": {},
    "library-defaults-shape": dict(bottom_channels=0, dconv_mode=1),
    "groupnorm-layers": dict(norm_starts=2),
    "cross-first": dict(t_cross_first=True, t_layers=4),
    "post-norm-relu": dict(t_norm_first=False, t_gelu=False),
    "no-layer-scale-no-norm-in": dict(t_layer_scale=False, t_norm_in=False, t_norm_out=False),
    "no-rewrite-no-freq-emb": dict(rewrite=False, freq_emb=0),
    "encoder-context-4-heads": dict(context_enc=1, t_heads=4, bottom_channels=0),
    "decoder-dconv-only": dict(dconv_mode=2, dconv_depth=3),
    "mono": dict(audio_channels=1, t_weight_pos_embed=0.5),
    # nfft = 4 * stride ** depth: the last frequency layer collapses the frequency axis and
    # the time branch is injected into it (HEncLayer/HDecLayer with empty=True).
    "merged-branches": dict(nfft=1024, norm_starts=3),
}


def _segment_input(model, seed=0, fraction=1.0):
    length = int(int(model.segment * model.samplerate) * fraction)
    return reference.music_like_signal(length / 44100 + 0.01, channels=model.audio_channels,
                                       seed=seed)[:, :length]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    torch_model = reference.build_model("htdemucs", seed=7, **{**SMALL, **VARIANTS[request.param]})
    path = reference.save_th(torch_model, folder)
    return request.param, path


def _torch_forward(path, mix, dtype):
    model = reference.load_reference(path)
    if dtype == np.float64:
        model = model.double()
    with torch.no_grad():
        return model(torch.from_numpy(mix.astype(dtype))[None])[0].numpy()


def test_float64_segment_parity(variant):
    name, path = variant
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # so demucs builds its embeddings in float64 too
    try:
        ours = load_model(path, dtype=np.float64)
        mix = _segment_input(ours)
        expected = _torch_forward(path, mix, np.float64)
    finally:
        torch.set_default_dtype(previous)
    snr = snr_db(expected, ours.forward(mix))
    assert snr.min() >= 200, f"{name}: per-source SNR {snr}"


@pytest.mark.parametrize("fraction", [1.0, 0.6])
def test_float32_segment_parity(variant, fraction):
    name, path = variant
    ours = load_model(path)
    mix = _segment_input(ours, seed=1, fraction=fraction)
    expected = _torch_forward(path, mix, np.float32)
    out = ours.forward(mix)
    assert out.shape == expected.shape
    snr = snr_db(expected, out)
    assert snr.min() >= 90, f"{name}: per-source SNR {snr}"


def test_parameter_names_are_the_state_dict_keys(variant):
    name, path = variant
    ours = load_model(path)
    torch_keys = set(reference.load_reference(path).state_dict())
    assert {key for key, _ in ours.parameters()} == torch_keys
