"""--isolate tells the broken layer from the layers that only pass its error on."""
from fractions import Fraction

import numpy as np
import pytest

import numba_demucs
from numba_demucs.debug import collect, reference
from numba_demucs.debug.isolate import isolate

ARCH = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), bottom_channels=32, dconv_mode=3)
FLOAT32_FLOOR = 1e-5  # relative L2 of a float32 layer recomputed in another order


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    checkpoint = reference.save_th(reference.build_model("htdemucs", seed=4, **ARCH),
                                   tmp_path_factory.mktemp("isolate"))
    mix = reference.music_like_signal(0.5, seed=6)
    theirs = collect.trace_reference(checkpoint, mix, segment_only=True, save_tensors=True)
    return checkpoint, mix, theirs


def test_unbroken_model_is_at_the_floor_everywhere(points):
    checkpoint, mix, theirs = points
    rows = isolate(theirs, numba_demucs.load_model(checkpoint), mix, segment_only=True)
    assert len(rows) == len(theirs)
    assert max(row["local"] for row in rows) < FLOAT32_FLOOR


def test_broken_layer_has_local_error_and_later_layers_only_inherit(points):
    checkpoint, mix, theirs = points
    model = numba_demucs.load_model(checkpoint)
    dict(model.parameters())["encoder.1.conv.weight"] *= np.float32(1.01)
    rows = isolate(theirs, model, mix, segment_only=True)
    names = [row["name"] for row in rows]
    broken = names.index("encoder.1.conv")
    assert rows[broken]["local"] > 1e-3
    assert all(row["local"] < FLOAT32_FLOOR for row in rows[:broken])
    later = rows[broken + 1:]
    assert all(row["local"] < FLOAT32_FLOOR for row in later)
    assert max(row["total"] for row in later) > 1e-3
    assert rows[names.index("output.sources")]["total"] > FLOAT32_FLOOR
