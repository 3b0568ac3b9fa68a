"""Position-wise feed-forward block, plain or gated (GLU family)."""

import keras

from bert4keras_ng.backend import get_activation, serialize_activation
from bert4keras_ng.layers.base import build_dense, register


@register
class FeedForward(keras.layers.Layer):
    """o = act(x·W_i0 + b) ·W_o + b; with a list of activations the inner part is the GLU product
    act_0(x·W_i0) ⊙ act_1(x·W_i1) ⊙ … (T5.1.1 uses ['gelu', 'linear']).

    Sub-layers i0_dense, i1_dense, …, o_dense; the output width equals the input width.
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = list(activation) if isinstance(activation, (list, tuple)) else activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    @property
    def activations(self):
        """The activation spec as a list, one per inner Dense."""
        return self.activation if isinstance(self.activation, list) else [self.activation]

    def build(self, input_shape):
        common = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer)
        self.inner_denses = [
            build_dense(self, f"i{i}_dense", self.units, input_shape,
                        activation=get_activation(act), **common)
            for i, act in enumerate(self.activations)
        ]
        self.o_dense = build_dense(self, "o_dense", input_shape[-1],
                                   tuple(input_shape[:-1]) + (self.units,), **common)
        self.built = True

    def call(self, inputs):
        x = self.inner_denses[0](inputs)
        for dense in self.inner_denses[1:]:
            x = x * dense(inputs)
        return self.o_dense(x)

    def get_config(self):
        config = super().get_config()
        activation = ([serialize_activation(a) for a in self.activation]
                      if isinstance(self.activation, list) else serialize_activation(self.activation))
        config.update(units=self.units, activation=activation, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
