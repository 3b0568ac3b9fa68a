"""Task heads on top of a bert4keras_ng backbone, and the matching losses.

Heads follow the recipe: pooled vector (``cls`` = the first token; ``mean`` / ``max`` are
mask-aware alternatives) → Dense(labels, softmax) for classification, Dense(1) score per row
for multiple choice, GlobalPointer (no bias, RoPE, lower triangle masked) on the sequence for
cmrc2018 (one head; the extra position-mask input replaces the padding mask) and cluener (one
head per entity type). Heads run in float32 whatever the backbone's dtype policy.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["SequencePooling", "ReplaceMask", "build_task_model", "task_loss",
           "backbone_head_size"]

_PACKAGE = "bert4keras_ng"


def _token_mask(token_ids):
    """Boolean (b, n): token id ≠ 0, with the first position always valid."""
    mask = ops.not_equal(token_ids, 0)
    return ops.concatenate([ops.ones_like(mask[:, :1]), mask[:, 1:]], axis=1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SequencePooling(keras.layers.Layer):
    """``[hidden (b, n, d), token_ids (b, n)]`` → (b, d) by ``cls``, ``mean`` or ``max``."""

    def __init__(self, method="cls", **kwargs):
        super().__init__(**kwargs)
        if method not in ("cls", "mean", "max"):
            raise ValueError(f"`method` must be 'cls', 'mean' or 'max'; got {method!r}")
        self.method = method

    def call(self, inputs, mask=None):
        h, token_ids = inputs
        if self.method == "cls":
            return h[:, 0]
        valid = _token_mask(token_ids)[:, :, None]
        if self.method == "mean":
            w = ops.cast(valid, h.dtype)
            total = ops.sum(h * w, axis=1)
            count = ops.maximum(ops.sum(ops.cast(valid, "float32"), axis=1), 1.0)
            return total / ops.cast(count, h.dtype)
        low = ops.cast(float("-inf"), h.dtype)
        return ops.max(ops.where(valid, h, low), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[0][2])

    def get_config(self):
        return dict(super().get_config(), method=self.method)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReplaceMask(keras.layers.Layer):
    """``[hidden, mask_source]`` → hidden, carrying the Keras mask ``mask_source > 0``.

    With a token-id source the first position is always valid (bert4keras rule); with the
    cmrc2018 position mask (1 at [CLS] and context tokens) the mask is used as given.
    """

    def __init__(self, source="token_ids", **kwargs):
        super().__init__(**kwargs)
        if source not in ("token_ids", "position_mask"):
            raise ValueError(f"`source` must be 'token_ids' or 'position_mask'; got {source!r}")
        self.source = source
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return inputs[0]

    def compute_mask(self, inputs, mask=None):
        if self.source == "token_ids":
            return _token_mask(inputs[1])
        return ops.greater(inputs[1], 0)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return dict(super().get_config(), source=self.source)


def backbone_head_size(config):
    """Per-head size used for the GlobalPointer heads (GAU-α: its key size)."""
    if config.get("attention_key_size"):
        return int(config["attention_key_size"])
    if config.get("attention_head_size"):
        return int(config["attention_head_size"])
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def build_task_model(spec, backbone, config, pooling="cls", initializer=None):
    """Wrap ``backbone`` (inputs [Input-Token, Input-Segment]) with ``spec``'s head."""
    initializer = initializer or keras.initializers.TruncatedNormal(stddev=0.02)
    inputs = list(backbone.inputs)
    token_ids = inputs[0]
    h = backbone.output
    if isinstance(h, (list, tuple)):
        h = h[0]
    kind = spec.kind
    if kind in ("single", "pair", "csl", "wsc", "c3", "chid"):
        pooled = SequencePooling(pooling, name="CLUE-Pooling")([h, token_ids])
        if kind in ("c3", "chid"):
            out = keras.layers.Dense(1, kernel_initializer=initializer, dtype="float32",
                                     name="CLUE-Choice-Score")(pooled)
        else:
            out = keras.layers.Dense(spec.num_labels, activation="softmax",
                                     kernel_initializer=initializer, dtype="float32",
                                     name="CLUE-Classifier")(pooled)
        return keras.Model(inputs, out, name=f"clue_{spec.name}")
    from ..layers.heads import GlobalPointer

    head_size = backbone_head_size(config)
    if kind == "cmrc":
        position_mask = keras.Input(shape=(None,), dtype="int32", name="Input-Mask")
        h = ReplaceMask("position_mask", name="CLUE-Position-Mask")([h, position_mask])
        logits = GlobalPointer(1, head_size, use_bias=False, kernel_initializer=initializer,
                               dtype="float32", name="CLUE-GlobalPointer")(h)
        out = keras.layers.Lambda(lambda x: x[:, 0], name="CLUE-Span-Logits",
                                  dtype="float32")(logits)
        return keras.Model(inputs + [position_mask], out, name=f"clue_{spec.name}")
    if kind == "ner":
        h = ReplaceMask("token_ids", name="CLUE-Token-Mask")([h, token_ids])
        out = GlobalPointer(spec.num_labels, head_size, use_bias=False,
                            kernel_initializer=initializer, dtype="float32",
                            name="CLUE-GlobalPointer")(h)
        return keras.Model(inputs, out, name=f"clue_{spec.name}")
    raise ValueError(f"unknown task kind {kind!r}")


# ------------------------------------------------------------------------------ losses


def _sparse_ce_from_probs(y_true, probs):
    p = ops.cast(probs, "float32")
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
    picked = ops.take_along_axis(p, labels, axis=-1)[:, 0]
    return -ops.log(ops.clip(picked, 1e-7, 1.0))


def _log_softmax(s):
    s = ops.cast(s, "float32")
    return s - ops.logsumexp(s, axis=-1, keepdims=True)


def _pair_kl_logits(s):
    """Symmetric KL between rows 2m and 2m+1 of logits (-inf allowed), per pair."""
    logp = _log_softmax(s)
    finite = ops.isfinite(logp)
    logp = ops.where(finite, logp, ops.zeros_like(logp))
    p = ops.where(finite, ops.exp(logp), ops.zeros_like(logp))
    return ops.sum((p[::2] - p[1::2]) * (logp[::2] - logp[1::2]), axis=-1)


def task_loss(spec, rdrop_alpha=0.0):
    """``loss(y_true, y_pred)`` → float32 scalar for ``spec``'s head.

    With ``rdrop_alpha > 0`` the batch holds every sample twice, adjacently, and the loss adds
    ``alpha / 4 ·`` mean symmetric KL between the two passes (R-Drop, post 8496).
    """
    from .. import losses as L

    kind = spec.kind
    alpha = float(rdrop_alpha)

    if kind in ("single", "pair", "csl", "wsc"):
        def loss(y_true, y_pred):
            ce = ops.mean(_sparse_ce_from_probs(y_true, y_pred))
            if alpha:
                logits = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-12, 1.0))
                ce = ce + alpha / 4.0 * ops.mean(_pair_kl_logits(logits))
            return ce
        return loss
    if kind in ("c3", "chid"):
        k = spec.num_choices

        def loss(y_true, y_pred):
            ce = ops.mean(L.multiple_choice_crossentropy(y_true, y_pred, k))
            if alpha:
                ce = ce + alpha / 4.0 * ops.mean(_pair_kl_logits(ops.reshape(y_pred, (-1, k))))
            return ce
        return loss
    if kind == "cmrc":
        def loss(y_true, y_pred):
            n = ops.shape(y_pred)[1]
            s = ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(y_pred)[0], -1))
            y = ops.cast(y_true, "int32")
            target = ops.reshape(y[:, 0] * n + y[:, 1], (-1, 1))
            logp = _log_softmax(s)
            ce = ops.mean(-ops.take_along_axis(logp, target, axis=-1)[:, 0])
            if alpha:
                ce = ce + alpha / 4.0 * ops.mean(_pair_kl_logits(s))
            return ce
        return loss
    if kind == "ner":
        def loss(y_true, y_pred):
            ce = ops.mean(L.global_pointer_crossentropy(y_true, y_pred))
            if alpha:
                ce = ce + alpha / 4.0 * ops.mean(L.rdrop_global_pointer_kl(y_pred))
            return ce
        return loss
    raise ValueError(f"unknown task kind {kind!r}")
