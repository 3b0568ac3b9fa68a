"""bert4keras_ng layers: every layer registered for Keras serialisation under 'bert4keras_ng'."""

from bert4keras_ng.layers.normalization import LayerNormalization, ScaleOffset

__all__ = ["LayerNormalization", "ScaleOffset"]
