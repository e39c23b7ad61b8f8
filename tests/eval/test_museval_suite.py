"""museval's own test cases, re-created with our scorer in museval's place.

museval's repository (sigsep/sigsep-mus-eval, ``tests/``; not in its PyPI package) has 23
test cases: ``test_bsseval.py`` (empty input, silent input, metrics and the four v3
wrappers, each for mono/``bss_eval_sources`` and stereo/``bss_eval_images`` input, v4 and v3
filters: 16), ``test_museval.py`` (``pad_or_truncate``, 2), ``test_regression.py`` (a MUSDB
track scored with random vocals/accompaniment estimates: aggregate, per-frame scores, JSON
schema, a single estimate: 4) and ``test_cli.py`` (the ``museval`` command on an estimates
folder: 1). Here each case runs with :mod:`numba_demucs.eval.metrics` called directly, or
patched into museval (``museval.metrics.bss_eval``, ``museval.evaluate``) where museval's
case goes through its track-level functions, and, where museval's case only checks that
the call works, the numbers are also compared with museval's own on the same input.

Their data files are replaced by what the tests make: random arrays as museval's fixtures
draw them, and a short synthesised MUSDB18-HQ folder instead of their 7-second
``.stem.mp4`` excerpt; their published per-frame JSON belongs to that excerpt's audio,
so the per-frame scores are compared with museval run live on our track instead.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

museval = pytest.importorskip("museval")
musdb = pytest.importorskip("musdb")
import museval.cli  # noqa: E402
import museval.metrics  # noqa: E402

from numba_demucs.eval import metrics as ours  # noqa: E402
from numba_demucs.eval.synthetic import write_track  # noqa: E402

# museval's fixtures: 2 sources, 2 channels, 1 s at 2000 Hz, window = hop = 2000 samples.
N_SOURCES, N_CHANNELS, RATE, WINDOW, HOP = 2, 2, 2000, 2000, 2000
# Differences to museval's float64 numbers measured at 1e-13 dB on these inputs.
TOLERANCE_DB = 1e-9


@pytest.fixture(params=[True, False], ids=["sources-mono", "images-stereo"])
def is_sources(request):
    return request.param


@pytest.fixture(params=[True, False], ids=["v3", "v4"])
def is_framewise(request):
    return request.param


def _signals(seed, is_sources):
    rng = np.random.default_rng(seed)
    shape = (N_SOURCES, RATE) if is_sources else (N_SOURCES, RATE, N_CHANNELS)
    return rng.random(shape)


def _assert_same_scores(ours_out, museval_out):
    assert len(ours_out) == len(museval_out)
    for got, want in zip(ours_out[:-1], museval_out[:-1]):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape
        assert np.isfinite(want).any() or np.isnan(want).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE_DB)
        assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(ours_out[-1], museval_out[-1])  # the permutation


# ---------------------------------------------------------------- test_bsseval.py (16)


def test_empty_input(is_framewise, is_sources):
    for function in (ours.bss_eval, museval.metrics.bss_eval):
        with pytest.warns(UserWarning):
            output = function(np.array([]), np.array([]), framewise_filters=is_framewise,
                              bsseval_sources_version=is_sources, window=WINDOW, hop=HOP)
        assert len(output) == 5
        assert all(isinstance(part, np.ndarray) and part.size == 0 for part in output)


def test_silent_input(is_framewise, is_sources):
    references = _signals(1, is_sources)
    kwargs = dict(framewise_filters=is_framewise, bsseval_sources_version=is_sources,
                  window=WINDOW, hop=HOP)
    with pytest.raises(ValueError, match="estimates is silent"):
        ours.bss_eval(references, np.zeros(references.shape), **kwargs)
    with pytest.raises(ValueError):  # museval's contract, checked on museval itself
        museval.metrics.bss_eval(references, np.zeros(references.shape), **kwargs)
    # one silent reference among non-silent ones
    silent_reference = references.copy()
    silent_reference[1] = 0
    with pytest.raises(ValueError, match="references is silent"):
        ours.bss_eval(silent_reference, references, **kwargs)


def test_metric(is_framewise, is_sources):
    references, estimates = _signals(2, is_sources), _signals(3, is_sources)
    kwargs = dict(framewise_filters=is_framewise, bsseval_sources_version=is_sources,
                  window=WINDOW, hop=HOP)
    got = ours.bss_eval(references, estimates, **kwargs)
    want = museval.metrics.bss_eval(references, estimates, **kwargs)
    _assert_same_scores(got, want)
    assert got[0].shape == (N_SOURCES, 1)
    assert np.isnan(got[1]).all() == is_sources  # ISR is undefined for bss_eval_sources


def test_wrappers(is_framewise, is_sources):
    references, estimates = _signals(4, is_sources), _signals(5, is_sources)
    for name in ("bss_eval_sources", "bss_eval_images", "bss_eval_sources_framewise",
                 "bss_eval_images_framewise"):
        got = getattr(ours, name)(references, estimates)
        want = getattr(museval.metrics, name)(references, estimates)
        _assert_same_scores(got, want)


# ---------------------------------------------------------------- test_museval.py (2)


@pytest.mark.parametrize("difference", [-10, 10])
def test_pad_or_truncate(difference):
    rng = np.random.default_rng(6)
    references = rng.random((N_SOURCES, 1000, N_CHANNELS))
    estimates = rng.random((N_SOURCES, 1000 + difference, N_CHANNELS))
    got = ours.pad_or_truncate(references, estimates)
    want = museval.pad_or_truncate(references, estimates)
    assert got[1].shape[1] == got[0].shape[1] == 1000
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    if difference > 0:
        np.testing.assert_array_equal(got[1], estimates[:, :1000])
    else:
        np.testing.assert_array_equal(got[1][:, 990:], 0.0)


# ------------------------------------------------- test_regression.py (4), test_cli.py (1)

TRACK = "Synth - Short Rock"
SECONDS = 3.0


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory):
    """A MUSDB18-HQ folder with one 3-second track in ``train`` (museval's sample is in
    ``train`` too)."""
    root = tmp_path_factory.mktemp("musdb")
    (root / "test").mkdir()
    write_track(root, TRACK, SECONDS, np.random.default_rng(7), subset="train")
    return root


@pytest.fixture(scope="module")
def track(musdb_root):
    tracks = [t for t in musdb.DB(root=str(musdb_root), is_wav=True).tracks if t.name == TRACK]
    assert len(tracks) == 1
    return tracks[0]


@pytest.fixture
def our_scorer(monkeypatch):
    """Our scorer in museval's place: its track functions then call ours."""
    monkeypatch.setattr(museval.metrics, "bss_eval", ours.bss_eval)
    monkeypatch.setattr(museval, "evaluate", ours.evaluate)


def _random_estimates(track, targets=("vocals", "accompaniment")):
    # as museval's regression test: uniform noise of the track's shape, seed 0
    rng = np.random.RandomState(0)
    return {target: rng.random_sample(track.audio.shape) for target in targets}


@pytest.fixture(scope="module")
def museval_scores(track):
    """museval's own scores of the random estimates (unpatched), the reference."""
    return museval.eval_mus_track(track, _random_estimates(track))


def _frames(scores):
    document = json.loads(scores.json)
    return {(target["name"], metric): np.array([f["metrics"][metric] for f in target["frames"]],
                                               dtype=float)
            for target in document["targets"] for metric in ("SDR", "SIR", "SAR", "ISR")}


def test_aggregate(track, museval_scores, our_scorer):
    scores = museval.eval_mus_track(track, _random_estimates(track))
    store, reference = museval.EvalStore(), museval.EvalStore()
    store.add_track(scores)
    reference.add_track(museval_scores)
    got = store.agg_frames_scores()
    want = reference.agg_frames_scores()
    assert len(got) == 2 * 4  # vocals and accompaniment, four metrics
    np.testing.assert_allclose(got.values, want.values, rtol=0, atol=2e-5)


def test_track_scores(track, museval_scores, our_scorer):
    got = _frames(museval.eval_mus_track(track, _random_estimates(track)))
    want = _frames(museval_scores)
    assert got.keys() == want.keys()
    assert len(want[("vocals", "SDR")]) == int(SECONDS)  # one frame per second
    for key in want:
        # both rounded to 1e-5 dB: one rounding step apart at most
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=2e-5, err_msg=str(key))


def test_random_estimate(track, our_scorer, tmp_path):
    scores = museval.eval_mus_track(track, _random_estimates(track), output_dir=str(tmp_path))
    assert scores.validate() is None  # museval's JSON schema
    written = json.loads((tmp_path / "train" / f"{TRACK}.json").read_text())
    assert [target["name"] for target in written["targets"]] == ["vocals", "accompaniment"]


def test_one_estimate(track, our_scorer):
    with pytest.warns(UserWarning):
        scores = museval.eval_mus_track(track, _random_estimates(track, ("vocals",)))
    assert len(json.loads(scores.json)["targets"]) == 0


def test_cli(musdb_root, track, museval_scores, our_scorer, tmp_path):
    import soundfile

    estimates = _random_estimates(track)
    folder = tmp_path / "estimates" / "train" / TRACK
    folder.mkdir(parents=True)
    for target, audio in estimates.items():
        soundfile.write(folder / f"{target}.wav", audio, track.rate, subtype="DOUBLE")
    (tmp_path / "estimates" / "test").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        museval.cli.museval([str(tmp_path / "estimates"), "-o", str(tmp_path / "scores"),
                             "--musdb", str(musdb_root), "--is-wav"])
    written = tmp_path / "scores" / "train" / f"{TRACK}.json"

    class _Stored:
        json = written.read_text()

    got, want = _frames(_Stored), _frames(museval_scores)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=2e-5, err_msg=str(key))


# ------------------------------------------------ beyond museval's cases: harder inputs


def test_permutation_and_v3_on_shuffled_estimates_with_silent_frame():
    """Estimates in another order, overlapping frames of fractional hop, a frame where
    every estimate is silent and one where one is: every mode against museval."""
    rng = np.random.default_rng(8)
    references = rng.standard_normal((3, 3000, 2))
    estimates = references[[2, 0, 1]] + 0.3 * rng.standard_normal((3, 3000, 2))
    estimates[:, 500:1400] = 0  # frame 1 (550-1300) silent for every source
    estimates[1, 2000:2500] = 0
    for framewise in (False, True):
        for sources_version in (False, True):
            for permutation in (False, True):
                kwargs = dict(window=750, hop=550.5, filters_len=32,
                              framewise_filters=framewise,
                              bsseval_sources_version=sources_version,
                              compute_permutation=permutation)
                got = ours.bss_eval(references, estimates, **kwargs)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    want = museval.metrics.bss_eval(references, estimates, **kwargs)
                assert np.isnan(got[0][:, 1]).all()
                _assert_same_scores(got, want)
                if permutation and framewise:  # the matched order, in the scored frames
                    assert (got[4][:, [0, 2, 3, 4]] == [[1], [2], [0]]).all()
