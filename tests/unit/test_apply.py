"""apply_model against demucs.apply: chunking, weights, trimming, shifts, bags."""
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from demucs.apply import BagOfModels as TorchBag
from demucs.apply import TensorChunk
from demucs.apply import apply_model as demucs_apply_model
from demucs.utils import center_trim as demucs_center_trim

import numba_demucs
from numba_demucs import NumbaDemucsError, trace
from numba_demucs.segments import center_trim, read_window, transition_weights
from numba_demucs.debug import reference

from ..conftest import snr_db

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=2, bottom_channels=16,
            dconv_mode=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apply")
    paths = [reference.save_th(reference.build_model("htdemucs", seed=s, **TINY), folder, f"dddd000{s}")
             for s in (1, 2)]
    return paths


@pytest.mark.parametrize("offset,length,target", [(0, 100, 160), (950, 100, 200), (30, None, 1500),
                                                  (500, 300, 301)])
def test_chunk_padding_matches_tensor_chunk(offset, length, target):
    """A call's input is TensorChunk.padded's: centred on the chunk, zeros outside the mix."""
    base = np.random.default_rng(0).standard_normal((1, 2, 1000)).astype(np.float32)
    expected = TensorChunk(torch.from_numpy(base), offset, length).padded(target).numpy()
    kept = min(length or 1000, 1000 - offset)
    start = offset - (target - kept) // 2
    np.testing.assert_array_equal(read_window(base, start, start + target), expected)
    # a chunk of a chunk reads through to the base array, as TensorChunk does
    inner = TensorChunk(TensorChunk(torch.from_numpy(base), offset, length), 10, 50).padded(target)
    kept = min(50, kept - 10)
    start = offset + 10 - (target - kept) // 2
    np.testing.assert_array_equal(read_window(base, start, start + target), inner.numpy())


@pytest.mark.parametrize("size,length", [(100, 100), (101, 50), (100, 37)])
def test_center_trim(size, length):
    x = np.arange(size)
    np.testing.assert_array_equal(center_trim(x, length),
                                  demucs_center_trim(torch.arange(size), length).numpy())


@pytest.mark.parametrize("segment_length,power", [(11, 1.0), (10, 2.0), (343980, 1.0)])
def test_transition_weights_hand_and_demucs(segment_length, power):
    ours = transition_weights(segment_length, power, np.dtype(np.float32))
    # demucs' expression, evaluated with torch
    ramp = torch.cat([torch.arange(1, segment_length // 2 + 1),
                      torch.arange(segment_length - segment_length // 2, 0, -1)])
    np.testing.assert_array_equal(ours, ((ramp / ramp.max()) ** power).numpy())
    if segment_length == 11:
        np.testing.assert_allclose(ours, [1/6, 2/6, 3/6, 4/6, 5/6, 1, 5/6, 4/6, 3/6, 2/6, 1/6], rtol=1e-6)


def _torch_apply(model, mix, **kwargs):
    with torch.no_grad():
        return demucs_apply_model(model, torch.from_numpy(mix), **kwargs).numpy()


@pytest.mark.parametrize("kwargs", [
    dict(shifts=0, split=True, overlap=0.25),
    dict(shifts=0, split=True, overlap=0.5, transition_power=2.0),
    dict(shifts=0, split=True, segment=0.2),
    dict(shifts=2, split=True),
    dict(shifts=0, split=False),
])
def test_apply_model_matches_demucs(tiny, kwargs):
    mix = reference.music_like_signal(0.9, seed=9)[None]
    mix = np.concatenate([mix, 0.5 * mix[:, :, ::-1]], axis=0)  # batch of two
    seed = 17
    random.seed(seed)
    if not kwargs.get("split", True):
        mix = mix[..., : int(0.2 * 44100)]
    expected = _torch_apply(reference.load_reference(tiny[0]), mix, **kwargs)
    ours = numba_demucs.apply_model(numba_demucs.load_model(tiny[0]), mix, seed=seed, **kwargs)
    assert ours.shape == expected.shape
    for item in range(2):
        assert snr_db(expected[item], ours[item]).min() >= 90


def test_shifts_are_reproducible_with_a_seed(tiny):
    model = numba_demucs.load_model(tiny[0])
    mix = reference.music_like_signal(0.6, seed=1)[None]
    first = numba_demucs.apply_model(model, mix, shifts=2, seed=5)
    np.testing.assert_array_equal(first, numba_demucs.apply_model(model, mix, shifts=2, seed=5))
    other = numba_demucs.apply_model(model, mix, shifts=2, seed=6)
    assert np.abs(other - first).max() > 1e-4


def test_threads_give_the_bits_of_one_call_at_a_time(tiny):
    """Each pass has an odd number of calls, so one runs alone at its end: it must still use
    single-threaded BLAS (1- and 2-thread OpenBLAS sgemm round differently on some CPUs)."""
    model = numba_demucs.load_model(tiny[0])
    mix = reference.music_like_signal(0.6, seed=1)[None]
    threaded = numba_demucs.apply_model(model, mix, shifts=2, seed=5, jobs=2)
    with trace.capture(tensors=False):  # one call at a time
        sequential = numba_demucs.apply_model(model, mix, shifts=2, seed=5)
    np.testing.assert_array_equal(threaded, sequential)


def test_a_spare_core_changes_no_bit(tiny, monkeypatch):
    """A segment that finds a core without a segment hands independent pieces of its work
    (the two branches of a layer, attention heads, STFT rows, DConv gating blocks) to a
    helper thread; its output must be the bits of running them in turn on one thread."""
    from numba_demucs import _threads

    model = numba_demucs.load_model(tiny[0])
    length = int(model.segment * model.samplerate)
    mix = reference.music_like_signal(length / 44100 + 0.01, seed=1)[:, :length]
    outputs = {}
    # (cores, threads of other processes ready to run): only the first has a spare core
    for cores, elsewhere in ((2, 0), (2, 3), (1, 0)):
        monkeypatch.setattr(_threads, "cpu_count", lambda cores=cores: cores)
        monkeypatch.setattr(_threads, "_runnable_elsewhere", lambda n=elsewhere: n)
        before = _threads.handed_off
        with _threads.blas_threads(1), _threads.segment_running():
            outputs[cores, elsewhere] = model.forward(mix)
        handed = _threads.handed_off - before
        # 4 encoder + 2 transformer + 4 decoder layer pairs, heads, STFT/iSTFT rows, blocks
        assert handed >= 10 if (cores, elsewhere) == (2, 0) else handed == 0
    np.testing.assert_array_equal(outputs[2, 0], outputs[1, 0])
    np.testing.assert_array_equal(outputs[2, 3], outputs[1, 0])


def test_bag_averages_as_demucs(tiny):
    weights = [[1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 0.5, 2.0]]
    mix = reference.music_like_signal(0.7, seed=4)[None]
    torch_bag = TorchBag([reference.load_reference(p) for p in tiny], weights)
    random.seed(3)
    expected = _torch_apply(torch_bag, mix, shifts=1)
    bag = numba_demucs.BagOfModels([numba_demucs.load_model(p) for p in tiny], weights)
    ours = numba_demucs.apply_model(bag, mix, shifts=1, seed=3)
    assert snr_db(expected[0], ours[0]).min() >= 90


def test_bag_skips_members_without_weight_on_requested_sources(tiny):
    weights = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]
    bag = numba_demucs.BagOfModels([numba_demucs.load_model(p) for p in tiny], weights)
    assert bag.members_for(["drums"]) == [0]
    assert bag.members_for(["bass", "vocals"]) == [1]
    mix = reference.music_like_signal(0.7, seed=4)[None]
    full = numba_demucs.apply_model(bag, mix, shifts=1, seed=8)
    # Skipping member 0 must not change member 1's random shifts.
    vocals = numba_demucs.apply_model(bag, mix, shifts=1, seed=8, sources=["vocals"])
    np.testing.assert_array_equal(vocals[:, 3], full[:, 3])
    drums = numba_demucs.apply_model(bag, mix, shifts=1, seed=8, sources=["drums"])
    np.testing.assert_array_equal(drums[:, 0], full[:, 0])


@pytest.mark.parametrize("mix,message", [
    (np.zeros((2, 100), np.float32), "must be \\(batch, channels, samples\\)"),
    (np.zeros((1, 3, 100), np.float32), "takes 2 channels, the mix has 3"),
    (np.zeros((1, 2, 0), np.float32), "empty"),
    (np.full((1, 2, 100), np.nan, np.float32), "NaN"),
])
def test_bad_mix(tiny, mix, message):
    with pytest.raises(NumbaDemucsError, match=message):
        numba_demucs.apply_model(numba_demucs.load_model(tiny[0]), mix)


def test_segment_longer_than_training_is_refused(tiny):
    with pytest.raises(NumbaDemucsError, match="longer than the model"):
        numba_demucs.apply_model(numba_demucs.load_model(tiny[0]), np.zeros((1, 2, 100), np.float32),
                                 segment=1.0)


def test_silence_gives_silence(tiny):
    out = numba_demucs.apply_model(numba_demucs.load_model(tiny[0]), np.zeros((1, 2, 3000), np.float32),
                                   shifts=0)
    assert np.all(np.isfinite(out))


def test_only_a_transformer_model_limits_the_segment(tiny, tmp_path):
    """demucs' separate refuses a segment longer than an HTDemucs member's own, and nothing
    else: an HDemucs (no valid_length) runs on a longer segment than it was trained on."""
    from numba_demucs.segments import longest_segment

    path = reference.save_th(reference.build_model("hdemucs_mmi", seed=3, channels=8, segment=1),
                             tmp_path)
    hdemucs = numba_demucs.load_model(path)
    assert longest_segment(hdemucs) == float("inf")
    assert longest_segment(numba_demucs.load_model(tiny[0])) == 0.25
    bag = numba_demucs.BagOfModels([numba_demucs.load_model(tiny[0]), hdemucs])
    assert longest_segment(bag) == 0.25
    mix = reference.music_like_signal(3.5, seed=4)[None]
    expected = _torch_apply(reference.load_reference(path), mix, shifts=0, segment=2.0)
    ours = numba_demucs.apply_model(hdemucs, mix, shifts=0, segment=2.0)
    assert snr_db(expected[0], ours[0]).min() >= 110
