"""FeedForward (plain and GLU) and mask-aware pooling against NumPy, plus the shared checks."""

import functools
import math

import numpy as np
import pytest

from bert4keras_ng.layers import (
    FeedForward,
    FirstTokenPooling,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
)
from tests import helpers as H

RNG = np.random.default_rng(3)
X = RNG.normal(size=(2, 4, 6)).astype("float32")
MASK = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)


def _np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _randomise(layer):
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") * 0.5
                       for w in layer.get_weights()])
    return {w.path.split("/", 1)[1]: w.numpy().astype(np.float64) for w in layer.weights}


def test_feedforward_plain_formula_and_names():
    layer = FeedForward(5, activation="gelu")
    layer(X)
    w = _randomise(layer)
    assert list(w) == ["i0_dense/kernel", "i0_dense/bias", "o_dense/kernel", "o_dense/bias"]
    hidden = _np_gelu(X @ w["i0_dense/kernel"] + w["i0_dense/bias"])
    expected = hidden @ w["o_dense/kernel"] + w["o_dense/bias"]
    np.testing.assert_allclose(H.to_numpy(layer(X)), expected, atol=1e-5)


def test_feedforward_gated_without_bias():
    layer = FeedForward(5, activation=["gelu", "linear"], use_bias=False)
    layer(X)
    w = _randomise(layer)
    assert list(w) == ["i0_dense/kernel", "i1_dense/kernel", "o_dense/kernel"]
    gated = _np_gelu(X @ w["i0_dense/kernel"]) * (X @ w["i1_dense/kernel"])
    np.testing.assert_allclose(H.to_numpy(layer(X)), gated @ w["o_dense/kernel"], atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", ["gelu_tanh", "linear"]])
def test_feedforward_shared_checks(activation):
    H.check_layer(functools.partial(FeedForward, 5, activation=activation), X,
                  expected_output_shape=X.shape)


def test_average_and_max_pooling_ignore_padding():
    avg = H.to_numpy(GlobalAveragePooling1D()(X, mask=MASK))
    mx = H.to_numpy(GlobalMaxPooling1D()(X, mask=MASK))
    for b in range(2):
        np.testing.assert_allclose(avg[b], X[b, MASK[b]].mean(0), atol=1e-6)
        np.testing.assert_allclose(mx[b], X[b, MASK[b]].max(0), atol=0)
    np.testing.assert_allclose(H.to_numpy(GlobalAveragePooling1D()(X)), X.mean(1), atol=1e-6)
    np.testing.assert_allclose(H.to_numpy(GlobalMaxPooling1D()(X)), X.max(1), atol=0)
    np.testing.assert_allclose(H.to_numpy(FirstTokenPooling()(X)), X[:, 0], atol=0)


def test_pooling_empty_rows_give_zeros():
    empty = np.array([[0, 0, 0, 0], [1, 0, 0, 0]], bool)
    for layer in (GlobalAveragePooling1D(), GlobalMaxPooling1D()):
        out = H.to_numpy(layer(X, mask=empty))
        np.testing.assert_array_equal(out[0], 0.0)
        np.testing.assert_allclose(out[1], X[1, 0], atol=1e-6)


@pytest.mark.parametrize("cls", [GlobalAveragePooling1D, GlobalMaxPooling1D])
def test_pooling_padding_invariance_and_shared_checks(cls):
    pooled_rows = np.ones((2, 1), bool)  # every pooled vector is a real output
    H.check_padding_invariance(lambda x: cls()(x, mask=MASK)[:, None], X, pooled_rows,
                               perturb=lambda x, _, rng: H.perturb_masked(x, MASK, rng))
    H.check_layer(cls, X, masks=MASK, expected_output_shape=(2, 6))


def test_first_token_pooling_shared_checks():
    H.check_layer(functools.partial(FirstTokenPooling, index=0), X, expected_output_shape=(2, 6))
