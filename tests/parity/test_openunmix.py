"""Open-Unmix against openunmix 1.3.0's PyTorch ``Separator``, perturbed random weights.

The reference is always PyTorch in float64: two float32 runs of openunmix can differ by
70-85 dB on nearly mono material (the Wiener EM inverts 2x2 channel covariances), so a
float32 reference would measure PyTorch's own rounding. A float32 SNR below 100 dB passes
only within 3 dB of PyTorch float32's own distance to PyTorch float64 (the floor).
"""
import numpy as np
import pytest

from numba_demucs import trace
from numba_demucs.debug import reference_umx
from numba_demucs.debug.reference import music_like_signal
from numba_demucs.models.openunmix import OpenUnmixConfig, OpenUnmixSeparator

from ..conftest import snr_db

TINY = reference_umx.TINY["hidden_size"]


def states_of(separator):
    return {target: {key: value.detach().numpy() for key, value in model.state_dict().items()}
            for target, model in separator.target_models.items()}


def ours(separator, dtype, **options):
    hidden = separator.target_models["vocals"].hidden_size
    config = OpenUnmixConfig(hidden_size=hidden, niter=separator.niter,
                             softmask=separator.softmask, residual=separator.residual,
                             wiener_win_len=separator.wiener_win_len, **options)
    return OpenUnmixSeparator(config, states_of(separator), dtype, "test")


def target_points(names):
    """A trace sink keeping the arrays of the points in ``names``."""
    kept = {}

    def sink(name, context, array):
        if name in names:
            kept[name] = np.array(array, dtype=np.float64)
    return kept, sink


def reference_run(separator, mix, dtype, names=()):
    kept, sink = target_points(names)
    out = reference_umx.run_reference(separator, mix, sink, dtype=dtype)
    return out, kept


def our_traced_run(model, mix, names):
    kept, sink = target_points(names)
    with trace.capture(record=lambda name, context, array: sink(name, context, array)):
        out = model.separate(mix)
    return out, kept


def assert_float32_parity(snr, separator, mix, exact, label):
    """>= 100 dB, or within 3 dB of PyTorch float32's own distance to PyTorch float64 (the
    floor), which is only measured when needed (a PyTorch run of openunmix's Wiener filter
    on 20 s takes about a minute on a loaded 2-core machine)."""
    if np.all(snr >= 100.0):
        return
    floor = snr_db(exact, reference_umx.run_reference(separator, mix, dtype=np.float32))
    bar = np.minimum(100.0, floor - 3.0)
    assert np.all(snr >= bar), f"{label}: SNR {snr} dB, bar {bar} (PyTorch float32 floor {floor})"


def test_umxl_full_size():
    """The one full-size test: umxl (hidden 1024, 512 per direction), 20 s, niter=1: float32
    before the Wiener filter (traced), after it (traced and untraced), and float64."""
    separator = reference_umx.build_separator("umxl", seed=0)
    mix = music_like_signal(20.0)
    names = [f"target_models.{t}" for t in separator.target_models]
    exact, exact_targets = reference_run(separator, mix, np.float64, names)
    model = ours(separator, np.float32)
    untraced = model.separate(mix)
    assert untraced.dtype == np.float32 and untraced.shape == exact.shape
    traced, our_targets = our_traced_run(model, mix, names)
    before = snr_db(np.stack([exact_targets[n] for n in names]),
                    np.stack([our_targets[n] for n in names]))
    after, after_traced = snr_db(exact, untraced), snr_db(exact, traced)
    wide = ours(separator, np.float64).separate(mix)
    assert wide.dtype == np.float64
    snr64 = snr_db(exact, wide)
    print(f"umxl float32: before Wiener {before}, after {after}, traced {after_traced}; "
          f"float64 {snr64}")
    assert np.all(before >= 100.0), before
    assert_float32_parity(after, separator, mix, exact, "umxl after Wiener")
    assert_float32_parity(after_traced, separator, mix, exact, "umxl traced")
    assert np.all(snr64 >= 200.0), snr64


VARIANTS = {
    "niter0": dict(niter=0),
    "niter2-residual": dict(niter=2, residual=True),
    "softmask": dict(softmask=True),
    "softmask-residual-whole-track": dict(softmask=True, residual=True, wiener_win_len=None),
    "short-windows": dict(wiener_win_len=23),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wiener_options_float64(variant):
    separator = reference_umx.build_separator("umxhq", seed=5, hidden_size=16,
                                              **VARIANTS[variant])
    mix = music_like_signal(2.0, seed=2)
    mix[:, 30000:50000] = 0  # digital silence: openunmix's atan2 quirk changes the EM's input
    exact = reference_umx.run_reference(separator, mix, dtype=np.float64)
    got = ours(separator, np.float64).separate(mix)
    assert got.shape == exact.shape
    snr = snr_db(exact, got)
    assert np.all(snr >= 200.0), (variant, snr)


def test_trace_names_match_pytorch():
    separator = reference_umx.build_separator("umxl", seed=0, hidden_size=TINY, wiener_win_len=100)
    golden = reference_umx.golden_names(separator, seconds=3.0)
    model = ours(separator, np.float32)
    with trace.capture(tensors=False) as records:
        model.separate(music_like_signal(3.0))
    names = []
    for name, _, _ in records:
        if name not in names:
            names.append(name)
    assert names == golden
    assert golden[:3] == ["stft", "complexnorm", "target_models.vocals.fc1"]
    assert golden[-2:] == ["wiener", "istft"]
    assert [c for n, c, _ in records if n == "wiener"] == [{"block": 0}, {"block": 1}]
