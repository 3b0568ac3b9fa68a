"""bert4keras's ``Loss`` layer: a layer whose ``compute_loss(inputs, mask)`` is added to the model.

The choice about dtypes: the models keep integer token and segment ids (int32) inside, while
bert4keras fed float32 ids, and scripts multiply them into float losses
(``K.sum(loss * y_mask)`` with ``y_mask`` the segment ids). So ``Loss`` hands ``compute_loss``
every integer or boolean input cast to float32; floating inputs and the layer's outputs are
unchanged (the model still passes integer ids on), and masks stay booleans as in bert4keras
(scripts cast them with ``K.cast(mask, K.floatx())``). Losses are added with ``add_loss``, so
compile without a loss and fit on ``(inputs, None)`` batches, as bert4keras scripts do.
"""

import keras
from keras import ops


def _float_view(x):
    """float32 copy of integer/boolean tensors, everything else as it is."""
    if x is None or not hasattr(x, "dtype"):
        return x
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype.startswith(("int", "uint", "bool")):
        return ops.cast(x, "float32")
    return x


def _select(values, axis):
    if axis is None or values is None:
        return values
    if isinstance(axis, (list, tuple)):
        return [values[i] for i in axis]
    return values[axis]


@keras.saving.register_keras_serializable(package="bert4keras_ng")
class Loss(keras.layers.Layer):
    """Adds ``compute_loss(inputs, mask)`` to the model's losses; returns inputs[output_axis].

    ``output_axis``: None returns all inputs, an int one of them, a list several.
    Subclasses implement ``compute_loss``; its ``inputs`` have integer tensors cast to float32.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis
        self.supports_masking = True

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError(
            "%s must implement compute_loss(self, inputs, mask=None) returning a scalar loss"
            % type(self).__name__
        )

    def call(self, inputs, mask=None):
        if isinstance(inputs, (list, tuple)):
            float_inputs = [_float_view(x) for x in inputs]
        else:
            float_inputs = _float_view(inputs)
        loss = self.compute_loss(float_inputs, mask)
        self.add_loss(ops.cast(loss, "float32"))
        return _select(inputs, self.output_axis)

    def compute_output_spec(self, inputs, mask=None):
        picked = _select(inputs, self.output_axis)
        if isinstance(picked, (list, tuple)):
            return [keras.KerasTensor(x.shape, x.dtype) for x in picked]
        return keras.KerasTensor(picked.shape, picked.dtype)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return _select(mask, self.output_axis)

    def get_config(self):
        config = super().get_config()
        config["output_axis"] = self.output_axis
        return config
