"""The recipe AdaFactor against a NumPy transcription of the update rule in the reference."""

import numpy as np
import pytest

from bert4keras_ng.clue.optim import RecipeAdaFactor, make_optimizer


def _reference(theta, grads, lr, beta1=0.9, factored=False):
    theta = theta.astype("float64").copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    vr = np.zeros(theta.shape[:-1])
    vc = np.zeros(theta.shape[:-2] + theta.shape[-1:])
    for t, g in enumerate(grads, 1):
        beta2 = 1 - t ** -0.8
        g2 = g ** 2 + 1e-30
        if factored:
            vr = beta2 * vr + (1 - beta2) * g2.mean(-1)
            vc = beta2 * vc + (1 - beta2) * g2.mean(-2)
            vhat = np.outer(vr, vc) / vr.mean()
        else:
            v = beta2 * v + (1 - beta2) * g2
            vhat = v
        u = g / np.sqrt(vhat)
        u = u / max(1.0, np.sqrt(np.mean(u ** 2)) / 1.0)
        m = beta1 * m + (1 - beta1) * u
        theta = theta - lr * max(np.sqrt(np.mean(theta ** 2)), 1e-3) * m
    return theta


@pytest.mark.parametrize("factored", [False, True])
def test_recipe_adafactor_matches_reference(factored):
    import keras

    rng = np.random.default_rng(1)
    theta0 = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") for _ in range(4)]
    var = keras.Variable(theta0)
    opt = RecipeAdaFactor(0.05, min_dim_size_to_factor=2 if factored else 10**6)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
    expected = _reference(theta0, [g.astype("float64") for g in grads], 0.05, factored=factored)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), expected, rtol=2e-5, atol=2e-6)


def test_make_optimizer_names():
    assert isinstance(make_optimizer("adafactor", 5e-4), RecipeAdaFactor)
    for name in ("adamw", "lion", "tiger"):
        assert make_optimizer(name, 1e-3, grad_accum=2) is not None
    with pytest.raises(ValueError, match="adafactor, adamw, lion, tiger"):
        make_optimizer("sgd", 1e-3)


def test_recipe_adafactor_with_accumulation_equals_averaged_steps():
    import keras

    rng = np.random.default_rng(3)
    theta0 = rng.normal(size=(3, 2)).astype("float32")
    grads = [rng.normal(size=(3, 2)).astype("float32") for _ in range(6)]
    var = keras.Variable(theta0)
    opt = RecipeAdaFactor(0.05, gradient_accumulation_steps=2)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
    averaged = [(grads[i].astype("float64") + grads[i + 1]) / 2 for i in (0, 2, 4)]
    expected = _reference(theta0, averaged, 0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), expected, rtol=2e-5, atol=2e-6)
