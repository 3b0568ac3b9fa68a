"""Token embedding (with the tied 'dense' output mode), absolute, sinusoidal and relative position
embeddings (NEZHA window, T5 buckets)."""

import keras
from keras import ops

from bert4keras_ng.backend import (
    check_ids,
    check_length,
    clip_ids,
    relative_position_ids,
    sinusoidal_embeddings,
    t5_relative_position_buckets,
    zero_out_of_range,
)
from bert4keras_ng.layers.base import as_list, check_choice, check_input_count, register

MERGE_MODES = ("add", "mul", "zero", "concat")
EMBEDDING_MODES = ("embedding", "dense")


@register
class Sinusoidal(keras.initializers.Initializer):
    """Initializer filling a (size, dim) table with row p = interleaved sinusoid of position p."""

    def __call__(self, shape, dtype=None):
        size, dim = shape
        table = sinusoidal_embeddings(ops.arange(size, dtype="float32"), dim)
        return ops.cast(table, dtype or "float32")

    def get_config(self):
        return {}


def get_initializer(identifier):
    """Keras initializer lookup that also knows 'sinusoidal'."""
    if isinstance(identifier, str) and identifier.lower() == "sinusoidal":
        return Sinusoidal()
    return keras.initializers.get(identifier)


ONE_HOT_LOOKUP_MAX_ROWS = 32  # tables up to this size use a one-hot matmul in half precision


@register
class Embedding(keras.layers.Embedding):
    """Token embedding; `call(x, mode='dense')` is the tied output projection x·Eᵀ.

    With mask_zero=True the mask is ids != 0 except that position 0 is always valid (bert4keras'
    rule, needed by T5 decoders starting with id 0), so no attention row is ever fully masked.
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mode="embedding"):
        check_choice("mode", mode, EMBEDDING_MODES)
        if mode == "embedding":
            ids = check_ids(
                ops.cast(inputs, "int32"), self.input_dim,
                "%s: ids for a table of %d rows" % (self.name, self.input_dim))
        if mode == "embedding" and self._one_hot_lookup():
            ids = ops.one_hot(ids, self.input_dim, dtype=self.compute_dtype)
            return ops.matmul(ids, ops.cast(self.embeddings, self.compute_dtype))
        if mode == "embedding":  # out-of-range ids: zero rows, as the one-hot lookup gives
            return zero_out_of_range(super().call(clip_ids(ids, self.input_dim)), ids, self.input_dim)
        kernel = ops.cast(self.embeddings, self.compute_dtype)
        # Contract with the table's second axis directly: XLA on CPU runs this about 1.4x
        # faster than a matmul with the transposed table (the tied LM head of generation).
        inputs = ops.cast(inputs, self.compute_dtype)
        return ops.tensordot(inputs, kernel, axes=[[len(inputs.shape) - 1], [1]])

    def _one_hot_lookup(self):
        """Look rows up by a one-hot matmul: for small tables (segment ids) in half precision.

        A gather's gradient is a scatter-add into the table; with a few rows (segment ids are
        nearly all 0) every token adds into the same row, and in float16/bfloat16 XLA's GPU
        scatter serialises on it (45 ms of a 100 ms BERT-base step on an H100). one_hot @ table
        selects the same rows exactly (one non-zero term per output; the sum accumulates in
        float32) and its gradient is a GEMM. Float32 keeps the gather: exact there, and a float32
        GEMM may run in TF32 on GPUs. Out-of-range ids are an error where they can be seen
        (``backend.check_ids``) and give zero rows otherwise, on both paths.
        """
        return self.input_dim <= ONE_HOT_LOOKUP_MAX_ROWS and self.compute_dtype in (
            "float16", "bfloat16")

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) != 2:
            return mask  # dense mode: hidden states keep their mask
        if not self.mask_zero:
            return None
        valid = ops.not_equal(inputs, 0)
        return ops.concatenate([ops.ones_like(valid[:, :1]), valid[:, 1:]], axis=1)

    def compute_output_shape(self, input_shape, mode="embedding"):
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        shape = self.compute_output_shape(inputs.shape, mode)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


class _PositionMerge(keras.layers.Layer):
    """Shared merge of a position table into the inputs: add, mul (x·(1+P)), zero (P), concat."""

    def __init__(self, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        check_choice("merge_mode", merge_mode, MERGE_MODES)
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids
        self.supports_masking = True

    def _split(self, inputs):
        """(x, position ids or None) from the call inputs."""
        if self.custom_position_ids:
            check_input_count(self, as_list(inputs), 2, "[x, position_ids]")
            return inputs[0], inputs[1]
        if isinstance(inputs, (list, tuple)):
            check_input_count(self, inputs, 1, "x (custom_position_ids=False)")
        return inputs, None

    def _merge(self, x, table):
        """Combine x (b, n, d) with the table (b or 1, n, d_p) per merge_mode."""
        table = ops.cast(table, x.dtype)
        if self.merge_mode == "add":
            return x + table
        if self.merge_mode == "mul":
            return x * (table + 1.0)
        if self.merge_mode == "zero":
            return table
        table = ops.broadcast_to(table, (ops.shape(x)[0],) + tuple(ops.shape(table)[1:]))
        return ops.concatenate([x, table], axis=-1)

    def compute_mask(self, inputs, mask=None):
        if self.merge_mode == "zero":
            return None
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def check_length(self, x):
        """Hook for a statically known sequence length that the table cannot cover."""

    def compute_output_spec(self, inputs):
        # From the shapes, so that building a model never traces call() with an unknown length
        # (JAX cannot slice a table to a symbolic length); call()'s own checks run here too.
        x, _ = self._split(inputs)
        self.check_length(x)
        shape = tuple(x.shape)
        if self.merge_mode == "zero":
            shape = shape[:-1] + (self.output_dim,)
        elif self.merge_mode == "concat":
            shape = shape[:-1] + (None if shape[-1] is None else shape[-1] + self.output_dim,)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(merge_mode=self.merge_mode, custom_position_ids=self.custom_position_ids)
        return config


@register
class PositionEmbedding(_PositionMerge):
    """Learned absolute positions (input_dim rows), optionally hierarchically decomposed.

    hierarchical (True → α = 0.4, or a number α) extends P rows to P² positions:
    u = (E − α·E_0)/(1 − α), P(i) = α·u[i // P] + (1 − α)·u[i mod P].
    Inputs x or [x, position_ids] with custom_position_ids.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add", hierarchical=None,
                 embeddings_initializer="zeros", custom_position_ids=False, **kwargs):
        super().__init__(merge_mode, custom_position_ids, **kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.hierarchical = hierarchical
        self.embeddings_initializer = get_initializer(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer)
        self.built = True

    @property
    def _too_long(self):
        return (f"{self.name}: sequence length {{length}} exceeds the {self.input_dim} learned "
                f"positions (max_position_embeddings); truncate the inputs or use "
                f"hierarchical=True.")

    def check_length(self, x):
        length = x.shape[1]
        if (not self.hierarchical and not self.custom_position_ids and isinstance(length, int)
                and length > self.input_dim):
            raise ValueError(self._too_long.format(length=length))

    def call(self, inputs):
        x, ids = self._split(inputs)
        table = ops.cast(self.embeddings, x.dtype)
        if ids is None and not self.hierarchical:
            self.check_length(x)
            x = check_length(x, self.input_dim, self._too_long)
            return self._merge(x, table[None, : ops.shape(x)[1]])
        if ids is None:
            ids = ops.arange(ops.shape(x)[1], dtype="int32")[None]
        return self.call_at(x, ids)

    def call_at(self, x, ids):
        """Merge the rows of explicit position ids (b|1, n) into x (b, n, d); the cached
        decoder uses it for tokens whose positions do not start at 0. Out-of-range ids: an
        error where checkable (``backend.check_ids``), zero rows otherwise."""
        table = ops.cast(self.embeddings, x.dtype)
        limit = self.input_dim ** 2 if self.hierarchical else self.input_dim
        ids = check_ids(ops.cast(ids, "int32"), limit,
                        "%s: position ids for %d positions" % (self.name, limit))
        safe = clip_ids(ids, limit)
        if self.hierarchical:
            alpha = 0.4 if self.hierarchical is True else float(self.hierarchical)
            u = (table - alpha * table[:1]) / (1.0 - alpha)
            rows = (alpha * ops.take(u, safe // self.input_dim, axis=0)
                    + (1.0 - alpha) * ops.take(u, safe % self.input_dim, axis=0))
        else:
            rows = ops.take(table, safe, axis=0)
        return self._merge(x, zero_out_of_range(rows, ids, limit))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim, output_dim=self.output_dim, hierarchical=self.hierarchical,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        return config


@register
class SinusoidalPositionEmbedding(_PositionMerge):
    """Fixed interleaved sinusoid positions (float32 table cast to the input dtype).

    merge_mode='zero' returns the table itself, (1, n, d) or (b, n, d): the RoPE table input.
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, base=10000,
                 **kwargs):
        super().__init__(merge_mode, custom_position_ids, **kwargs)
        self.output_dim = output_dim
        self.base = base

    def call(self, inputs):
        x, ids = self._split(inputs)
        if ids is None:
            ids = ops.arange(ops.shape(x)[1], dtype="float32")[None]
        return self.call_at(x, ids)

    def call_at(self, x, ids):
        """Merge the sinusoids of explicit positions ids (b|1, n) into x (cached decoding)."""
        table = sinusoidal_embeddings(ops.cast(ids, "float32"), self.output_dim, self.base)
        return self._merge(x, table)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, base=self.base)
        return config


@register
class RelativePositionEmbedding(keras.layers.Layer):
    """Relative position table gathered to (n_q, n_k, output_dim) for inputs [q, k].

    Row clip(j − i, −m, m) + m for query i and key j, m = (input_dim − 1) // 2. NEZHA uses
    input_dim = 129, embeddings_initializer='sinusoidal' and trainable=False.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = get_initializer(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer)
        self.built = True

    def position_ids(self, n_q, n_k):
        """Table row for every (query, key) pair."""
        return relative_position_ids(n_q, n_k, (self.input_dim - 1) // 2)

    def call(self, inputs):
        check_input_count(self, as_list(inputs), 2, "[q, k]")
        q, k = inputs
        ids = self.position_ids(ops.shape(q)[1], ops.shape(k)[1])
        return ops.cast(ops.take(self.embeddings, ids, axis=0), self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim, output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        return config


@register
class RelativePositionEmbeddingT5(RelativePositionEmbedding):
    """T5 bucketed relative bias table (input_dim buckets, output_dim heads) → (n_q, n_k, heads).

    Buckets of i − j as in Mesh-TF: bidirectional (encoder) or causal (decoder), log-spaced up to
    max_distance.
    """

    def __init__(self, input_dim, output_dim, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(input_dim, output_dim, embeddings_initializer, **kwargs)
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def position_ids(self, n_q, n_k):
        return t5_relative_position_buckets(n_q, n_k, self.input_dim, self.max_distance,
                                            self.bidirectional)

    def get_config(self):
        config = super().get_config()
        config.update(max_distance=self.max_distance, bidirectional=self.bidirectional)
        return config
