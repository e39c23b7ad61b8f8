"""Trace points: the same ordered names as PyTorch's forward hooks, and close values at each.

Point names depend on the module tree, not on channel counts: the test models use the
official constructor arguments with 8 channels (the tree equality is checked below), and the
golden lists were written from the PyTorch side by make_golden.py.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

import numba_demucs
from numba_demucs import trace
from numba_demucs.debug import reference

GOLDEN = Path(__file__).parent / "golden"


def golden_names(architecture):
    lines = (GOLDEN / f"{architecture}_points.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module", params=["htdemucs", "htdemucs_6s"])
def traced(request, tmp_path_factory):
    architecture = request.param
    path = reference.save_th(reference.build_model(architecture, seed=0, channels=8, dconv_comp=4),
                             tmp_path_factory.mktemp(architecture))
    ours = numba_demucs.load_model(path)
    length = int(ours.segment * ours.samplerate)
    mix = reference.music_like_signal(length / 44100 + 0.01, seed=5)[:, :length]
    theirs = []
    reference.run_reference(reference.load_reference(path), mix,
                            lambda name, context, array: theirs.append((name, array)),
                            segment_only=True)
    with trace.capture() as records:
        ours.forward(mix)
    mine = [(name, reference.leading_squeezed(array)) for name, _, array in records]
    return architecture, theirs, mine


def test_module_tree_does_not_depend_on_channels():
    for architecture in ("htdemucs", "htdemucs_6s"):
        full = [n for n, _ in reference.build_model(architecture, perturb=False).named_modules()]
        small = [n for n, _ in reference.build_model(architecture, perturb=False, channels=8,
                                                     dconv_comp=4).named_modules()]
        assert full == small


def test_both_sides_give_the_golden_ordered_names(traced):
    architecture, theirs, mine = traced
    expected = golden_names(architecture)
    assert [name for name, _ in theirs] == expected
    assert [name for name, _ in mine] == expected


def test_every_point_agrees_in_float32(traced):
    _, theirs, mine = traced
    for (name, expected), (_, actual) in zip(theirs, mine):
        assert actual.shape == expected.shape, name
        error = np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected)
        assert error < 2e-5, f"{name}: relative L2 error {error:.3g}"


def test_tracing_changes_nothing_and_tags_segments(tmp_path):
    path = reference.save_th(reference.build_model("htdemucs", seed=1, channels=8, dconv_comp=4),
                             tmp_path)
    ours = numba_demucs.load_model(path)
    mix = reference.music_like_signal(9.0, seed=1)[None]  # two 7.8 s segments
    plain = numba_demucs.apply_model(ours, mix, shifts=0)
    with trace.capture() as records:
        traced_out = numba_demucs.apply_model(ours, mix, shifts=0)
    np.testing.assert_array_equal(plain, traced_out)
    segments = sorted({context["segment"] for _, context, _ in records})
    assert segments == [0, 1]
    assert all(set(context) == {"segment"} for _, context, _ in records)
