"""Losses for bert4keras_ng heads, plus an FGM adversarial-training helper.

Every loss here casts its inputs to float32 before doing any arithmetic, so it can be fed
float16 / bfloat16 logits from a ``mixed_float16`` / ``mixed_bfloat16`` model. Logits equal to
``-inf`` (the masking convention of :class:`~bert4keras_ng.layers.GlobalPointer` and the CRF)
are treated as "not a candidate": they drop out of every sum, and neither the loss nor its
gradient becomes NaN because of them.

Conventions (the same as Keras loss functions): ``fn(y_true, y_pred)``; the return value is
one loss per sample (Keras then averages it and applies ``sample_weight``), except where a
docstring says otherwise.

Contents
--------
- :func:`multilabel_categorical_crossentropy` — hard 0/1 labels (post 7359).
- :func:`sparse_multilabel_categorical_crossentropy` — positives given as integer indices
  (GPLinker style), optional ``mask_zero``.
- :func:`soft_multilabel_categorical_crossentropy` — labels in [0, 1] (post 9064).
- :func:`global_pointer_crossentropy` / :func:`sparse_global_pointer_crossentropy` — the
  GlobalPointer losses on (batch, heads, n, n) logits.
- :func:`global_pointer_kl` and :func:`rdrop_global_pointer_kl` — the symmetric "KL" between
  two GlobalPointer outputs (post 9039), e.g. for R-Drop.
- :func:`rdrop_kl` and :func:`rdrop_crossentropy` — R-Drop on an adjacently duplicated batch.
- :func:`cosent_loss` (vectors) and :func:`cosent_ranking_loss` (similarity scores).
- :func:`multiple_choice_crossentropy` — one score per choice, reshaped to (-1, k).
- :class:`MultipleChoiceCrossentropy`, :class:`CoSENTLoss` — serialisable Keras ``Loss``
  objects for the two parametrised losses (all the functions are registered too, so models
  compiled with them reload with ``keras.saving.load_model``).
- :func:`simcse_loss` / :class:`SimCSELoss` — unsupervised SimCSE InfoNCE on an adjacently
  duplicated batch.
- :func:`emo_loss` — EMO (post 9797), optionally mixed with crossentropy, with token masks.
- :func:`expected_accuracy_loss` — ``1 - p_target`` (post 9098; experimental).
- :func:`adversarial_training` — FGM on the token embedding matrix of a compiled model (the
  gradient penalty and VAT helpers are in :mod:`bert4keras_ng.adversarial`).
"""

import functools

import keras
import numpy as np
from keras import ops

__all__ = [
    "multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy",
    "soft_multilabel_categorical_crossentropy",
    "global_pointer_crossentropy",
    "sparse_global_pointer_crossentropy",
    "global_pointer_kl",
    "rdrop_global_pointer_kl",
    "rdrop_kl",
    "rdrop_crossentropy",
    "cosent_loss",
    "cosent_ranking_loss",
    "multiple_choice_crossentropy",
    "MultipleChoiceCrossentropy",
    "CoSENTLoss",
    "simcse_loss",
    "SimCSELoss",
    "emo_loss",
    "expected_accuracy_loss",
    "adversarial_training",
]

_NEG_INF = float("-inf")

# registered so that models compiled with these losses reload with keras.saving.load_model
_register = keras.saving.register_keras_serializable(package="bert4keras_ng")


# --------------------------------------------------------------------------- helpers


def _float32(x):
    x = ops.convert_to_tensor(x)
    if x.dtype != "float32":
        x = ops.cast(x, "float32")
    return x


def _static_shape(x):
    shape = getattr(x, "shape", None)
    if shape is None:  # Python lists and scalars
        shape = np.shape(x)
    return tuple(None if d is None else int(d) for d in shape)


def _check_same_shape(y_true, y_pred, fn_name):
    """Raise a clear ValueError when two statically known shapes disagree."""
    st, sp = _static_shape(y_true), _static_shape(y_pred)
    if len(st) != len(sp):
        raise ValueError(
            f"{fn_name}: `y_true` must have the same shape as `y_pred`; got "
            f"y_true.shape={st} and y_pred.shape={sp}."
        )
    for a, b in zip(st, sp):
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"{fn_name}: `y_true` must have the same shape as `y_pred`; got "
                f"y_true.shape={st} and y_pred.shape={sp}."
            )


def _masked_logsumexp(x, axis=-1, keepdims=False):
    """logsumexp that tolerates rows made only of ``-inf``.

    Such a row returns ``-inf`` with a zero (not NaN) gradient, which plain
    ``reduce_logsumexp`` does not guarantee.
    """
    m = ops.max(x, axis=axis, keepdims=True)
    m = ops.stop_gradient(ops.where(ops.isfinite(m), m, ops.zeros_like(m)))
    s = ops.sum(ops.exp(x - m), axis=axis, keepdims=True)
    positive = s > 0
    out = ops.log(ops.where(positive, s, ops.ones_like(s))) + m
    out = ops.where(positive, out, ops.full_like(out, _NEG_INF))
    if not keepdims:
        out = ops.squeeze(out, axis=axis)
    return out


def _logsumexp_with_zero(x):
    """log(1 + sum(exp(x))) over the last axis, i.e. logsumexp of [x, 0]."""
    zeros = ops.zeros_like(x[..., :1])
    return _masked_logsumexp(ops.concatenate([x, zeros], axis=-1), axis=-1)


def _neg_inf_like(x):
    return ops.full_like(x, _NEG_INF)


def _safe_log(x):
    """log(x) for x >= 0 with log(0) = -inf and a finite gradient everywhere."""
    positive = x > 0
    return ops.where(positive, ops.log(ops.where(positive, x, ops.ones_like(x))), _neg_inf_like(x))


# ------------------------------------------------------------- multilabel crossentropy


@_register
def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multilabel categorical crossentropy with hard 0/1 labels (kexue.fm post 7359).

    ``L = log(1 + sum_{neg} e^{s_i}) + log(1 + sum_{pos} e^{-s_j})`` over the last axis.
    ``y_pred`` are raw scores (no sigmoid / softmax); predict the classes with ``s > 0``.
    Scores equal to ``-inf`` are masked out of both sums.

    Args:
        y_true: 0/1 (or boolean) labels, same shape as ``y_pred``.
        y_pred: scores (..., num_classes).

    Returns:
        float32 loss of shape ``y_pred.shape[:-1]``.
    """
    _check_same_shape(y_true, y_pred, "multilabel_categorical_crossentropy")
    s = _float32(y_pred)
    y = ops.convert_to_tensor(y_true)
    positive = y if y.dtype == "bool" else ops.cast(y, "float32") > 0.5
    valid = s > _NEG_INF
    neg = ops.where(ops.logical_and(valid, ops.logical_not(positive)), s, _neg_inf_like(s))
    pos = ops.where(ops.logical_and(valid, positive), -s, _neg_inf_like(s))
    return _logsumexp_with_zero(neg) + _logsumexp_with_zero(pos)


@_register
def soft_multilabel_categorical_crossentropy(y_true, y_pred):
    """Multilabel categorical crossentropy with soft labels ``t`` in [0, 1] (post 9064).

    ``L = log(1 + sum_i t_i e^{-s_i}) + log(1 + sum_i (1 - t_i) e^{s_i})``; equals
    :func:`multilabel_categorical_crossentropy` for 0/1 labels. At the optimum
    ``t_i = sigmoid(2 s_i)``, so report probabilities as ``sigmoid(2 * s)``. Labels are never
    clipped; ``-inf`` scores are masked out of both sums.

    Returns:
        float32 loss of shape ``y_pred.shape[:-1]``.
    """
    _check_same_shape(y_true, y_pred, "soft_multilabel_categorical_crossentropy")
    s = _float32(y_pred)
    t = _float32(y_true)
    valid = s > _NEG_INF
    neg = ops.where(valid, s + _safe_log(1.0 - t), _neg_inf_like(s))
    pos = ops.where(valid, -s + _safe_log(t), _neg_inf_like(s))
    return _logsumexp_with_zero(neg) + _logsumexp_with_zero(pos)


@_register
def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False, epsilon=1e-7):
    """Sparse multilabel categorical crossentropy (GPLinker style).

    The positives of each row are given as ``K`` integer class indices instead of a 0/1 vector,
    which saves memory when there are many classes (e.g. the ``n * n`` cells of a
    GlobalPointer). Equivalent to :func:`multilabel_categorical_crossentropy` with the
    corresponding 0/1 labels (for distinct indices).

    Args:
        y_true: integer indices (..., K) of the positive classes.
        y_pred: scores (..., num_classes).
        mask_zero: if True, index 0 is padding (class 0 is then never a real positive and is
            also excluded from the negatives, as in GPLinker).
        epsilon: lower clip of ``1 - e^{aux}`` (float32).

    Returns:
        float32 loss of shape ``y_pred.shape[:-1]``.
    """
    st, sp = _static_shape(y_true), _static_shape(y_pred)
    if len(st) != len(sp):
        raise ValueError(
            "sparse_multilabel_categorical_crossentropy: `y_true` must be integer indices of "
            "shape y_pred.shape[:-1] + (K,); got "
            f"y_true.shape={st} and y_pred.shape={sp}."
        )
    for a, b in zip(st[:-1], sp[:-1]):
        if a is not None and b is not None and a != b:
            raise ValueError(
                "sparse_multilabel_categorical_crossentropy: the leading dimensions of "
                f"`y_true` and `y_pred` must agree; got y_true.shape={st} and "
                f"y_pred.shape={sp}."
            )
    s = _float32(y_pred)
    idx = ops.cast(y_true, "int32")
    zeros = ops.zeros_like(s[..., :1])
    if mask_zero:
        # class 0 is padding: it is neither a positive nor a negative
        s = ops.concatenate([ops.full_like(zeros, _NEG_INF), s[..., 1:]], axis=-1)
    s_ext = ops.concatenate([s, zeros], axis=-1)  # threshold class appended
    picked = ops.take_along_axis(s_ext, idx, axis=-1)  # (..., K)
    valid = picked > _NEG_INF  # padding (mask_zero) and masked cells drop out
    pos_loss = _logsumexp_with_zero(ops.where(valid, -picked, _neg_inf_like(picked)))
    all_loss = _masked_logsumexp(s_ext, axis=-1)
    aux = _masked_logsumexp(ops.where(valid, picked, _neg_inf_like(picked)), axis=-1) - all_loss
    aux = ops.clip(1.0 - ops.exp(aux), epsilon, 1.0)
    neg_loss = all_loss + ops.log(aux)
    return pos_loss + neg_loss


# ---------------------------------------------------------------------- GlobalPointer


def _check_rank4(y_pred, fn_name):
    if len(_static_shape(y_pred)) != 4:
        raise ValueError(
            f"{fn_name}: `y_pred` must be GlobalPointer logits of shape (batch, heads, n, n); "
            f"got shape {_static_shape(y_pred)}."
        )


@_register
def global_pointer_crossentropy(y_true, y_pred):
    """GlobalPointer loss (post 8373): multilabel CE over the ``n * n`` cells of every head.

    Args:
        y_true: 0/1 labels (batch, heads, n, n); 1 at every gold (type, start, end).
        y_pred: GlobalPointer logits (batch, heads, n, n), masked cells ``-inf``.

    Returns:
        float32 loss per sample (batch,): the mean over heads, so that Keras' mean over the
        batch equals bert4keras' mean over the flattened ``batch * heads`` rows.
    """
    _check_rank4(y_pred, "global_pointer_crossentropy")
    _check_same_shape(y_true, y_pred, "global_pointer_crossentropy")
    shape = ops.shape(y_pred)
    s = ops.reshape(_float32(y_pred), (shape[0], shape[1], -1))
    y = ops.reshape(y_true, (shape[0], shape[1], -1))
    return ops.mean(multilabel_categorical_crossentropy(y, s), axis=1)


@_register
def sparse_global_pointer_crossentropy(y_true, y_pred, mask_zero=True):
    """Sparse GlobalPointer loss (GPLinker): gold spans given as (start, end) index pairs.

    Args:
        y_true: integers (batch, heads, K, 2); row ``k`` of head ``h`` is a gold span
            ``(start, end)``; padding rows are ``(0, 0)`` (dropped when ``mask_zero``).
        y_pred: GlobalPointer logits (batch, heads, n, n).
        mask_zero: treat the flat cell 0 (span (0, 0), the [CLS] position) as padding.

    Returns:
        float32 loss per sample (batch,), the mean over heads (GPLinker sums this over the
        batch instead of averaging: a constant factor).
    """
    _check_rank4(y_pred, "sparse_global_pointer_crossentropy")
    st = _static_shape(y_true)
    if len(st) != 4 or (st[-1] is not None and st[-1] != 2):
        raise ValueError(
            "sparse_global_pointer_crossentropy: `y_true` must be integer spans of shape "
            f"(batch, heads, K, 2); got shape {st}."
        )
    shape = ops.shape(y_pred)
    idx = ops.cast(y_true, "int32")
    n = ops.cast(shape[2], "int32")
    flat = idx[..., 0] * n + idx[..., 1]  # (b, heads, K)
    s = ops.reshape(_float32(y_pred), (shape[0], shape[1], -1))
    loss = sparse_multilabel_categorical_crossentropy(flat, s, mask_zero=mask_zero)
    return ops.mean(loss, axis=1)


@_register
def global_pointer_kl(s, t):
    """Symmetric "KL" between two GlobalPointer outputs (post 9039).

    ``D(s, t) = sum_i (sigmoid(s_i) - sigmoid(t_i)) * (s_i - t_i)``, the sum of per-cell
    symmetric binary KL divergences. Cells where either input is ``-inf`` are excluded.

    Returns:
        float32 value per sample: the sum over all axes but the first.
    """
    _check_same_shape(s, t, "global_pointer_kl")
    s, t = _float32(s), _float32(t)
    valid = ops.logical_and(s > _NEG_INF, t > _NEG_INF)
    s = ops.where(valid, s, ops.zeros_like(s))
    t = ops.where(valid, t, ops.zeros_like(t))
    d = (ops.sigmoid(s) - ops.sigmoid(t)) * (s - t)
    d = ops.where(valid, d, ops.zeros_like(d))
    rank = len(_static_shape(d))
    if rank <= 1:
        return d
    return ops.sum(d, axis=tuple(range(1, rank)))


def _check_even_batch(x, fn_name):
    b = _static_shape(x)[0] if _static_shape(x) else None
    if b is not None and b % 2:
        raise ValueError(
            f"{fn_name}: R-Drop expects every sample duplicated adjacently (rows 2m and 2m+1), "
            f"so the batch size must be even; got {b}."
        )


@_register
def rdrop_global_pointer_kl(y_pred):
    """R-Drop consistency term for GlobalPointer on an adjacently duplicated batch.

    Rows ``2m`` and ``2m + 1`` are two dropout passes over the same input; returns
    :func:`global_pointer_kl` of each pair, shape (batch // 2,).
    """
    _check_even_batch(y_pred, "rdrop_global_pointer_kl")
    return global_pointer_kl(y_pred[::2], y_pred[1::2])


@_register
def rdrop_kl(y_pred, from_logits=False):
    """Symmetric KL of R-Drop (post 8496) on an adjacently duplicated batch.

    Args:
        y_pred: probabilities (or logits if ``from_logits``) of shape (batch, ..., classes),
            rows ``2m`` and ``2m + 1`` being the two passes of sample ``m``.

    Returns:
        ``KL(p_2m || p_2m+1) + KL(p_2m+1 || p_2m)`` summed over the class axis, shape
        ``(batch // 2, ...)`` (float32).
    """
    _check_even_batch(y_pred, "rdrop_kl")
    x = _float32(y_pred)
    if from_logits:
        logp = x - _masked_logsumexp(x, axis=-1, keepdims=True)
    else:
        x = x / ops.sum(x, axis=-1, keepdims=True)
        logp = _safe_log(x)
    p = ops.exp(logp)
    la, lb = logp[::2], logp[1::2]
    pa, pb = p[::2], p[1::2]
    both = ops.logical_and(pa > 0, pb > 0)  # 0 * log 0 terms are 0; one-sided zeros ignored
    diff = ops.where(both, la - lb, ops.zeros_like(la))
    return ops.sum((pa - pb) * diff, axis=-1)


@_register
def rdrop_crossentropy(y_true, y_pred, alpha=4.0, from_logits=False):
    """Sparse categorical crossentropy plus the R-Drop term, per row (batch,).

    ``mean(rows) = mean CE + alpha / 4 * mean over pairs of the symmetric KL``, the formula of
    post 8496 (divided by 2) used by bert4keras' R-Drop examples. Labels are integer classes
    of shape (batch,) or (batch, 1); the batch must hold each sample twice, adjacently.
    """
    _check_even_batch(y_pred, "rdrop_crossentropy")
    x = _float32(y_pred)
    if from_logits:
        logp = x - _masked_logsumexp(x, axis=-1, keepdims=True)
    else:
        logp = _safe_log(x / ops.sum(x, axis=-1, keepdims=True))
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
    ce = -ops.take_along_axis(logp, labels, axis=-1)[:, 0]
    kl = rdrop_kl(x, from_logits=from_logits)
    kl = ops.reshape(ops.repeat(ops.reshape(kl, (-1, 1)), 2, axis=1), (-1,))
    return ce + alpha / 4.0 * kl


# --------------------------------------------------------------------- CoSENT, choices


@_register
def cosent_ranking_loss(y_true, scores):
    """CoSENT ranking loss on given pair scores (post 8847).

    ``L = log(1 + sum_{label_a < label_b} e^{s_a - s_b})``: every pair ranked higher by its
    label should get the higher score. Labels may be binary, ordinal or graded.

    Args:
        y_true: labels (m,) (or (m, 1)).
        scores: scores (m,) (or (m, 1)), e.g. ``20 * cos``.

    Returns:
        float32 scalar.
    """
    s = ops.reshape(_float32(scores), (-1,))
    y = ops.reshape(_float32(y_true), (-1,))
    st, ss = _static_shape(y), _static_shape(s)
    if st and ss and st[0] is not None and ss[0] is not None and st[0] != ss[0]:
        raise ValueError(
            f"cosent_ranking_loss: got {st[0]} labels for {ss[0]} scores; they must match."
        )
    diff = s[:, None] - s[None, :]  # [a, b] = s_a - s_b
    keep = y[:, None] < y[None, :]
    diff = ops.where(keep, diff, _neg_inf_like(diff))
    return _logsumexp_with_zero(ops.reshape(diff, (1, -1)))[0]


@_register
def cosent_loss(y_true, y_pred, scale=20.0):
    """CoSENT loss (post 8847) on sentence vectors of interleaved pairs.

    Args:
        y_true: labels (batch,) or (batch, 1); the label of pair ``m`` is read from row
            ``2m`` (both rows of a pair usually carry it).
        y_pred: sentence vectors (batch, dim); rows ``2m`` and ``2m + 1`` form pair ``m``.
        scale: lambda, 20 in the post.

    Returns:
        float32 scalar.
    """
    if len(_static_shape(y_pred)) != 2:
        raise ValueError(
            "cosent_loss: `y_pred` must be sentence vectors of shape (batch, dim); got shape "
            f"{_static_shape(y_pred)}."
        )
    _check_even_batch(y_pred, "cosent_loss")
    v = _float32(y_pred)
    norm2 = ops.sum(ops.square(v), axis=-1, keepdims=True)
    v = v * ops.rsqrt(ops.maximum(norm2, 1e-24))
    cos = ops.sum(v[::2] * v[1::2], axis=-1)
    labels = ops.reshape(y_true, (-1,))[::2]
    return cosent_ranking_loss(labels, scale * cos)


@_register
def multiple_choice_crossentropy(y_true, y_pred, num_choices):
    """Crossentropy for multiple-choice tasks scored one choice per row.

    ``y_pred`` holds one logit per (question, choice) row, the ``num_choices`` rows of a
    question being adjacent; it is reshaped to (-1, num_choices) and a softmax is taken over
    the choices. ``y_true`` is the index of the correct choice, either once per question
    (shape (questions,)) or repeated on every row of the question (shape (rows,), the
    bert4keras C3 convention). ``-inf`` logits mark absent choices.

    Use with ``compile`` via ``functools.partial(multiple_choice_crossentropy, num_choices=k)``.

    Returns:
        float32 loss per question (questions,).
    """
    k = int(num_choices)
    if k < 1:
        raise ValueError(f"multiple_choice_crossentropy: `num_choices` must be >= 1; got {k}.")
    sp = _static_shape(y_pred)
    if len(sp) == 2 and sp[-1] not in (None, 1):
        raise ValueError(
            "multiple_choice_crossentropy: `y_pred` must hold one score per row, shape "
            f"(rows,) or (rows, 1); got shape {sp}."
        )
    if sp and sp[0] is not None and sp[0] % k:
        raise ValueError(
            f"multiple_choice_crossentropy: {sp[0]} rows cannot be split into questions of "
            f"num_choices={k}."
        )
    s = ops.reshape(_float32(y_pred), (-1, k))
    labels = ops.reshape(ops.cast(y_true, "int32"), (ops.shape(s)[0], -1))[:, :1]
    logp = s - _masked_logsumexp(s, axis=-1, keepdims=True)
    return -ops.take_along_axis(logp, labels, axis=-1)[:, 0]


# ------------------------------------------------- serialisable parametrised losses


@_register
class MultipleChoiceCrossentropy(keras.losses.Loss):
    """:func:`multiple_choice_crossentropy` as a serialisable Keras loss with ``num_choices``."""

    def __init__(self, num_choices, name="multiple_choice_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(num_choices, bool) or int(num_choices) != num_choices or num_choices < 1:
            raise ValueError(
                f"MultipleChoiceCrossentropy: `num_choices` must be an integer >= 1; got "
                f"{num_choices!r}."
            )
        self.num_choices = int(num_choices)

    def call(self, y_true, y_pred):
        return multiple_choice_crossentropy(y_true, y_pred, self.num_choices)

    def get_config(self):
        config = super().get_config()
        config.update({"num_choices": self.num_choices})
        return config


@_register
class CoSENTLoss(keras.losses.Loss):
    """:func:`cosent_loss` as a serialisable Keras loss with its ``scale`` (lambda)."""

    def __init__(self, scale=20.0, name="cosent_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)

    def call(self, y_true, y_pred):
        return cosent_loss(y_true, y_pred, scale=self.scale)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale})
        return config


# ------------------------------------------------------ SimCSE, EMO, expected accuracy


def _l2_normalize(v, axis=-1):
    norm2 = ops.sum(ops.square(v), axis=axis, keepdims=True)
    return v * ops.rsqrt(ops.maximum(norm2, 1e-24))


@_register
def simcse_loss(y_true, y_pred, temperature=0.05):
    """Unsupervised SimCSE: ``-mean_i log softmax_j(cos(h_i, h_j+) / τ)[i]`` (arXiv 2104.08821).

    ``y_pred`` are sentence vectors (batch, dim) of an adjacently duplicated batch encoded with
    dropout on: rows ``2i`` (``h_i``) and ``2i + 1`` (``h_i+``) are the same sentence, the other
    sentences' second rows are the negatives.  ``y_true`` is ignored.  τ = 0.05.

    Returns:
        float32 scalar.
    """
    del y_true
    if len(_static_shape(y_pred)) != 2:
        raise ValueError(
            "simcse_loss: `y_pred` must be sentence vectors of shape (batch, dim); got shape "
            f"{_static_shape(y_pred)}."
        )
    _check_even_batch(y_pred, "simcse_loss")
    v = _l2_normalize(_float32(y_pred))
    logits = ops.matmul(v[::2], ops.transpose(v[1::2])) / float(temperature)
    log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    return -ops.mean(ops.diagonal(log_probs))


@_register
class SimCSELoss(keras.losses.Loss):
    """Serialisable :func:`simcse_loss` with its ``temperature`` (0.05)."""

    def __init__(self, temperature=0.05, name="simcse_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not float(temperature) > 0:
            raise ValueError(f"SimCSELoss: `temperature` must be > 0; got {temperature!r}.")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return simcse_loss(y_true, y_pred, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


def _probabilities(y_pred, from_logits):
    x = _float32(y_pred)
    return ops.softmax(x, axis=-1) if from_logits else x


def _masked_token_mean(per_token, mask, fn_name):
    """Per-sample mean over the token axes of ``per_token`` where ``mask`` is nonzero."""
    if mask is None:
        return per_token
    m = ops.cast(ops.convert_to_tensor(mask), "float32")
    _check_same_shape(m, per_token, f"{fn_name} (mask vs labels)")
    axes = tuple(range(1, len(_static_shape(per_token))))
    if not axes:
        return per_token * m
    total = ops.sum(per_token * m, axis=axes)
    return total / ops.maximum(ops.sum(m, axis=axes), 1.0)


def emo_loss(y_true, y_pred, embeddings, from_logits=True, crossentropy_weight=0.0, mask=None):
    """EMO: ``1 − ⟨Σ_i p_i ê_i, ê_t⟩ = Σ_i p_i (1 − cos(e_i, e_t))`` (kexue.fm post 9797).

    ``ê`` are the L2-normalised rows of a frozen embedding / LM-head matrix ``embeddings``
    (vocab, dim) (no gradient flows into it); the expected vector ``Σ_i p_i ê_i`` is formed first,
    so the cost is one (…, vocab) × (vocab, dim) product.  EMO needs a trained head and is usually
    mixed with crossentropy: the result is ``EMO + crossentropy_weight · CE``.

    Args:
        y_true: integer target ids, shape ``y_pred.shape[:-1]``.
        y_pred: logits (``from_logits=True``) or probabilities (…, vocab).
        embeddings: (vocab, dim) tensor or variable, e.g. ``layer.embeddings`` of the tied head.
        mask: optional (…) token weights (0 = padding / prompt).  Given, the loss of each sample
            is the masked mean over its tokens (seq2seq / LM use), shape ``(batch,)``; without
            it the per-token loss of shape ``y_pred.shape[:-1]`` is returned.
    """
    probs = _probabilities(y_pred, from_logits)
    e = _l2_normalize(ops.stop_gradient(_float32(embeddings)))
    ys, ps, es = _static_shape(y_true), _static_shape(y_pred), _static_shape(e)
    if len(es) != 2 or (es[0] is not None and ps[-1] is not None and es[0] != ps[-1]):
        raise ValueError(
            f"emo_loss: `embeddings` must be (vocab, dim) with vocab = y_pred.shape[-1] = "
            f"{ps[-1]}; got shape {es}."
        )
    if len(ys) != len(ps) - 1:
        raise ValueError(
            f"emo_loss: `y_true` must be integer ids of shape y_pred.shape[:-1] = {ps[:-1]}; "
            f"got shape {ys}."
        )
    ids = ops.cast(y_true, "int32")
    expected = ops.matmul(probs, e)  # (..., dim): Σ_i p_i ê_i
    target = ops.take(e, ids, axis=0)
    loss = 1.0 - ops.sum(expected * target, axis=-1)
    if crossentropy_weight:
        ce = keras.losses.sparse_categorical_crossentropy(
            ids, _float32(y_pred), from_logits=from_logits)
        loss = loss + float(crossentropy_weight) * ce
    return _masked_token_mean(loss, mask, "emo_loss")


@_register
def expected_accuracy_loss(y_true, y_pred, from_logits=False):
    """Expected-accuracy loss ``1 − p_target`` (post 9098). **Experimental.**

    Accuracy is not differentiable; its expectation under the model's own distribution, the
    target's probability, is.  Its gradient vanishes for confidently wrong samples, so start
    from a crossentropy-trained model.  ``y_true`` are integer ids of shape
    ``y_pred.shape[:-1]``; returns the per-sample loss.
    """
    probs = _probabilities(y_pred, from_logits)
    ids = ops.cast(y_true, "int32")
    if len(_static_shape(ids)) == len(_static_shape(probs)):  # (batch, 1) labels
        ids = ops.squeeze(ids, axis=-1)
    target = ops.take_along_axis(probs, ops.expand_dims(ids, -1), axis=-1)
    return 1.0 - ops.squeeze(target, axis=-1)


# ------------------------------------------------------------------------------- FGM


def _find_layer(model, name):
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return layer
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers"):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0):
    """FGM adversarial training on the embedding matrix (posts 7234, 7466). TF backend only.

    Replaces ``model.train_step`` so that every training step

    1. computes the loss and its gradient ``g`` with respect to the embedding matrix ``E``
       of the layer ``embedding_name`` (searched recursively in nested models);
    2. adds ``delta = epsilon * g / ||g||`` (Frobenius norm of the whole matrix) to ``E``;
    3. runs the model's normal train step at the perturbed point (loss, gradients and the
       optimizer update all come from the adversarial loss, as in bert4keras);
    4. subtracts ``delta`` again.

    A step costs about twice a normal one. Works with ``jit_compile=True``, loss-scale
    optimizers (a non-finite ``g`` gives ``delta = 0``) and any compiled loss. Call it after
    ``model.compile(...)``; it returns the model. The loss metrics reported by ``fit`` are
    those of the adversarial pass; the extra clean pass leaves the metric states untouched.

    This uses ``tf.GradientTape`` and is specific to the TensorFlow backend (the JAX train
    step is stateless); other backends raise ``NotImplementedError``.
    """
    if keras.config.backend() != "tensorflow":
        raise NotImplementedError(
            "adversarial_training is implemented for the TensorFlow backend only; current "
            f"backend is {keras.config.backend()!r}."
        )
    import tensorflow as tf

    if not isinstance(model, keras.Model):
        raise ValueError(f"adversarial_training: `model` must be a keras.Model; got {type(model)}.")
    if float(epsilon) < 0:
        raise ValueError(f"adversarial_training: `epsilon` must be >= 0; got {epsilon}.")
    layer = _find_layer(model, embedding_name)
    if layer is None:
        raise ValueError(
            f"adversarial_training: no layer named {embedding_name!r} in model "
            f"{model.name!r} (embedding_name must name the token Embedding layer)."
        )
    embeddings = getattr(layer, "embeddings", None)
    if embeddings is None:
        weights = [w for w in layer.trainable_weights]
        if len(weights) != 1:
            raise ValueError(
                f"adversarial_training: layer {embedding_name!r} has no `embeddings` variable."
            )
        embeddings = weights[0]
    eps = float(epsilon)
    base_train_step = model.train_step
    call_has_training = getattr(model, "_call_has_training_arg", True)
    # Keras' wrapper passes `training` only to compute_loss overrides that accept it
    compute_loss = getattr(model, "_compute_loss", None)
    if compute_loss is None:
        compute_loss = model.compute_loss
    else:
        compute_loss = functools.partial(compute_loss, training=True)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        metric_vars = list(model.metrics_variables)
        saved = [tf.identity(v.value) for v in metric_vars]
        with tf.GradientTape() as tape:
            tape.watch(embeddings.value)
            y_pred = model(x, training=True) if call_has_training else model(x)
            loss = compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            if model.optimizer is not None:
                loss = model.optimizer.scale_loss(loss)
        grad = tape.gradient(loss, embeddings.value)
        for v, value in zip(metric_vars, saved):  # the clean pass must not count in metrics
            v.assign(value)
        if grad is None:
            delta = tf.zeros_like(embeddings.value)
        else:
            grad = tf.cast(tf.convert_to_tensor(grad), embeddings.dtype)
            norm = tf.norm(grad)
            ok = tf.math.is_finite(norm) & (norm > 0)
            delta = tf.where(ok, eps * grad / tf.where(ok, norm, 1.0), tf.zeros_like(grad))
        embeddings.assign_add(delta)
        logs = base_train_step(data)
        embeddings.assign_sub(delta)
        return logs

    model.train_step = train_step
    model.train_function = None  # rebuilt by the next fit()
    return model
