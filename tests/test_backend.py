"""bert4keras_ng.backend against NumPy formulas written here independently."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras_ng import backend as B

RNG = np.random.default_rng(0)


def np_sinusoid(positions, dim, base=10000.0):
    """Interleaved [sin pθ0, cos pθ0, ...] with θ_i = base^(-2i/dim)."""
    theta = base ** (-2.0 * np.arange(dim // 2) / dim)
    ang = np.asarray(positions, dtype=np.float64)[..., None] * theta
    out = np.empty(ang.shape[:-1] + (dim,))
    out[..., 0::2], out[..., 1::2] = np.sin(ang), np.cos(ang)
    return out


def np_rope(x, positions):
    """Per-pair rotation of (x_2i, x_2i+1) by angle p·θ_i, x (n, ..., d) with positions (n,)."""
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    ang = np.asarray(positions, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 2) + (1,)) * theta
    c, s = np.cos(ang), np.sin(ang)
    out = np.empty_like(x, dtype=np.float64)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
    return out


def np_softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- masking --------------------------------------------------------------------------------------

def test_sequence_masking_replaces_masked_positions_along_axis():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    out = ops.convert_to_numpy(B.sequence_masking(x, mask, value=7.0, axis=1))
    np.testing.assert_array_equal(out, np.where(mask[:, :, None], x, 7.0))
    mask2 = np.array([[1, 0, 1, 1], [0, 1, 1, 1]], bool)
    out = ops.convert_to_numpy(B.sequence_masking(x, mask2, axis=-1))
    np.testing.assert_array_equal(out, np.where(mask2[:, None, :], x, -np.inf))
    assert B.sequence_masking(x, None) is x


# -- attention normalisations ---------------------------------------------------------------------

def _logits_and_mask():
    a = RNG.normal(size=(2, 3, 5)).astype("float32") * 3
    key_mask = np.array([[1, 1, 1, 0, 0], [1] * 5], bool)[:, None, :]
    return a, key_mask


def test_softmax_masks_keys():
    a, m = _logits_and_mask()
    out = ops.convert_to_numpy(B.attention_normalize(a, m))
    ref = np_softmax(np.where(m, a, -np.inf))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_squared_relu_divides_by_valid_key_count():
    a, m = _logits_and_mask()
    out = ops.convert_to_numpy(B.attention_normalize(a, m, method="squared_relu"))
    l = m.sum(-1, keepdims=True)
    ref = np.where(m, np.maximum(a, 0) ** 2 / l, 0)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    out = ops.convert_to_numpy(B.attention_normalize(a, None, method="squared_relu"))
    np.testing.assert_allclose(out, np.maximum(a, 0) ** 2 / 5, atol=1e-6)


@pytest.mark.parametrize("clamp", [16, 1, 2])
def test_softmax_plus_scales_unmasked_logits_by_log_l_clamped(clamp):
    n = 40
    a = RNG.normal(size=(2, 1, n)).astype("float32")
    m = np.ones((2, 1, n), bool)
    m[0, 0, 1:] = False  # l = 1: the causal first row of the 2022 leak
    m[1, 0, 30:] = False  # l = 30
    out = ops.convert_to_numpy(
        B.attention_normalize(a, m, method="softmax_plus", softmax_plus_clamp=clamp))
    l = np.maximum(m.sum(-1, keepdims=True), clamp)
    ref = np_softmax(np.where(m, a * np.log(l) / np.log(512), -np.inf))
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert out[0, 0, 0] == pytest.approx(1.0) and np.all(out[0, 0, 1:] == 0)


def test_softmax_plus_factor_table_of_reference():
    for n, factor in [(16, 4 / 9), (64, 2 / 3), (512, 1.0), (1024, 10 / 9)]:
        a = np.zeros((1, n), "float32")
        a[0, 0] = 1.0
        out = ops.convert_to_numpy(B.attention_normalize(a, method="softmax_plus"))
        ref = np_softmax(a * factor)
        np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_l2_softmax():
    a, m = _logits_and_mask()
    out = ops.convert_to_numpy(B.attention_normalize(a, m, method="l2_softmax"))
    e = np.where(m, np.exp(a.astype(np.float64)), 0)
    np.testing.assert_allclose(out, e / np.sqrt((e ** 2).sum(-1, keepdims=True)), atol=1e-6)


@pytest.mark.parametrize("method", B.ATTENTION_NORMALIZATIONS)
def test_fully_masked_row_gives_zeros_and_finite_gradient(method):
    import tensorflow as tf

    a = tf.constant(RNG.normal(size=(2, 4)).astype("float32"))
    m = np.array([[0, 0, 0, 0], [1, 1, 0, 0]], bool)
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = B.attention_normalize(a, m, method=method)
        loss = tf.reduce_sum(out * tf.range(4, dtype="float32"))
    grad = tape.gradient(loss, a).numpy()
    out = out.numpy()
    np.testing.assert_array_equal(out[0], 0.0)
    assert np.isfinite(out).all() and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_attention_normalize_keeps_input_dtype(dtype):
    a, m = _logits_and_mask()
    out = B.attention_normalize(ops.cast(a, dtype), m, method="softmax_plus")
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    ref = ops.convert_to_numpy(B.attention_normalize(a, m, method="softmax_plus"))
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(out, "float32")), ref, atol=2e-2)


def test_unknown_normalization_names_allowed_values():
    with pytest.raises(ValueError, match="normalization.*softmax_plus"):
        B.attention_normalize(np.zeros((1, 2), "float32"), method="sparsemax")


# -- sinusoids and RoPE ---------------------------------------------------------------------------

def test_sinusoidal_embeddings_interleaved_float32():
    pos = np.array([[0, 1, 7, 511]], "float32")
    out = B.sinusoidal_embeddings(pos, 8)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(out), np_sinusoid(pos, 8), atol=1e-4)
    with pytest.raises(ValueError, match="dim"):
        B.sinusoidal_embeddings(pos, 7)


def test_rope_interleaved_matches_pairwise_rotation():
    n, h, d = 6, 2, 8
    x = RNG.normal(size=(1, n, h, d)).astype("float32")
    table = B.sinusoidal_embeddings(np.arange(n, dtype="float32")[None], d)
    out = ops.convert_to_numpy(B.apply_rotary_position_embeddings(table, x))
    np.testing.assert_allclose(out[0], np_rope(x[0], np.arange(n)), atol=1e-5)
    np.testing.assert_allclose(out[0, 0], x[0, 0], atol=1e-7)  # position 0 is the identity
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_several_tensors_and_3d_input():
    n, d = 5, 4
    q, k = (RNG.normal(size=(2, n, d)).astype("float32") for _ in range(2))
    table = B.sinusoidal_embeddings(np.arange(n, dtype="float32"), d)  # (n, d) also accepted
    rq, rk = B.apply_rotary_position_embeddings(table, q, k)
    for x, r in ((q, rq), (k, rk)):
        for b in range(2):
            np.testing.assert_allclose(ops.convert_to_numpy(r)[b], np_rope(x[b], np.arange(n)),
                                       atol=1e-5)


def test_rope_relative_property_scores_depend_only_on_distance():
    d = 8
    q, k = RNG.normal(size=(2, d)).astype("float32")
    n = 12
    qs = np.tile(q, (1, n, 1))
    ks = np.tile(k, (1, n, 1))
    table = B.sinusoidal_embeddings(np.arange(n, dtype="float32")[None], d)
    rq, rk = (ops.convert_to_numpy(t)[0] for t in B.apply_rotary_position_embeddings(table, qs, ks))
    scores = rq @ rk.T
    for offset in range(-3, 4):
        diag = np.diagonal(scores, offset)
        np.testing.assert_allclose(diag, diag[0], atol=1e-4)


def test_rope_rotate_half_equals_interleaved_after_even_odd_permutation():
    n, h, d = 7, 3, 8
    q, k = (RNG.normal(size=(1, n, h, d)).astype("float32") for _ in range(2))
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    table = B.sinusoidal_embeddings(np.arange(n, dtype="float32")[None], d)
    iq, ik = (ops.convert_to_numpy(t) for t in B.apply_rotary_position_embeddings(table, q, k))
    hq, hk = (ops.convert_to_numpy(t) for t in B.apply_rotary_position_embeddings(
        table, q[..., perm], k[..., perm], layout="rotate_half"))
    np.testing.assert_allclose(hq, iq[..., perm], atol=1e-6)
    s_int = np.einsum("bihd,bjhd->bhij", iq, ik)
    s_rh = np.einsum("bihd,bjhd->bhij", hq, hk)
    np.testing.assert_allclose(s_rh, s_int, atol=1e-5)
    unpermuted = ops.convert_to_numpy(B.apply_rotary_position_embeddings(table, q, layout="rotate_half"))
    assert np.abs(unpermuted - iq).max() > 1e-2  # the permutation matters
    with pytest.raises(ValueError, match="layout.*rotate_half"):
        B.apply_rotary_position_embeddings(table, q, layout="half")


def test_rope_casts_table_to_tensor_dtype():
    x = ops.cast(RNG.normal(size=(1, 3, 4)), "float16")
    table = B.sinusoidal_embeddings(np.arange(3, dtype="float32"), 4)
    out = B.apply_rotary_position_embeddings(table, x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


# -- activations ----------------------------------------------------------------------------------

def _np_erf(x):
    return np.vectorize(math.erf)(x)


def test_gelu_erf_and_tanh_formulas():
    x = np.linspace(-6, 6, 101).astype("float32")
    ref_erf = 0.5 * x * (1 + _np_erf(x / np.sqrt(2)))
    ref_tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(ops.convert_to_numpy(B.gelu_erf(x)), ref_erf, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(B.gelu_tanh(x)), ref_tanh, atol=1e-6)
    assert 3e-4 < np.abs(ref_erf - ref_tanh).max() < 6e-4  # the two flavours really differ
    assert B.get_activation("gelu") is B.gelu_erf
    assert B.get_activation("gelu_tanh") is B.gelu_tanh
    np.testing.assert_allclose(
        ops.convert_to_numpy(B.get_activation("swish")(x)), x / (1 + np.exp(-x)), atol=1e-6)
    assert B.get_activation(None)(3.0) == 3.0
    for dtype in ("float16", "bfloat16"):
        out = B.gelu_erf(ops.cast(x, dtype))
        assert keras.backend.standardize_dtype(out.dtype) == dtype


def test_activation_serialisation_round_trip():
    cfg = B.serialize_activation(B.gelu_tanh)
    assert B.get_activation(cfg) is B.gelu_tanh
    assert B.serialize_activation("relu") == "relu"


# -- schedules and masks --------------------------------------------------------------------------

def np_piecewise(t, schedule):
    knots = sorted(schedule.items())
    if knots[0][0] != 0:
        knots = [(0, 0.0)] + knots
    xs, ys = zip(*knots)
    return np.interp(t, xs, ys)  # constant after the last knot


def test_piecewise_linear():
    schedule = {1000: 1.0, 2000: 0.1}
    t = np.array([0, 250, 1000, 1500, 2000, 5000], "float32")
    out = ops.convert_to_numpy(B.piecewise_linear(t, schedule))
    np.testing.assert_allclose(out, np_piecewise(t, schedule), atol=1e-6)
    schedule = {0: 1.0, 160000: 0.5, 640000: 0.1}
    t = np.array([0, 80000, 160000, 400000, 10 ** 7], "float32")
    np.testing.assert_allclose(ops.convert_to_numpy(B.piecewise_linear(t, schedule)),
                               np_piecewise(t, schedule), rtol=1e-5)
    assert float(B.piecewise_linear(500, {1000: 1.0})) == pytest.approx(0.5)


def test_lm_and_unilm_masks():
    np.testing.assert_array_equal(ops.convert_to_numpy(B.lm_mask(4)), np.tril(np.ones((4, 4), bool)))
    seg = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    out = ops.convert_to_numpy(B.unilm_mask(seg))
    c = np.cumsum(seg, 1)
    np.testing.assert_array_equal(out, c[:, None, :] <= c[:, :, None])
    assert out[1].all()
    assert out[0, 0, :2].all() and not out[0, 0, 2:].any()
    assert out[0, 3, :4].all() and not out[0, 3, 4]


def test_relative_position_ids_nezha():
    ids = ops.convert_to_numpy(B.relative_position_ids(10, 10, 64))
    np.testing.assert_array_equal(ids[3], 64 - 3 + np.arange(10))
    ids = ops.convert_to_numpy(B.relative_position_ids(3, 200, 64))
    assert ids.min() == 62 and ids.max() == 128


def np_t5_bucket(d, bidirectional=True, nb=32, max_distance=128):
    """Mesh-TF bucket of distance d = i - j (query minus key)."""
    ret = 0
    if bidirectional:
        nb //= 2
        if d < 0:
            ret = nb
        d = abs(d)
    else:
        d = max(d, 0)
    max_exact = nb // 2
    if d < max_exact:
        return ret + d
    val = max_exact + int(np.float32(np.log(np.float32(d) / max_exact))
                          / np.float32(np.log(max_distance / max_exact)) * (nb - max_exact))
    return ret + min(val, nb - 1)


def test_t5_buckets_reference_values():
    n = 300
    bi = ops.convert_to_numpy(B.t5_relative_position_buckets(n, n, bidirectional=True))
    uni = ops.convert_to_numpy(B.t5_relative_position_buckets(n, n, bidirectional=False))
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    d = i - j
    ref_bi = np.vectorize(np_t5_bucket)(d, True)
    ref_uni = np.vectorize(np_t5_bucket)(d, False)
    np.testing.assert_array_equal(bi, ref_bi)
    np.testing.assert_array_equal(uni, ref_uni)
    # published table (algorithms.md §5), key column 0 so d = i
    expect = {0: 0, 7: 7, 8: 8, 11: 8, 12: 9, 16: 10, 22: 10, 23: 11, 32: 12, 46: 13, 63: 13,
              64: 14, 90: 14, 91: 15, 299: 15}
    for dist, bucket in expect.items():
        assert bi[dist, 0] == bucket, dist
    for dist, bucket in {-1: 17, -7: 23, -8: 24, -16: 26, -32: 28, -64: 30, -91: 31}.items():
        assert bi[0, -dist] == bucket, dist
    for dist, bucket in {15: 15, 16: 16, 19: 17, 21: 18, 113: 31, 250: 31}.items():
        assert uni[dist, 0] == bucket, dist
    assert uni[0, 5] == 0  # future keys fall in bucket 0
