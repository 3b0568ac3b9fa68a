"""Fused optimizer updates: Keras's Adam step, with or without weight decay, as one pass.

Keras writes Adam's update with a dozen element-wise ops (subtract, multiply, square, sqrt,
divide, three assignments).  Without XLA, TensorFlow runs each as its own pass over memory: for
BERT-base's 102 M parameters that is a large share of a CPU training step.  TensorFlow's
``ResourceApplyAdam`` kernel computes the same formula in one pass over (variable, m, v,
gradient)::

    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
    theta -= alpha * m / (sqrt(v) + epsilon)

which is Keras's ``Adam.update_step`` (epsilon added to sqrt(v), not to the bias-corrected v).
With decoupled weight decay there is no such kernel: a separate decay pass
(``ResourceApplyGradientDescent`` fed the variable's own value) costs a copy of the variable plus a
read-modify-write, a third of the update's time.  So a decayed variable's update is one small
XLA-compiled function instead, the same formula followed by bert4keras's
``theta_new - lr * rate * theta_old``, which XLA fuses into a single pass over (variable, m, v,
gradient) even when the training step itself is not compiled.
"""

import functools

import keras

__all__ = ["fusable_adam", "fused_adam_update"]


def _resource(variable):
    """The plain ``tf.Variable`` behind a Keras variable, or None for a distributed one."""
    value = getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable
    if hasattr(value, "_distributed_container") or not hasattr(value, "handle"):
        return None
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return None
    return value


def fusable_adam(optimizer, base_class):
    """Whether ``base_class`` (the class whose ``update_step`` the optimizer would run) is
    Keras's Adam algorithm with settings the fused kernel covers, on the TensorFlow backend."""
    if keras.backend.backend() != "tensorflow":
        return False
    if not (isinstance(base_class, type) and base_class is keras.optimizers.Adam):
        return False
    return not optimizer.amsgrad


def fused_adam_update(optimizer, gradient, variable, learning_rate, decay_rate=None):
    """Run Keras's Adam update of ``variable`` as one pass: ``ResourceApplyAdam``, or with
    decoupled weight decay ``decay_rate`` (a scalar) the compiled :func:`_decayed_adam`.  Returns
    False, doing nothing, when the variables are distributed (several replicas): the caller then
    runs the unfused update."""
    import tensorflow as tf

    index = optimizer._get_variable_index(variable)
    var = _resource(variable)
    m = _resource(optimizer._momentums[index])
    v = _resource(optimizer._velocities[index])
    if var is None or m is None or v is None:
        return False
    dtype = var.dtype
    lr = tf.cast(learning_rate, dtype)
    step = tf.cast(optimizer.iterations + 1, dtype)
    gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)
    beta_1, beta_2, epsilon = (tf.cast(value, dtype) for value in (
        optimizer.beta_1, optimizer.beta_2, optimizer.epsilon))
    beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
    if decay_rate is not None:
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        _decayed_adam()(var, m, v, gradient, alpha, beta_1, beta_2, epsilon,
                        lr * tf.cast(decay_rate, dtype))
        return True
    tf.raw_ops.ResourceApplyAdam(
        var=var.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
        beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
        grad=gradient)
    return True


@functools.cache
def _decayed_adam():
    """The XLA-compiled Adam step with decoupled decay (one per process, made on first use and
    traced per variable shape): Keras's formula in its order, then ``- lr * rate * theta_old``."""
    import tensorflow as tf

    def update(var, m, v, gradient, alpha, beta_1, beta_2, epsilon, decay):
        old = var.read_value()
        m.assign_add((gradient - m) * (1 - beta_1))
        v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
        var.assign(old - m * alpha / (tf.sqrt(v) + epsilon) - decay * old)

    return tf.function(update, jit_compile=True, autograph=False)
