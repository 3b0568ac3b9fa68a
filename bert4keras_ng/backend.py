"""keras.ops helpers shared by every layer: masking, attention normalisation, positions, activations.

Each numerical convention (RoPE layout, GELU flavour, softmax_plus clamp, mask semantics) lives
here once. Float statistics run in float32; constants take the dtype of the tensor they meet, never
the global float type. Masks are booleans (True = keep).
"""

import math

import keras
import numpy as np
from keras import ops

ATTENTION_NORMALIZATIONS = ("softmax", "squared_relu", "softmax_plus", "l2_softmax")
ROPE_LAYOUTS = ("interleaved", "rotate_half")


def check_choice(argument, value, allowed):
    """Raise a ValueError naming the argument and its allowed values when `value` is not one."""
    if value not in allowed:
        raise ValueError(
            f"Unknown {argument}={value!r}; allowed values: {', '.join(map(repr, allowed))}."
        )


def sequence_masking(x, mask, value=None, axis=1):
    """Replace entries of `x` at masked sequence positions by `value` (None means -inf).

    `mask` is (b, n) (boolean, or 0/1) aligned with axes 0 and `axis` of `x`; None returns `x`.
    """
    if mask is None:
        return x
    ndim = len(x.shape)
    axis = axis % ndim
    mask = ops.cast(mask, "bool")
    for i in range(1, ndim):
        if i != axis:
            mask = ops.expand_dims(mask, i)
    fill = -np.inf if value is None else value
    return ops.where(mask, x, ops.cast(fill, x.dtype))


def _valid_counts(mask, logits, axis):
    """Number l of valid keys per row (float32), the key length when there is no mask."""
    if mask is None:
        return ops.cast(ops.shape(logits)[axis], "float32")
    return ops.sum(ops.cast(mask, "float32"), axis=axis, keepdims=True)


def _compact_key_mask(mask, logits, axis):
    """The boolean mask, left in its own (broadcastable) shape when it spans the key axis.

    A key-padding mask (b, 1, 1, k) stays that small: the selects broadcast it and the per-row
    reductions run over k entries per batch row instead of over the whole (b, h, q, k) logits.
    Only a mask that is constant along the key axis (size 1 there) is broadcast in full.
    """
    mask = ops.cast(mask, "bool")
    axis = axis - len(logits.shape) if axis >= 0 else axis
    if len(mask.shape) < -axis or (mask.shape[axis] == 1 and logits.shape[axis] != 1):
        mask = ops.broadcast_to(mask, ops.shape(logits))
    return mask


def attention_normalize(logits, mask=None, axis=-1, method="softmax", softmax_plus_clamp=16):
    """Turn attention logits into weights with a boolean key mask; float32 inside, no NaN rows.

    methods: 'softmax'; 'squared_relu' relu(a)^2 / l; 'softmax_plus' softmax(a·log(max(l, c))/log 512)
    with the factor applied to unmasked logits only; 'l2_softmax' e^a / sqrt(sum e^2a).
    l counts valid keys in the row; a row without any valid key gives zeros.
    """
    check_choice("normalization", method, ATTENTION_NORMALIZATIONS)
    out_dtype = logits.dtype
    a = ops.cast(logits, "float32")
    if mask is not None:
        mask = _compact_key_mask(mask, a, axis)
    if method == "squared_relu":
        l = ops.maximum(_valid_counts(mask, a, axis), 1.0)
        probs = ops.relu(a) ** 2 / l
        if mask is not None:
            probs = ops.where(mask, probs, 0.0)
        return ops.cast(probs, out_dtype)
    if method == "softmax_plus":
        l = ops.maximum(_valid_counts(mask, a, axis), float(softmax_plus_clamp))
        a = a * ops.log(l) / math.log(512)
    row_valid = None
    if mask is not None:
        # -inf on masked keys, added from the mask's own small shape; a row without any valid
        # key gets no bias (finite softmax) and is zeroed at the end.
        row_valid = ops.any(mask, axis=axis, keepdims=True)
        keep = ops.logical_or(mask, ops.logical_not(row_valid))
        a = a + ops.where(keep, ops.zeros((), "float32"), ops.full((), -np.inf, "float32"))
    if method == "l2_softmax":
        a = a - ops.max(a, axis=axis, keepdims=True)
        probs = ops.exp(a) / ops.sqrt(ops.sum(ops.exp(2.0 * a), axis=axis, keepdims=True))
    else:
        probs = ops.softmax(a, axis=axis)
    if row_valid is not None:
        probs = ops.where(row_valid, probs, ops.zeros((), "float32"))
    return ops.cast(probs, out_dtype)


def sinusoidal_embeddings(positions, dim, base=10000):
    """Interleaved sinusoid [sin pθ0, cos pθ0, sin pθ1, ...] of float `positions`, in float32.

    θ_i = base^(-2i/dim); output shape positions.shape + (dim,).
    """
    if dim % 2:
        raise ValueError(f"dim must be even for sinusoidal embeddings, got dim={dim}.")
    positions = ops.cast(positions, "float32")
    indices = ops.arange(0, dim // 2, dtype="float32")
    theta = ops.power(ops.cast(base, "float32"), -2.0 * indices / dim)
    angles = ops.repeat(ops.expand_dims(positions, -1) * theta, 2, axis=-1)
    even = ops.arange(dim) % 2 == 0
    return ops.where(even, ops.sin(angles), ops.cos(angles))


def _align_table(table, ndim):
    """Broadcast a (n, d) or (b, n, d) table against (b, n, ..., d) tensors."""
    if len(table.shape) == 2:
        table = ops.expand_dims(table, 0)
    while len(table.shape) < ndim:
        table = ops.expand_dims(table, -2)
    return table


def rotate_pairs(x):
    """Map interleaved pairs (x0, x1, x2, x3, ...) to (-x1, x0, -x3, x2, ...)."""
    dim = x.shape[-1]
    swap = np.arange(dim) ^ 1
    sign = np.where(np.arange(dim) % 2 == 0, -1.0, 1.0)
    return ops.take(x, swap, axis=-1) * ops.cast(sign, x.dtype)


def apply_rotary_position_embeddings(sinusoidal, *tensors, layout="interleaved"):
    """Rotate q/k-like tensors (b, n, ..., d) by the sinusoid table (n, d) / (b or 1, n, d).

    'interleaved' rotates pairs (x_2i, x_2i+1) as bert4keras/RoFormer do; 'rotate_half' pairs
    x_i with x_{i+d/2} (GPT-NeoX/LLaMA), equal after per-head even-then-odd column permutation.
    Returns one tensor for one input, else a list.
    """
    check_choice("layout", layout, ROPE_LAYOUTS)
    if not tensors:
        raise ValueError("apply_rotary_position_embeddings needs at least one tensor.")
    outputs = []
    for x in tensors:
        table = ops.cast(_align_table(sinusoidal, len(x.shape)), x.dtype)
        sin, cos = table[..., ::2], table[..., 1::2]
        if layout == "interleaved":
            cos2, sin2 = ops.repeat(cos, 2, axis=-1), ops.repeat(sin, 2, axis=-1)
            outputs.append(x * cos2 + rotate_pairs(x) * sin2)
        else:
            half = x.shape[-1] // 2
            x1, x2 = x[..., :half], x[..., half:]
            outputs.append(ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1))
    return outputs[0] if len(outputs) == 1 else outputs


@keras.saving.register_keras_serializable(package="bert4keras_ng")
def gelu_erf(x):
    """Exact GELU 0.5·x·(1 + erf(x/√2)), bert4keras' meaning of 'gelu'."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


@keras.saving.register_keras_serializable(package="bert4keras_ng")
def gelu_tanh(x):
    """Tanh-approximated GELU 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) (Google BERT, GPT-2)."""
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + ops.tanh(inner))


_ACTIVATIONS = {"gelu": gelu_erf, "gelu_erf": gelu_erf, "gelu_tanh": gelu_tanh}


def explicit_gelu(identifier):
    """'gelu' spelled as the variant it currently means ('gelu_erf', or 'gelu_tanh' after
    set_gelu('tanh')), so that a model's config keeps it; anything else unchanged (lists
    element-wise)."""
    if isinstance(identifier, (list, tuple)):
        return type(identifier)(explicit_gelu(i) for i in identifier)
    if isinstance(identifier, str) and identifier.lower() == "gelu":
        return "gelu_tanh" if _ACTIVATIONS["gelu"] is gelu_tanh else "gelu_erf"
    return identifier


def get_activation(identifier):
    """Resolve an activation: 'gelu' is the erf form, 'gelu_tanh' the approximation, else Keras'."""
    if identifier is None:
        return keras.activations.linear
    if isinstance(identifier, str) and identifier.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[identifier.lower()]
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    return keras.activations.get(identifier)


def serialize_activation(identifier):
    """Config form of an activation: strings stay strings, callables become Keras configs."""
    if identifier is None or isinstance(identifier, (str, dict)):
        return identifier
    return keras.saving.serialize_keras_object(identifier)


def piecewise_linear(t, schedule, from_zero=True):
    """Piecewise linear function of step `t` through {step: value} knots, constant after the last.

    A first knot other than 0 gets (0, 0) prepended when `from_zero`; computed in float32.
    """
    knots = sorted((float(k), float(v)) for k, v in schedule.items())
    if from_zero and knots[0][0] != 0:
        knots = [(0.0, 0.0)] + knots
    t = ops.cast(t, "float32")
    value = ops.zeros_like(t) + knots[0][1]
    for i, (t0, v0) in enumerate(knots):
        if i + 1 < len(knots):
            t1, v1 = knots[i + 1]
            segment = v0 + (v1 - v0) / (t1 - t0) * (t - t0)
        else:
            segment = ops.zeros_like(t) + v0
        value = ops.where(t >= t0, segment, value)
    return value


def lm_mask(n):
    """Causal boolean mask (n, n): query i sees keys j <= i."""
    idx = ops.arange(n, dtype="int32")
    return ops.expand_dims(idx, 0) <= ops.expand_dims(idx, 1)


def unilm_mask(segment_ids):
    """UniLM boolean mask (b, n, n) from segment ids: key j visible to query i iff c_j <= c_i.

    c = cumsum(segment ids); all-zero segments give full bidirectional attention.
    """
    counts = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    return ops.expand_dims(counts, 1) <= ops.expand_dims(counts, 2)


def relative_distances(n_q, n_k):
    """Matrix (n_q, n_k) of key minus query positions j - i (int32)."""
    q = ops.arange(n_q, dtype="int32")
    k = ops.arange(n_k, dtype="int32")
    return ops.expand_dims(k, 0) - ops.expand_dims(q, 1)


def relative_position_ids(n_q, n_k, max_distance=64):
    """NEZHA-style ids clip(j - i, -m, m) + m in [0, 2m] (int32)."""
    return ops.clip(relative_distances(n_q, n_k), -max_distance, max_distance) + max_distance


def t5_relative_position_buckets(n_q, n_k, num_buckets=32, max_distance=128, bidirectional=True):
    """T5 bucket ids (n_q, n_k) of query-minus-key distance, as in the Mesh-TF code (float32 log)."""
    n = -relative_distances(n_q, n_k)
    offset = 0
    if bidirectional:
        num_buckets //= 2
        offset = ops.cast(n < 0, "int32") * num_buckets
        n = ops.abs(n)
    else:
        n = ops.maximum(n, 0)
    max_exact = num_buckets // 2
    ratio = ops.cast(ops.maximum(n, 1), "float32") / max_exact
    large = max_exact + ops.cast(
        ops.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact), "int32"
    )
    large = ops.minimum(large, num_buckets - 1)
    return offset + ops.where(n < max_exact, n, large)


# ---- run-time checks of id inputs --------------------------------------------------------------
# Where the values can be seen, an out-of-range id is an error: eagerly a ValueError at once, in a
# TensorFlow graph (model.predict / fit without XLA) an InvalidArgumentError when the step runs.
# Under XLA or a JAX jit no error can be raised from inside the computation: the lookups then
# give a zero row for an out-of-range id, in every precision and on every device.


def _concrete(x):
    """Whether ``x`` holds values now (eager), as opposed to a symbolic or traced tensor."""
    if isinstance(x, keras.KerasTensor):
        return False
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if name == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def _graph_assert(ok, message, x):
    """``x`` made to depend on an assertion of ``ok`` in a TensorFlow graph; ``x`` otherwise."""
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    check = tf.debugging.Assert(ok, [message])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def check_ids(ids, limit, what):
    """``ids`` after checking ``0 <= ids < limit`` where possible (see above); ``what`` names the
    ids in the error, e.g. ``"token ids of layer 'Embedding-Token' (vocabulary size 60)"``."""
    if _concrete(ids):
        values = np.asarray(ops.convert_to_numpy(ids))
        bad = np.argwhere((values < 0) | (values >= limit))
        if bad.size:
            first = tuple(int(i) for i in bad[0])
            raise ValueError(
                "%s: id %d at index %s is outside [0, %d) (%d out-of-range ids in this batch)."
                % (what, values[first], list(first), limit, len(bad))
            )
        return ids
    ok = ops.logical_and(ops.all(ids >= 0), ops.all(ids < limit))
    return _graph_assert(ok, "%s: an id is outside [0, %d)." % (what, limit), ids)


def check_length(x, limit, message):
    """``x`` after checking that its axis-1 length is at most ``limit`` where possible; the
    error is ``message`` (a ValueError eagerly, an InvalidArgumentError in a TF graph)."""
    length = ops.shape(x)[1]
    if isinstance(length, int) or _concrete(x):
        if int(length) > limit:
            raise ValueError(message.format(length=int(length)))
        return x
    return _graph_assert(length <= limit, message.format(length="(run-time)"), x)


def zero_out_of_range(rows, ids, limit):
    """Rows looked up for ``ids`` with those of out-of-range ids set to zero (the behaviour
    where no error can be raised, the same for gathers and one-hot lookups)."""
    valid = ops.logical_and(ids >= 0, ids < limit)
    return rows * ops.cast(valid, rows.dtype)[..., None]


def clip_ids(ids, limit):
    """``ids`` with out-of-range values replaced by 0, safe to gather on every device."""
    valid = ops.logical_and(ids >= 0, ids < limit)
    return ops.where(valid, ids, ops.zeros_like(ids))


# ----- bert4keras 0.11.5 compatibility surface (names resolved lazily from bert4keras_ng.compat) --
# `from bert4keras_ng.backend import keras, K, search_layer, set_gelu, ...` keeps a ported
# script's import line; the implementations live in bert4keras_ng.compat, not in the core.
_COMPAT_NAMES = {
    "K": ("bert4keras_ng.compat.keras2_backend", None),
    "search_layer": ("bert4keras_ng.compat.graph", "search_layer"),
    "batch_gather": ("bert4keras_ng.compat.graph", "batch_gather"),
    "set_gelu": ("bert4keras_ng.compat.graph", "set_gelu"),
    "multilabel_categorical_crossentropy": (
        "bert4keras_ng.losses", "multilabel_categorical_crossentropy"),
    "sparse_multilabel_categorical_crossentropy": (
        "bert4keras_ng.losses", "sparse_multilabel_categorical_crossentropy"),
}


def __getattr__(name):
    if name in _COMPAT_NAMES:
        import importlib

        module, attribute = _COMPAT_NAMES[name]
        module = importlib.import_module(module)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError("module 'bert4keras_ng.backend' has no attribute %r" % (name,))


# ---- length extrapolation: ReRoPE / Leaky ReRoPE, log-n query scaling (posts 9708, 9728) ----


def leaky_rerope_distances(n_q, n_k, window, leaky=None):
    """Relative positions i − j seen by (Leaky) ReRoPE, float32 (n_q, n_k).

    Inside the window (|i − j| < w) they are i − j; outside, ±(w + (|i − j| − w)/k), and ±w for
    ReRoPE (``leaky=None``, k → ∞).  Mirrored for j > i so that encoders stay symmetric.
    """
    r = -ops.cast(relative_distances(n_q, n_k), "float32")
    slope = 0.0 if leaky is None else 1.0 / float(leaky)
    outside = ops.sign(r) * (window + (ops.abs(r) - window) * slope)
    return ops.where(ops.abs(r) < window, r, outside)


def rerope_logits(q, k, table, window, leaky=None, base=10000, spec="bjhd,bkhd->bhjk"):
    """Attention logits of (Leaky) ReRoPE from un-rotated ``q``, ``k`` (post 9708).

    ``table`` is the RoPE sinusoid table of the sequence (the ``p_bias='rotary'`` input) and
    gives the in-window logits (R_i q_i)ᵀ(R_j k_j) exactly as RoPE does; outside the window
    q is rotated to s·i ± w(1 − s) and k to s·j (s = 1/k; 0 for ReRoPE: k not rotated), so the
    logit sees the relative position of :func:`leaky_rerope_distances`.  Positions are the
    sequence indices.  ``spec`` is the q·k einsum ("bjhd,bkhd->bhjk" for MHA, "bmd,bnd->bmn" for
    GAU); logits come out with the query axis second to last.
    """
    window = _check_window(window)
    q1, k1 = apply_rotary_position_embeddings(table, q, k)
    inside = ops.einsum(spec, q1, k1)
    i = ops.arange(ops.shape(q)[1], dtype="float32")
    j = ops.arange(ops.shape(k)[1], dtype="float32")
    return _rerope_outside(q, k, i, j, inside, window, leaky, base, spec)


def _check_window(window):
    window = float(window)
    if window <= 0:
        raise ValueError(f"ReRoPE window must be positive, got {window}.")
    return window


def _rerope_outside(q, k, i, j, inside, window, leaky, base, spec):
    """``inside`` where |i − j| < w; elsewhere the logits of q rotated to s·i ± w(1 − s) against
    k rotated to s·j (s = 1/k; 0 for ReRoPE: k not rotated), i, j the float positions."""
    dim = q.shape[-1]
    slope = 0.0 if leaky is None else 1.0 / float(leaky)
    k2 = k if slope == 0 else apply_rotary_position_embeddings(
        sinusoidal_embeddings(j * slope, dim, base), k)
    shift = window * (1.0 - slope)
    above = ops.einsum(spec, apply_rotary_position_embeddings(
        sinusoidal_embeddings(i * slope + shift, dim, base), q), k2)
    below = ops.einsum(spec, apply_rotary_position_embeddings(
        sinusoidal_embeddings(i * slope - shift, dim, base), q), k2)
    r = i[:, None] - j[None, :]
    return ops.where(r >= window, above, ops.where(r <= -window, below, inside))


def rerope_cached_logits(q, k, q_offset, window, leaky=None, base=10000,
                         spec="bqhd,bkhd->bhqk"):
    """(Leaky) ReRoPE logits of n_q queries at positions q_offset + i against n_k cached
    **pre-RoPE** keys at positions 0..n_k − 1 (a key/value cache; only relative positions
    matter). One query: :func:`rerope_decode_logits` (one score matrix); several (the
    prompt): the three score matrices of :func:`rerope_logits` at those positions."""
    window = _check_window(window)
    if q.shape[1] == 1:
        return rerope_decode_logits(q, k, q_offset, window, leaky, base, spec)
    dim = q.shape[-1]
    i = ops.cast(q_offset, "float32") + ops.arange(ops.shape(q)[1], dtype="float32")
    j = ops.arange(ops.shape(k)[1], dtype="float32")
    inside = ops.einsum(spec, apply_rotary_position_embeddings(sinusoidal_embeddings(i, dim, base), q),
                        apply_rotary_position_embeddings(sinusoidal_embeddings(j, dim, base), k))
    return _rerope_outside(q, k, i, j, inside, window, leaky, base, spec)


def rerope_decode_logits(q, k, query_position, window, leaky=None, base=10000,
                         spec="bqhd,bkhd->bhqk"):
    """One query's (Leaky) ReRoPE logits against cached **pre-RoPE** keys (post 9708).

    A single score matrix suffices: the key j is rotated by −r′ (r′ the (Leaky) ReRoPE distance
    of i − j, :func:`leaky_rerope_distances`) and the query stays unrotated, i.e.
    q_iᵀ(R_{max(j−i, −w)} k_j) for ReRoPE.  Equals the row ``query_position`` of
    :func:`rerope_logits`.  ``q`` (b, 1, [h,] d), ``k`` (b, n_k, [h,] d); keys are at positions
    0..n_k − 1; ``spec`` as in :func:`rerope_logits` ("bqd,bkd->bqk" without heads).
    """
    window = float(window)
    slope = 0.0 if leaky is None else 1.0 / float(leaky)
    j = ops.arange(ops.shape(k)[1], dtype="float32")
    r = ops.cast(query_position, "float32") - j
    moved = ops.sign(r) * (window + (ops.abs(r) - window) * slope)
    distance = ops.where(ops.abs(r) < window, r, moved)
    k_rotated = apply_rotary_position_embeddings(
        sinusoidal_embeddings(-distance, q.shape[-1], base), k)
    return ops.einsum(spec, q, k_rotated)


def log_n_query_scale(n, train_length, clip=True):
    """Per-position query factors log(i + 1)/log(train_length), (n,) float32 (post 9708).

    ``clip=True`` is the inference-only form "log n†" (max(1, ·): unchanged inside the trained
    length); ``clip=False`` the train-time form for causal models (query 0 sees only key 0).
    """
    return log_n_scale_at(ops.arange(n, dtype="float32"), train_length, clip)


def log_n_scale_at(positions, train_length, clip=True):
    """log(p + 1)/log(train_length) (clipped at 1 when ``clip``) of float ``positions`` p:
    :func:`log_n_query_scale` for queries at given positions (a cached decoding step)."""
    if train_length < 2:
        raise ValueError(f"log-n scaling needs train_length >= 2, got {train_length}.")
    scale = ops.log(ops.cast(positions, "float32") + 1.0) / math.log(train_length)
    return ops.maximum(scale, 1.0) if clip else scale
