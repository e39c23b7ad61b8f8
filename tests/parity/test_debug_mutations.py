"""The diff names the layer we broke: scaling one layer's weights by 1.01 in our loaded model
makes the layer-by-layer diff against the PyTorch reference fail exactly there.
"""
from fractions import Fraction

import numpy as np
import pytest

import numba_demucs
from numba_demucs.debug import reference
from numba_demucs.debug.parity import parity

ARCH = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), bottom_channels=32, dconv_mode=3)

# (parameter to break, the trace point that must be reported first)
MUTATIONS = [
    ("encoder.1.conv.weight", "encoder.1.conv"),                       # a frequency encoder conv
    ("tencoder.1.dconv.layers.0.0.weight", "tencoder.1.dconv.layers.0.0"),  # DConv in a time encoder
    ("crosstransformer.layers.1.cross_attn.in_proj_weight",
     "crosstransformer.layers.1.cross_attn"),                          # attention projection
    ("encoder.2.dconv.layers.1.6.scale", "encoder.2.dconv.layers.1.6"),  # a LayerScale
    ("decoder.1.conv_tr.weight", "decoder.1.conv_tr"),                 # a frequency decoder
    ("tdecoder.3.conv_tr.weight", "tdecoder.3.conv_tr"),               # the final time decoder
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("debug-mutations")
    checkpoint = reference.save_th(reference.build_model("htdemucs", seed=4, **ARCH), folder)
    mix = reference.music_like_signal(1.2, seed=6)
    unbroken = parity(checkpoint, mix)
    return checkpoint, mix, unbroken


def _diff_with(setup, edit):
    checkpoint, mix, unbroken = setup
    model = numba_demucs.load_model(checkpoint)
    edit(dict(model.parameters()))
    return parity(checkpoint, mix, model=model, reference=unbroken.reference).diff


def test_unbroken_model_has_no_divergence(setup):
    report = setup[2]
    result = report.diff
    assert result.ok and result.first_divergence is None
    assert len(result.points) > 1000 and not result.only_ours and not result.only_reference
    assert report.reference.sources == report.ours.sources == ["drums", "bass", "other", "vocals"]
    assert report.passed and bool(np.all(report.snr_db > report.threshold_db))
    # the reference trace handed back in compares as the one collected there
    assert _diff_with(setup, lambda parameters: None).to_dict() == result.to_dict()


@pytest.mark.parametrize("parameter,point", MUTATIONS)
def test_scaled_layer_is_the_first_divergence(setup, parameter, point):
    def edit(parameters):
        parameters[parameter] *= np.float32(1.01)

    result = _diff_with(setup, edit)
    assert not result.ok
    assert result.first_divergence == point
    assert result.first_divergence_context == {"segment": 0}
    first = result.first_divergence_position
    assert all(p["status"] == "ok" for p in result.points[:first])


def test_nan_is_reported_at_its_layer_with_its_count(setup):
    def edit(parameters):
        parameters["encoder.2.rewrite.bias"][3] = np.nan

    result = _diff_with(setup, edit)
    assert result.first_divergence == "encoder.2.rewrite"
    point = result.points[result.first_divergence_position]
    assert point["nan_ours"] > 0 and point["nan_reference"] == 0
    assert any(reason.startswith("nan count") for reason in point["reasons"])
