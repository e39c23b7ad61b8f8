"""uSDR (the MDX 2021 challenge SDR) and SI-SDR over whole tracks.

Checked against values worked out by hand, against demucs' ``new_sdr`` (its copy of the
MDX challenge's evaluator, in torch) and the evaluator's own float32 NumPy formula, and
against a plain NumPy twin of the SI-SDR definition.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from numba_demucs.eval.whole_track import MDX_DELTA, track_metrics

import signals  # noqa: E402


def db(ratio):
    return 10 * math.log10(ratio)


# One stereo source of two samples: s = [[3, 0], [0, 4]], |s|^2 = 25.
S = np.array([[3.0, 0.0], [0.0, 4.0]])
N = np.array([[4.0, 0.0], [0.0, -3.0]])  # orthogonal to S, |n|^2 = 25


def test_hand_computed_values():
    estimates = np.stack([
        # e = [[3, 0], [0, 3]]: |s - e|^2 = 1; a = <e, s>/|s|^2 = 21/25, |a s|^2 = 17.64,
        # |a s - e|^2 = 0.48^2 + 0.36^2 = 0.36, so SI-SDR = 10 log10(49).
        np.array([[3.0, 0.0], [0.0, 3.0]]),
        # e = 2 s + n: |s - e|^2 = 49 + 1 = 50; a = 2, a s - e = -n, SI-SDR = 10 log10(100/25).
        2 * S + N,
        # e = -s: a = -1 and a s - e = 0, SI-SDR infinite; |s - e|^2 = 100.
        -S,
    ])
    metrics = track_metrics(np.stack([S, S, S]), estimates)
    np.testing.assert_allclose(metrics["uSDR"], [db((25 + 1e-7) / (1 + 1e-7)),
                                                 db((25 + 1e-7) / (50 + 1e-7)),
                                                 db((25 + 1e-7) / (100 + 1e-7))], rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(metrics["SI-SDR"][:2], [db(49.0), db(4.0)], rtol=0, atol=1e-12)
    assert metrics["SI-SDR"][2] == np.inf
    assert metrics["uSDR"][1] == pytest.approx(-3.0103, abs=1e-4)


def test_the_challenge_epsilon_matters_for_quiet_sources():
    """At |s|^2 = 2.5e-7 the 1e-7 of the MDX evaluator changes uSDR by 9 dB."""
    quiet = 1e-4 * S
    estimate = quiet + np.array([[1e-4, 0.0], [0.0, 0.0]])  # |s - e|^2 = 1e-8
    usdr = track_metrics(quiet[None], estimate[None])["uSDR"][0]
    assert MDX_DELTA == 1e-7
    assert usdr == pytest.approx(db(3.5e-7 / 1.1e-7), abs=1e-9)  # 5.0268 dB
    assert abs(usdr - db(2.5e-7 / 1e-8)) > 8  # without the epsilon: 13.98 dB


@pytest.fixture(scope="module")
def realistic():
    rng = np.random.default_rng(41)
    references = signals.tones(rng, 4, 2.0, floor=0.05) * 0.2
    estimates = signals.degrade(rng, references, leak=0.2, noise_level=0.05, filtered=True)
    return references, estimates


def demucs_new_sdr():
    """``demucs.evaluate.new_sdr``, taken from the installed file without importing the
    module (it imports ``dora``, a training dependency that is not installed)."""
    import ast
    import importlib.util

    torch = pytest.importorskip("torch")
    path = importlib.util.find_spec("demucs").submodule_search_locations[0] + "/evaluate.py"
    tree = ast.parse(open(path).read())
    function, = [node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name == "new_sdr"]
    namespace = {"th": torch}
    exec(compile(ast.Module([function], type_ignores=[]), path, "exec"), namespace)
    return torch, namespace["new_sdr"]


def test_usdr_equals_demucs_new_sdr(realistic):
    torch, new_sdr = demucs_new_sdr()

    references, estimates = realistic
    theirs = new_sdr(torch.from_numpy(references)[None], torch.from_numpy(estimates)[None])
    ours = track_metrics(references, estimates)["uSDR"]
    np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=0, atol=1e-9)
    # float32 input is summed in float64 here: the same numbers to float32 rounding
    single = track_metrics(references.astype(np.float32), estimates.astype(np.float32))
    np.testing.assert_allclose(single["uSDR"], ours, rtol=0, atol=1e-4)


def test_usdr_against_the_challenge_evaluator_in_float32(realistic):
    """The MDX evaluator casts to float32 and sums in float32 (NumPy's pairwise sum)."""
    references, estimates = (a.astype(np.float32) for a in realistic)
    num = np.sum(np.square(references), axis=(1, 2)) + 1e-7
    den = np.sum(np.square(references - estimates), axis=(1, 2)) + 1e-7
    challenge = 10 * np.log10(num / den)
    ours = track_metrics(references, estimates)["uSDR"]
    np.testing.assert_allclose(ours, challenge, rtol=0, atol=1e-5)
    assert np.ptp(ours) > 1  # four different sources, four different values


def naive_si_sdr(reference, estimate):
    s, e = reference.ravel(), estimate.ravel()
    scaled = (e @ s) / (s @ s) * s
    return 10 * np.log10((scaled @ scaled) / ((scaled - e) @ (scaled - e)))


def test_si_sdr_against_its_definition_and_scale_invariance(realistic):
    references, estimates = realistic
    ours = track_metrics(references, estimates)["SI-SDR"]
    expected = [naive_si_sdr(r, e) for r, e in zip(references, estimates)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    louder = track_metrics(references, 3.0 * estimates)
    np.testing.assert_allclose(louder["SI-SDR"], ours, rtol=0, atol=1e-9)
    # uSDR is not scale invariant: the check above can tell the two apart
    assert np.all(np.abs(louder["uSDR"] - track_metrics(references, estimates)["uSDR"]) > 1)


def test_mono_input_and_shape_mismatch():
    from numba_demucs.errors import EvaluationError

    metrics = track_metrics(S[:, :1].T, np.array([[3.0, 0.0]]))  # (1 source, 2 samples)
    assert metrics["uSDR"][0] == pytest.approx(db((9 + 1e-7) / 1e-7))
    with pytest.raises(EvaluationError, match="differ in shape"):
        track_metrics(np.stack([S]), np.stack([S, S]))
