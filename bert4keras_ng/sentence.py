"""Sentence embeddings: pooled encoders, batched text encoding, BERT-whitening and Spearman.

- :class:`SentenceEncoder` — wraps a built encoder and a tokenizer: ``.model`` is a trainable
  Keras model from token (and segment) ids to one pooled vector per text (``cls`` / ``mean`` /
  ``first-last-avg``), ``.encode(texts)`` batches texts to a NumPy array.  Train ``.model`` with
  :func:`bert4keras_ng.losses.cosent_loss` or :func:`~bert4keras_ng.losses.simcse_loss`.
- :func:`fit_whitening` / :func:`whiten` / :class:`Whitening` — BERT-whitening with β, γ and a
  kept dimension k (post 9079): ``x̃ = (x − βμ) U Λ^(−γ/2)``, first k columns.
- :func:`spearman_correlation` — the metric of the STS literature (average ranks for ties).
"""

import keras
import numpy as np
from keras import ops

from bert4keras_ng.layers.base import register
from bert4keras_ng.snippets import sequence_padding

__all__ = [
    "POOLINGS",
    "SentencePooling",
    "SentenceEncoder",
    "pooled_encoder",
    "fit_whitening",
    "whiten",
    "Whitening",
    "spearman_correlation",
]

POOLINGS = ("cls", "mean", "first-last-avg")


def _check_pooling(pooling):
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
    return pooling


@register
class SentencePooling(keras.layers.Layer):
    """``[token_ids, h_1, …, h_m] → (b, d)``: mean over non-padding tokens (id ≠ 0) of the mean
    of the ``h``'s (``mean``, ``first-last-avg``), or the first token of ``h_1`` (``cls``).

    Pooling statistics are in float32; the output has the compute dtype.
    """

    def __init__(self, pooling="cls", **kwargs):
        super().__init__(**kwargs)
        self.pooling = _check_pooling(pooling)
        self.supports_masking = True  # padding is read from the token ids

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        ids, states = inputs[0], list(inputs[1:])
        if not states:
            raise ValueError("SentencePooling needs [token_ids, hidden_states, ...].")
        if self.pooling == "cls":
            return states[0][:, 0]
        h = ops.mean(ops.stack([ops.cast(s, "float32") for s in states], axis=0), axis=0)
        weights = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), "float32"), -1)
        total = ops.sum(h * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.cast(total / count, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], input_shapes[1][-1])

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling)
        return config


def _first_block_output(model):
    """Output of the last layer named ``Transformer-0-…`` (the first block's output)."""
    block = [layer for layer in model.layers if layer.name.startswith("Transformer-0-")]
    if not block:
        raise ValueError(
            f"first-last-avg pooling: model {model.name!r} has no layer named 'Transformer-0-…'."
        )
    return block[-1].output


def pooled_encoder(model, pooling="cls", name="Sentence-Encoder"):
    """Keras model with ``model``'s inputs and one pooled vector per text (see module doc).

    ``model`` is an encoder from :func:`~bert4keras_ng.models.build_transformer_model` whose
    first input holds the token ids (padding id 0) and whose output is the last hidden states.
    """
    _check_pooling(pooling)
    states = [model.output]
    if pooling == "first-last-avg":
        states = [_first_block_output(model), model.output]
    vector = SentencePooling(pooling, name="Sentence-Pooling")([model.inputs[0]] + states)
    return keras.Model(model.inputs, vector, name=name)


class SentenceEncoder:
    """Texts → vectors with a pooled encoder and a tokenizer, in padded batches.

    Args:
        model: the built encoder (last hidden states output).
        tokenizer: a :class:`~bert4keras_ng.tokenizers.Tokenizer`.
        pooling: ``cls`` / ``mean`` / ``first-last-avg``.
        maxlen: tokens per text (truncated), 64 as in the CoSENT / SimCSE posts.
        batch_size: texts per forward pass.
    """

    def __init__(self, model, tokenizer, pooling="cls", maxlen=64, batch_size=64):
        self.model = pooled_encoder(model, pooling)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.maxlen = int(maxlen)
        self.batch_size = int(batch_size)

    def inputs(self, texts):
        """Padded ``[token_ids, segment_ids]`` (as many as the model has inputs)."""
        tokens, segments = [], []
        for text in texts:
            t, s = self.tokenizer.encode(text, maxlen=self.maxlen)
            tokens.append(t)
            segments.append(s)
        arrays = [sequence_padding(tokens), sequence_padding(segments)]
        return arrays[: len(self.model.inputs)]

    def encode(self, texts, normalize=False):
        """(len(texts), dim) float32 vectors; ``normalize`` L2-normalises each row.

        All texts are padded to one length (pooling ignores padding), so the encoder is traced
        once however many batches there are.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("SentenceEncoder.encode: no texts given.")
        vectors = self.model.predict(self.inputs(texts), batch_size=self.batch_size, verbose=0)
        vectors = np.asarray(vectors, dtype="float32")
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def fit_whitening(vectors, beta=1.0, gamma=1.0, k=None):
    """BERT-whitening ``x̃ = (x − βμ) U Λ^(−γ/2)[:, :k]`` (post 9079); returns (kernel, bias).

    ``Σ = (1/N) Σᵢ (xᵢ − βμ)ᵀ(xᵢ − βμ) = U Λ Uᵀ`` (Λ descending).  Apply with
    ``(x + bias) @ kernel`` (:func:`whiten` or :class:`Whitening`); ``bias = −βμ``.
    β = γ = 1 is classic whitening; β = γ = 0 is a rotation that keeps cosines exactly at full
    k, and with k = 256 of 768 is "almost a free lunch".
    """
    x = np.asarray(vectors, dtype="float64")
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"fit_whitening: `vectors` must be (N, dim) with N >= 1; got {x.shape}.")
    dim = x.shape[1]
    k = dim if k is None else int(k)
    if not 1 <= k <= dim:
        raise ValueError(f"fit_whitening: `k` must be in [1, {dim}]; got {k}.")
    mu = x.mean(axis=0)
    centred = x - beta * mu
    cov = centred.T @ centred / x.shape[0]
    u, s, _ = np.linalg.svd(cov)
    scale = np.maximum(s[:k], np.finfo("float64").tiny) ** (-float(gamma) / 2)
    kernel = u[:, :k] * scale[None, :]
    return kernel.astype("float32"), (-beta * mu).astype("float32")


def whiten(vectors, kernel, bias):
    """NumPy ``(x + bias) @ kernel``."""
    return (np.asarray(vectors, dtype="float32") + bias) @ kernel


@register
class Whitening(keras.layers.Layer):
    """Keras layer ``(x + bias) @ kernel`` with frozen (non-trainable) ``kernel``/``bias``.

    Build from a fit with :meth:`from_fit`; the weights are saved with the model.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.units),
                                      initializer="identity" if dim == self.units else "zeros",
                                      trainable=False)
        self.bias = self.add_weight(name="bias", shape=(dim,), initializer="zeros",
                                    trainable=False)

    @classmethod
    def from_fit(cls, kernel, bias, **kwargs):
        """A built layer holding the (kernel, bias) of :func:`fit_whitening`."""
        kernel = np.asarray(kernel, dtype="float32")
        layer = cls(kernel.shape[1], **kwargs)
        layer.build((None, kernel.shape[0]))
        layer.kernel.assign(kernel)
        layer.bias.assign(np.asarray(bias, dtype="float32"))
        return layer

    def call(self, inputs):
        x = inputs + ops.cast(self.bias, inputs.dtype)
        return ops.matmul(x, ops.cast(self.kernel, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


def _average_ranks(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype="float64")
    ranks[order] = np.arange(len(x), dtype="float64")
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):  # ties share the mean of their ranks
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return ranks


def spearman_correlation(x, y):
    """Spearman's ρ: Pearson correlation of the (average, for ties) ranks of x and y."""
    x = np.asarray(x, dtype="float64").ravel()
    y = np.asarray(y, dtype="float64").ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"spearman_correlation: x and y must have the same length >= 2; got {x.size} "
            f"and {y.size}."
        )
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0
