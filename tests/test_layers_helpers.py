"""The shared checks in tests/helpers.py pass good layers and catch bad ones."""

import functools

import keras
import numpy as np
import pytest
from keras import ops

from tests import helpers as H

RNG = np.random.default_rng(0)


class _FloatxConstantLayer(keras.layers.Layer):
    """Bad on purpose: adds a constant built in the global float type."""

    def call(self, x):
        return x + ops.cast(ops.ones(()), keras.config.floatx()) * 0.5


class _LeakyMeanLayer(keras.layers.Layer):
    """Bad on purpose: averages over all positions, padded ones included."""

    def call(self, x, mask=None):
        return x + ops.mean(x, axis=1, keepdims=True)


def test_dtype_policy_and_floatx_are_restored_even_on_error():
    before = keras.config.dtype_policy().name, keras.config.floatx()
    with pytest.raises(RuntimeError):
        with H.dtype_policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError
    with pytest.raises(RuntimeError):
        with H.global_floatx("float64"):
            raise RuntimeError
    assert (keras.config.dtype_policy().name, keras.config.floatx()) == before


def test_check_layer_passes_a_keras_dense():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    factory = functools.partial(keras.layers.Dense, 5)
    out = H.check_layer(factory, x, expected_output_shape=(2, 3, 5))
    assert out.shape == (2, 3, 5)


def test_global_dtype_check_catches_floatx_constants():
    x = RNG.normal(size=(2, 3)).astype("float32")
    with pytest.raises(AssertionError, match="global float type"):
        H.check_global_dtype_independence(_FloatxConstantLayer, x)


def test_padding_invariance_catches_leaks():
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    H.check_padding_invariance(lambda inp: keras.layers.Dense(2, kernel_initializer="ones")(inp),
                               x, mask)
    with pytest.raises(AssertionError, match="padding"):
        H.check_padding_invariance(lambda inp: _LeakyMeanLayer()(inp), x, mask)


def test_assert_close_scaled_rejects_non_finite_and_far_values():
    with pytest.raises(AssertionError, match="non-finite"):
        H.assert_close_scaled(np.array([np.nan]), np.array([0.0]), 1e-2)
    with pytest.raises(AssertionError, match="max"):
        H.assert_close_scaled(np.array([0.5]), np.array([0.0]), 1e-2)
    H.assert_close_scaled(np.array([100.5]), np.array([100.0]), 1e-2)
