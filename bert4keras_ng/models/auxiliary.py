"""Small model-internal layers and the RoFormerV2/GAU-alpha initializer.

They replace bert4keras' ``Lambda`` layers so that built models save to ``.keras`` and load back
without ``safe_mode=False``.
"""

import math

import keras
from keras import ops

from bert4keras_ng import backend


def _register(cls):
    return keras.saving.register_keras_serializable(package="bert4keras_ng")(cls)


@_register
class AttentionMask(keras.layers.Layer):
    """Boolean attention mask computed from an input: ``kind='lm'`` (causal, from token ids,
    shape (1, n, n)) or ``kind='unilm'`` (seq2seq, from segment ids, shape (b, n, n))."""

    def __init__(self, kind="lm", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("lm", "unilm"):
            raise ValueError("AttentionMask: kind must be 'lm' or 'unilm', got %r." % (kind,))
        self.kind = kind

    def call(self, inputs):
        if self.kind == "lm":
            return ops.expand_dims(backend.lm_mask(ops.shape(inputs)[1]), 0)
        return backend.unilm_mask(inputs)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (1 if self.kind == "lm" else input_shape[0], n, n)

    def compute_output_spec(self, inputs):
        n = inputs.shape[1]
        batch = 1 if self.kind == "lm" else inputs.shape[0]
        return keras.KerasTensor((batch, n, n), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config["kind"] = self.kind
        return config


@_register
class Add(keras.layers.Add):
    """Element-wise sum whose output mask is the AND of the inputs' masks that exist.

    Keras 3's ``Add`` returns no mask as soon as one input has none (and ORs them otherwise);
    summing the masked token embedding with the unmasked segment embedding would then lose the
    padding mask. This is the rule bert4keras relied on.
    """

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        masks = [m for m in mask if m is not None]
        if not masks:
            return None
        out = ops.cast(masks[0], "bool")
        for m in masks[1:]:
            out = ops.logical_and(out, ops.cast(m, "bool"))
        return out


@_register
class Concatenate1D(keras.layers.Layer):
    """Concatenation along the sequence axis whose mask treats an input without a mask as all
    valid (Keras' Concatenate rejects a mix); joins attention caches to keys and values."""

    def call(self, inputs, mask=None):
        return ops.concatenate(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [
            ops.ones_like(x[..., 0], dtype="bool") if m is None else ops.cast(m, "bool")
            for x, m in zip(inputs, mask)
        ]
        return ops.concatenate(masks, axis=1)

    def compute_output_shape(self, input_shape):
        lengths = [shape[1] for shape in input_shape]
        length = None if any(n is None for n in lengths) else sum(lengths)
        return (input_shape[0][0], length) + tuple(input_shape[0][2:])


@_register
class CachedKeysMask(keras.layers.Layer):
    """[boolean mask (b|1, n_q, n_k), cache (b, m, ...)] -> (b|1, n_q, m + n_k): the attention
    mask extended so that every query sees the m cached key positions put in front."""

    def call(self, inputs):
        mask, cache = inputs
        shape = ops.shape(mask)
        visible = ops.ones((shape[0], shape[1], ops.shape(cache)[1]), dtype="bool")
        return ops.concatenate([visible, ops.cast(mask, "bool")], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs):
        mask, cache = inputs
        n = None if mask.shape[2] is None or cache.shape[1] is None else mask.shape[2] + cache.shape[1]
        return keras.KerasTensor((mask.shape[0], mask.shape[1], n), dtype="bool")


@_register
class TakeToken(keras.layers.Layer):
    """``x[:, index]``: the [CLS] vector for the pooler."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config["index"] = self.index
        return config


@_register
class DepthScaledTruncatedNormal(keras.initializers.Initializer):
    """RoFormerV2 / GAU-alpha initializer: truncated normal (±2σ) with
    σ = 1.13684723 / √fan · L^(−1/order); fan = shape[1] for tables with more than 10000 or fewer
    than 10 rows (embeddings, segment tables), else shape[0] (a kernel's input width). The
    constant is 1 / std of a standard normal truncated to [−2, 2], so the realised std is
    L^(−1/order) / √fan."""

    def __init__(self, num_layers, order=2, seed=None):
        self.num_layers = int(num_layers)
        self.order = order
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if len(shape) >= 2 and (shape[0] > 10000 or shape[0] < 10):
            fan = shape[1]
        else:
            fan = shape[0]
        stddev = 1.13684723 / math.sqrt(fan) * self.num_layers ** (-1.0 / self.order)
        return keras.random.truncated_normal(shape, stddev=stddev, dtype=dtype, seed=self._generator)

    def get_config(self):
        return {"num_layers": self.num_layers, "order": self.order, "seed": self.seed}
