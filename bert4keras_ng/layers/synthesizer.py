"""Synthesizer attention (Tay et al. 2020, arXiv 2005.00743; kexue.fm "Google新作Synthesizer").

Attention weights that are not (only) token-pair dot products, per head, for sequences of at
most ``max_length`` = ℓ tokens:

- ``dense``: B_i = W₂ ReLU(W₁ x_i + b₁) + b₂ ∈ ℝ^ℓ, logits B[:, :n]; factorised (``dense_factors
  =(a, b)``, a·b = ℓ): two narrower heads, tiled and multiplied element-wise;
- ``random``: a learned (or, ``random_trainable=False``, fixed) ℓ×ℓ matrix R, logits R[:n, :n];
  factorised (``random_rank=k``): R = R₁R₂ᵀ with R₁, R₂ ∈ ℝ^{ℓ×k};
- ``dot``: the usual q·kᵀ/√d.

Several kinds mix as softmax(Σ_m α_m B_m) with learned α (per head, initialised 1/M).  Padded keys
(the input mask) and, with ``causal=True``, keys j > i get −∞ before the softmax; the output is
softmax(·)·(X W_v) → o_dense.  With ``p_bias='rotary'`` (inputs ``[x, rotary table]``) the dot
term rotates q and k as RoPE attention does; the synthetic terms take no position input.
"""

import math

import keras
from keras import ops

from bert4keras_ng.backend import (
    apply_rotary_position_embeddings,
    attention_normalize,
    relative_distances,
)
from bert4keras_ng.layers.base import build_dense, check_choice, check_input_count, register

SYNTHESIZER_KINDS = ("dense", "random", "dot")


@register
class SynthesizerAttention(keras.layers.Layer):
    """Synthesizer self-attention softmax(Σ_m α_m B_m)·XW_v, B dense / random / dot (2005.00743).

    call(x, mask=None) or call([x, table], mask=None, p_bias='rotary'): x (b, n, d) with
    n <= max_length, table the (b|1, n, d_head) RoPE table of the dot term; returns
    (b, n, out_dim or d). Weights named like MultiHeadAttention's (q/k/v/o_dense) are the ones
    a checkpoint of dot-product attention can fill; :data:`SYNTHETIC_WEIGHTS` are the others.
    """

    SYNTHETIC_WEIGHTS = ("dense_hidden/*", "dense_logits_*", "random_*", "mixture")

    def __init__(self, heads, head_size, max_length, kinds=("dense",), dense_units=None,
                 dense_factors=None, random_rank=None, random_trainable=True, causal=False,
                 out_dim=None, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        bad = [k for k in kinds if k not in SYNTHESIZER_KINDS]
        if not kinds or bad or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be distinct names from {SYNTHESIZER_KINDS}; got {kinds}.")
        if dense_factors is not None:
            a, b = (int(v) for v in dense_factors)
            if a * b != max_length:
                raise ValueError(f"dense_factors {dense_factors} must multiply to max_length="
                                 f"{max_length}.")
            dense_factors = (a, b)
        self.heads, self.head_size, self.max_length = int(heads), int(head_size), int(max_length)
        self.kinds = kinds
        self.dense_units = dense_units
        self.dense_factors = dense_factors
        self.random_rank = random_rank
        self.random_trainable = bool(random_trainable)
        self.causal = bool(causal)
        self.out_dim = out_dim
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]  # [x, rotary table]
        h, s, ell = self.heads, self.head_size, self.max_length
        common = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer)
        self.v_dense = build_dense(self, "v_dense", h * s, input_shape, **common)
        self.o_dense = build_dense(self, "o_dense", self.out_dim or input_shape[-1],
                                   (None, None, h * s), **common)
        if "dense" in self.kinds:
            units = self.dense_units or s
            self.dense_hidden = build_dense(self, "dense_hidden", h * units, input_shape,
                                            activation="relu", **common)
            widths = self.dense_factors or (ell,)
            self.dense_heads = [
                build_dense(self, f"dense_logits_{i}", h * w, (None, None, h * units), **common)
                for i, w in enumerate(widths)]
        if "random" in self.kinds:
            init = keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.random_rank or ell))
            shapes = [(h, ell, ell)] if self.random_rank is None else [
                (h, ell, self.random_rank), (h, ell, self.random_rank)]
            self.random_weights = [
                self.add_weight(name=f"random_{i}", shape=shape, initializer=init,
                                trainable=self.random_trainable)
                for i, shape in enumerate(shapes)]
        if "dot" in self.kinds:
            self.q_dense = build_dense(self, "q_dense", h * s, input_shape, **common)
            self.k_dense = build_dense(self, "k_dense", h * s, input_shape, **common)
        if len(self.kinds) > 1:
            self.mixture = self.add_weight(
                name="mixture", shape=(h, len(self.kinds)),
                initializer=keras.initializers.Constant(1.0 / len(self.kinds)))
        self.built = True

    def _heads(self, x, width):
        b, n = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (b, n, self.heads, width)), (0, 2, 1, 3))

    def _logits(self, kind, x, n, table=None):
        """(b|1, heads, n, n) logits of one kind; ``table`` rotates the dot term (RoPE)."""
        if kind == "dense":
            hidden = self.dense_hidden(x)
            parts = [self._heads(layer(hidden), layer.units // self.heads)
                     for layer in self.dense_heads]
            if len(parts) == 2:  # factorised: tile(A, b) ⊙ repeat(B, a), width a·b = ℓ
                a, b = self.dense_factors
                full = ops.tile(parts[0], (1, 1, 1, b)) * ops.repeat(parts[1], a, axis=-1)
            else:
                full = parts[0]
            return full[..., :n]
        if kind == "random":
            if self.random_rank is None:
                full = ops.convert_to_tensor(self.random_weights[0])
            else:
                r1, r2 = self.random_weights
                full = ops.einsum("hik,hjk->hij", r1, r2)
            return ops.cast(full[None, :, :n, :n], self.compute_dtype)
        b = ops.shape(x)[0]
        q, k = (ops.reshape(layer(x), (b, n, self.heads, self.head_size))
                for layer in (self.q_dense, self.k_dense))
        if table is not None:
            q, k = apply_rotary_position_embeddings(table, q, k)
        return ops.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.head_size)

    def call(self, inputs, mask=None, p_bias=None):
        check_choice("p_bias", p_bias, (None, "rotary"))
        table = None
        if p_bias == "rotary":
            check_input_count(self, inputs, 2, "[x, rotary table]")
            inputs, table = inputs
            mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        n_static = inputs.shape[1]
        if n_static is not None and n_static > self.max_length:
            raise ValueError(f"SynthesizerAttention: sequence length {n_static} exceeds "
                             f"max_length={self.max_length}.")
        n = ops.shape(inputs)[1]
        logits = None
        for m, kind in enumerate(self.kinds):
            part = self._logits(kind, inputs, n, table)
            if len(self.kinds) > 1:
                part = part * ops.cast(self.mixture[None, :, m, None, None], part.dtype)
            logits = part if logits is None else logits + part
        keep = None
        if mask is not None:
            keep = ops.cast(mask, "bool")[:, None, None, :]
        if self.causal:
            causal = (relative_distances(n, n) <= 0)[None, None]
            keep = causal if keep is None else ops.logical_and(keep, causal)
        probs = attention_normalize(logits, keep, -1, "softmax")
        v = self._heads(self.v_dense(inputs), self.head_size)
        o = ops.transpose(ops.einsum("bhij,bhjd->bhid", ops.cast(probs, v.dtype), v), (0, 2, 1, 3))
        b = ops.shape(inputs)[0]
        return self.o_dense(ops.reshape(o, (b, n, self.heads * self.head_size)))

    def compute_output_spec(self, inputs, mask=None, p_bias=None):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        shape = tuple(x.shape[:-1]) + (self.out_dim or x.shape[-1],)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads, head_size=self.head_size, max_length=self.max_length,
            kinds=list(self.kinds), dense_units=self.dense_units,
            dense_factors=None if self.dense_factors is None else list(self.dense_factors),
            random_rank=self.random_rank, random_trainable=self.random_trainable,
            causal=self.causal, out_dim=self.out_dim, use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
