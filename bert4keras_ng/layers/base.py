"""Small utilities shared by the layer modules: registration, sub-layer creation, input checks."""

import keras

from bert4keras_ng.backend import check_choice  # noqa: F401  (re-exported)


def register(cls):
    """Register a layer (or initializer) for Keras serialisation under package 'bert4keras_ng'."""
    return keras.saving.register_keras_serializable(package="bert4keras_ng")(cls)


def as_list(x):
    """A list/tuple as a list, anything else as a one-element list."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def build_dense(parent, name, units, input_shape, **kwargs):
    """Create and build a Dense sub-layer that follows the parent's dtype policy."""
    layer = keras.layers.Dense(units, name=name, dtype=parent.dtype_policy, **kwargs)
    layer.build(tuple(input_shape))
    return layer


def check_input_count(layer, inputs, expected, layout):
    """Raise a ValueError when a multi-input layer receives the wrong number of tensors."""
    got = len(inputs) if isinstance(inputs, (list, tuple)) else 1
    if got != expected:
        raise ValueError(
            f"{layer.__class__.__name__} expects inputs={layout} ({expected} tensors) "
            f"with these call arguments, got {got}."
        )
