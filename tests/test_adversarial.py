"""Gradient penalty and VAT training steps against NumPy finite-difference references."""

import keras
import numpy as np
import pytest

from bert4keras_ng import adversarial as A
from bert4keras_ng import training

VOCAB, DIM, CLASSES = 11, 4, 3


def _model(seed, softmax=False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, DIM, name="Embedding-Token")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(CLASSES, name="Out", activation="softmax" if softmax else None,
                             dtype="float32")(h)
    return keras.Model(inp, out)


def _data():
    rng = np.random.default_rng(3)
    return rng.integers(0, VOCAB, size=(5, 6)), rng.integers(0, CLASSES, size=(5,))


def _params(model):
    return [w.numpy().astype("float64") for w in model.trainable_weights]  # E, W, b


def _np_logits(params, x):
    E, W, b = params
    return E[x].mean(axis=1) @ W + b


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_ce(params, x, y):
    return -_log_softmax(_np_logits(params, x))[np.arange(len(y)), y].mean()


def _np_ce_grad_E(params, x, y):
    """Analytic dL/dE of the mean softmax CE of the tiny model."""
    E, W, b = params
    logits = _np_logits(params, x)
    p = np.exp(_log_softmax(logits))
    p[np.arange(len(y)), y] -= 1
    dh = p @ W.T / len(y)  # dL/d(pooled)
    g = np.zeros_like(E)
    for i in range(x.shape[0]):
        for t in x[i]:
            g[t] += dh[i] / x.shape[1]
    return g


def _fd_grads(fn, params, h=1e-6):
    grads = []
    for k, p in enumerate(params):
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (fn(plus) - fn(minus)) / (2 * h)
        grads.append(g)
    return grads


def test_fgm_perturbation_norm_and_degenerate_gradients():
    g = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    d = np.asarray(A.fgm_perturbation(g, 0.5))
    np.testing.assert_allclose(np.linalg.norm(d), 0.5, rtol=1e-6)
    np.testing.assert_allclose(d, 0.5 * g / np.linalg.norm(g), rtol=1e-6)
    assert not np.asarray(A.fgm_perturbation(np.zeros((2, 2)), 1.0)).any()
    assert not np.asarray(A.fgm_perturbation(np.full((2, 2), np.inf), 1.0)).any()


def _check_gp_step(jit):
    x, y = _data()
    eps, lr = 0.7, 0.3
    model = _model(0)
    params = _params(model)

    def penalised(ps):
        g = _np_ce_grad_E(ps, x, y)
        return _np_ce(ps, x, y) + 0.5 * eps * np.sum(g**2)

    grads = _fd_grads(penalised, params)
    training.compile_model(
        model, keras.optimizers.SGD(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    assert A.gradient_penalty(model, epsilon=eps) is model
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], penalised(params), rtol=1e-5)
    for w, p, g in zip(model.trainable_weights, params, grads):
        np.testing.assert_allclose(w.numpy(), p - lr * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_gradient_penalty_step_equals_finite_difference_reference(jit):
    _check_gp_step(jit)


def test_gradient_penalty_epsilon_zero_is_plain_training():
    x, y = _data()
    a, b = _model(1), _model(1)
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    A.gradient_penalty(a, epsilon=0.0)
    la = a.fit(x, y, epochs=2, batch_size=5, verbose=0).history
    lb = b.fit(x, y, epochs=2, batch_size=5, verbose=0).history
    np.testing.assert_allclose(la["loss"], lb["loss"], rtol=1e-6)
    np.testing.assert_allclose(la["accuracy"], lb["accuracy"])
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-6, atol=1e-7)


def _np_kl(p_logits, q_logits):
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(-1).mean()


def _reference_start(seed, jit):
    """The random start the helper draws first: same seed and shape (XLA draws differ)."""
    import tensorflow as tf

    gen = keras.random.SeedGenerator(seed)
    draw = tf.function(lambda: keras.random.normal((VOCAB, DIM), seed=gen), jit_compile=jit)
    return keras.ops.convert_to_numpy(draw()).astype("float64")


@pytest.mark.parametrize("iters,alpha,jit", [(1, None, False), (2, None, True), (1, 0.5, False),
                                             (0, None, False)])
def test_vat_step_equals_finite_difference_reference(iters, alpha, jit):
    x, y = _data()
    eps, xi, lr, seed = 0.8, 2.0, 0.3, 5
    model = _model(2)
    params = _params(model)
    p = _np_logits(params, x)

    d = _reference_start(seed, jit)
    for _ in range(iters):
        d = xi * d / np.linalg.norm(d)
        start = [params[0] + d] + params[1:]
        d = _fd_grads(lambda ps: _np_kl(p, _np_logits(ps, x)), start)[0]
    delta = eps * d / np.linalg.norm(d)

    def objective(ps):
        vat = _np_kl(p, _np_logits([ps[0] + delta] + ps[1:], x))
        return vat if alpha is None else _np_ce(ps, x, y) + alpha * vat

    grads = _fd_grads(objective, params)
    training.compile_model(
        model, keras.optimizers.SGD(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    A.virtual_adversarial_training(model, epsilon=eps, xi=xi, iters=iters, alpha=alpha,
                                   from_logits=True, seed=seed)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], objective(params), rtol=1e-4)
    for w, q, g in zip(model.trainable_weights, params, grads):
        np.testing.assert_allclose(w.numpy(), q - lr * g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_vat_on_probabilities_without_labels_and_mixed_float16(lr):
    x, _ = _data()
    with training.dtype_policy("mixed_float16"):
        model = _model(4, softmax=True)
    training.compile_model(model, keras.optimizers.SGD(lr), loss=None)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [w.numpy().copy() for w in model.trainable_weights]
    A.virtual_adversarial_training(model, seed=1)
    hist = model.fit(x, epochs=3, batch_size=5, verbose=0).history
    assert list(hist) == ["loss"] and np.isfinite(hist["loss"]).all()
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    moved = max(np.abs(w.numpy() - b).max() for w, b in zip(model.trainable_weights, before))
    if lr == 0:  # the perturbation is removed again after every step
        assert moved < 1e-6
    else:
        assert moved > 1e-4


def test_helpers_reject_bad_arguments():
    model = _model(0)
    with pytest.raises(ValueError, match="compile the model first"):
        A.gradient_penalty(model)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no layer named 'Nope'"):
        A.virtual_adversarial_training(model, "Nope")
    with pytest.raises(ValueError, match="epsilon"):
        A.gradient_penalty(model, epsilon=-1)
    with pytest.raises(ValueError, match="iters"):
        A.virtual_adversarial_training(model, iters=1.5)
    with pytest.raises(ValueError, match="xi"):
        A.virtual_adversarial_training(model, xi=-2)
