"""Optimisers and wrappers against NumPy re-implementations of their update rules.

Each test drives an optimizer for several steps with a fixed sequence of random gradients and
compares every variable with an independent NumPy implementation of the rule (algorithms.md §19,
Keras 3's documented Adam/AdamW/EMA/accumulation semantics).  Tolerance: rtol 1e-5, atol 1e-6
(float32 arithmetic against float64 references).
"""

import json
import re
import warnings

import keras
import numpy as np
import pytest

from bert4keras_ng import optimizers as O

RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------------------------------------
# fixtures: variables with bert4keras-style paths
# ---------------------------------------------------------------------------------------------


def make_variables(seed=0):
    """Variables whose paths look like a bert4keras model's, with random values."""
    rng = np.random.default_rng(seed)
    emb = keras.layers.Embedding(6, 4, name="Embedding-Token")
    emb.build((None,))
    dense = keras.layers.Dense(3, name="Transformer-0-FeedForward")
    dense.build((None, 4))
    norm = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")
    norm.build((None, 3))
    variables = emb.trainable_variables + dense.trainable_variables + norm.trainable_variables
    for v in variables:
        value = rng.normal(size=v.shape).astype("float32")
        if v.path.endswith("gamma"):
            value = 1.0 + 0.1 * value
        v.assign(value)
    return variables


def random_grads(variables, steps, seed=1, zero_rows=None):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        grads = []
        for v in variables:
            g = rng.normal(size=v.shape).astype("float32")
            if zero_rows is not None and v.path.endswith("embeddings"):
                g[zero_rows] = 0.0
            grads.append(g)
        out.append(grads)
    return out


def run(optimizer, variables, grads_seq):
    for grads in grads_seq:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [v.numpy().astype("float64") for v in variables]


def values(variables):
    return [v.numpy().astype("float64") for v in variables]


def assert_all_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


PATHS = [
    "Embedding-Token/embeddings",
    "Transformer-0-FeedForward/kernel",
    "Transformer-0-FeedForward/bias",
    "Transformer-0-FeedForward-Norm/gamma",
    "Transformer-0-FeedForward-Norm/beta",
]


def test_variable_paths_are_what_the_tests_assume():
    assert [v.path for v in make_variables()] == PATHS


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------


class NumpyAdam:
    """Keras 3 Adam: m, v EMAs; lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); eps added to sqrt(v)."""

    def __init__(self, n, b1=0.9, b2=0.999, eps=1e-7):
        self.m = [0.0] * n
        self.v = [0.0] * n
        self.b1, self.b2, self.eps = b1, b2, eps

    def delta(self, i, g, lr, t):  # t: 1-based update count
        self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
        self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
        lr_t = lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        return -lr_t * self.m[i] / (np.sqrt(self.v[i]) + self.eps)


def pwl(t, schedule):
    """Piecewise linear, written from the specification (not from the module)."""
    pts = sorted((int(k), float(v)) for k, v in schedule.items())
    if pts[0][0] != 0:
        pts = [(0, 0.0)] + pts
    if t >= pts[-1][0]:
        return pts[-1][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    raise AssertionError


def numpy_tiger(thetas, grads_seq, lr, beta=0.965, wd=0.01, k=1, schedule=None, shrink=0.99,
                excluded=()):
    thetas = [t.astype("float64").copy() for t in thetas]
    ms = [np.zeros_like(t) for t in thetas]
    schedule = schedule or {0: 1}
    for step, grads in enumerate(grads_seq):
        for i, (path, g) in enumerate(zip(PATHS, grads)):
            g = g.astype("float64")
            nan = not np.all(np.isfinite(g))
            b1 = beta if step % k == 0 else 1.0
            b2 = (1 - beta) / k
            if nan:
                b1, g = 1.0, np.zeros_like(g)
            ms[i] = b1 * ms[i] + b2 * g
            alpha = lr * pwl(step, schedule) * (1.0 if (step + 1) % k == 0 else 0.0)
            theta = thetas[i]
            if re.search("bias|beta|gamma", path):
                eta, lam = 0.5 * alpha, 0.0
            elif "embeddings" in path:
                eta = alpha * np.sqrt(np.mean(theta**2, axis=-1, keepdims=True))
                lam = wd
            else:
                eta, lam = alpha * np.sqrt(np.mean(theta**2)), wd
            if any(re.search(p, path) for p in excluded):
                lam = 0.0
            if nan:
                c = 1.0 if "gamma" in path else 0.0
                thetas[i] = (theta - c) * shrink + c
            else:
                thetas[i] = theta - eta * (np.sign(ms[i]) + lam * theta)
    return thetas


# ---------------------------------------------------------------------------------------------
# PiecewiseLinear
# ---------------------------------------------------------------------------------------------


def test_piecewise_linear_documented_points():
    schedule = O.PiecewiseLinear({1000: 1, 2000: 0.1})
    expected = {0: 0, 250: 0.25, 500: 0.5, 1000: 1, 1250: 0.775, 1500: 0.55, 2000: 0.1,
                3000: 0.1}
    for t, value in expected.items():
        np.testing.assert_allclose(float(schedule(t)), value, rtol=1e-6, atol=1e-7)


def test_piecewise_linear_round_trip_and_string_keys():
    schedule = O.PiecewiseLinear({0: 2e-5, 100: 2e-5, 300: 0.0})
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, O.PiecewiseLinear)
    for t in [0, 50, 100, 200, 300, 999]:
        np.testing.assert_allclose(float(again(t)), pwl(t, {0: 2e-5, 100: 2e-5, 300: 0.0}),
                                   rtol=1e-6, atol=1e-12)
    opt = keras.optimizers.SGD(learning_rate=schedule)
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(opt))
                      .get_config()["learning_rate"], dict)


@pytest.mark.parametrize(
    "bad", [[(0, 1), (10, 0)], {}, {-5: 1.0}, {"1.5": 1.0}, {"x": 1.0}, {10: "high"},
            {10: float("nan")}, 0.5]
)
def test_unknown_schedule_format_raises(bad):
    with pytest.raises(ValueError, match="schedule"):
        O.PiecewiseLinear(bad)
    with pytest.raises(ValueError, match="lr_schedule"):
        O.Tiger(lr_schedule=bad)
    with pytest.raises(ValueError, match="lr_schedule"):
        O.extend_with_piecewise_linear_lr(O.Adam)(learning_rate=1e-3, lr_schedule=bad)


# ---------------------------------------------------------------------------------------------
# Tiger
# ---------------------------------------------------------------------------------------------


def test_tiger_plain_matches_numpy():
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 5)
    got = run(O.Tiger(learning_rate=0.01), variables, grads)
    assert_all_close(got, numpy_tiger(start, grads, lr=0.01))
    # Sanity: every parameter group moved.
    for a, b in zip(got, start):
        assert np.abs(a - b).max() > 1e-4


def test_tiger_with_schedule_and_accumulation_matches_numpy():
    variables = make_variables(2)
    start = values(variables)
    grads = random_grads(variables, 9, seed=3)
    schedule = {3: 1.0, 7: 0.2}
    opt = O.Tiger(learning_rate=0.02, beta=0.9, weight_decay=0.05, grad_accum_steps=3,
                  lr_schedule=schedule)
    got = run(opt, variables, grads)
    assert_all_close(got, numpy_tiger(start, grads, lr=0.02, beta=0.9, wd=0.05, k=3,
                                      schedule=schedule))


def test_tiger_wrappers_configure_the_native_mechanisms():
    cls = O.extend_with_gradient_accumulation(
        O.extend_with_piecewise_linear_lr(O.extend_with_weight_decay(O.Tiger))
    )
    variables = make_variables(4)
    start = values(variables)
    grads = random_grads(variables, 8, seed=5)
    schedule = {2: 1.0, 6: 0.5}
    opt = cls(learning_rate=0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["Embedding"],
              lr_schedule=schedule, grad_accum_steps=2)
    got = run(opt, variables, grads)
    assert opt.gradient_accumulation_steps is None  # Tiger's buffer-free accumulation is used
    assert_all_close(got, numpy_tiger(start, grads, lr=0.01, wd=0.1, k=2, schedule=schedule,
                                      excluded=["Embedding"]))


def test_tiger_accumulation_equals_one_step_with_averaged_gradient():
    k = 4
    variables = make_variables(6)
    start = values(variables)
    micro = random_grads(variables, 3 * k, seed=7)
    run(O.Tiger(learning_rate=0.01, grad_accum_steps=k), variables, micro)
    accumulated = values(variables)
    for v, s in zip(variables, start):
        v.assign(s)
    averaged = [[np.mean([micro[n * k + j][i] for j in range(k)], axis=0) for i in
                 range(len(variables))] for n in range(3)]
    run(O.Tiger(learning_rate=0.01), variables, averaged)
    assert_all_close(accumulated, values(variables))


def test_tiger_nan_rescue_matches_numpy():
    variables = make_variables(8)
    start = values(variables)
    grads = random_grads(variables, 6, seed=9)
    grads[2][3][0] = np.nan  # gamma gets a NaN at a non-update micro-step
    grads[3][1][1, 2] = np.nan  # kernel gets a NaN at an update micro-step
    grads[4][0][2, 1] = np.inf  # embeddings: an infinity also triggers the rescue
    opt = O.Tiger(learning_rate=0.01, grad_accum_steps=2)
    got = run(opt, variables, grads)
    assert all(np.all(np.isfinite(g)) for g in got)
    assert_all_close(got, numpy_tiger(start, grads, lr=0.01, k=2))


# ---------------------------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------------------------


def test_weight_decay_wrapper_matches_numpy_and_warns_on_unmatched_pattern():
    cls = O.extend_with_weight_decay(O.Adam, name="AdamWD")
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 4)
    opt = cls(learning_rate=0.01, weight_decay_rate=0.1,
              exclude_from_weight_decay=["Norm", "bias$", "NoSuchLayer"])
    with pytest.warns(UserWarning, match="NoSuchLayer"):
        got = run(opt, variables, grads)
    ref, adam = [s.copy() for s in start], NumpyAdam(len(start))
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            decay = not re.search("Norm|bias$", PATHS[i])
            old = ref[i]
            ref[i] = old + adam.delta(i, g, 0.01, t) - (0.01 * 0.1 * old if decay else 0.0)
    assert_all_close(got, ref)


@pytest.mark.tf_only
@pytest.mark.parametrize("amsgrad", [False, True])
def test_weight_decay_adamw_runs_fused_kernels_and_matches_numpy(amsgrad):
    """extend_with_weight_decay(AdamW) on TensorFlow: one ResourceApplyAdam per variable without
    decay and one XLA-compiled call (Adam and decay in one pass) per decayed one; amsgrad keeps
    Keras's own ops. Either way the result is the NumPy decoupled-decay Adam."""
    import tensorflow as tf

    from tests.helpers import xla_call_count

    variables = make_variables(3)
    start = values(variables)
    grads = random_grads(variables, 3, seed=4)
    opt = O.extend_with_weight_decay(O.AdamW)(
        learning_rate=0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias$"],
        amsgrad=amsgrad)
    opt.build(variables)
    tensors = [[tf.constant(g) for g in gs] for gs in grads]
    step = tf.function(lambda gs: opt.apply(gs, variables))
    graph = step.get_concrete_function(tensors[0]).graph
    counts = (sum(op.type == "ResourceApplyAdam" for op in graph.get_operations()),
              xla_call_count(graph))
    decayed = [not re.search("Norm|bias$", path) for path in PATHS]
    assert counts == ((0, 0) if amsgrad else (len(variables) - sum(decayed), sum(decayed)))
    for gs in tensors:
        step(gs)
    got = values(variables)
    ref, adam = [s.copy() for s in start], NumpyAdam(len(start))
    v_hat = [0.0] * len(start)
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            old = ref[i]
            if amsgrad:
                adam.m[i] = 0.9 * adam.m[i] + 0.1 * g
                adam.v[i] = 0.999 * adam.v[i] + 0.001 * g * g
                v_hat[i] = np.maximum(v_hat[i], adam.v[i])
                lr_t = 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                delta = -lr_t * adam.m[i] / (np.sqrt(v_hat[i]) + 1e-7)
            else:
                delta = adam.delta(i, g, 0.01, t)
            ref[i] = old + delta - (0.01 * 0.1 * old if decayed[i] else 0.0)
    assert_all_close(got, ref)


def test_adamw_layer_adaptation_ema_matches_numpy():
    cls = O.extend_with_exponential_moving_average(O.extend_with_layer_adaptation(O.AdamW))
    variables = make_variables(1)
    start = values(variables)
    grads = random_grads(variables, 5, seed=2)
    opt = cls(learning_rate=0.01, weight_decay=0.05, exclude_from_layer_adaptation=["Norm"],
              ema_momentum=0.8)
    got = run(opt, variables, grads)
    ref, adam = [s.copy() for s in start], NumpyAdam(len(start))
    ema = [None] * len(start)
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            old = ref[i]
            delta = adam.delta(i, g, 0.01, t) - 0.01 * 0.05 * old
            if "Norm" not in PATHS[i]:
                w, d = np.linalg.norm(old), np.linalg.norm(delta / 0.01)
                delta = delta * (w / d if w > 0 and d > 0 else 1.0)
            ref[i] = old + delta
            ema[i] = ref[i].copy() if t == 1 else 0.8 * ema[i] + 0.2 * ref[i]
    assert_all_close(got, ref)
    opt.apply_ema_weights()
    assert_all_close(values(variables), ema)
    opt.reset_old_weights()
    assert_all_close(values(variables), ref)


def test_piecewise_linear_lr_wrapper_matches_numpy():
    cls = O.extend_with_piecewise_linear_lr(keras.optimizers.SGD)
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 7)
    schedule = {2: 1.0, 5: 0.25}
    opt = cls(learning_rate=0.1, lr_schedule=schedule)
    got = run(opt, variables, grads)
    ref = [s.copy() for s in start]
    for t, gs in enumerate(grads):
        for i, g in enumerate(gs):
            ref[i] = ref[i] - 0.1 * pwl(t, schedule) * g
    assert_all_close(got, ref)
    np.testing.assert_allclose(float(opt.learning_rate), 0.1 * 0.25, rtol=1e-6)


def test_gradient_accumulation_wrapper_matches_numpy():
    cls = O.extend_with_gradient_accumulation(O.Adam)
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 9)
    opt = cls(learning_rate=0.01, grad_accum_steps=3)
    got = run(opt, variables, grads)
    ref, adam = [s.copy() for s in start], NumpyAdam(len(start))
    for n in range(3):
        for i in range(len(ref)):
            g = np.mean([grads[3 * n + j][i].astype("float64") for j in range(3)], axis=0)
            ref[i] = ref[i] + adam.delta(i, g, 0.01, n + 1)
    assert_all_close(got, ref)
    assert opt.get_config()["grad_accum_steps"] == 3


def _tiny_regression_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 2)) + 0.1).astype("float32")
    return x, y


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation="tanh", name="Transformer-0-FeedForward")(inputs)
    h = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(h)
    outputs = keras.layers.Dense(2, name="Head")(h)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("base", ["adam", "tiger", "adafactor"])
def test_accumulating_k_micro_batches_equals_one_large_batch_in_fit(base):
    x, y = _tiny_regression_data(16)
    k = 4
    if base == "adam":
        accumulating = O.extend_with_gradient_accumulation(O.Adam)(learning_rate=0.01,
                                                                   grad_accum_steps=k)
        plain = O.Adam(learning_rate=0.01)
    elif base == "adafactor":
        accumulating = O.extend_with_gradient_accumulation(O.AdaFactor)(
            learning_rate=None, beta1=0.9, min_dim_size_to_factor=4, grad_accum_steps=k)
        plain = O.AdaFactor(learning_rate=None, beta1=0.9, min_dim_size_to_factor=4)
    else:
        accumulating = O.Tiger(learning_rate=0.01, grad_accum_steps=k)
        plain = O.Tiger(learning_rate=0.01)
    small = _tiny_model()
    small.compile(optimizer=accumulating, loss="mse")
    small.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    large = _tiny_model()
    large.compile(optimizer=plain, loss="mse")
    large.fit(x, y, batch_size=2 * k, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(small.get_weights(), large.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)


def test_lookahead_matches_numpy():
    cls = O.extend_with_lookahead(keras.optimizers.SGD)
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 7)
    got = run(cls(learning_rate=0.1, steps_per_slow_update=3, slow_step_size=0.4), variables,
              grads)
    ref = [s.copy() for s in start]
    slow = [s.copy() for s in start]
    for t, gs in enumerate(grads):
        for i, g in enumerate(gs):
            ref[i] = ref[i] - 0.1 * g
            if (t + 1) % 3 == 0:
                slow[i] = slow[i] + 0.4 * (ref[i] - slow[i])
                ref[i] = slow[i].copy()
    assert_all_close(got, ref)


def test_lazy_optimization_matches_numpy():
    cls = O.extend_with_lazy_optimization(O.Adam)
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 4, zero_rows=[1, 4])
    got = run(cls(learning_rate=0.01, include_in_lazy_optimization=["embeddings"]), variables,
              grads)
    ref, adam = [s.copy() for s in start], NumpyAdam(len(start))
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            new = ref[i] + adam.delta(i, g, 0.01, t)
            if PATHS[i].endswith("embeddings"):
                rows = np.any(g != 0, axis=-1, keepdims=True)
                new = np.where(rows, new, ref[i])
            ref[i] = new
    assert_all_close(got, ref)
    np.testing.assert_array_equal(got[0][[1, 4]], start[0][[1, 4]])


def test_parameter_wise_lr_matches_numpy():
    cls = O.extend_with_parameter_wise_lr(keras.optimizers.SGD)
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 3)
    schedule = {"Transformer-0-": 0.5, "kernel": 4.0, "Embedding": 0.1}
    got = run(cls(learning_rate=0.1, paramwise_lr_schedule=schedule), variables, grads)
    ref = [s.copy() for s in start]
    for gs in grads:
        for i, g in enumerate(gs):
            factor = np.prod([v for key, v in schedule.items() if key in PATHS[i]])
            ref[i] = ref[i] - 0.1 * factor * g
    assert_all_close(got, ref)


def test_decay_is_inside_the_update_that_outer_wrappers_rescale():
    """parameter-wise lr (outer) scales the whole update, weight decay included."""
    cls = O.extend_with_parameter_wise_lr(O.extend_with_weight_decay(keras.optimizers.SGD))
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 2)
    got = run(cls(learning_rate=0.1, weight_decay_rate=0.2, paramwise_lr_schedule={"bias": 3.0}),
              variables, grads)
    ref = [s.copy() for s in start]
    for gs in grads:
        for i, g in enumerate(gs):
            factor = 3.0 if "bias" in PATHS[i] else 1.0
            ref[i] = ref[i] + factor * (-0.1 * g - 0.1 * 0.2 * ref[i])
    assert_all_close(got, ref)


# ---------------------------------------------------------------------------------------------
# Bad input, serialisation, loss scaling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -2, 1.5, True, "2"])
def test_non_positive_accumulation_steps_raise(steps):
    with pytest.raises(ValueError, match="grad_accum_steps"):
        O.extend_with_gradient_accumulation(O.Adam)(learning_rate=1e-3, grad_accum_steps=steps)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        O.Tiger(grad_accum_steps=steps)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match="paramwise_lr_schedule"):
        O.extend_with_parameter_wise_lr(O.Adam)(learning_rate=1e-3,
                                                paramwise_lr_schedule=[("a", 1)])
    with pytest.raises(ValueError, match="steps_per_slow_update"):
        O.extend_with_lookahead(O.Adam)(learning_rate=1e-3, steps_per_slow_update=0)
    with pytest.raises(ValueError, match="exclude_from_weight_decay"):
        O.extend_with_weight_decay(O.Adam)(learning_rate=1e-3, exclude_from_weight_decay=[3])
    with pytest.raises(ValueError, match="Optimizer subclass"):
        O.extend_with_weight_decay(object)
    with pytest.raises(ValueError, match="beta"):
        O.Tiger(beta=1.5)


_WD = O.extend_with_weight_decay(O.AdamW)
_LR = O.extend_with_piecewise_linear_lr(O.Adam)


@pytest.mark.parametrize("make, word", [
    (lambda: O.AdaFactor(learning_rate=-1e-3), "learning_rate=-0.001"),
    (lambda: O.AdaFactor(learning_rate=float("nan")), "learning_rate=nan"),
    (lambda: O.Tiger(learning_rate=-1.0), "learning_rate=-1.0"),
    (lambda: _LR(float("inf")), "learning_rate=inf"),
    (lambda: O.Tiger(weight_decay=-0.1), "weight_decay=-0.1"),
    (lambda: O.AdaFactor(weight_decay=float("nan")), "weight_decay=nan"),
    (lambda: _WD(1e-3, weight_decay_rate="x"), "weight_decay_rate='x'"),
    (lambda: _WD(1e-3, weight_decay_rate=-0.01), "weight_decay_rate=-0.01"),
    (lambda: _WD(1e-3, exclude_from_weight_decay=["Norm", "(bias"]),
     "exclude_from_weight_decay` entry '\\(bias' is not a valid regular expression"),
    (lambda: O.extend_with_layer_adaptation(O.Adam)(1e-3, exclude_from_layer_adaptation="[a"),
     "exclude_from_layer_adaptation"),
    (lambda: O.AdaFactor(gradient_accumulation_steps=2.5), "gradient_accumulation_steps=2.5"),
    (lambda: O.AdaFactor(gradient_accumulation_steps=0), "gradient_accumulation_steps=0"),
    (lambda: _LR(1e-3, gradient_accumulation_steps=0), "gradient_accumulation_steps=0"),
])
def test_bad_base_arguments_fail_at_construction_naming_the_argument(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_valid_base_arguments_still_construct():
    assert O.AdaFactor(learning_rate=None).relative_step
    assert float(O.AdaFactor(learning_rate=0).learning_rate) == 0.0
    O.Tiger(learning_rate=O.PiecewiseLinear({0: 1.0, 10: 0.1}))
    assert _WD(1e-3, weight_decay_rate=0, exclude_from_weight_decay=[r"\bbias$"]).weight_decay == 0
    assert O.AdaFactor(gradient_accumulation_steps=2).gradient_accumulation_steps == 2


def test_unmatched_patterns_warn_for_every_name_based_wrapper():
    variables = make_variables()
    grads = random_grads(variables, 1)
    cases = [
        (O.extend_with_layer_adaptation, {"exclude_from_layer_adaptation": ["Nope1"]}, "Nope1"),
        (O.extend_with_lazy_optimization, {"include_in_lazy_optimization": ["Nope2"]}, "Nope2"),
        (O.extend_with_parameter_wise_lr, {"paramwise_lr_schedule": {"Nope3": 2.0}}, "Nope3"),
    ]
    for extend, kwargs, word in cases:
        opt = extend(O.Adam)(learning_rate=1e-3, **kwargs)
        with pytest.warns(UserWarning, match=word):
            run(opt, variables, grads)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(O.extend_with_weight_decay(O.Adam)(learning_rate=1e-3,
                                               exclude_from_weight_decay=["Norm"]),
            variables, grads)


def test_composed_optimizer_serialization_round_trip():
    cls = O.extend_with_lookahead(O.extend_with_piecewise_linear_lr(
        O.extend_with_gradient_accumulation(O.extend_with_weight_decay(O.AdamW))),
        name="MyComposedAdamW")
    opt = cls(learning_rate=2e-5, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm"],
              grad_accum_steps=4, lr_schedule={100: 1, 1000: 0.1}, steps_per_slow_update=6)
    config = json.loads(json.dumps(keras.optimizers.serialize(opt)))
    again = keras.optimizers.deserialize(config)
    assert type(again) is cls
    assert again.get_config() == opt.get_config()
    assert again.gradient_accumulation_steps == 4 and again.lr_schedule == {100: 1.0, 1000: 0.1}
    tiger = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(
        O.Tiger(lr_schedule={10: 1}, grad_accum_steps=2)))))
    assert isinstance(tiger, O.Tiger) and tiger.lr_schedule == {10: 1.0}


def test_constant_loss_scale_factor_in_float32():
    """Keras's loss_scale_factor: loss x S, gradients / S; same training in float32."""
    x, y = _tiny_regression_data(8)
    results = []
    for factor in [None, 4096.0]:
        model = _tiny_model(3)
        cls = O.extend_with_weight_decay(keras.optimizers.SGD)
        model.compile(optimizer=cls(learning_rate=0.05, loss_scale_factor=factor), loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        results.append(model.get_weights())
    assert float(O.Tiger(loss_scale_factor=8.0).scale_loss(2.0)) == 16.0
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_file_round_trip_keeps_composed_optimizer_state(tmp_path):
    cls = O.extend_with_exponential_moving_average(O.extend_with_lookahead(
        O.extend_with_weight_decay(O.Adam)), name="AdamWDLookaheadEMA")
    x, y = _tiny_regression_data(8)
    model = _tiny_model(5)
    model.compile(optimizer=cls(learning_rate=0.01, steps_per_slow_update=2, ema_momentum=0.5),
                  loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is cls
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Training continues identically from the restored state.
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# AdaFactor (bert4keras flavour)
# ---------------------------------------------------------------------------------------------


def numpy_adafactor(thetas, grads_seq, lr=1e-3, beta1=0.0, beta2=None, eps1=1e-30, eps2=1e-3,
                    scale=True, clip=1.0, min_dim=128, excluded=(), paths=None, start=0,
                    multiplier=None):
    """bert4keras's AdaFactor written from algorithms.md §19, in float64.

    ``start``: optimizer updates already made (t = start + 1 at the first update);
    ``multiplier(step)``: extra learning-rate factor (piecewise-linear wrapper).
    """
    thetas = [t.astype("float64").copy() for t in thetas]
    paths = paths or [str(i) for i in range(len(thetas))]
    state = [{} for _ in thetas]
    for step, grads in enumerate(grads_seq):
        t = start + step + 1
        if lr is None:
            rate = min(1.0 / np.sqrt(t), 1e-2) * (1.0 if scale else 0.05)
        else:
            rate = lr
        if multiplier is not None:
            rate *= multiplier(step)
        b2 = 1.0 - t ** -0.8 if beta2 is None else beta2
        for i, g in enumerate(grads):
            g = g.astype("float64")
            theta, s = thetas[i], state[i]
            g2 = g * g + eps1
            shape = np.array(theta.shape)
            big = shape.argpartition(-2) if theta.ndim >= 2 else None
            if big is not None and shape[big[-2]] >= min_dim:
                row_axis, col_axis = big[-1], big[-2]  # largest, second-largest
                s["vr"] = b2 * s.get("vr", 0.0) + (1 - b2) * g2.mean(axis=row_axis,
                                                                      keepdims=True)
                s["vc"] = b2 * s.get("vc", 0.0) + (1 - b2) * g2.mean(axis=col_axis,
                                                                      keepdims=True)
                v = s["vr"] * s["vc"] / s["vr"].mean(axis=col_axis, keepdims=True)
            else:
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g2
                v = s["v"]
            u = g / np.sqrt(v + eps1)
            if clip is not None:
                u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
            if beta1 > 0:
                s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * u
                u = s["m"]
            if scale and not any(re.search(p, paths[i]) for p in excluded):
                u = u * max(np.sqrt(np.mean(theta * theta)), eps2)
            thetas[i] = theta - rate * u
    return thetas


def _odd_shaped_variables(seed=4):
    """A 3-D tensor (largest axis in the middle) and a square matrix (tie between axes)."""
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=s).astype("float32"), name=f"w{len(s)}")
            for s in [(3, 6, 4), (5, 5), (7,)]]


@pytest.mark.parametrize("beta1", [0.0, 0.9])
@pytest.mark.parametrize("min_dim", [3, 128])
def test_adafactor_matches_numpy(beta1, min_dim):
    for variables in (make_variables(), _odd_shaped_variables()):
        start = values(variables)
        grads = random_grads(variables, 5)
        opt = O.AdaFactor(learning_rate=0.05, beta1=beta1, min_dim_size_to_factor=min_dim)
        got = run(opt, variables, grads)
        assert_all_close(got, numpy_adafactor(start, grads, lr=0.05, beta1=beta1,
                                              min_dim=min_dim))
    # min_dim 3 factors every matrix here, 128 none: slots confirm which path was taken.
    names = [v.name for v in opt.variables]
    assert any(n.endswith("_vr") for n in names) == (min_dim == 3)
    assert any(n.endswith("_m") for n in names) == (beta1 > 0)


@pytest.mark.parametrize("scale", [True, False])
def test_adafactor_relative_step_matches_numpy(scale):
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 4)
    opt = O.AdaFactor(learning_rate=None, multiply_by_parameter_scale=scale,
                      min_dim_size_to_factor=4)
    assert opt.relative_step and opt.get_config()["learning_rate"] is None
    got = run(opt, variables, grads)
    assert_all_close(got, numpy_adafactor(start, grads, lr=None, scale=scale, min_dim=4))
    # Past t = 10**4 the relative step is 1/sqrt(t) instead of the 1e-2 cap (fresh slots).
    opt = O.AdaFactor(learning_rate=None, multiply_by_parameter_scale=scale,
                      min_dim_size_to_factor=4)
    opt.build(variables)
    opt.iterations.assign(20000)
    start = values(variables)
    got = run(opt, variables, grads[:2])
    assert_all_close(got, numpy_adafactor(start, grads[:2], lr=None, scale=scale, min_dim=4,
                                          start=20000))
    np.testing.assert_allclose(float(opt.learning_rate),
                               (1 / np.sqrt(20003)) * (1 if scale else 0.05), rtol=1e-6)
    opt.learning_rate = 0.5
    assert not opt.relative_step and float(opt.learning_rate) == 0.5


def test_adafactor_without_parameter_scale_and_other_options_matches_numpy():
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 4)
    kwargs = dict(beta1=0.5, beta2=0.99, epsilon1=1e-6, clipping_threshold=None,
                  min_dim_size_to_factor=4)
    for scale, excluded in [(False, ()), (True, ("Norm", "bias"))]:
        for v, s in zip(variables, start):
            v.assign(s)
        opt = O.AdaFactor(0.02, multiply_by_parameter_scale=scale,
                          exclude_from_parameter_scale=list(excluded), **kwargs)
        got = run(opt, variables, grads)
        ref = numpy_adafactor(start, grads, lr=0.02, beta1=0.5, beta2=0.99, eps1=1e-6,
                              clip=None, min_dim=4, scale=scale, excluded=excluded, paths=PATHS)
        assert_all_close(got, ref)


def test_adafactor_composes_with_piecewise_linear_lr_and_accumulation():
    schedule = {2: 1.0, 4: 0.5}
    variables = make_variables()
    start = values(variables)
    grads = random_grads(variables, 6)
    cls = O.extend_with_piecewise_linear_lr(O.AdaFactor)
    opt = cls(learning_rate=0.05, beta1=0.9, min_dim_size_to_factor=4, lr_schedule=schedule)
    got = run(opt, variables, grads)
    ref = numpy_adafactor(start, grads, lr=0.05, beta1=0.9, min_dim=4,
                          multiplier=lambda step: pwl(step, schedule))
    assert_all_close(got, ref)
    # Keras's gradient accumulation: t counts updates, each with the averaged gradient.
    for v, s in zip(variables, start):
        v.assign(s)
    opt = O.AdaFactor(learning_rate=0.05, beta1=0.9, min_dim_size_to_factor=4,
                      gradient_accumulation_steps=2)
    got = run(opt, variables, grads)
    averaged = [[(a.astype("float64") + b) / 2 for a, b in zip(grads[n], grads[n + 1])]
                for n in (0, 2, 4)]
    assert_all_close(got, numpy_adafactor(start, averaged, lr=0.05, beta1=0.9, min_dim=4))


def test_adafactor_fit_with_weight_decay_wrapper_and_serialization(tmp_path):
    cls = O.extend_with_weight_decay(O.AdaFactor, name="AdaFactorWD")
    opt = cls(learning_rate=None, beta1=0.9, min_dim_size_to_factor=4, weight_decay_rate=0.01,
              exclude_from_weight_decay=["Norm"], exclude_from_parameter_scale=["bias"])
    config = json.loads(json.dumps(keras.optimizers.serialize(opt)))
    again = keras.optimizers.deserialize(config)
    assert type(again) is cls and again.get_config() == opt.get_config()
    assert again.relative_step and again.beta1 == 0.9 and again.beta2 is None
    x, y = _tiny_regression_data(8)
    model = _tiny_model(6)
    model.compile(optimizer=opt, loss="mse")
    before = model.get_weights()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    path = str(tmp_path / "adafactor.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is cls
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_adafactor_defaults_and_keras_adafactor_kept():
    opt = O.AdaFactor()
    assert (opt.beta1, opt.beta2, opt.epsilon1, opt.epsilon2) == (0.0, None, 1e-30, 1e-3)
    assert opt.multiply_by_parameter_scale and opt.clipping_threshold == 1.0
    assert opt.min_dim_size_to_factor == 128 and not opt.relative_step
    np.testing.assert_allclose(float(opt.learning_rate), 1e-3, rtol=1e-6)
    assert O.Adafactor is keras.optimizers.Adafactor and O.AdaFactor is not O.Adafactor
    assert "AdaFactor" in O.__all__ and "Adafactor" in O.__all__


@pytest.mark.parametrize("kwargs, word", [
    ({"beta1": 1.0}, "beta1"), ({"beta2": 2.0}, "beta2"), ({"epsilon2": -1.0}, "epsilon2"),
    ({"clipping_threshold": 0.0}, "clipping_threshold"),
    ({"min_dim_size_to_factor": 0}, "min_dim_size_to_factor"),
    ({"min_dim_size_to_factor": 2.5}, "min_dim_size_to_factor"),
    ({"exclude_from_parameter_scale": [1]}, "exclude_from_parameter_scale"),
])
def test_adafactor_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        O.AdaFactor(**kwargs)
