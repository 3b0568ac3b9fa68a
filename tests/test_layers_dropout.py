"""Hashed-mask Dropout: Keras Dropout semantics, mask statistics, determinism, XLA = eager."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from bert4keras_ng.layers import Dropout
from bert4keras_ng.layers.dropout import hashed_uniform_bits
from tests.helpers import check_layer, dtype_policy, to_numpy


def _masks(layer, x, calls):
    return [to_numpy(layer(x, training=True)) != 0 for _ in range(calls)]


def test_inference_is_identity_and_shared_battery():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    out = check_layer(lambda **kw: Dropout(0.3, seed=1, **kw), [x])
    np.testing.assert_array_equal(np.reshape(to_numpy(out), x.shape), x)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_and_scale(rate):
    n = 200_000
    x = np.ones((n,), "float32")
    y = to_numpy(Dropout(rate, seed=3)(x, training=True))
    kept = y != 0
    # binomial standard deviation; 6 sigma makes a false failure practically impossible
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(kept.sum() - n * (1 - rate)) < 6 * sigma
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)


def test_masks_of_successive_calls_and_neighbours_are_uncorrelated():
    layer = Dropout(0.5, seed=7)
    x = np.ones((64, 32, 48), "float32")
    first, second = (m.ravel().astype("float64") for m in _masks(layer, x, 2))
    n = first.size
    bound = 6 / np.sqrt(n)  # correlation of independent fair coins ~ N(0, 1/n)
    assert abs(np.corrcoef(first, second)[0, 1]) < bound
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < bound  # adjacent elements
    assert abs(np.corrcoef(first[:-48], first[48:])[0, 1]) < bound  # same column, next row


def test_bits_are_uniform_over_high_and_low_bytes():
    bits = ops.convert_to_numpy(hashed_uniform_bits((256, 1024), ops.convert_to_tensor([11, 4], "int64")))
    assert bits.dtype == np.uint32
    for byte in (bits >> 24, bits & 0xFF):
        counts = np.bincount(byte.ravel().astype("int64"), minlength=256)
        expected = bits.size / 256
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 400, chi2  # 255 degrees of freedom: mean 255, sd 22.6


def test_fixed_seed_reproduces_the_sequence_and_seeds_differ():
    x = np.ones((4, 16, 32), "float32")
    a, b, c = Dropout(0.2, seed=5), Dropout(0.2, seed=5), Dropout(0.2, seed=6)
    masks_a, masks_b, masks_c = _masks(a, x, 3), _masks(b, x, 3), _masks(c, x, 3)
    for ma, mb, mc in zip(masks_a, masks_b, masks_c):
        np.testing.assert_array_equal(ma, mb)
        assert (ma != mc).mean() > 0.2  # two independent rate-0.2 masks differ on 32 %
    assert (masks_a[0] != masks_a[1]).mean() > 0.2


def test_xla_draws_the_same_masks_as_eager():
    x = np.random.default_rng(1).normal(size=(3, 7, 16)).astype("float32")
    eager_layer, jit_layer = Dropout(0.4, seed=9), Dropout(0.4, seed=9)
    jitted = tf.function(lambda t: jit_layer(t, training=True), jit_compile=True)
    for _ in range(2):
        np.testing.assert_array_equal(to_numpy(jitted(x)), to_numpy(eager_layer(x, training=True)))


def test_gradient_is_mask_times_scale():
    layer = Dropout(0.25, seed=2)
    x = tf.constant(np.random.default_rng(2).normal(size=(5, 9)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    kept = y.numpy() != 0
    np.testing.assert_allclose(grad, kept / 0.75, rtol=1e-6)


def test_noise_shape_shares_the_mask_along_unit_axes():
    x = np.ones((4, 50, 8), "float32")
    y = to_numpy(Dropout(0.5, noise_shape=(None, 1, 8), seed=4)(x, training=True))
    assert np.all(y == y[:, :1, :])
    assert 0 < (y == 0).mean() < 1
    with pytest.raises(ValueError, match="noise_shape"):
        Dropout(0.5, noise_shape=(None, 1))(x, training=True)


def test_extreme_rates_and_mixed_precision_dtype():
    x = np.ones((3, 4), "float32")
    np.testing.assert_array_equal(to_numpy(Dropout(0.0)(x, training=True)), x)
    np.testing.assert_array_equal(to_numpy(Dropout(1.0)(x, training=True)), 0 * x)
    for policy, dtype in [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]:
        with dtype_policy(policy):
            layer = Dropout(0.5, seed=1)
        y = layer(ops.cast(x, dtype), training=True)
        assert keras.backend.standardize_dtype(y.dtype) == dtype
        assert set(np.unique(to_numpy(ops.cast(y, "float32")))) <= {0.0, 2.0}


def test_symbolic_batch_inside_a_functional_model():
    inputs = keras.Input((None, 6))
    model = keras.Model(inputs, Dropout(0.5, seed=3)(inputs))
    y = to_numpy(model(np.ones((2, 11, 6), "float32"), training=True))
    assert y.shape == (2, 11, 6) and 0.3 < (y == 0).mean() < 0.7
