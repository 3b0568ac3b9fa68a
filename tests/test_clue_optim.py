"""The CLUE runner's optimiser choices (the AdaFactor rule itself: tests/test_optimizers.py)."""

import keras
import numpy as np
import pytest

from bert4keras_ng import optimizers
from bert4keras_ng.clue.optim import make_optimizer


def test_adafactor_is_the_recipe_configuration():
    opt = make_optimizer("adafactor", 5e-4)
    assert type(opt) is optimizers.AdaFactor
    config = opt.get_config()
    assert config["beta1"] == 0.9 and config["min_dim_size_to_factor"] == 10**6
    assert config["beta2"] is None and config["multiply_by_parameter_scale"]
    np.testing.assert_allclose(config["learning_rate"], 5e-4, rtol=1e-6)
    assert make_optimizer("AdaFactor", 1e-3, grad_accum=3).gradient_accumulation_steps == 3


def test_make_optimizer_names():
    assert isinstance(make_optimizer("tiger", 1e-3, grad_accum=2), optimizers.Tiger)
    for name in ("adamw", "lion"):
        assert make_optimizer(name, 1e-3, grad_accum=2).gradient_accumulation_steps == 2
    with pytest.raises(ValueError, match="adafactor, adamw, lion, tiger"):
        make_optimizer("sgd", 1e-3)


def test_recipe_adafactor_with_accumulation_equals_averaged_steps():
    rng = np.random.default_rng(3)
    theta0 = rng.normal(size=(3, 2)).astype("float32")
    grads = [rng.normal(size=(3, 2)).astype("float32") for _ in range(6)]
    accumulated, plain = keras.Variable(theta0), keras.Variable(theta0)
    opt = make_optimizer("adafactor", 0.05, grad_accum=2)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [accumulated])
    reference = make_optimizer("adafactor", 0.05)
    for i in (0, 2, 4):
        reference.apply([keras.ops.convert_to_tensor((grads[i] + grads[i + 1]) / 2)], [plain])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(accumulated),
                               keras.ops.convert_to_numpy(plain), rtol=1e-5, atol=1e-6)


def _variables(seed):
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (3,), (2, 5)]
    return [rng.normal(size=s).astype("float32") for s in shapes]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_adamw_equals_keras_adamw(grad_accum):
    """'adamw' is keras.optimizers.AdamW's update (decay on every variable, then Adam), also
    with gradient accumulation."""
    start = _variables(0)
    rng = np.random.default_rng(1)
    grads = [[rng.normal(size=v.shape).astype("float32") for v in start] for _ in range(4)]
    results = []
    for make in (lambda: make_optimizer("adamw", 0.01, grad_accum=grad_accum, weight_decay=0.1),
                 lambda: keras.optimizers.AdamW(
                     0.01, weight_decay=0.1,
                     gradient_accumulation_steps=grad_accum if grad_accum > 1 else None)):
        variables = [keras.Variable(v) for v in start]
        opt = make()
        for gs in grads:
            opt.apply([keras.ops.convert_to_tensor(g) for g in gs], variables)
        results.append([keras.ops.convert_to_numpy(v) for v in variables])
    for ours, reference, initial in zip(*results, start):
        assert not np.allclose(ours, initial)  # the steps moved the variables
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.tf_only
def test_adamw_runs_the_fused_kernels():
    """On TensorFlow every (decayed) variable's update is one XLA-compiled call, Adam and decay
    in one pass, where keras.optimizers.AdamW runs a dozen separate ops."""
    import tensorflow as tf

    from tests.helpers import xla_call_count

    def kernel_counts(opt):
        variables = [keras.Variable(v) for v in _variables(2)]
        opt.build(variables)
        grads = [tf.constant(np.ones_like(v)) for v in _variables(2)]
        graph = tf.function(lambda gs: opt.apply(gs, variables)).get_concrete_function(
            grads).graph
        kinds = [op.type for op in graph.get_operations()]
        return len(variables), kinds.count("ResourceApplyAdam"), xla_call_count(graph)

    n, adam, fused = kernel_counts(make_optimizer("adamw", 1e-3))
    assert (adam, fused) == (0, n)
    assert kernel_counts(keras.optimizers.AdamW(1e-3))[1:] == (0, 0)
