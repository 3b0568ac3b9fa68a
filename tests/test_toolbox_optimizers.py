"""ChildTuning-F against NumPy: masked, rescaled gradients fed to the base rule."""

import keras
import numpy as np
import pytest

from bert4keras_ng import optimizers as O


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(60, 40), (40,)]
    return [keras.Variable(rng.normal(size=s).astype("float32"), name=f"v{i}")
            for i, s in enumerate(shapes)]


def _grads(variables, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=v.shape).astype("float32") for v in variables]
            for _ in range(steps)]


def _masks_from_sgd(rate, seed, variables, grads_seq, lr=0.1):
    """Run SGD+ChildTuning; recover each step's mask from the update and check its values."""
    opt = O.extend_with_child_tuning(keras.optimizers.SGD)(
        learning_rate=lr, child_tuning_rate=rate, child_tuning_seed=seed)
    masks = []
    for grads in grads_seq:
        before = [v.numpy().astype("float64") for v in variables]
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
        step = []
        for v, b, g in zip(variables, before, grads):
            ratio = (b - v.numpy()) / (lr * g.astype("float64"))
            kept = ratio > 0.5 / rate
            # each element's update is either 0 or the full rescaled step lr * g / p
            np.testing.assert_allclose(ratio[kept], 1.0 / rate, rtol=1e-3)
            np.testing.assert_allclose(ratio[~kept], 0.0, atol=1e-3)
            step.append(kept)
        masks.append(step)
    return masks


def test_child_tuning_sgd_updates_are_bernoulli_masked_and_rescaled():
    rate = 0.3
    variables = _variables()
    grads_seq = _grads(variables, 3)
    masks = _masks_from_sgd(rate, 7, variables, grads_seq)
    kept = np.concatenate([m.ravel() for step in masks for m in step])
    n = kept.size
    assert abs(kept.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    assert (masks[0][0] != masks[1][0]).any()  # a new mask every step


def test_child_tuning_adam_equals_numpy_adam_on_masked_gradients():
    rate, seed, lr, steps = 0.4, 11, 1e-2, 3
    grads_seq = _grads(_variables(), steps)
    masks = _masks_from_sgd(rate, seed, _variables(), grads_seq)

    variables = _variables()
    opt = O.extend_with_child_tuning(O.Adam)(
        learning_rate=lr, epsilon=1e-6, child_tuning_rate=rate, child_tuning_seed=seed)
    for grads in grads_seq:
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)

    b1, b2, eps = 0.9, 0.999, 1e-6
    for k, v in enumerate(_variables()):
        theta = v.numpy().astype("float64")
        m = np.zeros_like(theta)
        u = np.zeros_like(theta)
        for t, grads in enumerate(grads_seq, start=1):
            g = grads[k] * masks[t - 1][k] / rate
            m = b1 * m + (1 - b1) * g
            u = b2 * u + (1 - b2) * g**2
            alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)  # Keras's form of bias correction
            theta = theta - alpha * m / (np.sqrt(u) + eps)
        np.testing.assert_allclose(variables[k].numpy(), theta, rtol=1e-5, atol=1e-6)


def test_child_tuning_rate_one_is_the_base_optimizer():
    grads_seq = _grads(_variables(), 2)
    a, b = _variables(), _variables()
    wrapped = O.extend_with_child_tuning(O.Adam)(learning_rate=1e-2, child_tuning_rate=1.0)
    plain = O.Adam(learning_rate=1e-2)
    for grads in grads_seq:
        wrapped.apply([keras.ops.convert_to_tensor(g) for g in grads], a)
        plain.apply([keras.ops.convert_to_tensor(g) for g in grads], b)
    for x, y in zip(a, b):
        # the wrapper runs Adam as TensorFlow's fused kernel on that backend: 1-ulp roundings
        # (values ~1, steps ~1e-2)
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=5e-7)


def test_child_tuning_serialises_and_composes():
    cls = O.extend_with_child_tuning(O.extend_with_weight_decay(O.AdamW), name="AdamWCT")
    opt = cls(learning_rate=1e-3, child_tuning_rate=0.5, child_tuning_seed=3,
              weight_decay_rate=0.01)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again).__name__ == "AdamWCT"
    assert again.child_tuning_rate == 0.5 and again.child_tuning_seed == 3
    assert again.weight_decay_rate == 0.01


def test_child_tuning_fits_under_xla_with_sparse_embedding_gradients():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(9, 4, name="Embedding-Token")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out)
    opt = O.extend_with_child_tuning(keras.optimizers.SGD)(0.1, child_tuning_rate=0.5)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    rng = np.random.default_rng(0)
    before = model.get_layer("Embedding-Token").embeddings.numpy()
    hist = model.fit(rng.integers(0, 9, (8, 5)), rng.integers(0, 2, (8,)), epochs=2,
                     batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    moved = model.get_layer("Embedding-Token").embeddings.numpy() != before
    assert 0 < moved.mean() < 1  # some elements masked, some updated


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_child_tuning_bad_rate_raises(rate):
    with pytest.raises(ValueError, match="child_tuning_rate"):
        O.extend_with_child_tuning(O.Adam)(child_tuning_rate=rate)


@pytest.mark.parametrize("kind", ["inverse_time", "inverse_square"])
def test_amos_decay_matches_its_closed_form(kind):
    alpha0, p, lr0 = 1e-3, 0.5, 3e-4
    schedule = O.AmosDecay.from_amos(lr0, alpha0, p, kind)
    steps = np.array([0, 1, 10, 500, 4000, 10**5])
    if kind == "inverse_time":
        expected = lr0 / (2 * alpha0 * p * steps + 1)
    else:
        expected = lr0 / (alpha0 * p * steps + 1) ** 2
    got = [float(schedule(int(t))) for t in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(schedule.half_life)), lr0 / 2, rtol=1e-5)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(again, O.AmosDecay) and again.get_config() == schedule.get_config()


def test_amos_decay_drives_an_optimizer_and_weight_decay_formula():
    schedule = O.AmosDecay(0.1, half_life=2)
    opt = keras.optimizers.SGD(learning_rate=schedule)
    v = keras.Variable(np.zeros(3, "float32"))
    for _ in range(4):
        opt.apply([keras.ops.ones(3)], [v])
    # steps 0..3: lr = 0.1 / (t/2 + 1)
    np.testing.assert_allclose(v.numpy(), -sum(0.1 / (t / 2 + 1) for t in range(4)), rtol=1e-6)
    assert O.amos_weight_decay(1e-3, 0.5) == pytest.approx(1e-6 * 0.5 / 2)
    with pytest.raises(ValueError, match="kind"):
        O.AmosDecay(0.1, 10, kind="cosine")
    with pytest.raises(ValueError, match="half_life"):
        O.AmosDecay(0.1, 0)
