"""Task heads: GlobalPointer, EfficientGlobalPointer and a linear-chain CRF.

All three take the token mask through Keras implicit masking (a boolean (batch, n) mask, True
= real token) and emit no mask themselves. Masked scores are set to ``-inf`` with ``where``,
which the losses in :mod:`bert4keras_ng.losses` (and the CRF's own losses) recognise as "not a
candidate". Position tables are computed in float32 and cast to the compute dtype, so the
layers run under ``mixed_float16`` / ``mixed_bfloat16``; the CRF statistics are float32.
"""

import math

import keras
import numpy as np
from keras import ops

from bert4keras_ng.backend import apply_rotary_position_embeddings, sinusoidal_embeddings

__all__ = ["GlobalPointer", "EfficientGlobalPointer", "ConditionalRandomField"]

_PACKAGE = "bert4keras_ng"


def _positive_int(name, value, owner):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive integer; got {value!r}.")
    return int(value)


def _check_bool(name, value, owner):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: `{name}` must be True or False; got {value!r}.")
    return bool(value)


def _span_mask(mask, n, tril_mask):
    """Boolean (b or 1, 1, n, n) validity of span cells (i = start, j = end), or None."""
    valid = None
    if mask is not None:
        mask = ops.cast(mask, "bool")
        valid = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
    if tril_mask:
        idx = ops.arange(n)
        upper = (idx[:, None] <= idx[None, :])[None, None]  # start <= end
        valid = upper if valid is None else ops.logical_and(valid, upper)
    return valid


class _PointerBase(keras.layers.Layer):
    """Shared arguments, masking and config of the two GlobalPointer variants."""

    def __init__(
        self,
        heads,
        head_size,
        RoPE=True,
        use_bias=True,
        tril_mask=True,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.heads = _positive_int("heads", heads, owner)
        self.head_size = _positive_int("head_size", head_size, owner)
        self.RoPE = _check_bool("RoPE", RoPE, owner)
        self.use_bias = _check_bool("use_bias", use_bias, owner)
        self.tril_mask = _check_bool("tril_mask", tril_mask, owner)
        if self.RoPE and self.head_size % 2:
            raise ValueError(
                f"{owner}: `head_size` must be even when RoPE=True (rotary pairs); "
                f"got {head_size}."
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _check_input(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (batch, seq_len, hidden); "
                f"got {tuple(input_shape)}."
            )

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _rope(self, q, k):
        if not self.RoPE:
            return q, k
        n = ops.shape(q)[1]
        table = sinusoidal_embeddings(ops.arange(n, dtype="float32"), self.head_size)
        return apply_rotary_position_embeddings(table, q, k)  # table cast to q/k dtype

    def _mask_logits(self, logits, mask):
        valid = _span_mask(mask, ops.shape(logits)[-1], self.tril_mask)
        if valid is None:
            return logits
        return ops.where(valid, logits, ops.cast(float("-inf"), logits.dtype))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.heads, input_shape[1], input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "heads": self.heads,
                "head_size": self.head_size,
                "RoPE": self.RoPE,
                "use_bias": self.use_bias,
                "tril_mask": self.tril_mask,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalPointer(_PointerBase):
    """GlobalPointer span scorer (kexue.fm post 8373).

    Input ``h`` (batch, n, hidden) with an optional boolean mask (batch, n); output logits
    (batch, heads, n, n) where ``[b, a, i, j]`` scores "tokens i..j form an entity of type a".
    A Dense layer makes, for every head, a query (first ``head_size`` columns of its block)
    and a key (last ``head_size``); RoPE (interleaved, positions 0..n-1) rotates both; the
    score is ``<q_i, k_j> / sqrt(head_size)``. Cells touching padding, and with
    ``tril_mask`` the cells with start > end, are ``-inf``. Train with
    :func:`bert4keras_ng.losses.global_pointer_crossentropy`; predict the cells with score > 0.

    Args:
        heads: number of entity types.
        head_size: query/key size per type (even when RoPE).
        RoPE: rotary position encoding on queries and keys (without it spans lose positions).
        use_bias: bias in the Dense projection.
        tril_mask: mask spans whose start lies after their end.
        kernel_initializer: initializer of the projection kernel.

    Weights: ``dense/kernel`` (hidden, heads * 2 * head_size), ``dense/bias``.
    """

    def build(self, input_shape):
        self._check_input(input_shape)
        self.dense = self._dense(self.heads * self.head_size * 2, "dense")
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        x = self.dense(inputs)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], self.heads, 2 * self.head_size))
        q, k = x[..., : self.head_size], x[..., self.head_size :]
        q, k = self._rope(q, k)
        q = q * ops.cast(1.0 / math.sqrt(self.head_size), q.dtype)
        logits = ops.einsum("bmhd,bnhd->bhmn", q, k)
        return self._mask_logits(logits, mask)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EfficientGlobalPointer(_PointerBase):
    """Parameter-efficient GlobalPointer (kexue.fm post 8877); same arguments and output.

    ``h' = Dense_p(h)`` (width ``2 * head_size``): queries are its even columns, keys its odd
    columns, RoPE on both, ``base(i, j) = <q_i, k_j> / sqrt(head_size)`` shared by all types;
    ``t = Dense_q(h') / 2`` (width ``2 * heads``) adds a per-type start term (odd channel
    ``2a + 1``, row i) and end term (even channel ``2a``, column j):
    ``s_a(i, j) = base(i, j) + t_{2a+1}(i) + t_{2a}(j)``. Same masks as GlobalPointer.

    Weights: ``p_dense/kernel`` (hidden, 2 * head_size), ``p_dense/bias``,
    ``q_dense/kernel`` (2 * head_size, 2 * heads), ``q_dense/bias``.
    """

    def build(self, input_shape):
        self._check_input(input_shape)
        self.p_dense = self._dense(self.head_size * 2, "p_dense")
        self.p_dense.build(input_shape)
        self.q_dense = self._dense(self.heads * 2, "q_dense")
        self.q_dense.build(tuple(input_shape[:-1]) + (self.head_size * 2,))
        self.built = True

    def call(self, inputs, mask=None):
        h = self.p_dense(inputs)
        q, k = self._rope(h[..., ::2], h[..., 1::2])
        q = q * ops.cast(1.0 / math.sqrt(self.head_size), q.dtype)
        base = ops.einsum("bmd,bnd->bmn", q, k)
        t = ops.transpose(self.q_dense(h), (0, 2, 1)) * ops.cast(0.5, h.dtype)  # (b, 2H, n)
        logits = base[:, None] + t[:, 1::2, :, None] + t[:, ::2, None, :]
        return self._mask_logits(logits, mask)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionalRandomField(keras.layers.Layer):
    """Linear-chain CRF as a loss layer.

    The layer passes the emission scores (batch, n, num_labels) through unchanged, except
    that padded steps (from the implicit Keras mask) become ``-inf`` in every class; it emits
    no mask. Its loss and metric methods recover the valid steps as "no class is -inf" and
    assume right padding (valid steps form a prefix). Use::

        crf = ConditionalRandomField(lr_multiplier=1000)
        output = crf(Dense(num_labels)(h))
        model.compile(loss=crf.sparse_loss, metrics=[crf.sparse_accuracy], ...)
        decoder = crf.viterbi_decoder()          # or ViterbiDecoder(crf.transitions())

    Everything inside the losses is float32, whatever the emission dtype. A model compiled
    with these bound-method losses saves to ``.keras`` but must be reloaded with
    ``keras.saving.load_model(path, compile=False)`` and compiled again with the reloaded
    layer's methods (Keras cannot serialise bound methods).

    Args:
        lr_multiplier: the transition matrix is stored divided by ``lr_multiplier`` and used
            multiplied by it, which multiplies its effective learning rate (Adam-type
            optimisers) by ``lr_multiplier``.

    Weights: ``trans`` (num_labels, num_labels), ``trans[i, j]`` scoring label i -> label j.
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(lr_multiplier, bool) or not isinstance(
            lr_multiplier, (int, float, np.integer, np.floating)
        ) or not lr_multiplier > 0:
            raise ValueError(
                "ConditionalRandomField: `lr_multiplier` must be a positive number; got "
                f"{lr_multiplier!r}."
            )
        self.lr_multiplier = lr_multiplier

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "ConditionalRandomField expects emissions of shape (batch, seq_len, "
                f"num_labels) with a known num_labels; got {tuple(input_shape)}."
            )
        self.num_labels = int(input_shape[-1])
        self._trans = self.add_weight(
            name="trans",
            shape=(self.num_labels, self.num_labels),
            initializer="glorot_uniform",
        )
        if self.lr_multiplier != 1:
            self._trans.assign(self._trans.value / self.lr_multiplier)
        self.built = True

    @property
    def trans(self):
        """The effective transition matrix (float32 tensor): ``lr_multiplier * stored``."""
        t = ops.cast(ops.convert_to_tensor(self._trans.value), "float32")
        if self.lr_multiplier != 1:
            t = t * float(self.lr_multiplier)
        return t

    def transitions(self):
        """The effective transition matrix as a NumPy array (for Viterbi decoding)."""
        return np.asarray(ops.convert_to_numpy(self.trans))

    def viterbi_decoder(self, starts=None, ends=None):
        """A :class:`bert4keras_ng.decoders.ViterbiDecoder` with the current transitions."""
        from bert4keras_ng.decoders import ViterbiDecoder

        return ViterbiDecoder(self.transitions(), starts=starts, ends=ends)

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs
        mask = ops.cast(mask, "bool")[:, :, None]
        return ops.where(mask, inputs, ops.cast(float("-inf"), inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    # ------------------------------------------------------------------ losses
    def _prepare(self, y_pred, fn_name):
        if not self.built:
            raise ValueError(f"ConditionalRandomField.{fn_name}: the layer is not built yet.")
        shape = tuple(y_pred.shape)
        if len(shape) != 3 or (shape[-1] is not None and shape[-1] != self.num_labels):
            raise ValueError(
                f"ConditionalRandomField.{fn_name}: `y_pred` must be the layer output of shape "
                f"(batch, seq_len, {self.num_labels}); got {shape}."
            )
        e = ops.cast(y_pred, "float32")
        valid = ops.all(e > float("-inf"), axis=-1)  # (b, n)
        e = ops.where(valid[..., None], e, ops.zeros_like(e))
        return e, valid

    def _sparse_labels(self, y_true, y_pred, fn_name):
        st, sp = tuple(y_true.shape), tuple(y_pred.shape)
        if len(st) == 3 and st[-1] == 1:
            y_true = y_true[..., 0]
            st = st[:2]
        ok = len(st) == 2 and all(
            a is None or b is None or a == b for a, b in zip(st, sp[:2])
        )
        if not ok:
            raise ValueError(
                f"ConditionalRandomField.{fn_name}: sparse labels must be integers of shape "
                f"(batch, seq_len) or (batch, seq_len, 1) matching y_pred {sp}; got "
                f"{tuple(y_true.shape)}."
            )
        return ops.cast(y_true, "int32")

    def _check_dense_labels(self, y_true, y_pred, fn_name):
        st, sp = tuple(y_true.shape), tuple(y_pred.shape)
        ok = len(st) == 3 and all(a is None or b is None or a == b for a, b in zip(st, sp))
        if not ok:
            raise ValueError(
                f"ConditionalRandomField.{fn_name}: dense labels must be one-hot of shape "
                f"(batch, seq_len, num_labels) = {sp}; got {st} (use sparse_loss for integer "
                "labels)."
            )

    def target_score(self, y_true, emissions, valid):
        """Unnormalised score of the labelled path (float32), one-hot ``y_true``."""
        y = ops.where(valid[..., None], ops.cast(y_true, "float32"), 0.0)
        point = ops.sum(y * emissions, axis=(1, 2))
        trans = ops.einsum("bni,ij,bnj->b", y[:, :-1], self.trans, y[:, 1:])
        return point + trans

    def log_partition(self, emissions, valid):
        """log Z by the forward algorithm (float32), holding the state over masked steps."""
        trans = self.trans[None]  # (1, C, C)

        def advance(alpha, e_t, m_t):
            nxt = ops.logsumexp(alpha[:, :, None] + trans, axis=1) + e_t
            return ops.where(m_t[:, None], nxt, alpha)

        if keras.config.backend() == "tensorflow":
            # a while loop with a bound: differentiable under XLA (fixed-size accumulators)
            n = ops.shape(emissions)[1]

            def body(t, alpha):
                e_t = ops.take(emissions, t, axis=1)
                m_t = ops.take(valid, t, axis=1)
                return t + 1, advance(alpha, e_t, m_t)

            _, alpha = ops.while_loop(
                lambda t, alpha: t < n, body, (1, emissions[:, 0]), maximum_iterations=n - 1
            )
        else:  # jax.lax.while_loop has no reverse-mode gradient; scan does

            def step(alpha, inputs):
                alpha = advance(alpha, *inputs)
                return alpha, alpha

            xs = (ops.transpose(emissions[:, 1:], (1, 0, 2)), ops.transpose(valid[:, 1:], (1, 0)))
            alpha, _ = ops.scan(step, emissions[:, 0], xs)
        return ops.logsumexp(alpha, axis=-1)

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood per sample (batch,) with one-hot labels (batch, n, C)."""
        self._check_dense_labels(y_true, y_pred, "dense_loss")
        e, valid = self._prepare(y_pred, "dense_loss")
        loss = self.log_partition(e, valid) - self.target_score(y_true, e, valid)
        return ops.where(ops.any(valid, axis=1), loss, ops.zeros_like(loss))

    def sparse_loss(self, y_true, y_pred):
        """Negative log-likelihood per sample (batch,) with integer labels (batch, n)."""
        labels = self._sparse_labels(y_true, y_pred, "sparse_loss")
        e, valid = self._prepare(y_pred, "sparse_loss")
        one_hot = ops.one_hot(labels, self.num_labels, dtype="float32")
        loss = self.log_partition(e, valid) - self.target_score(one_hot, e, valid)
        return ops.where(ops.any(valid, axis=1), loss, ops.zeros_like(loss))

    def sparse_accuracy(self, y_true, y_pred):
        """Per-frame accuracy of the emission argmax over valid steps (scalar, float32)."""
        labels = self._sparse_labels(y_true, y_pred, "sparse_accuracy")
        e, valid = self._prepare(y_pred, "sparse_accuracy")
        hit = ops.logical_and(ops.equal(ops.cast(ops.argmax(e, axis=-1), "int32"), labels), valid)
        total = ops.sum(ops.cast(valid, "float32"))
        return ops.sum(ops.cast(hit, "float32")) / ops.maximum(total, 1.0)

    def dense_accuracy(self, y_true, y_pred):
        """Per-frame accuracy with one-hot labels (scalar, float32)."""
        self._check_dense_labels(y_true, y_pred, "dense_accuracy")
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"lr_multiplier": self.lr_multiplier})
        return config
