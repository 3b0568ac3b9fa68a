"""bert4keras_ng layers: every layer registered for Keras serialisation under 'bert4keras_ng'."""

from bert4keras_ng.layers.embeddings import (
    Embedding,
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    Sinusoidal,
    SinusoidalPositionEmbedding,
)
from bert4keras_ng.layers.normalization import LayerNormalization, ScaleOffset

__all__ = [
    "Embedding",
    "LayerNormalization",
    "PositionEmbedding",
    "RelativePositionEmbedding",
    "RelativePositionEmbeddingT5",
    "ScaleOffset",
    "Sinusoidal",
    "SinusoidalPositionEmbedding",
]
