"""The legacy ``K`` namespace: Keras 2 backend functions expressed with Keras 3 (compatibility).

bert4keras scripts write ``from bert4keras.backend import keras, K`` and call ``K.sum``,
``K.floatx``, ``K.eval``, ``K.set_value``, ``K.in_train_phase``, ... This module is that ``K``:
the functions whose Keras 2 signature or default differs from ``keras.ops`` are defined here
(``K.concatenate`` joins on the last axis, ``K.expand_dims`` adds the last axis,
``K.sparse_categorical_crossentropy`` accepts float or (b, n, 1) targets, ...); any other
name falls through to ``keras.ops`` (``K.sum``, ``K.reshape``, ``K.equal``, ...). TF1 graph-mode
names (``K.gradients``, ``K.function``, ``K.get_session``, ...) raise an AttributeError that
names the replacement. New code should use ``keras.ops`` directly.
"""

import keras
import numpy as np
from keras import ops

# TF1 graph-mode entry points that have no Keras 3 counterpart, with what to write instead.
GRAPH_MODE_REPLACEMENTS = {
    "gradients": (
        "gradients are taken with tf.GradientTape inside a train_step; for adversarial "
        "training use bert4keras_ng.losses.adversarial_training(model) (FGM), and see "
        "examples/gradient_penalty.py, examples/virtual_adversarial_training.py and "
        "examples/integrated_gradients.py"
    ),
    "function": (
        "call the model (or keras.Model(inputs, outputs)) on arrays, or model.predict(...)"
    ),
    "get_session": "Keras 3 has no session; tensors are evaluated eagerly (K.eval)",
    "set_session": "Keras 3 has no session; remove the call",
    "placeholder": "use keras.Input(shape=..., dtype=...)",
    "learning_phase": "pass training=True/False to the layer call (K.in_train_phase reads it)",
    "set_learning_phase": "pass training=True/False to the layer or model call",
    "symbolic": "Keras 3 layers run the same code eagerly and symbolically; drop the decorator",
    "rnn": "use keras.layers.RNN or keras.ops.scan",
}


def __getattr__(name):
    """Fall through to ``keras.ops``; TF1 graph-mode names raise with their replacement."""
    if name in GRAPH_MODE_REPLACEMENTS:
        raise AttributeError(
            "K.%s is TensorFlow 1 graph mode and does not exist in Keras 3: %s."
            % (name, GRAPH_MODE_REPLACEMENTS[name])
        )
    if not name.startswith("_") and hasattr(ops, name):
        return getattr(ops, name)
    raise AttributeError(
        "K.%s: neither a Keras 2 backend function this compatibility namespace provides nor a "
        "keras.ops function; write it with keras.ops." % name
    )


# ----- configuration ---------------------------------------------------------------------------
floatx = keras.config.floatx
set_floatx = keras.config.set_floatx
epsilon = keras.config.epsilon
set_epsilon = keras.config.set_epsilon
image_data_format = keras.config.image_data_format
backend = keras.config.backend


def clear_session():
    """keras.backend.clear_session (drops global Keras state)."""
    keras.utils.clear_session()


# ----- values and variables --------------------------------------------------------------------
def eval(x):  # noqa: A001 - Keras 2 name
    """NumPy value of a tensor or variable (Keras 3 is eager, so nothing is run)."""
    if isinstance(x, keras.Variable):
        return ops.convert_to_numpy(x.value)
    return ops.convert_to_numpy(x)


get_value = eval


def batch_get_value(xs):
    """NumPy values of a list of tensors or variables."""
    return [eval(x) for x in xs]


def _check_variable(x, fn):
    if not isinstance(x, keras.Variable):
        raise TypeError(
            "K.%s needs a keras.Variable (e.g. layer.embeddings, optimizer.learning_rate), got %r"
            % (fn, type(x).__name__)
        )


def set_value(x, value):
    """Assign ``value`` to the variable ``x`` (shape and dtype kept)."""
    _check_variable(x, "set_value")
    value = np.asarray(value)
    if tuple(value.shape) != tuple(x.shape):
        raise ValueError(
            "K.set_value: variable %r has shape %s, the value has shape %s"
            % (x.path, tuple(x.shape), tuple(value.shape))
        )
    x.assign(value.astype(x.dtype))


def batch_set_value(tuples):
    """``set_value`` for each ``(variable, value)`` pair."""
    for x, value in tuples:
        set_value(x, value)


def update(x, new_x):
    _check_variable(x, "update")
    return x.assign(new_x)


def update_add(x, increment):
    _check_variable(x, "update_add")
    return x.assign_add(increment)


def update_sub(x, decrement):
    _check_variable(x, "update_sub")
    return x.assign_sub(decrement)


def variable(value, dtype=None, name=None, constraint=None):
    """A new keras.Variable holding ``value``."""
    value = np.asarray(value)
    dtype = dtype or (floatx() if value.dtype.kind == "f" else value.dtype.name)
    return keras.Variable(value.astype(dtype), dtype=dtype, name=name, constraint=constraint)


def constant(value, dtype=None, shape=None, name=None):
    dtype = dtype or floatx()
    if shape is not None:
        return ops.full(shape, value, dtype=dtype)
    return ops.convert_to_tensor(np.asarray(value), dtype=dtype)


def zeros(shape, dtype=None, name=None):
    return ops.zeros(shape, dtype=dtype or floatx())


def ones(shape, dtype=None, name=None):
    return ops.ones(shape, dtype=dtype or floatx())


def eye(size, dtype=None, name=None):
    return ops.eye(size, dtype=dtype or floatx())


def is_tensor(x):
    return ops.is_tensor(x) or isinstance(x, keras.KerasTensor)


def is_keras_tensor(x):
    return isinstance(x, keras.KerasTensor)


def int_shape(x):
    """Static shape as a tuple (None for unknown dimensions)."""
    return tuple(x.shape)


def ndim(x):
    return len(x.shape)


def dtype(x):
    """Dtype name of a tensor or variable, e.g. 'float32'."""
    return keras.backend.standardize_dtype(x.dtype)


def count_params(x):
    return int(np.prod(x.shape))


# ----- array functions whose Keras 2 defaults differ from keras.ops ----------------------------
def concatenate(tensors, axis=-1):
    """Join on the last axis by default (keras.ops joins on axis 0)."""
    return ops.concatenate(tensors, axis=axis)


def expand_dims(x, axis=-1):
    """Add an axis, the last one by default (keras.ops needs it given)."""
    return ops.expand_dims(x, axis)


def permute_dimensions(x, pattern):
    return ops.transpose(x, pattern)


def repeat_elements(x, rep, axis):
    return ops.repeat(x, rep, axis=axis)


def repeat(x, n):
    """(b, d) -> (b, n, d)."""
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def batch_flatten(x):
    return ops.reshape(x, (ops.shape(x)[0], -1))


def flatten(x):
    return ops.reshape(x, (-1,))


def gather(reference, indices):
    """Rows of ``reference`` at ``indices`` (axis 0)."""
    return ops.take(reference, indices, axis=0)


def switch(condition, then_expression, else_expression):
    """Element-wise choice (callables are called first, as Keras 2 allowed)."""
    then_value = then_expression() if callable(then_expression) else then_expression
    else_value = else_expression() if callable(else_expression) else else_expression
    return ops.where(condition, then_value, else_value)


def pow(x, a):  # noqa: A001 - Keras 2 name
    return ops.power(x, a)


def l2_normalize(x, axis=None):
    """x / sqrt(max(sum(x^2), 1e-12)) over ``axis`` (all axes when None)."""
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, 1e-12))


def dot(x, y):
    """Keras 2 dot: the last axis of x with the second-to-last of y (the only axis for 1-D y)."""
    return ops.matmul(x, y)


def batch_dot(x, y, axes=None):
    """Keras 2 batch_dot: per-sample contraction of ``x`` axis axes[0] with ``y`` axis axes[1].

    The result keeps the batch axis, then x's remaining axes, then y's; a rank-1 result
    becomes (b, 1) as in Keras 2. ``axes=None`` is (x.ndim - 1, y.ndim - 2) for y of rank >= 3
    and (1, 1) for matrices.
    """
    nx, ny = len(x.shape), len(y.shape)
    if nx < 2 or ny < 2:
        raise ValueError("K.batch_dot needs tensors of rank >= 2, got ranks %d and %d" % (nx, ny))
    if axes is None:
        axes = (nx - 1, ny - 2) if ny >= 3 else (nx - 1, ny - 1)
    elif isinstance(axes, int):
        axes = (axes, axes)
    ax, ay = axes[0] % nx, axes[1] % ny
    if ax == 0 or ay == 0:
        raise ValueError("K.batch_dot cannot contract the batch axis (axes=%r)" % (axes,))
    letters = "bcdefghijklmnopqrstuvwxyz"
    xs = ["a"] + [letters[i] for i in range(nx - 1)]
    ys = ["a"] + [letters[nx - 1 + i] for i in range(ny - 1)]
    ys[ay] = xs[ax]
    out = [c for i, c in enumerate(xs) if i != ax] + [c for i, c in enumerate(ys) if i not in (0, ay)]
    result = ops.einsum("%s,%s->%s" % ("".join(xs), "".join(ys), "".join(out)), x, y)
    if len(out) == 1:
        result = ops.expand_dims(result, 1)
    return result


# ----- activations and losses with Keras 2 signatures -----------------------------------------
def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    if alpha:
        y = ops.where(x >= threshold, x, alpha * (x - threshold))
    else:
        y = ops.where(x >= threshold, x, ops.zeros_like(x)) if threshold else ops.relu(x)
    if max_value is not None:
        y = ops.minimum(y, ops.cast(max_value, y.dtype))
    return y


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Per-sample crossentropy (float32) of one-hot ``target`` and probabilities ``output``."""
    output = ops.cast(output, "float32")
    return ops.categorical_crossentropy(
        ops.cast(target, "float32"), output, from_logits=from_logits, axis=axis
    )


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Crossentropy (float32) of integer-valued ``target`` (any dtype, trailing 1 allowed)."""
    output = ops.cast(output, "float32")
    target = ops.cast(target, "int32")
    if len(target.shape) == len(output.shape) and target.shape[-1] == 1:
        target = ops.squeeze(target, -1)
    return ops.sparse_categorical_crossentropy(target, output, from_logits=from_logits, axis=axis)


def binary_crossentropy(target, output, from_logits=False):
    """Element-wise binary crossentropy (float32), not averaged (Keras 2 backend semantics)."""
    output = ops.cast(output, "float32")
    return ops.binary_crossentropy(ops.cast(target, "float32"), output, from_logits=from_logits)


# ----- randomness and the training phase -------------------------------------------------------
def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return keras.random.uniform(shape, minval, maxval, dtype=dtype or floatx(), seed=seed)


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.normal(shape, mean, stddev, dtype=dtype or floatx(), seed=seed)


def random_binomial(shape, p=0.0, dtype=None, seed=None):
    """0/1 samples (floatx by default), 1 with probability ``p``."""
    draw = keras.random.uniform(shape, dtype="float32", seed=seed)
    return ops.cast(draw < p, dtype or floatx())


random_bernoulli = random_binomial


def dropout(x, level, noise_shape=None, seed=None):
    return keras.random.dropout(x, level, noise_shape=noise_shape, seed=seed)


def _current_training():
    """The ``training`` flag of the Keras 3 layer call being run (False outside of one).

    Keras 3 keeps it in the call context of the outermost layer call (private state: this is
    the one place the package reads it).
    """
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return bool(getattr(context, "training", None))


def in_train_phase(x, alt, training=None):
    """``x`` while training, ``alt`` otherwise; callables are called (Keras 2 semantics).

    With ``training=None`` the flag of the enclosing Keras 3 layer/model call is used, so
    ``fit`` sees ``x`` and ``predict``/``evaluate`` see ``alt``.
    """
    if training is None:
        training = _current_training()
    if not isinstance(training, (bool, int, np.bool_)):  # a tensor flag
        x_value = x() if callable(x) else x
        alt_value = alt() if callable(alt) else alt
        return ops.where(ops.cast(training, "bool"), x_value, alt_value)
    chosen = x if training else alt
    return chosen() if callable(chosen) else chosen


def in_test_phase(x, alt, training=None):
    return in_train_phase(alt, x, training=training)
