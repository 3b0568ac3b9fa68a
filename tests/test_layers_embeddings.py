"""Token and position embeddings against NumPy formulas, plus the shared layer checks."""

import functools
import os
import tempfile

import keras
import numpy as np
import pytest

from bert4keras_ng.layers import (
    Embedding,
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    SinusoidalPositionEmbedding,
)
from tests import helpers as H
from tests.test_backend import np_sinusoid, np_t5_bucket

RNG = np.random.default_rng(2)
IDS = np.array([[0, 5, 3, 0, 0], [7, 2, 9, 4, 0]], "int32")
X = RNG.normal(size=(2, 5, 4)).astype("float32")


def _randomise(layer):
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return layer.get_weights()[0]


# -- token embedding ------------------------------------------------------------------------------

def test_embedding_lookup_mask_first_position_always_valid():
    layer = Embedding(10, 4, mask_zero=True)
    out = layer(IDS)
    table = _randomise(layer)
    np.testing.assert_allclose(H.to_numpy(layer(IDS)), table[IDS], atol=0)
    mask = H.to_numpy(layer.compute_mask(IDS))
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    assert out.shape == (2, 5, 4)
    assert layer.weights[0].path.endswith("embeddings")
    assert Embedding(10, 4).compute_mask(IDS) is None


def test_embedding_dense_mode_is_tied_projection():
    layer = Embedding(10, 4)
    layer(IDS)
    table = _randomise(layer)
    np.testing.assert_allclose(H.to_numpy(layer(X, mode="dense")), X @ table.T, atol=1e-5)
    mask = np.ones((2, 5), bool)
    assert layer.compute_mask(X, mask) is mask
    with pytest.raises(ValueError, match="mode.*'dense'"):
        layer(IDS, mode="lookup")


def test_embedding_dense_mode_mixed_precision_casts_the_table():
    ref = Embedding(10, 4)
    ref(IDS)
    table = _randomise(ref)
    for policy in ("mixed_float16", "mixed_bfloat16"):
        layer = Embedding(10, 4, dtype=policy)
        layer(IDS)
        layer.set_weights([table])
        out = layer(X, mode="dense")
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        H.assert_close_scaled(out, X @ table.T, H.MIXED_TOLERANCES[policy])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_small_table_half_precision_lookup_equals_gather_and_scatters_its_gradient(policy):
    """Segment-sized tables use a one-hot matmul in half precision: same rows as the float32
    gather rounded once, and the gradient sums the upstream rows of each id (a scatter-add)."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    ids = rng.integers(0, 3, size=(4, 7)).astype("int32")
    ids[:, :2] = 0  # a contended row, as segment 0 is in practice
    with H.dtype_policy(policy):
        layer = Embedding(3, 5, embeddings_initializer="normal")
    layer.build((None, None))
    assert layer._one_hot_lookup()
    table = np.asarray(layer.embeddings.numpy(), "float32")
    upstream = rng.normal(size=(4, 7, 5)).astype("float32")
    with tf.GradientTape() as tape:
        out = layer(ids)
        loss = tf.reduce_sum(tf.cast(out, "float32") * upstream)
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings.value)).numpy()
    dtype = policy.split("_")[1]
    expected_rows = keras.ops.convert_to_numpy(
        keras.ops.cast(keras.ops.cast(table[ids], dtype), "float32"))
    np.testing.assert_array_equal(H.to_numpy(keras.ops.cast(out, "float32")), expected_rows)
    expected_grad = np.zeros_like(table)
    np.add.at(expected_grad, ids, upstream)
    np.testing.assert_allclose(grad, expected_grad, rtol=2e-2, atol=2e-2)
    with H.dtype_policy(policy):
        assert not Embedding(64, 5)._one_hot_lookup()  # vocabulary tables keep the gather
    assert not Embedding(3, 5)._one_hot_lookup()  # float32 keeps the exact gather


def test_embedding_shared_checks():
    H.check_layer(functools.partial(Embedding, 10, 4, mask_zero=True), IDS,
                  expected_output_shape=(2, 5, 4))
    H.check_layer(functools.partial(Embedding, 10, 4), X, call_kwargs={"mode": "dense"},
                  expected_output_shape=(2, 5, 10))


def test_tied_embedding_model_saves_and_reloads():
    ids = keras.Input((None,), dtype="int32")
    emb = Embedding(10, 4, mask_zero=True, name="Embedding-Token")
    h = emb(ids)
    logits = emb(keras.layers.Dense(4, name="mid")(h), mode="dense")
    model = keras.Model(ids, logits)
    assert len(model.weights) == 3  # the table exists once
    expected = model(IDS)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tied.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    H.assert_all_close(loaded(IDS), expected, atol=0)


# -- absolute positions ---------------------------------------------------------------------------

@pytest.mark.parametrize("merge_mode", ["add", "mul", "zero", "concat"])
def test_position_embedding_merge_modes(merge_mode):
    layer = PositionEmbedding(8, 4, merge_mode=merge_mode)
    layer(X)
    table = _randomise(layer)[None, :5]
    expected = {"add": X + table, "mul": X * (1 + table), "zero": table,
                "concat": np.concatenate([X, np.broadcast_to(table, X.shape)], -1)}[merge_mode]
    np.testing.assert_allclose(H.to_numpy(layer(X)), expected, atol=1e-6)


def test_position_embedding_custom_ids_and_mask():
    layer = PositionEmbedding(8, 4, custom_position_ids=True)
    pos = np.array([[3, 3, 0, 1, 7], [0, 1, 2, 3, 4]], "int32")
    layer([X, pos])
    table = _randomise(layer)
    np.testing.assert_allclose(H.to_numpy(layer([X, pos])), X + table[pos], atol=1e-6)
    mask = IDS != 0
    assert layer.compute_mask([X, pos], [mask, None]) is mask
    with pytest.raises(ValueError, match=r"inputs=\[x, position_ids\]"):
        layer(X)


def test_hierarchical_positions_extend_the_table():
    p, alpha = 4, 0.4
    layer = PositionEmbedding(p, 3, merge_mode="zero", hierarchical=True, custom_position_ids=True)
    pos = np.arange(p * p, dtype="int32")[None]
    x = np.zeros((1, p * p, 3), "float32")
    layer([x, pos])
    table = _randomise(layer).astype(np.float64)
    u = (table - alpha * table[:1]) / (1 - alpha)
    expected = alpha * u[pos // p] + (1 - alpha) * u[pos % p]
    out = H.to_numpy(layer([x, pos]))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out[0, :p], table, atol=1e-5)  # first P positions unchanged


def test_bad_merge_mode_names_allowed_values():
    with pytest.raises(ValueError, match="merge_mode.*'concat'"):
        PositionEmbedding(8, 4, merge_mode="sum")


def test_position_embedding_shared_checks():
    H.check_layer(functools.partial(PositionEmbedding, 8, 4, embeddings_initializer="uniform"),
                  X, expected_output_shape=X.shape)


# -- sinusoidal positions -------------------------------------------------------------------------

def test_sinusoidal_position_embedding():
    out = H.to_numpy(SinusoidalPositionEmbedding(4, merge_mode="zero")(X))
    assert out.shape == (1, 5, 4)
    np.testing.assert_allclose(out[0], np_sinusoid(np.arange(5), 4), atol=1e-6)
    out = H.to_numpy(SinusoidalPositionEmbedding(4)(X))
    np.testing.assert_allclose(out, X + np_sinusoid(np.arange(5), 4)[None], atol=1e-6)
    pos = np.array([[4, 3, 2, 1, 0], [9, 9, 9, 9, 9]], "int32")
    layer = SinusoidalPositionEmbedding(6, merge_mode="concat", custom_position_ids=True)
    out = H.to_numpy(layer([X, pos]))
    np.testing.assert_allclose(out[..., 4:], np_sinusoid(pos, 6), atol=1e-6)


def test_sinusoidal_shared_checks():
    H.check_layer(functools.partial(SinusoidalPositionEmbedding, 4, merge_mode="zero"), X,
                  expected_output_shape=(1, 5, 4))


# -- relative positions ---------------------------------------------------------------------------

def test_nezha_relative_table_fixed_sinusoid_rows_and_window():
    n_q, n_k, d = 3, 70, 4
    q = np.zeros((1, n_q, 8), "float32")
    k = np.zeros((1, n_k, 8), "float32")
    layer = RelativePositionEmbedding(129, d, embeddings_initializer="sinusoidal", trainable=False)
    out = H.to_numpy(layer([q, k]))
    table = np_sinusoid(np.arange(129), d)  # row r = sinusoid(r), not sinusoid(r - 64)
    np.testing.assert_allclose(H.to_numpy(layer.embeddings), table, atol=1e-6)
    ids = np.clip(np.arange(n_k)[None] - np.arange(n_q)[:, None], -64, 64) + 64
    np.testing.assert_allclose(out, table[ids], atol=1e-6)
    assert layer.trainable_weights == [] and out.shape == (n_q, n_k, d)


def test_t5_relative_buckets_gather_table():
    n = 40
    x = np.zeros((1, n, 2), "float32")
    for bidirectional in (True, False):
        layer = RelativePositionEmbeddingT5(32, 3, bidirectional=bidirectional)
        layer([x, x])
        table = _randomise(layer)
        assert table.shape == (32, 3)
        d = np.arange(n)[:, None] - np.arange(n)[None]
        buckets = np.vectorize(np_t5_bucket)(d, bidirectional)
        np.testing.assert_allclose(H.to_numpy(layer([x, x])), table[buckets], atol=0)


def test_relative_embeddings_shared_checks():
    x = np.zeros((2, 5, 2), "float32")
    H.check_layer(functools.partial(RelativePositionEmbedding, 129, 4,
                                    embeddings_initializer="sinusoidal"), [x, x],
                  expected_output_shape=(5, 5, 4))
    H.check_layer(functools.partial(RelativePositionEmbeddingT5, 32, 2, bidirectional=False,
                                    embeddings_initializer="uniform"), [x, x],
                  expected_output_shape=(5, 5, 2))
    with pytest.raises(ValueError, match=r"inputs=\[q, k\]"):
        RelativePositionEmbedding(129, 4)(x)
