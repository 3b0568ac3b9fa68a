"""ScaleOffset and LayerNormalization (LayerNorm, RMSNorm, parameter-free RMSNorm), each optionally
conditional: gamma and beta shifted by zero-initialised projections of a condition vector."""

import keras
from keras import ops

from bert4keras_ng.backend import get_activation, serialize_activation
from bert4keras_ng.layers.base import build_dense, check_input_count, register


def _active(setting):
    """A scale/offset setting that is neither False nor None (True or a constant)."""
    return setting is not False and setting is not None


@register
class ScaleOffset(keras.layers.Layer):
    """y = x·γ + β on the last axis; γ/β learned (True), constant (number) or absent (False/None).

    With `conditional=True` the inputs are [x, c] with c (b, d_c): c optionally goes through a
    bias-free `hidden_dense`, then zero-initialised bias-free `gamma_dense`/`beta_dense` outputs are
    added to γ and β, so the layer equals the unconditional one at initialisation.
    """

    def __init__(self, scale=True, offset=True, conditional=False, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        if self.conditional:
            check_input_count(self, input_shape if isinstance(input_shape, list) else [input_shape],
                              2, "[x, condition]")
            x_shape, c_shape = input_shape
        else:
            if input_shape and isinstance(input_shape[0], (list, tuple)):
                check_input_count(self, input_shape, 1, "x (conditional=False)")
            x_shape = input_shape
        dim = x_shape[-1]
        if self.offset is True:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.scale is True:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.conditional:
            cond_shape = tuple(c_shape)
            if self.hidden_units is not None:
                self.hidden_dense = build_dense(
                    self, "hidden_dense", self.hidden_units, cond_shape, use_bias=False,
                    activation=get_activation(self.hidden_activation),
                    kernel_initializer=self.hidden_initializer)
                cond_shape = cond_shape[:-1] + (self.hidden_units,)
            if _active(self.offset):
                self.beta_dense = build_dense(self, "beta_dense", dim, cond_shape,
                                              use_bias=False, kernel_initializer="zeros")
            if _active(self.scale):
                self.gamma_dense = build_dense(self, "gamma_dense", dim, cond_shape,
                                               use_bias=False, kernel_initializer="zeros")
        self.built = True

    def _split(self, inputs):
        """(x, condition) from the call inputs; condition None when unconditional."""
        if not self.conditional:
            if isinstance(inputs, (list, tuple)):
                check_input_count(self, inputs, 1, "x (conditional=False)")
            return inputs, None
        check_input_count(self, inputs, 2, "[x, condition]")
        return inputs[0], inputs[1]

    def _affine(self, x, cond):
        """Apply γ and β (plus their conditional shifts) to the normalised `x`."""
        if cond is not None:
            if self.hidden_units is not None:
                cond = self.hidden_dense(cond)
            for _ in range(len(x.shape) - 2):
                cond = ops.expand_dims(cond, 1)
        if _active(self.scale):
            gamma = self.gamma if self.scale is True else self.scale
            if cond is not None:
                gamma = gamma + self.gamma_dense(cond)
            x = x * ops.cast(gamma, x.dtype)
        if _active(self.offset):
            beta = self.beta if self.offset is True else self.offset
            if cond is not None:
                beta = beta + self.beta_dense(cond)
            x = x + ops.cast(beta, x.dtype)
        return x

    def call(self, inputs):
        x, cond = self._split(inputs)
        return self._affine(x, cond)

    def compute_mask(self, inputs, mask=None):
        if self.conditional and isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if self.conditional else tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            scale=self.scale,
            offset=self.offset,
            conditional=self.conditional,
            hidden_units=self.hidden_units,
            hidden_activation=serialize_activation(self.hidden_activation),
            hidden_initializer=keras.initializers.serialize(self.hidden_initializer),
        )
        return config


@register
class LayerNormalization(ScaleOffset):
    """(Conditional) layer norm: x̂ = (x − mean) / √(mean((x − mean)²) + ε), then ScaleOffset.

    zero_mean=False gives RMSNorm; add scale=False, offset=False for the parameter-free RMSNorm of
    RoFormerV2/GAU-α. Statistics run in float32 and the division is safe (0/0 → 0), so an epsilon
    that underflows in float16 cannot produce NaN. epsilon defaults to 1e-7 (Keras' epsilon, as
    bert4keras); BERT passes 1e-12 explicitly.
    """

    def __init__(self, zero_mean=True, unit_variance=True, epsilon=None, **kwargs):
        super().__init__(**kwargs)
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.epsilon = 1e-7 if epsilon is None else float(epsilon)

    def call(self, inputs):
        x, cond = self._split(inputs)
        h = ops.cast(x, "float32")
        if self.zero_mean:
            h = h - ops.mean(h, axis=-1, keepdims=True)
        if self.unit_variance:
            std = ops.sqrt(ops.mean(ops.square(h), axis=-1, keepdims=True) + self.epsilon)
            # 1/std on the per-token statistics (0 where std is 0), then one multiply over the
            # full tensor: cheaper than dividing every element, and so is its gradient.
            positive = std > 0
            inverse = ops.where(positive, 1.0 / ops.where(positive, std, 1.0), 0.0)
            h = h * inverse
        return self._affine(ops.cast(h, x.dtype), cond)

    def get_config(self):
        config = super().get_config()
        config.update(zero_mean=self.zero_mean, unit_variance=self.unit_variance,
                      epsilon=self.epsilon)
        return config
