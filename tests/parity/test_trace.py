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
    # segments run in threads record the same points
    with trace.capture() as threaded:
        numba_demucs.apply_model(ours, mix, shifts=0, jobs=2)
    assert sorted((n, c["segment"]) for n, c, _ in threaded) == \
        sorted((n, c["segment"]) for n, c, _ in records)


def test_bag_points_carry_the_member_index(tmp_path):
    from fractions import Fraction

    from demucs.apply import BagOfModels as TorchBag

    small = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16)
    paths = [reference.save_th(reference.build_model("htdemucs", seed=s, **small), tmp_path, f"ee{s}")
             for s in (1, 2)]
    weights = [[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]]
    mix = reference.music_like_signal(0.8, seed=2)
    theirs = []
    torch_bag = TorchBag([reference.load_reference(p) for p in paths], weights)
    reference.run_reference(torch_bag, mix, lambda n, c, a: theirs.append((n, c, a)))
    bag = numba_demucs.BagOfModels([numba_demucs.load_model(p) for p in paths], weights)
    with trace.capture() as records:
        numba_demucs.apply_model(bag, mix[None], shifts=0)
    assert [(n, c) for n, c, _ in theirs] == [(n, c) for n, c, _ in records]
    assert {c["model"] for _, c, _ in records} == {0, 1}
    assert {c["segment"] for _, c, _ in records} == {0, 1, 2}  # 0.8 s in 0.5 s segments, stride 0.375 s
    for (name, _, expected), (_, _, actual) in zip(theirs, records):
        actual = reference.leading_squeezed(actual)
        error = np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected)
        assert error < 2e-5, name
