"""Losses: NumPy references, bert4keras heads_goldens, float16 inputs with -inf entries, FGM."""

from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng import losses as L

NEG_INF = -np.inf



def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --------------------------------------------------------------- NumPy references


def ref_mcce(t, s):
    """log(1 + sum_i (1 - t_i) e^{s_i}) + log(1 + sum_i t_i e^{-s_i}), -inf scores skipped."""
    out = []
    for trow, srow in zip(t.reshape(-1, t.shape[-1]), s.reshape(-1, s.shape[-1])):
        keep = np.isfinite(srow)
        tr, sr = trow[keep].astype("float64"), srow[keep].astype("float64")
        out.append(np.log1p(np.sum((1 - tr) * np.exp(sr))) + np.log1p(np.sum(tr * np.exp(-sr))))
    return np.array(out).reshape(s.shape[:-1])


def random_scores(rng, shape, p_masked=0.2, scale=3.0):
    s = rng.normal(size=shape) * scale
    s[rng.random(shape) < p_masked] = NEG_INF
    return s.astype("float32")


def test_mcce_hard_matches_reference():
    rng = np.random.default_rng(0)
    s = random_scores(rng, (3, 4, 9))
    t = (rng.random(s.shape) < 0.3).astype("float32")
    got = np_(L.multilabel_categorical_crossentropy(t, s))
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_mcce(t * np.isfinite(s), s), rtol=1e-5)
    # boolean labels work too
    np.testing.assert_allclose(np_(L.multilabel_categorical_crossentropy(t > 0, s)), got)


def test_mcce_soft_matches_reference_and_hard():
    rng = np.random.default_rng(1)
    s = random_scores(rng, (5, 7))
    t = rng.random(s.shape).astype("float32")
    t[:, 0], t[:, 1] = 0.0, 1.0
    got = np_(L.soft_multilabel_categorical_crossentropy(t, s))
    np.testing.assert_allclose(got, ref_mcce(t, s), rtol=1e-5)
    hard = (t > 0.5).astype("float32")
    np.testing.assert_allclose(
        np_(L.soft_multilabel_categorical_crossentropy(hard, s)),
        np_(L.multilabel_categorical_crossentropy(hard, s)), rtol=1e-6)


def test_mcce_soft_optimum_is_sigmoid_2s():
    """d L / d s_i = 0 at t_i = sigmoid(2 s_i) for a single class."""
    s = tf.Variable(np.array([[0.3], [-1.2], [2.0]], dtype="float32"))
    t = 1.0 / (1.0 + np.exp(-2.0 * s.numpy()))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.soft_multilabel_categorical_crossentropy(t, s))
    np.testing.assert_allclose(tape.gradient(loss, s).numpy(), 0.0, atol=1e-6)


def test_mcce_matches_bert4keras(heads_goldens):
    g = heads_goldens["multilabel"]
    s = np.where(np.array(g["neg_inf"]), NEG_INF, np.array(g["scores"])).astype("float32")
    np.testing.assert_allclose(
        np_(L.multilabel_categorical_crossentropy(np.array(g["hard"]), s)), g["hard_loss"],
        rtol=1e-5)
    np.testing.assert_allclose(
        np_(L.soft_multilabel_categorical_crossentropy(np.array(g["soft"]), s)), g["soft_loss"],
        rtol=1e-5)
    ss = np.array(g["sparse_scores"], dtype="float32")
    np.testing.assert_allclose(
        np_(L.sparse_multilabel_categorical_crossentropy(np.array(g["sparse_idx"]), ss, True)),
        g["sparse_loss_mask_zero"], rtol=1e-5)
    np.testing.assert_allclose(
        np_(L.sparse_multilabel_categorical_crossentropy(
            np.array(g["sparse_idx_nomask"]), ss[:3], False)),
        g["sparse_loss_nomask"], rtol=1e-5)


@pytest.mark.parametrize("mask_zero", [False, True])
def test_sparse_mcce_equals_dense(mask_zero):
    rng = np.random.default_rng(2)
    b, c, k = 6, 10, 4
    s = (rng.normal(size=(b, c)) * 2).astype("float32")
    idx = np.zeros((b, k), dtype="int32")
    dense = np.zeros((b, c), dtype="float32")
    for r in range(b):
        # with mask_zero: r % (k + 1) real positives, padded with 0; else k distinct positives
        m = r % (k + 1) if mask_zero else k
        picks = rng.choice(np.arange(1 if mask_zero else 0, c), size=m, replace=False)
        idx[r, :m] = picks
        dense[r, picks] = 1
    if mask_zero:
        expected = ref_mcce(dense[:, 1:], s[:, 1:])  # class 0 is padding, not a class
    else:
        expected = ref_mcce(dense, s)
    got = np_(L.sparse_multilabel_categorical_crossentropy(idx, s, mask_zero=mask_zero))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


# ------------------------------------------------------------------- GlobalPointer


def gp_logits(rng, b, heads, n, lengths):
    s = (rng.normal(size=(b, heads, n, n)) * 2).astype("float32")
    for i, length in enumerate(lengths):
        s[i, :, length:, :] = NEG_INF
        s[i, :, :, length:] = NEG_INF
    s[:, :, np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = NEG_INF
    return s


def test_global_pointer_crossentropy_reference():
    rng = np.random.default_rng(3)
    b, heads, n = 3, 2, 5
    s = gp_logits(rng, b, heads, n, [5, 3, 1])
    y = np.zeros_like(s)
    y[0, 0, 1, 3] = y[0, 1, 0, 0] = y[1, 1, 0, 2] = 1
    got = np_(L.global_pointer_crossentropy(y, s))
    ref = ref_mcce(y.reshape(b * heads, -1), s.reshape(b * heads, -1)).reshape(b, heads)
    assert got.shape == (b,)
    np.testing.assert_allclose(got, ref.mean(1), rtol=1e-5)
    # Keras' mean over the batch equals bert4keras' mean over the b*heads rows
    np.testing.assert_allclose(got.mean(), ref.mean(), rtol=1e-5)


def test_sparse_global_pointer_crossentropy_equals_dense():
    rng = np.random.default_rng(4)
    b, heads, n, k = 2, 3, 6, 3
    s = gp_logits(rng, b, heads, n, [6, 4])
    spans = np.zeros((b, heads, k, 2), dtype="int32")
    dense = np.zeros_like(s)
    gold = {(0, 0): [(1, 2), (3, 5)], (0, 2): [(2, 2)], (1, 1): [(1, 3), (2, 3), (0, 1)]}
    for (i, h), lst in gold.items():
        for j, (st, en) in enumerate(lst):
            spans[i, h, j] = (st, en)
            dense[i, h, st, en] = 1
    got = np_(L.sparse_global_pointer_crossentropy(spans, s, mask_zero=True))
    s2 = s.reshape(b, heads, -1)[..., 1:]  # cell (0, 0) is the padding class
    ref = ref_mcce(dense.reshape(b, heads, -1)[..., 1:], s2).mean(1)
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_global_pointer_kl_reference_and_rdrop():
    rng = np.random.default_rng(5)
    s = gp_logits(rng, 4, 2, 4, [4, 4, 2, 2])
    t = s + rng.normal(size=s.shape).astype("float32")
    t[0, 0, 0, 3] = NEG_INF  # masked in one input only
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    keep = np.isfinite(s) & np.isfinite(t)
    d = np.where(keep, (sig(np.where(keep, s, 0)) - sig(np.where(keep, t, 0)))
                 * (np.where(keep, s, 0) - np.where(keep, t, 0)), 0.0)
    got = np_(L.global_pointer_kl(s, t))
    np.testing.assert_allclose(got, d.reshape(4, -1).sum(1), rtol=1e-5)
    np.testing.assert_allclose(got, np_(L.global_pointer_kl(t, s)), rtol=1e-6)
    assert np.all(got >= 0)
    np.testing.assert_allclose(np_(L.global_pointer_kl(s, s)), 0.0, atol=1e-7)
    inter = np.stack([s, t], axis=1).reshape((8,) + s.shape[1:])
    np.testing.assert_allclose(np_(L.rdrop_global_pointer_kl(inter)), got, rtol=1e-6)


def test_rdrop_kl_and_crossentropy_reference():
    rng = np.random.default_rng(6)
    logits = (rng.normal(size=(6, 5)) * 2).astype("float32")
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pa, pb = p[::2], p[1::2]
    kl = (pa * np.log(pa / pb)).sum(-1) + (pb * np.log(pb / pa)).sum(-1)
    np.testing.assert_allclose(np_(L.rdrop_kl(logits, from_logits=True)), kl, rtol=1e-4)
    np.testing.assert_allclose(np_(L.rdrop_kl(p)), kl, rtol=1e-4)
    labels = np.repeat(rng.integers(0, 5, size=3), 2)
    ce = -np.log(p[np.arange(6), labels])
    got = np_(L.rdrop_crossentropy(labels, p, alpha=4))
    assert got.shape == (6,)
    np.testing.assert_allclose(got.mean(), ce.mean() + kl.mean(), rtol=1e-5)
    got = np_(L.rdrop_crossentropy(labels[:, None], logits, alpha=2, from_logits=True))
    np.testing.assert_allclose(got.mean(), ce.mean() + 0.5 * kl.mean(), rtol=1e-5)


def test_cosent_reference():
    rng = np.random.default_rng(7)
    m, dim = 5, 6
    v = rng.normal(size=(2 * m, dim)).astype("float32")
    labels = np.array([2, 0, 1, 1, 0])
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = (u[::2] * u[1::2]).sum(1) * 20
    terms = [cos[a] - cos[b] for a in range(m) for b in range(m) if labels[a] < labels[b]]
    ref = np.log1p(np.exp(np.array(terms, dtype="float64")).sum())
    y_rows = np.repeat(labels, 2)
    np.testing.assert_allclose(np_(L.cosent_loss(y_rows, v)), ref, rtol=1e-5)
    np.testing.assert_allclose(np_(L.cosent_ranking_loss(labels, cos)), ref, rtol=1e-5)
    # all labels equal: no ordered pair, loss log(1) = 0
    np.testing.assert_allclose(np_(L.cosent_loss(np.ones(2 * m), v)), 0.0, atol=1e-7)


def test_multiple_choice_crossentropy_reference():
    rng = np.random.default_rng(8)
    q, k = 4, 3
    s = (rng.normal(size=(q * k, 1)) * 2).astype("float32")
    s[5, 0] = NEG_INF  # question 1 has only two choices
    labels = np.array([0, 2, 1, 1])
    z = s.reshape(q, k).astype("float64")
    ref = -(z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(q), labels]
    fn = partial(L.multiple_choice_crossentropy, num_choices=k)
    np.testing.assert_allclose(np_(fn(labels, s)), ref, rtol=1e-5)
    np.testing.assert_allclose(np_(fn(np.repeat(labels, k), s[:, 0])), ref, rtol=1e-5)


# ------------------------------------------------------ float16 inputs, -inf entries


def _fp16_cases():
    rng = np.random.default_rng(9)
    s = random_scores(rng, (2, 3, 4, 4), p_masked=0.3, scale=4)
    y = (rng.random(s.shape) < 0.2).astype("float32") * np.isfinite(s)
    spans = np.array([[[[0, 1]], [[2, 3]], [[0, 0]]]] * 2, dtype="int32")
    vec = rng.normal(size=(4, 8)).astype("float32")
    mc = random_scores(rng, (6, 1), p_masked=0.0)
    mc[1, 0] = NEG_INF
    rdrop_logits = (rng.normal(size=(4, 5)) * 4).astype("float32")
    rdrop_logits[0:2, 3] = rdrop_logits[2:4, 0] = NEG_INF  # the same class masked in a pair
    return {
        "hard": (L.multilabel_categorical_crossentropy, y, s),
        "soft": (L.soft_multilabel_categorical_crossentropy, y * 0.7, s),
        "sparse": (partial(L.sparse_multilabel_categorical_crossentropy, mask_zero=True),
                   np.array([[1, 2, 0]] * 2, dtype="int32"), s[:, 0, 0]),
        "gp": (L.global_pointer_crossentropy, y, s),
        "sparse_gp": (L.sparse_global_pointer_crossentropy, spans, s),
        "gp_kl": (lambda _, p: L.global_pointer_kl(p, p * 0.5), None, s),
        "rdrop_gp": (lambda _, p: L.rdrop_global_pointer_kl(p), None, s),
        "rdrop": (partial(L.rdrop_crossentropy, from_logits=True), np.array([1, 1, 2, 2]),
                  rdrop_logits),
        "cosent": (L.cosent_loss, np.array([1, 1, 0, 0]), vec),
        "choice": (partial(L.multiple_choice_crossentropy, num_choices=2), np.array([0, 1, 1]),
                   mc),
    }


@pytest.mark.parametrize("name", list(_fp16_cases()))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_losses_finite_with_low_precision_and_masked_inputs(name, dtype):
    fn, y, s = _fp16_cases()[name]
    x = tf.Variable(tf.cast(s, dtype))
    with tf.GradientTape() as tape:
        loss = fn(y, x)
        total = tf.reduce_sum(loss)
    assert loss.dtype == tf.float32
    assert np.all(np.isfinite(np_(loss))), name
    grad = tape.gradient(total, x)
    assert grad is not None
    assert np.all(np.isfinite(np_(tf.cast(grad, "float32")))), name
    # and the value agrees with the float32 computation
    ref = np_(fn(y, tf.cast(tf.cast(s, dtype), "float32")))
    np.testing.assert_allclose(np_(loss), ref, rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise_clear_errors():
    s = np.zeros((2, 3, 4, 4), "float32")
    with pytest.raises(ValueError, match="same shape"):
        L.global_pointer_crossentropy(np.zeros((2, 3, 4, 5)), s)
    with pytest.raises(ValueError, match="batch, heads, n, n"):
        L.global_pointer_crossentropy(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), "float32"))
    with pytest.raises(ValueError, match="same shape"):
        L.multilabel_categorical_crossentropy(np.zeros((2, 5)), np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="leading dimensions"):
        L.sparse_multilabel_categorical_crossentropy(np.zeros((3, 2), "int32"),
                                                     np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, heads, K, 2\)"):
        L.sparse_global_pointer_crossentropy(np.zeros((2, 3, 5), "int32"), s)
    with pytest.raises(ValueError, match="even"):
        L.rdrop_kl(np.ones((3, 4), "float32"))
    with pytest.raises(ValueError, match="num_choices"):
        L.multiple_choice_crossentropy(np.zeros(2), np.zeros((5, 1), "float32"), num_choices=2)
    with pytest.raises(ValueError, match="one score per row"):
        L.multiple_choice_crossentropy(np.zeros(2), np.zeros((4, 3), "float32"), num_choices=2)
    with pytest.raises(ValueError, match="match"):
        L.cosent_ranking_loss(np.zeros(3), np.zeros(4, "float32"))


def test_losses_compile_and_fit_under_mixed_float16():
    """A GlobalPointer-like fp16 output trained with a compiled loss stays finite."""
    from bert4keras_ng.layers import GlobalPointer

    rng = np.random.default_rng(10)
    inp = keras.Input((None, 8))
    out = GlobalPointer(2, 4, dtype="mixed_float16")(keras.layers.Masking()(inp))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=L.global_pointer_crossentropy)
    x = rng.normal(size=(4, 5, 8)).astype("float32")
    x[2:, 3:] = 0.0  # masked by Masking
    y = np.zeros((4, 2, 5, 5), "float32")
    y[:, 0, 1, 2] = 1
    hist = model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < hist.history["loss"][0]


# ---------------------------------------------------------------------------- FGM


def _fgm_model(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(11, 4, name="Embedding-Token")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(3, name="Out")(h)
    return keras.Model(inp, out)


def _fgm_data():
    rng = np.random.default_rng(11)
    return rng.integers(1, 11, size=(6, 5)), rng.integers(0, 3, size=(6,))


@pytest.mark.parametrize("jit", [False, True])
def test_adversarial_training_step_matches_manual_fgm(jit):
    x, y = _fgm_data()
    eps, lr = 0.5, 0.1
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    ref = _fgm_model(0)
    emb = ref.get_layer("Embedding-Token").embeddings
    with tf.GradientTape() as tape:
        loss = loss_fn(y, ref(x, training=True))
    g = tf.convert_to_tensor(tape.gradient(loss, emb))
    delta = eps * g / tf.norm(g)
    emb.assign_add(delta)
    with tf.GradientTape() as tape:
        adv_loss = loss_fn(y, ref(x, training=True))
    grads = tape.gradient(adv_loss, ref.trainable_weights)
    expected = []
    for w, gr in zip(ref.trainable_weights, grads):
        new = w.numpy() - lr * np_(tf.convert_to_tensor(gr))
        if w is emb:
            new = new - delta.numpy()
        expected.append(new)

    model = _fgm_model(0)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss_fn, jit_compile=jit)
    assert L.adversarial_training(model, "Embedding-Token", epsilon=eps) is model
    logs = model.train_on_batch(x, y, return_dict=True)
    for w, e in zip(model.trainable_weights, expected):
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], adv_loss.numpy(), rtol=1e-5)


def test_adversarial_training_epsilon_zero_is_plain_training_and_errors():
    x, y = _fgm_data()
    a, b = _fgm_model(1), _fgm_model(1)
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    L.adversarial_training(a, epsilon=0)
    a.fit(x, y, epochs=2, batch_size=3, verbose=0)
    b.fit(x, y, epochs=2, batch_size=3, verbose=0)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no layer named"):
        L.adversarial_training(b, "Embedding-Nope")
    with pytest.raises(ValueError, match="epsilon"):
        L.adversarial_training(b, epsilon=-1)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_model_compiled_with_a_loss_reloads(tmp_path):
    from bert4keras_ng.layers import GlobalPointer

    inp = keras.Input((None, 4))
    model = keras.Model(inp, GlobalPointer(2, 4)(inp))
    model.compile("adam", loss=L.global_pointer_crossentropy)
    path = str(tmp_path / "gp.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(12).normal(size=(2, 3, 4)).astype("float32")
    y = np.zeros((2, 2, 3, 3), "float32")
    y[:, 0, 0, 1] = 1
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0),
                               rtol=1e-6)


def test_parametrised_loss_objects_round_trip():
    rng = np.random.default_rng(13)
    s = rng.normal(size=(6, 1)).astype("float32")
    labels = np.array([1, 0])
    loss = L.MultipleChoiceCrossentropy(3)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, L.MultipleChoiceCrossentropy) and clone.num_choices == 3
    expected = np_(L.multiple_choice_crossentropy(labels, s, 3)).mean()
    np.testing.assert_allclose(np_(clone(labels, s)), expected, rtol=1e-6)
    v = rng.normal(size=(4, 5)).astype("float32")
    y = np.array([1, 1, 0, 0])
    cos = L.CoSENTLoss(scale=10)
    clone = keras.losses.deserialize(keras.losses.serialize(cos))
    assert clone.scale == 10.0
    np.testing.assert_allclose(np_(clone(y, v)), np_(L.cosent_loss(y, v, scale=10)), rtol=1e-6)
    with pytest.raises(ValueError, match="num_choices"):
        L.MultipleChoiceCrossentropy(0)


def test_adversarial_training_under_mixed_float16_loss_scaling():
    from tests.helpers import dtype_policy

    x, y = _fgm_data()
    with dtype_policy("mixed_float16"):
        model = _fgm_model(2)
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    emb = model.get_layer("Embedding-Token").embeddings
    before = emb.numpy().copy()
    L.adversarial_training(model, epsilon=1.0)
    hist = model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    after = emb.numpy()
    assert np.isfinite(after).all() and emb.dtype == "float32"
    # Adam moves each touched row by about the learning rate; delta was removed again
    assert 0 < np.abs(after - before).max() < 0.05
