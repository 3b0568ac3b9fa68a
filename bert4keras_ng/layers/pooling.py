"""Mask-aware sequence pooling: mean, max and first token ([CLS])."""

import keras
import numpy as np
from keras import ops

from bert4keras_ng.layers.base import register


def _feature_mask(mask):
    """(b, n) mask as a float32 (b, n, 1) weight, or None."""
    return None if mask is None else ops.expand_dims(ops.cast(mask, "float32"), -1)


@register
class GlobalAveragePooling1D(keras.layers.Layer):
    """Mean over real positions only, (b, n, d) → (b, d); statistics in float32, empty rows → 0."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        x = ops.cast(inputs, "float32")
        weights = _feature_mask(mask)
        if weights is None:
            return ops.cast(ops.mean(x, axis=1), inputs.dtype)
        total = ops.sum(x * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.cast(total / count, inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return None


@register
class GlobalMaxPooling1D(keras.layers.Layer):
    """Max over real positions only, (b, n, d) → (b, d); rows without real positions give 0."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        valid = ops.expand_dims(ops.cast(mask, "bool"), -1)
        pooled = ops.max(ops.where(valid, inputs, ops.cast(-np.inf, inputs.dtype)), axis=1)
        return ops.where(ops.any(valid, axis=1), pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs, mask=None):
        return None


@register
class FirstTokenPooling(keras.layers.Layer):
    """The vector at position `index` (default 0, the [CLS] token): (b, n, d) → (b, d)."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index
        self.supports_masking = True

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index)
        return config
