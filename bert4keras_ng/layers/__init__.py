"""bert4keras_ng layers: every layer registered for Keras serialisation under 'bert4keras_ng'."""

from bert4keras_ng.layers.attention import GatedAttentionUnit, MultiHeadAttention
from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.layers.embeddings import (
    Embedding,
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    Sinusoidal,
    SinusoidalPositionEmbedding,
)
from bert4keras_ng.layers.feedforward import FeedForward
from bert4keras_ng.layers.heads import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer
from bert4keras_ng.layers.normalization import LayerNormalization, ScaleOffset
from bert4keras_ng.layers.pooling import (
    FirstTokenPooling,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
)
from bert4keras_ng.layers.synthesizer import SynthesizerAttention

__all__ = [
    "ConditionalRandomField",
    "Dropout",
    "EfficientGlobalPointer",
    "GlobalPointer",
    "Embedding",
    "FeedForward",
    "FirstTokenPooling",
    "GlobalAveragePooling1D",
    "GatedAttentionUnit",
    "GlobalMaxPooling1D",
    "LayerNormalization",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RelativePositionEmbedding",
    "RelativePositionEmbeddingT5",
    "ScaleOffset",
    "Sinusoidal",
    "SinusoidalPositionEmbedding",
    "SynthesizerAttention",
]

# bert4keras compatibility: the `Loss` layer of bert4keras scripts (see bert4keras_ng.compat).
from bert4keras_ng.compat.loss_layer import Loss  # noqa: E402

__all__ += ["Loss"]
