"""MultiHeadAttention and GatedAttentionUnit against a NumPy reference written here, plus padding
invariance, RoPE's relative property, error messages and the shared layer checks."""

import functools

import keras
import numpy as np
import pytest

from bert4keras_ng.layers import (
    Embedding,
    FeedForward,
    GatedAttentionUnit,
    LayerNormalization,
    MultiHeadAttention,
)
from tests import helpers as H
from tests.test_backend import np_rope, np_sinusoid, np_t5_bucket

RNG = np.random.default_rng(4)
B_, N_, W_ = 2, 5, 8
X = RNG.normal(size=(B_, N_, W_)).astype("float32")
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
ROPE = np_sinusoid(np.arange(N_), 4)[None].astype("float32")  # (1, n, Dk=4)
NEZHA = np_sinusoid(np.arange(129), 4)[
    np.clip(np.arange(N_)[None] - np.arange(N_)[:, None], -64, 64) + 64].astype("float32")
T5_TABLE = RNG.normal(size=(32, 2)).astype("float32")
T5 = T5_TABLE[np.vectorize(np_t5_bucket)(np.arange(N_)[:, None] - np.arange(N_)[None])]
UNILM = np.cumsum(np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]), 1)
UNILM = UNILM[:, None, :] <= UNILM[:, :, None]  # (b, n, n) boolean


# -- NumPy reference --------------------------------------------------------------------------------

def np_normalize(a, keep, method, clamp=16):
    """Attention weights from logits a (..., n_k) and a boolean keep mask (broadcastable)."""
    keep = np.broadcast_to(keep, a.shape) if keep is not None else np.ones(a.shape, bool)
    l = keep.sum(-1, keepdims=True).astype(np.float64)
    if method == "squared_relu":
        return np.where(keep, np.maximum(a, 0) ** 2 / np.maximum(l, 1), 0)
    if method == "softmax_plus":
        a = a * np.log(np.maximum(l, clamp)) / np.log(512)
    a = np.where(keep, a, -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_keep(key_mask, bias, causal, n, head_axis):
    keep = np.ones((1, 1, n, n), bool) if head_axis else np.ones((1, n, n), bool)
    if key_mask is not None:
        keep = keep & (key_mask[:, None, None, :] if head_axis else key_mask[:, None, :])
    if bias is not None and bias.dtype == bool:
        keep = keep & (bias[:, None] if head_axis and bias.ndim == 3 else bias)
    if causal:
        keep = keep & np.tril(np.ones((n, n), bool))
    return keep


def np_mha(w, x, heads, dk, dv, key_mask=None, bias=None, causal=False, p_bias=None, pos=None,
           method="softmax", scale=True):
    """bert4keras MultiHeadAttention on self-attention input x, weights w by sub-layer path."""
    def dense(name, t):
        return t @ w[f"{name}/kernel"] + w.get(f"{name}/bias", 0)
    b, n, _ = x.shape
    q = dense("q_dense", x).reshape(b, n, heads, dk)
    k = dense("k_dense", x).reshape(b, n, heads, dk)
    v = dense("v_dense", x).reshape(b, n, heads, dv)
    if p_bias == "rotary":
        q = np.stack([np_rope(q[i], np.arange(n)) for i in range(b)])
        k = np.stack([np_rope(k[i], np.arange(n)) for i in range(b)])
    a = np.einsum("bjhd,bkhd->bhjk", q, k)
    if p_bias == "typical_relative":
        a = a + np.einsum("bjhd,jkd->bhjk", q, pos)
    if p_bias == "t5_relative":
        a = a + pos.transpose(2, 0, 1)[None]
    if scale:
        a = a / np.sqrt(dk)
    scores = a
    if bias is not None and bias.dtype != bool:
        a = a + (bias[:, None] if bias.ndim == 3 else bias)
    probs = np_normalize(a, np_keep(key_mask, bias, causal, n, True), method)
    o = np.einsum("bhjk,bkhd->bjhd", probs, v)
    if p_bias == "typical_relative":
        o = o + np.einsum("bhjk,jkd->bjhd", probs, pos)
    return dense("o_dense", o.reshape(b, n, heads * dv)), scores


def np_gau(w, x, e, s, key_mask=None, bias=None, p_bias=None, method="squared_relu"):
    """bert4keras GatedAttentionUnit (self-attention, swish) on x."""
    z = x @ w["i_dense/kernel"] + w.get("i_dense/bias", 0)
    z = z / (1 + np.exp(-z))
    u, v, qk = z[..., :e], z[..., e:2 * e], z[..., 2 * e:]
    q = qk * w["q_scaleoffset/gamma"] + w.get("q_scaleoffset/beta", 0)
    k = qk * w["k_scaleoffset/gamma"] + w.get("k_scaleoffset/beta", 0)
    if p_bias == "rotary":
        q = np.stack([np_rope(t, np.arange(x.shape[1])) for t in q])
        k = np.stack([np_rope(t, np.arange(x.shape[1])) for t in k])
    a = np.einsum("bmd,bnd->bmn", q, k) / np.sqrt(s)
    probs = np_normalize(a, np_keep(key_mask, bias, False, x.shape[1], False), method)
    return (u * np.einsum("bmn,bnd->bmd", probs, v)) @ w["o_dense/kernel"] + w.get("o_dense/bias", 0)


def randomise(layer, scale=0.5):
    """Random weights (also for gammas) so that every parameter matters; returns them by path."""
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") * scale
                       for w in layer.get_weights()])
    return {w.path.split("/", 1)[1]: w.numpy().astype(np.float64) for w in layer.weights}


def mha_inputs(a_bias_tensor=None, position=None):
    inputs = [X, X, X]
    if a_bias_tensor is not None:
        inputs.append(a_bias_tensor)
    if position is not None:
        inputs.append(position)
    masks = [MASK, MASK, MASK] + [None] * (len(inputs) - 3)
    return inputs, masks


MHA_CASES = {
    "softmax": ({}, {}, None, None),
    "sizes_no_bias": ({"key_size": 3, "out_dim": 6, "use_bias": False}, {}, None, None),
    "rotary_softmax_plus": ({"key_size": 4, "normalization": "softmax_plus"},
                            {"p_bias": "rotary"}, None, ROPE),
    "nezha": ({"head_size": 4}, {"p_bias": "typical_relative"}, None, NEZHA),
    "t5": ({"use_bias": False, "attention_scale": False}, {"p_bias": "t5_relative"}, None, T5),
    "unilm_squared_relu": ({"normalization": "squared_relu"}, {"a_bias": True}, UNILM, None),
    "causal": ({}, {"a_bias": "causal"}, None, None),
    "float_bias": ({}, {"a_bias": True}, RNG.normal(size=(B_, N_, N_)).astype("float32"), None),
    "float_bias_2d": ({}, {"a_bias": True}, RNG.normal(size=(N_, N_)).astype("float32"), None),
}


def _mha_case(name):
    kwargs, call_kwargs, bias, position = MHA_CASES[name]
    kwargs = {"heads": 2, "head_size": 4, **kwargs}
    inputs, masks = mha_inputs(bias, position)
    return kwargs, call_kwargs, bias, position, inputs, masks


@pytest.mark.parametrize("name", list(MHA_CASES))
def test_mha_matches_numpy_reference(name):
    kwargs, call_kwargs, bias, position, inputs, masks = _mha_case(name)
    layer = MultiHeadAttention(return_attention_scores=True, **kwargs)
    H.call_layer(layer, inputs, masks, call_kwargs)
    w = randomise(layer)
    out, scores = H.to_numpy(H.call_layer(layer, inputs, masks, call_kwargs))
    ref, ref_scores = np_mha(
        w, X.astype(np.float64), kwargs["heads"], kwargs.get("key_size") or kwargs["head_size"],
        kwargs["head_size"], MASK, bias, call_kwargs.get("a_bias") == "causal",
        call_kwargs.get("p_bias"), position, kwargs.get("normalization", "softmax"),
        kwargs.get("attention_scale", True))
    np.testing.assert_allclose(out[MASK], ref[MASK], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(scores, ref_scores, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MHA_CASES))
def test_mha_padding_invariance(name):
    kwargs, call_kwargs, _, _, inputs, masks = _mha_case(name)
    layer = MultiHeadAttention(**kwargs)
    H.call_layer(layer, inputs, masks, call_kwargs)
    randomise(layer)

    def perturb(inp, mask, rng):
        noisy = H.perturb_masked(inp[0], mask, rng)
        return [noisy, noisy, noisy] + inp[3:]

    H.check_padding_invariance(lambda inp: H.call_layer(layer, inp, masks, call_kwargs),
                               inputs, MASK, perturb=perturb)


@pytest.mark.parametrize("name", ["softmax", "rotary_softmax_plus", "nezha", "t5",
                                  "unilm_squared_relu", "float_bias"])
def test_mha_shared_checks(name):
    kwargs, call_kwargs, _, _, inputs, masks = _mha_case(name)
    H.check_layer(functools.partial(MultiHeadAttention, **kwargs), inputs, masks, call_kwargs,
                  expected_output_shape=(B_, N_, kwargs.get("out_dim") or 8))


@pytest.mark.parametrize("method", ["softmax", "squared_relu", "softmax_plus", "l2_softmax"])
def test_mha_fully_masked_row_has_no_nan(method):
    empty = np.array([[0, 0, 0, 0, 0], [1, 1, 0, 0, 0]], bool)
    layer = MultiHeadAttention(2, 4, normalization=method)
    out = H.to_numpy(layer([X, X, X], mask=[empty, empty, empty]))
    assert np.isfinite(out).all()
    bias_only = H.to_numpy(layer([X, X, X, np.zeros((N_, N_), bool)], a_bias=True))
    assert np.isfinite(bias_only).all()


def test_rotary_attention_scores_depend_only_on_distance():
    layer = MultiHeadAttention(2, 4, return_attention_scores=True)
    same = np.repeat(X[:, :1], N_, axis=1)  # identical tokens: only positions differ
    _, scores = H.to_numpy(layer([same, same, same, ROPE], p_bias="rotary"))
    for offset in range(-N_ + 1, N_):
        diag = np.diagonal(scores, offset, axis1=-2, axis2=-1)
        np.testing.assert_allclose(diag, diag[..., :1].repeat(diag.shape[-1], -1), atol=1e-5)
    _, plain = H.to_numpy(layer([same, same, same]))
    assert np.ptp(plain[0, 0]) < 1e-5 < np.ptp(scores[0, 0])


def test_mha_masks_and_weight_names():
    layer = MultiHeadAttention(2, 4, return_attention_scores=True)
    layer([X, X, X])
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    assert names == [f"{d}_dense/{p}" for d in "qkvo" for p in ("kernel", "bias")]
    m = [MASK, None, MASK]
    assert layer.compute_mask([X, X, X], m)[0] is MASK
    assert MultiHeadAttention(2, 4).compute_mask([X, X, X], None) is None
    single = MultiHeadAttention(2, 4)
    np.testing.assert_array_equal(H.to_numpy(single([X, X, X], mask=MASK)),
                                  H.to_numpy(single([X, X, X], mask=[MASK, MASK, MASK])))


def test_mha_head_size_inferred_from_width():
    layer = MultiHeadAttention(4)
    layer([X, X, X])
    assert layer.dv == 2 and layer.weights[0].shape == (8, 8)


def test_attention_dropout_only_in_training():
    layer = MultiHeadAttention(2, 4, attention_dropout=0.5)
    eager = H.to_numpy(layer([X, X, X]))
    layer_ref = MultiHeadAttention(2, 4)
    layer_ref([X, X, X])
    layer_ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(eager, H.to_numpy(layer_ref([X, X, X])), atol=1e-6)
    assert np.abs(H.to_numpy(layer([X, X, X], training=True)) - eager).max() > 1e-3


@pytest.mark.parametrize("make, match", [
    (lambda: MultiHeadAttention(2, 4, normalization="sparsemax"), "normalization.*softmax_plus"),
    (lambda: MultiHeadAttention(3)([X, X, X]), "heads=3 must divide"),
    (lambda: MultiHeadAttention(2, 4)([X, X, X], p_bias="alibi"), "p_bias.*typical_relative"),
    (lambda: MultiHeadAttention(2, 4)([X, X, X], a_bias="lm"), "a_bias.*causal"),
    (lambda: MultiHeadAttention(2, 4)([X, X, X], p_bias="rotary"), r"inputs=\[q, k, v, position"),
    (lambda: MultiHeadAttention(2, 4)([X, X]), r"inputs=\[q, k, v"),
    (lambda: MultiHeadAttention(2, 4, key_size=2)([X, X, X, NEZHA], p_bias="typical_relative"),
     "head_size == key_size"),
    (lambda: GatedAttentionUnit(4, 4, normalization="relu2"), "normalization"),
    (lambda: GatedAttentionUnit(4, 4)(X, p_bias="t5_relative"), "p_bias.*rotary"),
    (lambda: GatedAttentionUnit(4, 4)([X, X]), r"inputs=\[x\]"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- GAU ----------------------------------------------------------------------------------------

GAU_CASES = {
    "squared_relu": ({}, {}, None, None),
    "gau_alpha": ({"use_bias": False, "normalization": "softmax_plus"}, {"p_bias": "rotary"},
                  None, ROPE),
    "unilm_softmax": ({"normalization": "softmax"}, {"a_bias": True}, UNILM, None),
}


def _gau_case(name):
    kwargs, call_kwargs, bias, position = GAU_CASES[name]
    inputs = [X] + [t for t in (bias, position) if t is not None]
    masks = [MASK] + [None] * (len(inputs) - 1)
    return {"units": 6, "key_size": 4, **kwargs}, call_kwargs, bias, position, inputs, masks


@pytest.mark.parametrize("name", list(GAU_CASES))
def test_gau_matches_numpy_reference(name):
    kwargs, call_kwargs, bias, position, inputs, masks = _gau_case(name)
    layer = GatedAttentionUnit(**kwargs)
    H.call_layer(layer, inputs, masks, call_kwargs)
    w = randomise(layer)
    out = H.to_numpy(H.call_layer(layer, inputs, masks, call_kwargs))
    ref = np_gau(w, X.astype(np.float64), 6, 4, MASK, bias, call_kwargs.get("p_bias"),
                 kwargs.get("normalization", "squared_relu"))
    np.testing.assert_allclose(out[MASK], ref[MASK], atol=2e-5, rtol=1e-5)


def test_gau_weight_names_and_order():
    layer = GatedAttentionUnit(6, 4, use_bias=False)
    layer(X)
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    assert names == ["i_dense/kernel", "q_scaleoffset/gamma", "k_scaleoffset/gamma",
                     "o_dense/kernel"]
    assert layer.weights[0].shape == (8, 2 * 6 + 4)


@pytest.mark.parametrize("name", list(GAU_CASES))
def test_gau_padding_invariance_and_shared_checks(name):
    kwargs, call_kwargs, _, _, inputs, masks = _gau_case(name)
    layer = GatedAttentionUnit(**kwargs)
    H.call_layer(layer, inputs, masks, call_kwargs)
    randomise(layer)
    H.check_padding_invariance(lambda inp: H.call_layer(layer, inp, masks, call_kwargs),
                               inputs, MASK)
    H.check_layer(functools.partial(GatedAttentionUnit, **kwargs), inputs, masks, call_kwargs,
                  expected_output_shape=X.shape)


def test_gau_cross_attention_uses_value_mask():
    layer = GatedAttentionUnit(6, 4, self_attention=False, normalization="softmax")
    c = RNG.normal(size=(B_, 3, W_)).astype("float32")
    c_mask = np.array([[1, 0, 0], [1, 1, 0]], bool)
    out = H.to_numpy(layer([X, c, c], mask=[MASK, c_mask, c_mask]))
    assert out.shape == X.shape and np.isfinite(out).all()
    H.check_padding_invariance(
        lambda inp: layer([X, inp, inp], mask=[MASK, c_mask, c_mask])[:, :1],
        c, np.ones((B_, 1), bool), perturb=lambda inp, _, rng: H.perturb_masked(inp, c_mask, rng))


def _tiny_block_model(tied_output=False):
    """Embedding(mask_zero) → MHA(softmax_plus) → LayerNorm → FFN → GAU (→ tied projection)."""
    ids_in = keras.Input((None,), dtype="int32")
    embedding = Embedding(20, 8, mask_zero=True)
    x = embedding(ids_in)
    h = MultiHeadAttention(2, 4, normalization="softmax_plus")([x, x, x])
    h = LayerNormalization()(h)
    h = FeedForward(6, activation="gelu")(h)
    out = GatedAttentionUnit(6, 4)(h)
    if tied_output:
        out = embedding(out, mode="dense")
    return keras.Model(ids_in, out)


def test_keras_implicit_masks_reach_attention_in_a_functional_block():
    """Padded batch equals the unpadded sequences: Keras masks flow Embedding → MHA → ... → GAU."""
    model = _tiny_block_model()
    ids = np.array([[3, 4, 5, 0, 0], [0, 6, 7, 8, 9]], "int32")  # row 2: id 0 first stays valid
    padded = H.to_numpy(model(ids))
    short = H.to_numpy(model(ids[:1, :3]))
    np.testing.assert_allclose(padded[0, :3], short[0], atol=1e-5)
    np.testing.assert_allclose(H.to_numpy(model(ids[1:])), padded[1:], atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_functional_block_with_tied_head_under_global_mixed_policy(policy):
    """The block, including the tied output projection, runs finite under a global mixed policy."""
    ids = np.array([[3, 4, 5, 0, 0], [0, 6, 7, 8, 9]], "int32")
    reference = _tiny_block_model(tied_output=True)
    expected = reference(ids)
    with H.dtype_policy(policy):
        model = _tiny_block_model(tied_output=True)
    model.set_weights(reference.get_weights())
    out = model(ids)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    H.assert_close_scaled(out, expected, 3 * H.MIXED_TOLERANCES[policy], msg=policy)
