"""(Leaky) ReRoPE and log-n scaling: NumPy per-pair reference, equalities with RoPE, builds."""

import functools

import keras
import numpy as np
import pytest

from bert4keras_ng import backend as K
from bert4keras_ng.layers import GatedAttentionUnit, MultiHeadAttention
from bert4keras_ng.models import build_transformer_model
from tests import helpers as H

RNG = np.random.default_rng(7)
B, N, W, DK = 2, 9, 8, 4
X = RNG.normal(size=(B, N, W)).astype("float32")
MASK = np.ones((B, N), bool)
MASK[0, 6:] = False


def np_table(positions, dim, base=10000.0):
    theta = base ** (-2.0 * np.arange(dim // 2) / dim)
    angles = np.asarray(positions, dtype="float64")[..., None] * theta
    out = np.zeros(angles.shape[:-1] + (dim,))
    out[..., ::2], out[..., 1::2] = np.sin(angles), np.cos(angles)
    return out


ROPE = np_table(np.arange(N), DK)[None].astype("float32")


def np_rotate(x, p, base=10000.0):
    """Rotate interleaved pairs of x (..., d) by the angles p·θ_i."""
    d = x.shape[-1]
    theta = base ** (-2.0 * np.arange(d // 2) / d)
    c, s = np.cos(p * theta), np.sin(p * theta)
    out = np.empty_like(x)
    out[..., ::2] = x[..., ::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 1::2] * c + x[..., ::2] * s
    return out


def np_leaky_distance(r, w, k):
    if abs(r) < w:
        return float(r)
    slope = 0.0 if k is None else 1.0 / k
    return np.sign(r) * (w + (abs(r) - w) * slope)


def np_rerope_logits(q, k, w, leaky):
    """(b, n, d) q, k: logit_ij = qᵢᵀ R(−r′(i − j)) kⱼ, pair by pair."""
    b, n, _ = q.shape
    out = np.zeros((b, n, n))
    for i in range(n):
        for j in range(n):
            r = np_leaky_distance(i - j, w, leaky)
            out[:, i, j] = np.sum(q[:, i] * np_rotate(k[:, j], -r), -1)
    return out


@pytest.mark.parametrize("window,leaky", [(3, None), (2, 4), (4, 16), (1, None)])
def test_rerope_logits_equal_per_pair_reference(window, leaky):
    q = RNG.normal(size=(B, N, DK)).astype("float32")
    k = RNG.normal(size=(B, N, DK)).astype("float32")
    got = H.to_numpy(K.rerope_logits(q, k, ROPE, window, leaky, spec="bmd,bnd->bmn"))
    np.testing.assert_allclose(got, np_rerope_logits(q.astype("float64"), k.astype("float64"),
                                                     window, leaky), atol=2e-5)
    r = np.arange(N)[:, None] - np.arange(N)[None]
    expected = np.vectorize(lambda x: np_leaky_distance(x, window, leaky))(r)
    np.testing.assert_allclose(H.to_numpy(K.leaky_rerope_distances(N, N, window, leaky)),
                               expected, atol=1e-6)


def _mha(**kwargs):
    layer = MultiHeadAttention(2, DK, return_attention_scores=True, **kwargs)
    layer([X, X, X, ROPE], p_bias="rotary")
    for v in layer.weights:
        v.assign(RNG.normal(size=v.shape).astype("float32") * 0.5)
    return layer


def test_rerope_with_window_beyond_length_is_rope_exactly_and_leaky_one_is_rope():
    layer = _mha()
    masks = [MASK, MASK, MASK, None]
    rope = H.to_numpy(H.call_layer(layer, [X, X, X, ROPE], masks, {"p_bias": "rotary"}))
    wide = H.to_numpy(H.call_layer(layer, [X, X, X, ROPE], masks,
                                   {"p_bias": "rerope", "position_options": {"window": N}}))
    for a, b in zip(rope, wide):
        np.testing.assert_array_equal(a, b)
    leaky1 = H.to_numpy(H.call_layer(layer, [X, X, X, ROPE], masks, {
        "p_bias": "rerope", "position_options": {"window": 2, "leaky": 1}}))
    for a, b in zip(rope, leaky1):
        np.testing.assert_allclose(a, b, atol=1e-5)
    narrow = H.to_numpy(H.call_layer(layer, [X, X, X, ROPE], masks, {
        "p_bias": "rerope", "position_options": {"window": 2}}))
    assert np.abs(narrow[1] - rope[1]).max() > 1e-3  # outside the window it differs


def test_gau_rerope_equalities():
    layer = GatedAttentionUnit(8, DK, normalization="softmax")
    layer([X, ROPE], p_bias="rotary")
    rope = H.to_numpy(layer([X, ROPE], p_bias="rotary"))
    wide = H.to_numpy(layer([X, ROPE], p_bias="rerope", position_options={"window": 50}))
    np.testing.assert_array_equal(rope, wide)
    leaky1 = H.to_numpy(layer([X, ROPE], p_bias="rerope",
                              position_options={"window": 3, "leaky": 1}))
    np.testing.assert_allclose(rope, leaky1, atol=1e-5)


def test_log_n_scaling_multiplies_query_rows():
    layer = _mha()
    _, plain = H.to_numpy(layer([X, X, X, ROPE], p_bias="rotary"))
    for clip in (True, False):
        _, scaled = H.to_numpy(layer([X, X, X, ROPE], p_bias="rerope", position_options={
            "window": N, "logn": 4, "logn_clip": clip}))
        factor = np.log(np.arange(1, N + 1)) / np.log(4)
        if clip:
            factor = np.maximum(factor, 1.0)
        np.testing.assert_allclose(scaled, plain * factor[:, None], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown key"):
        layer([X, X, X, ROPE], p_bias="rerope", position_options={"windw": 3})
    with pytest.raises(ValueError, match="window"):
        layer([X, X, X, ROPE], p_bias="rerope")


@pytest.mark.parametrize("leaky", [None, 4])
def test_rerope_mha_shared_checks_and_padding_invariance(leaky):
    options = {"window": 3, "leaky": leaky, "logn": 4}
    call_kwargs = {"p_bias": "rerope", "position_options": options}
    inputs, masks = [X, X, X, ROPE], [MASK, MASK, MASK, None]
    H.check_layer(functools.partial(MultiHeadAttention, 2, DK), inputs, masks, call_kwargs,
                  expected_output_shape=(B, N, 2 * DK))
    layer = MultiHeadAttention(2, DK)

    def perturb(inp, mask, rng):
        noisy = H.perturb_masked(inp[0], mask, rng)
        return [noisy, noisy, noisy, inp[3]]

    H.check_padding_invariance(lambda inp: H.call_layer(layer, inp, masks, call_kwargs),
                               inputs, MASK, perturb=perturb)


def _roformer(model="roformer", **kwargs):
    keras.utils.set_random_seed(0)
    config = dict(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=16, hidden_act="gelu")
    if model == "gau_alpha":
        config.update(num_attention_heads=1, attention_key_size=4, hidden_act="swish")
    config.update(kwargs)
    return build_transformer_model(None, None, model=model, **config)


@pytest.mark.parametrize("model", ["roformer", "gau_alpha"])
def test_build_option_switches_a_rope_model_to_rerope_with_the_same_weights(model):
    ids = RNG.integers(1, 20, size=(2, 12))
    feed = [ids, np.zeros_like(ids)]
    base = _roformer(model)
    # larger weights than the 0.02 initialisation, so that attention is far from uniform
    base.set_weights([w * 25 if w.ndim == 2 else w for w in base.get_weights()])
    expected = base.predict_on_batch(feed)
    wide = _roformer(model, rerope_window=64)
    wide.set_weights(base.get_weights())
    np.testing.assert_array_equal(wide.predict_on_batch(feed), expected)
    leaky = _roformer(model, rerope_window=4, rerope_leaky=16, logn_train_length=8)
    leaky.set_weights(base.get_weights())
    out = leaky.predict_on_batch(feed)
    assert np.isfinite(out).all() and np.abs(out - expected).max() > 1e-3


def test_build_option_errors():
    with pytest.raises(ValueError, match="RoPE model"):
        build_transformer_model(None, None, model="bert", vocab_size=20, hidden_size=8,
                                num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, hidden_act="gelu", rerope_window=4)
    with pytest.raises(ValueError, match="rerope_leaky needs"):
        _roformer(rerope_leaky=16)
    with pytest.raises(ValueError, match="logn_train_length"):
        _roformer(logn_train_length=1)


@pytest.mark.parametrize("window,leaky", [(3, None), (2, 8), (N, None)])
def test_single_query_decode_path_equals_the_full_path(window, leaky):
    q = RNG.normal(size=(B, N, 2, DK)).astype("float32")
    k = RNG.normal(size=(B, N, 2, DK)).astype("float32")
    full = H.to_numpy(K.rerope_logits(q, k, ROPE, window, leaky))  # (b, h, n, n)
    for i in range(N):
        row = H.to_numpy(K.rerope_decode_logits(q[:, i:i + 1], k[:, :i + 1], i, window, leaky))
        np.testing.assert_allclose(row[:, :, 0], full[:, :, i, :i + 1], atol=2e-5)


def test_hwfa_windows_all_but_the_last_block_and_equals_an_explicit_band_mask():
    import keras as _keras

    from bert4keras_ng.layers import MultiHeadAttention as MHA  # noqa: F401

    window = 2
    model = _roformer(hwfa_window=window, num_hidden_layers=3)
    model.set_weights([w * 25 if w.ndim == 2 else w for w in model.get_weights()])
    ids = RNG.integers(1, 20, size=(2, 8))
    feed = [ids, np.zeros_like(ids)]
    emb = _keras.Model(model.inputs, model.get_layer("Embedding-Norm").output)  # no dropout
    first = model.get_layer("Transformer-0-MultiHeadSelfAttention")
    sub = _keras.Model(model.inputs, first.output)
    got = np.asarray(sub.predict_on_batch(feed))
    h = emb.predict_on_batch(feed)
    n = ids.shape[1]
    band = np.abs(np.arange(n)[:, None] - np.arange(n)[None]) < window
    table = np_table(np.arange(n), 4)[None].astype("float32")
    explicit = H.to_numpy(first([h, h, h, band, table], a_bias=True, p_bias="rotary"))
    np.testing.assert_allclose(got, explicit, atol=1e-5)
    # a token change reaches layer-0 outputs only inside the window; the last (full) layer sees it
    changed = ids.copy()
    changed[:, 0] = (changed[:, 0] % 19) + 1
    other = np.asarray(sub.predict_on_batch([changed, np.zeros_like(ids)]))
    np.testing.assert_allclose(other[:, window:], got[:, window:], atol=1e-6)
    assert np.abs(other[:, 0] - got[:, 0]).max() > 1e-4
    out = model.predict_on_batch(feed)
    out2 = model.predict_on_batch([changed, np.zeros_like(ids)])
    assert np.abs(out2[:, -1] - out[:, -1]).max() > 1e-4
    last = model.get_layer("Transformer-2-MultiHeadSelfAttention")
    assert len(last._inbound_nodes[0].input_tensors) == 3  # q, k, v: no position input
    with pytest.raises(ValueError, match="hwfa_window"):
        _roformer(hwfa_window=2, rerope_window=4)


# ---- the cached decode path (generation.CachedModel) -------------------------------------

CACHED_OPTIONS = [
    dict(rerope_window=3),
    dict(rerope_window=3, rerope_leaky=4, logn_train_length=4),
    dict(logn_train_length=4, logn_clip=False),  # RoPE with train-time log-n
]


def _logits_model(model):
    """The model up to its final softmax's input: the next-token logits of every position."""
    return keras.Model(model.inputs, model.layers[-1].input)


GAU = dict(num_attention_heads=1, attention_key_size=8, hidden_act="swish")


@pytest.mark.parametrize("model", ["roformer", "roformer_v2", "gau_alpha"])
@pytest.mark.parametrize("options", CACHED_OPTIONS + [{}])
def test_cached_step_logits_equal_the_full_path_with_mixed_prompt_lengths(model, options):
    """Prompts of 3, 9, 5 and 1 tokens left-padded in one batch, then 4 teacher-forced steps:
    every cached logit row equals the uncached model's on that row's unpadded prefix."""
    from bert4keras_ng.generation import CachedModel, left_pad
    from tests.test_generation import prompts, tiny_model

    m = tiny_model(model, "lm", **options, **(GAU if model == "gau_alpha" else {}))
    cached = CachedModel(m)
    full = _logits_model(m)
    batch = [p[0] for p in prompts()]
    continuation = np.array([[11, 4, 30, 7], [5, 5, 9, 12], [20, 21, 22, 23], [8, 3, 6, 9]])
    tokens, pads = left_pad(batch, 10)
    length = 10 + continuation.shape[1]
    logits, state = cached.prefill(tokens, np.zeros_like(tokens), pads, [], length)
    got = [keras.ops.convert_to_numpy(logits)]
    for t in range(continuation.shape[1]):
        logits, state = cached.step(continuation[:, t:t + 1].astype("int32"), state)
        got.append(keras.ops.convert_to_numpy(logits))
    worst = 0.0
    for row, prompt in enumerate(batch):
        ids = np.concatenate([prompt, continuation[row]])[None].astype("int32")
        want = keras.ops.convert_to_numpy(full([ids, np.zeros_like(ids)]))[0]
        for t in range(continuation.shape[1] + 1):
            worst = max(worst, float(np.abs(got[t][row] - want[len(prompt) - 1 + t]).max()))
    assert worst <= 1e-5, f"cached vs full logits differ by {worst:.3g}"
    held = sum(keras.ops.convert_to_numpy(c).nbytes for kv in state["caches"] for c in kv)
    assert cached.cache_bytes(len(batch), length) == held + len(batch) * length


@pytest.mark.slow  # ~30 s: the compiled decode loop
@pytest.mark.parametrize("model,options", [("roformer", CACHED_OPTIONS[0]),
                                           ("roformer", CACHED_OPTIONS[1]),
                                           ("gau_alpha", CACHED_OPTIONS[1])])
def test_cached_greedy_generation_equals_the_uncached_decoder(model, options):
    from bert4keras_ng.generation import Generator
    from tests.test_generation import END, Uncached, prompts, tiny_model

    m = tiny_model(model, "lm", **options, **(GAU if model == "gau_alpha" else {}))
    batch = prompts()
    ref = Uncached(m, 0, start_id=None, end_id=END, maxlen=6, minlen=2)
    greedy = Generator(m, end_id=END, maxlen=6, minlen=2).greedy(batch)
    for p, g in zip(batch, greedy):
        assert list(g) == list(ref.beam_search(p, topk=1)), f"greedy, prompt {p[0]}"


def test_cached_call_needs_positions_for_log_n():
    layer = MultiHeadAttention(2, DK)
    layer([X, X, X])
    cache = layer.init_cache(B, N)
    with pytest.raises(ValueError, match="positions="):
        layer.call_cached([X[:, :1]], cache, 0, MASK, position_options={"logn": 4})


@pytest.mark.parametrize("window,leaky", [(3, None), (2, 8)])
def test_cached_rerope_logits_of_several_queries_equal_the_full_rows(window, leaky):
    q = RNG.normal(size=(B, N, 2, DK)).astype("float32")
    k = RNG.normal(size=(B, N, 2, DK)).astype("float32")
    full = H.to_numpy(K.rerope_logits(q, k, ROPE, window, leaky))
    part = H.to_numpy(K.rerope_cached_logits(q[:, 3:7], k, 3, window, leaky))
    np.testing.assert_allclose(part, full[:, :, 3:7], atol=2e-5)


# ---- HWFA, layer by layer -------------------------------------------------------------------


def np_attention(layer, x, keep, logn=None, table=None):
    """NumPy multi-head attention of ``layer``'s weights on x (b, n, d): optional RoPE table,
    log-n query scale max(1, log(i+1)/log(logn)) and a boolean keep mask (b|1, n, n)."""
    def dense(t, sub):
        kernel, bias = (np.asarray(w, "float64") for w in sub.get_weights())
        return t @ kernel + bias

    b, n, _ = x.shape
    h = layer.heads
    split = lambda t: t.reshape(b, n, h, -1)  # noqa: E731
    q, k, v = (split(dense(x, getattr(layer, name))) for name in ("q_dense", "k_dense", "v_dense"))
    if table is not None:
        q, k = np_rotate(q, np.arange(n)[None, :, None, None]), np_rotate(k, np.arange(n)[None, :, None, None])
    if logn is not None:
        q = q * np.maximum(1.0, np.log(np.arange(1, n + 1)) / np.log(logn))[None, :, None, None]
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(keep[:, None], logits, -np.inf)
    with np.errstate(invalid="ignore"):  # padded query rows may see no key at all
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    o = np.einsum("bhij,bjhd->bihd", p, v).reshape(b, n, -1)
    return dense(o, layer.o_dense)


def test_hwfa_each_window_layer_is_band_masked_rope_and_the_last_is_full_log_n_attention():
    """Every block but the last: RoPE attention with keys |i − j| < w only (NumPy, on that
    layer's own input); the last block: all keys, no positions, log-n scaled queries."""
    window, train = 2, 4
    model = _roformer(hwfa_window=window, logn_train_length=train, num_hidden_layers=3)
    model.set_weights([w * 25 if w.ndim == 2 else w for w in model.get_weights()])
    ids = RNG.integers(1, 20, size=(2, 8))
    ids[0, 6:] = 0
    feed = [ids, np.zeros_like(ids)]
    keep_keys = (ids != 0)[:, None, :]
    n = ids.shape[1]
    band = np.abs(np.arange(n)[:, None] - np.arange(n)[None]) < window
    for index in range(3):
        layer = model.get_layer("Transformer-%d-MultiHeadSelfAttention" % index)
        node = layer._inbound_nodes[0]
        x_in = node.input_tensors[0]
        got, x = (np.asarray(a, "float64") for a in keras.Model(model.inputs, [layer.output, x_in])
                  .predict_on_batch(feed))
        if index < 2:
            assert len(node.input_tensors) == 5  # q, k, v, window mask, RoPE table
            want = np_attention(layer, x, keep_keys & band[None], table=True)
        else:
            assert len(node.input_tensors) == 3  # q, k, v: no mask input, no positions
            full = np.broadcast_to(keep_keys, (2, n, n))
            want = np_attention(layer, x, full, logn=train)
            unscaled = np_attention(layer, x, full)
        real = ids != 0
        np.testing.assert_allclose(got[real], want[real], atol=2e-5, rtol=1e-5,
                                   err_msg="block %d" % index)
    # the log-n scale is really applied in the last block (positions >= train length)
    assert np.abs(unscaled - got)[real].max() > 1e-3
