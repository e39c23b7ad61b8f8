"""Every kernel against its plain-numpy reference in tests/naive.py, in float32 and float64."""
import numpy as np
import pytest

from numba_demucs.kernels import activations, attention, conv, norm, spectral
from tests import naive

DTYPES = [np.float32, np.float64]
# float32 results are compared with a float64 reference: tolerance is a few float32 ulps
# of the accumulated magnitude; float64 results must agree to rounding.
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-11}


def close(actual, expected, dtype):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max())
    assert error <= TOLERANCE[dtype] * scale, f"max error {error:.3g} (scale {scale:.3g})"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (4, 2, 1, 1), (1, 2, 2, 1), (1, 4, 4, 1), (2, 1, 1, 2), (1, 1, 1, 4)])
def test_conv1d(rng, dtype, stride, padding, dilation, groups):
    x = rng.standard_normal((3, 8, 37)).astype(dtype)
    w = rng.standard_normal((12, 8 // groups, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    out = conv.conv1d(x, w, b, stride, padding, dilation, groups)
    assert out.dtype == dtype
    close(out, naive.conv1d(x.astype(np.float64), w.astype(np.float64), b, stride, padding,
                            dilation, groups), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,padding", [
    ((8, 1), (4, 1), (2, 0)), ((3, 3), (1, 1), (1, 1)), ((1, 1), (1, 1), (0, 0)), ((4, 1), (4, 1), (0, 0))])
def test_conv2d(rng, dtype, kernel, stride, padding):
    x = rng.standard_normal((5, 32, 9)).astype(dtype)
    w = rng.standard_normal((6, 5) + kernel).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out = conv.conv2d(x, w, b, stride, padding)
    assert out.dtype == dtype
    close(out, naive.conv2d(x.astype(np.float64), w.astype(np.float64), b, stride, padding), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride", [((8, 1), (4, 1)), ((4, 1), (4, 1)), ((3, 2), (2, 1))])
def test_conv_transpose2d(rng, dtype, kernel, stride):
    x = rng.standard_normal((6, 7, 5)).astype(dtype)
    w = rng.standard_normal((6, 4) + kernel).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out = conv.conv_transpose2d(x, w, b, stride)
    close(out, naive.conv_transpose2d(x.astype(np.float64), w.astype(np.float64), b, stride), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose1d(rng, dtype):
    x = rng.standard_normal((6, 11)).astype(dtype)
    w = rng.standard_normal((6, 3, 8)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    close(conv.conv_transpose1d(x, w, b, 4),
          naive.conv_transpose1d(x.astype(np.float64), w.astype(np.float64), b, 4), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,padding,dilation", [(3, 1, 1), (3, 2, 2), (3, 4, 4), (1, 0, 1)])
def test_conv1d_rows(rng, dtype, kernel, padding, dilation):
    # channels first (in, rows, n), as DConv runs; the reference works on (rows, in, n)
    x = rng.standard_normal((8, 5, 37)).astype(dtype)
    w = rng.standard_normal((6, 8, kernel)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out = conv.conv1d_rows(x, w, b, padding, dilation)
    expected = naive.conv1d(x.transpose(1, 0, 2).astype(np.float64), w.astype(np.float64), b,
                            1, padding, dilation, 1)
    close(out, expected.transpose(1, 0, 2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_single_item_pointwise(rng, dtype):
    x = rng.standard_normal((1, 8, 37)).astype(dtype)
    w = rng.standard_normal((12, 8, 1)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    close(conv.conv1d(x, w, b), naive.conv1d(x.astype(np.float64), w.astype(np.float64), b,
                                             1, 0, 1, 1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_norm_into_strided_views(rng, dtype):
    x = (3 + 2 * rng.standard_normal((8, 3, 50))).astype(dtype)  # (channels, rows, n)
    w, b = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    out = np.empty_like(x)
    norm.group_norm_into(x.transpose(1, 0, 2), 1, w, b, 1e-5, out.transpose(1, 0, 2))
    expected = naive.group_norm(x.transpose(1, 0, 2).astype(np.float64), 1, w, b, 1e-5)
    close(out, expected.transpose(1, 0, 2), dtype)


def test_conv_shape_mismatch_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv1d(rng.standard_normal((1, 3, 10)), rng.standard_normal((4, 2, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 4])
def test_group_norm(rng, dtype, groups):
    x = (3 + 2 * rng.standard_normal((3, 8, 50))).astype(dtype)
    w, b = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    out = norm.group_norm(x, groups, w, b, 1e-5)
    assert out.dtype == dtype
    close(out, naive.group_norm(x, groups, w, b, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(rng, dtype):
    x = (1 + rng.standard_normal((20, 16))).astype(dtype)
    w, b = rng.standard_normal(16).astype(dtype), rng.standard_normal(16).astype(dtype)
    close(norm.layer_norm(x, w, b, 1e-5), naive.layer_norm(x, w, b, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_activations(rng, dtype):
    x = (4 * rng.standard_normal((4, 6, 30))).astype(dtype)
    close(activations.gelu(x), naive.gelu(x), dtype)
    close(activations.sigmoid(x), naive.sigmoid(x), dtype)
    close(activations.glu(x.reshape(4, 6, 30)), naive.glu(x.reshape(4, 6, 30)), dtype)


def test_gelu_known_values():
    # x * Phi(x) at hand-computed points: Phi(1) = 0.841344746..., Phi(-2) = 0.022750131...
    x = np.array([0.0, 1.0, -2.0], dtype=np.float64)
    np.testing.assert_allclose(activations.gelu(x), [0.0, 0.8413447460685429, -0.04550026389635842],
                               rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax(rng, dtype):
    x = (10 * rng.standard_normal((5, 40))).astype(dtype)
    expected = naive.softmax_rows(x)
    out = activations.softmax_rows(x.copy())
    close(out, expected, dtype)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 15, 16, 40, 333])
def test_exp_rows_are_softmax_numerators(rng, dtype, n):
    # lengths around the 16 lanes of the max and the sum; rows peaking at the start, middle, end
    x = (10 * rng.standard_normal((6, n))).astype(dtype)
    x[1, 0] = x[2, n // 2] = x[3, -1] = 60
    expected = naive.softmax_rows(x)
    numerators = x.copy()
    inv_sums = activations.exp_rows(numerators)
    close(numerators * inv_sums[:, None], expected, dtype)
    close(numerators.max(axis=1), np.ones(6), dtype)  # exp(max - max)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("queries,keys,block", [(33, 33, 8), (20, 45, 256), (64, 7, 16)])
def test_multi_head_attention(rng, dtype, queries, keys, block):
    channels, heads = 16, 4
    q = rng.standard_normal((queries, channels)).astype(dtype)
    k = rng.standard_normal((keys, channels)).astype(dtype)
    w_in = (0.3 * rng.standard_normal((3 * channels, channels))).astype(dtype)
    b_in = rng.standard_normal(3 * channels).astype(dtype)
    w_out = (0.3 * rng.standard_normal((channels, channels))).astype(dtype)
    b_out = rng.standard_normal(channels).astype(dtype)
    out = attention.multi_head_attention(q, k, w_in, b_in, w_out, b_out, heads, block)
    close(out, naive.multi_head_attention(*(a.astype(np.float64) for a in (q, k, w_in, b_in, w_out, b_out)),
                                          heads), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_fft,hop,length", [(64, 16, 500), (32, 8, 97), (16, 4, 64)])
def test_stft_matches_direct_dft(rng, dtype, n_fft, hop, length):
    x = rng.standard_normal((3, length)).astype(dtype)
    z = spectral.stft(x, n_fft, hop)
    assert z.shape == (3, n_fft // 2 + 1, 1 + length // hop)
    expected = naive.stft(x, n_fft, hop)
    close(z.real, expected.real, dtype)
    close(z.imag, expected.imag, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_fft,hop,length", [(64, 16, 500), (32, 8, 97)])
def test_istft_matches_direct_inverse_and_inverts_stft(rng, dtype, n_fft, hop, length):
    x = rng.standard_normal((2, length)).astype(dtype)
    z = spectral.stft(x, n_fft, hop)
    z_noisy = z + (0.1 * rng.standard_normal(z.shape)).astype(z.dtype)
    close(spectral.istft(z_noisy, hop, length), naive.istft(z_noisy.astype(np.complex128), hop, length), dtype)
    close(spectral.istft(z, hop, length), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_frames_are_windowed_in_the_signals_precision(rng, dtype):
    x = rng.standard_normal((2, 300)).astype(dtype)
    window = spectral.hann_window(64, dtype)
    frames = spectral.frame_signal(x, 64, 16, window, dtype)
    assert frames.shape == (2, 1 + (300 - 64) // 16, 64) and frames.dtype == dtype
    wide = spectral.frame_signal(x, 64, 16, window)  # the same products, stored in float64
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide, frames.astype(np.float64))
    for f in (0, 7, frames.shape[1] - 1):
        # one product rounded to the dtype: NumPy's own multiply gives the same bits
        np.testing.assert_array_equal(frames[:, f], x[:, f * 16:f * 16 + 64] * window)


def test_reflect_pad_matches_numpy(rng):
    x = rng.standard_normal((2, 10))
    np.testing.assert_array_equal(spectral.reflect_pad(x, 3, 9),
                                  np.pad(x, ((0, 0), (3, 9)), mode="reflect"))


def test_hann_window_hand_values():
    np.testing.assert_allclose(spectral.hann_window(4, np.float64), [0.0, 0.5, 1.0, 0.5], atol=1e-16)


def test_exp_f32_within_two_ulps():
    # the float32 activations' exp, over the whole range they call it on
    x = np.linspace(-87, 88, 200_001, dtype=np.float32)
    out = x.copy()
    activations.exp_f32(out)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert float(np.max(np.abs(out - exact) / ulp)) <= 2.0


def test_float32_activations_on_a_wide_range():
    # every branch of the float32 paths: deep negative tails, zero, large positives. The
    # absolute tolerance is for GELU's negative tail (the exp argument is rounded to float32,
    # and the reference's 1 + erf(x) cancels); PyTorch's float32 GELU errs by up to 1e-7 there.
    x = np.concatenate([np.linspace(-40, 40, 4001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    wide = x.astype(np.float64)
    np.testing.assert_allclose(activations.gelu(x), naive.gelu(wide), rtol=3e-7, atol=1e-9)
    np.testing.assert_allclose(activations.sigmoid(x), naive.sigmoid(wide), rtol=3e-7, atol=1e-37)


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolutions_in_column_blocks(rng, dtype, monkeypatch):
    # a budget of a few columns forces every blocked path (batch, time, rows, transposed)
    monkeypatch.setattr(conv, "COLUMN_BUDGET", 64)
    f64 = (lambda a: a.astype(np.float64))
    x = rng.standard_normal((3, 8, 37)).astype(dtype)
    w = rng.standard_normal((12, 8, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    close(conv.conv1d(x, w, b, 1, 2, 2), naive.conv1d(f64(x), f64(w), b, 1, 2, 2, 1), dtype)
    close(conv.conv1d(x[:1], w, b, 4, 2), naive.conv1d(f64(x[:1]), f64(w), b, 4, 2, 1, 1), dtype)
    rows = np.ascontiguousarray(x.transpose(1, 0, 2))
    close(conv.conv1d_rows(rows, w, b, 1, 1),
          naive.conv1d(f64(x), f64(w), b, 1, 1, 1, 1).transpose(1, 0, 2), dtype)
    x2 = rng.standard_normal((5, 32, 9)).astype(dtype)
    w2 = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    close(conv.conv2d(x2, w2, b[:6], (1, 1), (1, 1)),
          naive.conv2d(f64(x2), f64(w2), b[:6], (1, 1), (1, 1)), dtype)
    wt = rng.standard_normal((5, 4, 8, 1)).astype(dtype)
    close(conv.conv_transpose2d(x2, wt, b[:4], (4, 1)),
          naive.conv_transpose2d(f64(x2), f64(wt), b[:4], (4, 1)), dtype)
    w1 = rng.standard_normal((8, 3, 8)).astype(dtype)
    close(conv.conv_transpose1d(x[0], w1, b[:3], 4),
          naive.conv_transpose1d(f64(x[0]), f64(w1), b[:3], 4), dtype)


# -- fused float32 kernels: the naive composition's values, the separate kernels' bits -----
def _f32(rng, shape, scale=1.0, offset=0.0):
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("in_channels,length,dilation", [(8, 37, 1), (7, 37, 2), (3, 2100, 1), (5, 3, 2)])
def test_direct_dilated_conv(rng, in_channels, length, dilation):
    # odd channel counts (the pair loop's remainder), rows longer than one 1024-output tile,
    # and rows shorter than the kernel's reach (no output has all three taps)
    x = _f32(rng, (in_channels, 4, length))
    w, b = _f32(rng, (6, in_channels, 3)), _f32(rng, 6)
    out = conv.conv1d_rows_direct(x, w, b, dilation, dilation)
    expected = naive.conv1d(x.transpose(1, 0, 2).astype(np.float64), w.astype(np.float64), b,
                            1, dilation, dilation, 1).transpose(1, 0, 2)
    close(out, expected, np.float32)


def test_group_norm_gelu_is_the_two_kernels(rng):
    x = _f32(rng, (6, 5, 1500), 2.0, 0.5)  # rows longer than one chunk
    w, b = _f32(rng, 6), _f32(rng, 6)
    normed = x.copy()
    norm.group_norm_channels_first(x, 1, w, b, 1e-5, normed)
    separate = activations.gelu(normed)
    fused = x.copy()
    norm.group_norm_gelu_f32(fused, 1, w, b, 1e-5, fused)
    np.testing.assert_array_equal(fused, separate)
    per_row = naive.group_norm(x.transpose(1, 0, 2), 1, w, b, 1e-5).transpose(1, 0, 2)
    close(fused, naive.gelu(per_row), np.float32)


def test_gated_residual_is_the_separate_layers(rng):
    channels, items, n = 4, 3, 1300
    x = _f32(rng, (2 * channels, items, n), 3.0, 1.0)
    bias, weight, norm_bias = _f32(rng, 2 * channels), _f32(rng, 2 * channels), _f32(rng, 2 * channels)
    layer_scale, residual = _f32(rng, channels, 0.3), _f32(rng, (channels, items, n))
    # the separate steps DConv runs when traced: bias, GroupNorm per item, GLU, scale, sum
    biased = x + bias[:, None, None]
    normed = biased.copy()
    norm.group_norm_channels_first(biased, 1, weight, norm_bias, 1e-5, normed)
    gated = activations.glu(normed.reshape(1, 2 * channels, -1)).reshape(channels, items, n)
    gated *= layer_scale[:, None, None]
    separate = gated + residual
    fused_x, fused = x.copy(), residual.copy()
    norm.gated_residual_f32(fused_x, bias, weight, norm_bias, 1e-5, layer_scale, fused, 0)
    np.testing.assert_array_equal(fused, separate)
    # items 1 and 2 of a wider residual: only those rows change, by the same bits
    wider = np.concatenate([residual[:, :1], residual, residual[:, :1]], axis=1)
    before = wider.copy()
    norm.gated_residual_f32(x[:, 1:].copy(), bias, weight, norm_bias, 1e-5, layer_scale, wider, 2)
    np.testing.assert_array_equal(wider[:, 2:4], separate[:, 1:])
    np.testing.assert_array_equal(np.delete(wider, [2, 3], axis=1), np.delete(before, [2, 3], axis=1))
    per_item = naive.group_norm(biased.transpose(1, 0, 2), 1, weight, norm_bias, 1e-5)
    expected = residual + layer_scale[:, None, None] * naive.glu(per_item).transpose(1, 0, 2)
    close(fused, expected, np.float32)


def test_bias_gelu_kernels_are_bias_then_gelu(rng):
    hidden, bias = _f32(rng, (7, 2500), 2.0), _f32(rng, 2500)
    fused = hidden.copy()
    activations.bias_gelu_rows_f32(fused, bias)
    np.testing.assert_array_equal(fused, activations.gelu(hidden + bias))
    close(fused, naive.gelu(hidden.astype(np.float64) + bias), np.float32)
    z, channel_bias = _f32(rng, (3, 12, 40), 2.0), _f32(rng, 3)
    cropped = z[:, 2:-2, :]
    out = np.empty(cropped.shape, np.float32)
    activations.bias_gelu_channels_f32(cropped, channel_bias, out)
    np.testing.assert_array_equal(out, activations.gelu(np.ascontiguousarray(cropped + channel_bias[:, None, None])))


@pytest.mark.parametrize("kernel,padding", [((3, 3), (1, 1)), ((1, 1), (0, 0))])
def test_conv2d_glu_is_conv_then_glu(rng, monkeypatch, kernel, padding):
    monkeypatch.setattr(conv, "COLUMN_BUDGET", 200)  # several row blocks
    x, w, b = _f32(rng, (5, 16, 9)), _f32(rng, (8, 5) + kernel), _f32(rng, 8)
    fused = conv.conv2d_glu(x, w, b, padding)
    separate = activations.glu(conv.conv2d(x, w, b, (1, 1), padding)[None].reshape(1, 8, -1))
    np.testing.assert_array_equal(fused, separate.reshape(4, 16, 9))
    expected = naive.glu(naive.conv2d(x.astype(np.float64), w.astype(np.float64), b, (1, 1),
                                      padding)[None].reshape(1, 8, -1))
    close(fused, expected.reshape(4, 16, 9), np.float32)


@pytest.mark.parametrize("kernel,padding", [((3, 3), (1, 1)), ((1, 1), (0, 0))])
def test_conv2d_glu_into_out(rng, monkeypatch, kernel, padding):
    """``out=`` gives the same bits: a separate array for any kernel, the input itself for a
    pointwise one (each row block written after the GEMM read it); a 3x3 one refuses to
    overwrite its input (it reads neighbouring rows) and allocates instead."""
    monkeypatch.setattr(conv, "COLUMN_BUDGET", 200)  # several row blocks
    x, w, b = _f32(rng, (4, 16, 9)), _f32(rng, (8, 4) + kernel), _f32(rng, 8)
    expected = conv.conv2d_glu(x, w, b, padding)
    spare = np.full(x.shape, np.nan, np.float32)
    into = conv.conv2d_glu(x, w, b, padding, out=spare)
    assert into is spare
    np.testing.assert_array_equal(into, expected)
    own = x.copy()
    result = conv.conv2d_glu(own, w, b, padding, out=own)
    assert (result is own) == (kernel == (1, 1))
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("shape,crop", [((3, 12, 5), (slice(None), slice(2, -2))),
                                        ((4, 1, 30), (slice(None), 0, slice(3, 25)))])
def test_compact_crop_in_place(rng, shape, crop):
    """A decoder's crop made contiguous inside its own buffer: the same values; and the
    transposed GELU written over its own cropped input gives the separate kernel's bits."""
    from numba_demucs.layers.hdemucs import _compact, _compact_target

    z = _f32(rng, shape, 2.0)
    view = z[crop]
    expected = np.ascontiguousarray(view)
    compact = _compact(view)
    assert compact.flags.c_contiguous and np.shares_memory(compact, z)
    np.testing.assert_array_equal(compact, expected)
    z = _f32(rng, shape, 2.0)
    view = z[crop]
    rows = view if view.ndim == 3 else view[:, None, :]
    bias = _f32(rng, view.shape[0])
    separate = np.empty(rows.shape, np.float32)
    activations.bias_gelu_channels_f32(rows, bias, separate)
    target = _compact_target(view)
    assert np.shares_memory(target, z)
    activations.bias_gelu_channels_f32(rows, bias, target if target.ndim == 3 else target[:, None, :])
    np.testing.assert_array_equal(target.reshape(separate.shape), separate)
