"""EMO, SimCSE and expected-accuracy losses against naive NumPy formulas."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng import losses as L


def np_(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _naive_emo(logits, ids, emb):
    """Σ_i p_i (1 − cos(e_i, e_t)) over the whole vocabulary, token by token."""
    p = _softmax(logits.astype("float64"))
    e = emb.astype("float64")
    out = np.zeros(ids.shape)
    for idx in np.ndindex(ids.shape):
        t = e[ids[idx]]
        cos = e @ t / (np.linalg.norm(e, axis=1) * np.linalg.norm(t))
        out[idx] = np.sum(p[idx] * (1 - cos))
    return out


def _np_ce(logits, ids):
    return -np.log(np.take_along_axis(_softmax(logits), ids[..., None], -1))[..., 0]


def _case(seed=0, shape=(3, 5), vocab=13, dim=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (vocab,)).astype("float32") * 2
    ids = rng.integers(0, vocab, size=shape)
    emb = rng.normal(size=(vocab, dim)).astype("float32")
    return logits, ids, emb


def test_emo_equals_naive_expected_cosine_distance():
    logits, ids, emb = _case()
    np.testing.assert_allclose(np_(L.emo_loss(ids, logits, emb)), _naive_emo(logits, ids, emb),
                               rtol=1e-5, atol=1e-6)
    probs = _softmax(logits).astype("float32")
    np.testing.assert_allclose(np_(L.emo_loss(ids, probs, emb, from_logits=False)),
                               _naive_emo(logits, ids, emb), rtol=1e-5, atol=1e-6)


def test_emo_mixed_with_crossentropy_and_token_mask():
    logits, ids, emb = _case(1)
    mask = np.ones(ids.shape, "float32")
    mask[0, 3:] = 0
    mask[2, :1] = 0
    per_token = _naive_emo(logits, ids, emb) + 0.5 * _np_ce(logits.astype("float64"), ids)
    expected = (per_token * mask).sum(1) / mask.sum(1)
    got = L.emo_loss(ids, logits, emb, crossentropy_weight=0.5, mask=mask)
    np.testing.assert_allclose(np_(got), expected, rtol=1e-5, atol=1e-6)


def test_emo_embedding_is_frozen_and_float16_and_xla_agree():
    logits, ids, emb = _case(2)
    e = tf.Variable(emb)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(L.emo_loss(ids, x, e))
    g_x, g_e = tape.gradient(loss, [x, e])
    assert g_e is None or not np.asarray(g_e).any()
    assert np.abs(np.asarray(g_x)).max() > 0
    half = L.emo_loss(ids, logits.astype("float16"), emb.astype("float16"))
    assert half.dtype == "float32"
    np.testing.assert_allclose(np_(half), _naive_emo(logits, ids, emb), atol=5e-3)
    jit = tf.function(lambda a, b: L.emo_loss(ids, a, b), jit_compile=True)
    np.testing.assert_allclose(np_(jit(logits, emb)), np_(L.emo_loss(ids, logits, emb)),
                               rtol=1e-5, atol=1e-6)


def test_emo_trains_a_tied_lm_head_through_compile():
    keras.utils.set_random_seed(0)
    vocab, dim = 9, 4
    inp = keras.Input((None,), dtype="int32")
    emb_layer = keras.layers.Embedding(vocab, dim)
    h = keras.layers.Dense(dim)(emb_layer(inp))
    out = keras.layers.Dense(vocab, dtype="float32")(h)
    model = keras.Model(inp, out)
    model.compile("adam", loss=functools.partial(
        L.emo_loss, embeddings=emb_layer.embeddings, crossentropy_weight=1.0), jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, (8, 6))
    hist = model.fit(x, x, epochs=5, batch_size=8, verbose=0).history["loss"]
    assert np.isfinite(hist).all() and hist[-1] < hist[0]


def test_emo_rejects_mismatched_shapes():
    logits, ids, emb = _case()
    with pytest.raises(ValueError, match="vocab"):
        L.emo_loss(ids, logits, emb[:5])
    with pytest.raises(ValueError, match="y_true"):
        L.emo_loss(ids[:, :2, None], logits, emb)
    with pytest.raises(ValueError, match="mask"):
        L.emo_loss(ids, logits, emb, mask=np.ones((3, 4)))


def _np_simcse(v, tau):
    v = v.astype("float64")
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = v[::2] @ v[1::2].T / tau
    sim = sim - sim.max(1, keepdims=True)
    logp = sim - np.log(np.exp(sim).sum(1, keepdims=True))
    return -np.mean(np.diag(logp))


def test_simcse_loss_equals_numpy_infonce():
    v = np.random.default_rng(3).normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(np_(L.simcse_loss(None, v)), _np_simcse(v, 0.05), rtol=1e-5)
    loss = L.SimCSELoss(temperature=0.1)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert clone.temperature == 0.1
    np.testing.assert_allclose(np_(clone(np.zeros(8), v)), _np_simcse(v, 0.1), rtol=1e-5)
    # identical copies far apart from the other sentences: loss near 0
    base = np.eye(4, 5, dtype="float32")
    assert float(L.simcse_loss(None, np.repeat(base, 2, axis=0))) < 1e-6
    with pytest.raises(ValueError, match="even"):
        L.simcse_loss(None, v[:7])


def test_expected_accuracy_loss_is_one_minus_target_probability():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 4)).astype("float32")
    ids = rng.integers(0, 4, size=(6,))
    p = _softmax(logits.astype("float64"))
    expected = 1 - p[np.arange(6), ids]
    np.testing.assert_allclose(np_(L.expected_accuracy_loss(ids, logits, from_logits=True)),
                               expected, rtol=1e-5)
    np.testing.assert_allclose(np_(L.expected_accuracy_loss(ids[:, None], p.astype("float32"))),
                               expected, rtol=1e-5)
