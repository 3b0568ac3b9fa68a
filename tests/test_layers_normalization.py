"""ScaleOffset and LayerNormalization against NumPy formulas, plus the shared layer checks."""

import functools

import numpy as np
import pytest

from bert4keras_ng.layers import LayerNormalization, ScaleOffset
from tests import helpers as H

RNG = np.random.default_rng(1)
X = RNG.normal(size=(2, 3, 6)).astype("float32") * 2 + 0.5
COND = RNG.normal(size=(2, 4)).astype("float32")


def np_layer_norm(x, gamma=1.0, beta=0.0, eps=1e-7, zero_mean=True, unit_variance=True):
    x = x.astype(np.float64)
    if zero_mean:
        x = x - x.mean(-1, keepdims=True)
    if unit_variance:
        x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    return x * gamma + beta


def _randomise(layer):
    """Give every weight random values so that gamma/beta/projections all matter."""
    layer.set_weights([RNG.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return {w.path.split("/", 1)[1]: w.numpy() for w in layer.weights}


@pytest.mark.parametrize("eps", [1e-12, 1e-7, 1e-3])
def test_layer_norm_formula(eps):
    layer = LayerNormalization(epsilon=eps)
    layer(X)
    w = _randomise(layer)
    out = H.to_numpy(layer(X))
    np.testing.assert_allclose(out, np_layer_norm(X, w["gamma"], w["beta"], eps), atol=1e-5)


def test_default_epsilon_is_1e7_and_weight_order_beta_first():
    layer = LayerNormalization()
    layer(X)
    assert layer.epsilon == 1e-7
    assert [w.path.split("/")[-1] for w in layer.weights] == ["beta", "gamma"]


def test_rms_norm_and_parameter_free_rms_norm():
    rms = LayerNormalization(zero_mean=False, offset=False, epsilon=1e-6)
    rms(X)
    w = _randomise(rms)
    assert set(w) == {"gamma"}
    np.testing.assert_allclose(H.to_numpy(rms(X)),
                               np_layer_norm(X, w["gamma"], eps=1e-6, zero_mean=False), atol=1e-5)
    free = LayerNormalization(zero_mean=False, scale=False, offset=False)
    free(X)
    assert free.weights == []
    np.testing.assert_allclose(H.to_numpy(free(X)), np_layer_norm(X, zero_mean=False), atol=1e-5)


def test_safe_division_zero_row_and_tiny_epsilon_under_float16():
    x = X.copy()
    x[0, 1] = 0.25  # constant row: centred value 0, variance 0
    for dtype in ("float32", "mixed_float16"):
        out = H.to_numpy(LayerNormalization(epsilon=0.0, dtype=dtype)(x))
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[0, 1], 0.0)
    out = H.to_numpy(LayerNormalization(epsilon=1e-12, dtype="mixed_float16")(x))
    H.assert_close_scaled(out, np_layer_norm(x, eps=1e-12), 1e-2)


def test_scale_offset_constants_and_absent_parts():
    layer = ScaleOffset(scale=0.5, offset=None)
    np.testing.assert_allclose(H.to_numpy(layer(X)), X * 0.5, atol=1e-7)
    assert layer.weights == []
    layer = ScaleOffset(scale=False, offset=True)
    layer(X)
    w = _randomise(layer)
    np.testing.assert_allclose(H.to_numpy(layer(X)), X + w["beta"], atol=1e-6)


def test_conditional_layer_norm_formula_and_identity_at_init():
    layer = LayerNormalization(conditional=True, hidden_units=5, hidden_activation="relu",
                               epsilon=1e-12)
    at_init = H.to_numpy(layer([X, COND]))
    np.testing.assert_allclose(at_init, np_layer_norm(X, eps=1e-12), atol=1e-5)
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    assert names == ["beta", "gamma", "hidden_dense/kernel", "beta_dense/kernel",
                     "gamma_dense/kernel"]
    w = _randomise(layer)
    hidden = np.maximum(COND @ w["hidden_dense/kernel"], 0)
    gamma = w["gamma"] + (hidden @ w["gamma_dense/kernel"])[:, None, :]
    beta = w["beta"] + (hidden @ w["beta_dense/kernel"])[:, None, :]
    np.testing.assert_allclose(H.to_numpy(layer([X, COND])),
                               np_layer_norm(X, gamma, beta, 1e-12), atol=1e-4)


def test_conditional_scale_offset_with_constant_scale_still_conditions():
    layer = ScaleOffset(scale=2.0, offset=False, conditional=True)
    layer([X, COND])
    w = _randomise(layer)
    assert set(w) == {"gamma_dense/kernel"}
    gamma = 2.0 + (COND @ w["gamma_dense/kernel"])[:, None, :]
    np.testing.assert_allclose(H.to_numpy(layer([X, COND])), X * gamma, atol=1e-5)


def test_masks_pass_through():
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    layer = LayerNormalization(conditional=True)
    assert layer.compute_mask([X, COND], [mask, None]) is mask
    assert LayerNormalization().compute_mask(X, mask) is mask


def test_wrong_number_of_inputs_raises():
    with pytest.raises(ValueError, match=r"inputs=\[x, condition\]"):
        LayerNormalization(conditional=True)(X)
    with pytest.raises(ValueError, match="inputs="):
        LayerNormalization()([X, COND])


@pytest.mark.parametrize("kwargs, conditional", [
    ({"epsilon": 1e-12}, False),
    ({"zero_mean": False, "scale": False, "offset": False}, False),
    ({"conditional": True, "hidden_units": 3, "hidden_activation": "swish"}, True),
])
def test_shared_checks(kwargs, conditional):
    factory = functools.partial(LayerNormalization, **kwargs)
    inputs = [X, COND] if conditional else X
    H.check_layer(factory, inputs, expected_output_shape=X.shape)
