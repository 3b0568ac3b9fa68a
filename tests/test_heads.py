"""GlobalPointer, EfficientGlobalPointer and ConditionalRandomField."""

import functools
import itertools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng.decoders import ViterbiDecoder
from bert4keras_ng.layers import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer
from tests import helpers

POINTERS = {"GlobalPointer": GlobalPointer, "EfficientGlobalPointer": EfficientGlobalPointer}



def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def lengths_mask(lengths, n):
    return np.arange(n)[None, :] < np.asarray(lengths)[:, None]


# ------------------------------------------------------------------ NumPy references


def np_rope(x, positions):
    """Interleaved RoPE written from the formula: pairs (2i, 2i+1) rotated by p * theta_i."""
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    ang = positions[:, None] * theta[None]  # (n, d/2)
    shape = (1, len(positions)) + (1,) * (x.ndim - 3) + (d // 2,)
    cos, sin = np.cos(ang).reshape(shape), np.sin(ang).reshape(shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x1 * cos + x0 * sin
    return out


def np_mask_spans(logits, mask, tril):
    n = logits.shape[-1]
    valid = np.ones(logits.shape, bool)
    if mask is not None:
        valid &= mask[:, None, :, None] & mask[:, None, None, :]
    if tril:
        valid &= np.triu(np.ones((n, n), bool))[None, None]
    return np.where(valid, logits, -np.inf)


def np_global_pointer(x, kernel, bias, heads, d, rope, tril, mask):
    h = x.astype("float64") @ kernel + bias
    b, n = x.shape[:2]
    h = h.reshape(b, n, heads, 2 * d)
    q, k = h[..., :d], h[..., d:]
    if rope:
        q, k = np_rope(q, np.arange(n, dtype="float64")), np_rope(k, np.arange(n, dtype="float64"))
    logits = np.einsum("bmhd,bnhd->bhmn", q, k) / np.sqrt(d)
    return np_mask_spans(logits, mask, tril)


def np_efficient_global_pointer(x, pk, pb, qk, qb, heads, d, rope, tril, mask):
    h = x.astype("float64") @ pk + pb
    n = x.shape[1]
    q, k = h[..., 0::2], h[..., 1::2]
    if rope:
        q, k = np_rope(q, np.arange(n, dtype="float64")), np_rope(k, np.arange(n, dtype="float64"))
    base = np.einsum("bmd,bnd->bmn", q, k) / np.sqrt(d)
    t = (h @ qk + qb) / 2  # (b, n, 2 heads)
    logits = np.empty((x.shape[0], heads, n, n))
    for a in range(heads):
        logits[:, a] = base + t[:, :, 2 * a + 1][:, :, None] + t[:, :, 2 * a][:, None, :]
    return np_mask_spans(logits, mask, tril)


def set_pointer_weights(layer, weights):
    if isinstance(layer, EfficientGlobalPointer):
        layer.p_dense.set_weights([np.array(w, "float32") for w in weights["p_dense"]])
        layer.q_dense.set_weights([np.array(w, "float32") for w in weights["q_dense"]])
    else:
        layer.dense.set_weights([np.array(w, "float32") for w in weights["dense"]])


def test_pointers_match_bert4keras_and_numpy(heads_goldens):
    for case in heads_goldens["pointers"]:
        cls = POINTERS[case["cls"]]
        x = np.array(case["x"], "float32")
        mask = np.array(case["mask"], bool)
        layer = cls(case["heads"], case["head_size"], RoPE=case["RoPE"],
                    tril_mask=case["tril_mask"])
        layer(x, mask=mask)
        set_pointer_weights(layer, case["weights"])
        got = np_(layer(x, mask=mask))
        expected = np.array(case["out"])
        expected = np.where(expected <= -1e29, -np.inf, expected)
        msg = f"{case['cls']} RoPE={case['RoPE']} tril={case['tril_mask']}"
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=msg)
        w = case["weights"]
        if cls is GlobalPointer:
            ref = np_global_pointer(x, np.array(w["dense"][0]), np.array(w["dense"][1]),
                                    case["heads"], case["head_size"], case["RoPE"],
                                    case["tril_mask"], mask)
        else:
            ref = np_efficient_global_pointer(
                x, *[np.array(a) for a in w["p_dense"] + w["q_dense"]], case["heads"],
                case["head_size"], case["RoPE"], case["tril_mask"], mask)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=msg)


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_pointer_weight_names_shapes_and_output_shape(cls):
    layer = cls(3, 4, name="gp")
    out = layer(np.zeros((2, 5, 6), "float32"))
    assert tuple(out.shape) == (2, 3, 5, 5)
    assert layer.compute_output_shape((None, None, 6)) == (None, 3, None, None)
    shapes = {w.path: tuple(w.shape) for w in layer.weights}
    if cls is GlobalPointer:
        assert shapes == {"gp/dense/kernel": (6, 24), "gp/dense/bias": (24,)}
    else:
        assert shapes == {"gp/p_dense/kernel": (6, 8), "gp/p_dense/bias": (8,),
                          "gp/q_dense/kernel": (8, 6), "gp/q_dense/bias": (6,)}
    assert len(cls(3, 4, use_bias=False)(np.zeros((1, 2, 6), "float32")).shape) == 4


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_pointer_padding_invariance(cls):
    """Padded positions change nothing in the real cells; the padded run equals the short one."""
    rng = np.random.default_rng(0)
    b, n, hidden = 2, 7, 8
    lengths = [4, 7]
    x = rng.normal(size=(b, n, hidden)).astype("float32")
    mask = lengths_mask(lengths, n)
    layer = cls(2, 4)
    out = np_(layer(x, mask=mask))
    x2 = np.where(mask[..., None], x, rng.normal(size=x.shape).astype("float32") * 5)
    out2 = np_(layer(x2, mask=mask))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(out2))
    np.testing.assert_allclose(out2, out, atol=1e-6)
    for i, length in enumerate(lengths):
        short = np_(layer(x[i : i + 1, :length]))
        np.testing.assert_allclose(out[i, :, :length, :length], short[0], atol=1e-5)
        assert np.isneginf(out[i, :, length:, :]).all() and np.isneginf(out[i, :, :, length:]).all()


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_pointer_implicit_keras_mask(cls):
    """The mask arrives through Keras implicit masking (Embedding mask_zero)."""
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(8, 6, mask_zero=True)(inp)
    model = keras.Model(inp, cls(2, 4, name="head")(h))
    out = np_(model(ids))
    assert np.isneginf(out[0, :, 3:, :]).all() and np.isneginf(out[0, :, :, 3:]).all()
    assert np.isfinite(out[0, :, :3, :3][:, np.triu_indices(3)[0], np.triu_indices(3)[1]]).all()
    assert np.isfinite(out[1][:, np.triu_indices(5)[0], np.triu_indices(5)[1]]).all()


POINTER_CONFIGS = [
    (GlobalPointer, dict(RoPE=True, tril_mask=True)),
    (GlobalPointer, dict(RoPE=False, tril_mask=False, use_bias=False)),
    (EfficientGlobalPointer, dict(RoPE=True, tril_mask=True)),
    (EfficientGlobalPointer, dict(RoPE=True, tril_mask=False, kernel_initializer="glorot_uniform")),
]


@pytest.mark.parametrize("cls,kwargs", POINTER_CONFIGS)
def test_pointer_config_saving_jit_and_global_dtype(cls, kwargs):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = lengths_mask([3, 5], 5)
    factory = functools.partial(cls, heads=2, head_size=4, **kwargs)
    layer = helpers.check_config_round_trip(factory, x, mask)
    config = layer.get_config()
    defaults = dict(heads=2, head_size=4, RoPE=True, use_bias=True, tril_mask=True)
    for key, value in {**defaults, **kwargs}.items():
        if key == "kernel_initializer":
            assert config[key]["class_name"].lower().replace("_", "") == value.replace("_", "")
        else:
            assert config[key] == value
    helpers.check_saving(factory, x, mask)
    helpers.check_jit(factory, x, mask)
    helpers.check_global_dtype_independence(factory, x, mask)


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_pointer_mixed_precision(cls, policy):
    """The RoPE table is built in float32 and cast: the layer runs under mixed policies."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = lengths_mask([4, 6], 6)
    ref = cls(2, 8, dtype="float32")
    expected = np_(ref(x, mask=mask))
    for make in (lambda: cls(2, 8, dtype=policy), lambda: cls(2, 8)):
        with helpers.dtype_policy(policy):  # also as the global policy (bert4keras fails here)
            layer = make()
            layer(x, mask=mask)
            layer.set_weights(ref.get_weights())
            out = layer(x, mask=mask)
            inp = keras.Input((None, 8))
            sym = layer(inp)
        assert out.dtype == policy.split("_")[1] and sym.dtype == policy.split("_")[1]
        out = np_(tf.cast(out, "float32"))
        np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
        finite = np.isfinite(expected)
        assert np.isfinite(out[finite]).all()
        tol = helpers.MIXED_TOLERANCES[policy] * max(1.0, np.abs(expected[finite]).max())
        assert np.abs(out[finite] - expected[finite]).max() <= tol


def test_pointer_bad_arguments():
    with pytest.raises(ValueError, match="heads"):
        GlobalPointer(0, 4)
    with pytest.raises(ValueError, match="head_size"):
        EfficientGlobalPointer(2, 5)  # odd with RoPE
    with pytest.raises(ValueError, match="RoPE"):
        GlobalPointer(2, 4, RoPE="yes")
    assert GlobalPointer(2, 5, RoPE=False).head_size == 5
    with pytest.raises(ValueError, match="batch, seq_len, hidden"):
        GlobalPointer(2, 4)(np.zeros((2, 8), "float32"))


@pytest.mark.slow
def test_global_pointer_trains_end_to_end():
    from bert4keras_ng.losses import global_pointer_crossentropy

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6, 8)).astype("float32")
    y = np.zeros((8, 2, 6, 6), "float32")
    y[:, 0, 1, 3] = 1
    y[:, 1, 4, 4] = 1
    inp = keras.Input((None, 8))
    model = keras.Model(inp, GlobalPointer(2, 8)(inp))
    model.compile(keras.optimizers.Adam(0.05), loss=global_pointer_crossentropy,
                  jit_compile=False)
    first = float(np_(global_pointer_crossentropy(y, model(x))).mean())
    model.fit(np.tile(x, (60, 1, 1)), np.tile(y, (60, 1, 1, 1)), batch_size=8, verbose=0)
    assert float(np_(global_pointer_crossentropy(y, model(x))).mean()) < 0.25 * first
    pred = np_(model(x)) > 0
    assert (pred == (y > 0)).mean() > 0.99


# ------------------------------------------------------------------------------- CRF


def brute_force_crf(emissions, trans, length):
    """log Z, and the score of every path, over the first `length` steps."""
    e = emissions[:length].astype("float64")
    scores = {}
    for path in itertools.product(range(e.shape[1]), repeat=length):
        s = sum(e[t, p] for t, p in enumerate(path))
        s += sum(trans[a, b] for a, b in zip(path[:-1], path[1:]))
        scores[path] = s
    vals = np.array(list(scores.values()))
    log_z = vals.max() + np.log(np.exp(vals - vals.max()).sum())
    return log_z, scores


def make_crf(c, mult=1, **kwargs):
    crf = ConditionalRandomField(lr_multiplier=mult, **kwargs)
    crf.build((None, None, c))
    return crf


def test_crf_log_likelihood_equals_enumeration():
    rng = np.random.default_rng(4)
    b, n, c = 3, 4, 3
    crf = make_crf(c, mult=5)
    trans = rng.normal(size=(c, c)).astype("float32")
    crf._trans.assign(trans / 5)
    np.testing.assert_allclose(crf.transitions(), trans, rtol=1e-6)
    x = (rng.normal(size=(b, n, c)) * 2).astype("float32")
    lengths = [4, 2, 1]
    mask = lengths_mask(lengths, n)
    labels = rng.integers(0, c, size=(b, n))
    out = crf(x, mask=mask)
    assert np.isneginf(np_(out)[~mask]).all()
    np.testing.assert_allclose(np_(out)[mask], x[mask])
    loss = np_(crf.sparse_loss(labels, out))
    dense = np_(crf.dense_loss(np.eye(c, dtype="float32")[labels], out))
    e = np.where(mask[..., None], x, 0.0).astype("float32")
    log_z_all = np_(crf.log_partition(e, mask))
    for i, length in enumerate(lengths):
        log_z, scores = brute_force_crf(x[i], trans.astype("float64"), length)
        np.testing.assert_allclose(log_z_all[i], log_z, rtol=1e-5)
        nll = log_z - scores[tuple(labels[i, :length])]
        np.testing.assert_allclose(loss[i], nll, rtol=1e-5)
        np.testing.assert_allclose(dense[i], nll, rtol=1e-5)
        # Viterbi with the learned transitions finds the best enumerated path
        best = max(scores, key=scores.get)
        np.testing.assert_array_equal(crf.viterbi_decoder().decode(x[i, :length]), best)


def test_crf_matches_bert4keras(heads_goldens):
    for case in heads_goldens["crf"]:
        x = np.array(case["x"], "float32")
        mask = np.array(case["mask"], bool)
        labels = np.array(case["labels"])
        c = x.shape[-1]
        crf = make_crf(c, mult=case["lr_multiplier"])
        crf._trans.assign(np.array(case["stored_trans"], "float32"))
        np.testing.assert_allclose(crf.transitions(), case["effective_trans"], rtol=1e-6)
        out = crf(x, mask=mask)
        np.testing.assert_allclose(np_(crf.sparse_loss(labels, out)), case["sparse_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(np_(crf.sparse_loss(labels[..., None], out)),
                                   case["sparse_loss"], rtol=1e-5)
        np.testing.assert_allclose(
            np_(crf.dense_loss(np.eye(c, dtype="float32")[labels], out)), case["dense_loss"],
            rtol=1e-5)
        np.testing.assert_allclose(np_(crf.sparse_accuracy(labels, out)),
                                   case["sparse_accuracy"], rtol=1e-6)
        np.testing.assert_allclose(
            np_(crf.dense_accuracy(np.eye(c, dtype="float32")[labels], out)),
            case["sparse_accuracy"], rtol=1e-6)


def test_crf_lr_multiplier_storage_and_saving():
    inp = keras.Input((None, 4))
    crf = ConditionalRandomField(lr_multiplier=100, name="crf")
    model = keras.Model(inp, crf(keras.layers.Masking()(inp)))
    stored = crf._trans.numpy()
    np.testing.assert_allclose(crf.transitions(), stored * 100, rtol=1e-6)
    # glorot_uniform bound for (4, 4) is sqrt(6 / 8); stored values are 100 times smaller
    assert np.abs(stored).max() <= np.sqrt(6 / 8) / 100 + 1e-7
    x = np.random.default_rng(5).normal(size=(2, 3, 4)).astype("float32")
    x[0, 2] = 0.0  # masked step
    helpers.check_saving(lambda: ConditionalRandomField(lr_multiplier=100), x)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "crf.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    lc = loaded.get_layer("crf")
    assert lc.lr_multiplier == 100
    np.testing.assert_allclose(lc.transitions(), crf.transitions(), rtol=1e-6)
    out = np_(loaded(x))
    assert np.isneginf(out[0, 2]).all() and np.isfinite(out[1]).all()


def test_crf_config_round_trip_and_jit():
    x = np.random.default_rng(6).normal(size=(2, 4, 3)).astype("float32")
    mask = lengths_mask([2, 4], 4)
    factory = functools.partial(ConditionalRandomField, lr_multiplier=10)
    layer = helpers.check_config_round_trip(factory, x, mask)
    assert layer.get_config()["lr_multiplier"] == 10
    helpers.check_jit(factory, x, mask)


def _crf_model(policy, c):
    inp = keras.Input((None, c))
    h = keras.layers.Masking()(inp)
    h = keras.layers.Dense(c, dtype=policy)(h)
    crf = ConditionalRandomField(lr_multiplier=10, dtype=policy)
    return keras.Model(inp, crf(h)), crf


def _crf_data(b=6, n=5, c=3):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, c, size=(b, n))
    x = np.eye(c, dtype="float32")[labels] * 2 + rng.normal(size=(b, n, c)).astype("float32")
    x[:3, 3:] = 0.0  # padding, removed by Masking
    return x, labels


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_crf_low_precision_emissions(policy):
    """fp16/bf16 emissions with -inf steps: float32 losses equal to float32, finite gradients."""
    x, labels = _crf_data()
    model, crf = _crf_model(policy, 3)
    ref_model, ref_crf = _crf_model("float32", 3)
    ref_model.set_weights(model.get_weights())
    emissions = model(x)
    assert emissions.dtype == policy.split("_")[1]
    with tf.GradientTape() as tape:
        loss = crf.sparse_loss(labels, model(x))
        total = tf.reduce_sum(loss)
    assert loss.dtype == tf.float32 and np.isfinite(np_(loss)).all()
    ref = np_(ref_crf.sparse_loss(labels, ref_model(x)))
    np.testing.assert_allclose(np_(loss), ref, rtol=helpers.MIXED_TOLERANCES[policy])
    grads = tape.gradient(total, model.trainable_weights)
    assert all(g is not None for g in grads)
    assert all(np.isfinite(np_(tf.cast(g, "float32"))).all() for g in grads)
    acc = float(np_(crf.sparse_accuracy(labels, emissions)))
    assert 0.0 <= acc <= 1.0


def _fit_crf(policy, jit):
    x, labels = _crf_data()
    model, crf = _crf_model(policy, 3)
    model.compile(keras.optimizers.Adam(0.05), loss=crf.sparse_loss,
                  metrics=[crf.sparse_accuracy], jit_compile=jit)
    first = float(np_(crf.sparse_loss(labels, model(x))).mean())
    hist = model.fit(np.tile(x, (8, 1, 1)), np.tile(labels, (8, 1)), batch_size=6, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert float(np_(crf.sparse_loss(labels, model(x))).mean()) < first
    assert 0.0 <= hist.history["sparse_accuracy"][-1] <= 1.0


def test_crf_gradients_under_xla_equal_eager():
    """The forward recursion is differentiable under XLA (bounded while loop)."""
    x, labels = _crf_data()
    model, crf = _crf_model("mixed_float16", 3)
    x, labels = tf.constant(x), tf.constant(labels)

    def grads(xs, ys):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(crf.sparse_loss(ys, model(xs, training=True)))
        return [loss] + tape.gradient(loss, model.trainable_weights)

    eager = grads(x, labels)
    compiled = tf.function(grads, jit_compile=True)(x, labels)
    for a, b in zip(compiled, eager):
        assert np.isfinite(np_(a)).all()
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy,jit", [("mixed_float16", True), ("float32", False), ("mixed_bfloat16", True)]
)
def test_crf_compiled_training_more(policy, jit):
    _fit_crf(policy, jit)


def test_crf_bad_inputs():
    crf = make_crf(3)
    y_pred = np.zeros((2, 4, 3), "float32")
    with pytest.raises(ValueError, match="sparse labels"):
        crf.sparse_loss(np.zeros((2, 5), "int32"), y_pred)
    with pytest.raises(ValueError, match="sparse labels"):
        crf.sparse_loss(np.zeros((2, 4, 3), "int32"), y_pred)
    with pytest.raises(ValueError, match="dense labels"):
        crf.dense_loss(np.zeros((2, 4)), y_pred)
    with pytest.raises(ValueError, match="y_pred"):
        crf.sparse_loss(np.zeros((2, 4), "int32"), np.zeros((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match="lr_multiplier"):
        ConditionalRandomField(lr_multiplier=0)
    with pytest.raises(ValueError, match="num_labels"):
        ConditionalRandomField()(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="not built"):
        ConditionalRandomField().sparse_loss(np.zeros((2, 4)), y_pred)


def test_crf_viterbi_decoder_restrictions():
    crf = make_crf(3)
    crf._trans.assign(np.zeros((3, 3), "float32"))
    nodes = np.array([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    assert isinstance(crf.viterbi_decoder(), ViterbiDecoder)
    np.testing.assert_array_equal(crf.viterbi_decoder().decode(nodes), [1, 2])
    np.testing.assert_array_equal(crf.viterbi_decoder(starts=[0], ends=[1]).decode(nodes), [0, 1])


def test_crf_compiled_model_reloads_without_compile(tmp_path):
    x, labels = _crf_data()
    model, crf = _crf_model("float32", 3)
    model.compile("adam", loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    path = str(tmp_path / "crf.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    lcrf = [layer for layer in loaded.layers if isinstance(layer, ConditionalRandomField)][0]
    loaded.compile("adam", loss=lcrf.sparse_loss, metrics=[lcrf.sparse_accuracy])
    np.testing.assert_allclose(loaded.evaluate(x, labels, verbose=0),
                               model.evaluate(x, labels, verbose=0), rtol=1e-6)
