"""MultiHeadAttention (bert4keras call convention, position schemes) and GatedAttentionUnit.

Order of the attention computation (bert4keras 0.11.5): RoPE on q, k → q·kᵀ → relative position
term → ÷√Dk → mask (key padding AND boolean bias, or + float bias) → normalise → dropout → ·v
(+ NEZHA value term).
"""

import math

import keras
from keras import ops

from bert4keras_ng.backend import (
    ATTENTION_NORMALIZATIONS,
    apply_rotary_position_embeddings,
    attention_normalize,
    get_activation,
    log_n_query_scale,
    log_n_scale_at,
    relative_distances,
    rerope_cached_logits,
    rerope_logits,
    serialize_activation,
)
from bert4keras_ng.layers.base import as_list, build_dense, check_choice, check_input_count, register
from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.layers.normalization import ScaleOffset

MHA_POSITION_BIASES = (None, "rotary", "rerope", "typical_relative", "t5_relative")
GAU_POSITION_BIASES = (None, "rotary", "rerope")
POSITION_OPTIONS = ("window", "leaky", "base", "logn", "logn_clip")
ATTENTION_BIASES = (None, False, True, "causal")


def _bool(mask):
    return None if mask is None else ops.cast(mask, "bool")


def _and(a, b):
    """Logical AND of two optional boolean masks."""
    if a is None:
        return b
    return a if b is None else ops.logical_and(a, b)


def combine_attention_bias(key_mask, bias, a_bias, n_q, n_k, head_axis, q_offset=0):
    """Boolean keep-mask and additive float bias for logits (b, [N,] n_q, n_k).

    key_mask (b, n_k) masks padded keys; `bias` is the extra input when a_bias=True (boolean → ANDed,
    float → added); a_bias='causal' keeps keys j <= q_offset + i (queries of a cached call sit
    at key positions q_offset + i).
    """
    mask = None
    if key_mask is not None:
        mask = _bool(key_mask)[:, None, :]
        if head_axis:
            mask = mask[:, None]
    additive = None
    if bias is not None:
        if head_axis and len(bias.shape) == 3:
            bias = ops.expand_dims(bias, 1)
        if keras.backend.standardize_dtype(bias.dtype) == "bool":
            mask = _and(mask, bias)
        else:
            additive = bias
    if a_bias == "causal":
        mask = _and(mask, relative_distances(n_q, n_k) <= q_offset)
    return mask, additive


def _parse_inputs(layer, inputs, n_main, a_bias, p_bias, layout):
    """Split call inputs into the main tensors, the attention bias and the position tensor."""
    inputs = as_list(inputs)
    expected = n_main + (a_bias is True) + (p_bias is not None)
    check_input_count(layer, inputs, expected,
                      f"[{layout}" + (", a_bias" if a_bias is True else "")
                      + (f", position ({p_bias})" if p_bias else "") + "]")
    bias = inputs[n_main] if a_bias is True else None
    position = inputs[-1] if p_bias is not None else None
    return inputs[:n_main], bias, position


def position_logits(q, k, position, p_bias, options, spec):
    """q·k logits under RoPE / (Leaky) ReRoPE, with optional log-n query scaling.

    ``options`` (the ``position_options`` call argument): ``window`` and ``leaky`` (None =
    ReRoPE) for ``p_bias='rerope'`` (its input is the RoPE table), ``base`` (10000), ``logn``
    (train length: q_i ← q_i·log(i+1)/log(logn)) and ``logn_clip`` (True: max(1, ·), the
    inference-only form).  See :func:`bert4keras_ng.backend.rerope_logits`.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(POSITION_OPTIONS))
    if unknown:
        raise ValueError(f"position_options: unknown key(s) {unknown}; allowed {POSITION_OPTIONS}.")
    logn, clip = options.pop("logn", None), options.pop("logn_clip", True)
    if logn:
        scale = log_n_query_scale(ops.shape(q)[1], logn, clip)
        q = q * ops.cast(ops.reshape(scale, (1, -1) + (1,) * (len(q.shape) - 2)), q.dtype)
    if p_bias == "rerope":
        if options.get("window") is None:
            raise ValueError("p_bias='rerope' needs position_options={'window': w, ...}.")
        return rerope_logits(q, k, position, spec=spec, **options)
    if p_bias == "rotary":
        q, k = apply_rotary_position_embeddings(position, q, k)
    return ops.einsum(spec, q, k)


def _cached_log_n(q, options, positions):
    """Queries (b, n, h, d) scaled by log-n at their true ``positions`` (b, n) (cached call)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(POSITION_OPTIONS))
    if unknown:
        raise ValueError(f"position_options: unknown key(s) {unknown}; allowed {POSITION_OPTIONS}.")
    if not options.get("logn"):
        return q
    if positions is None:
        raise ValueError("log-n scaling in a cached call needs positions= (the true positions "
                         "of the new tokens).")
    scale = log_n_scale_at(positions, options["logn"], options.get("logn_clip", True))
    while len(scale.shape) < len(q.shape):
        scale = ops.expand_dims(scale, -1)
    return q * ops.cast(scale, q.dtype)


def _cached_rerope(qw, k_cache, index, options, spec="bqhd,bkhd->bhqk"):
    """(Leaky) ReRoPE logits (b, [h,] n, L) of queries at slots index + i over pre-RoPE keys."""
    options = dict(options or {})
    if options.get("window") is None:
        raise ValueError("p_bias='rerope' needs position_options={'window': w, ...}.")
    return rerope_cached_logits(qw, k_cache, index, options["window"], options.get("leaky"),
                                options.get("base", 10000), spec=spec)


def _split_heads(x, heads, size):
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], shape[1], heads, size))


def _merge_heads(x):
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], shape[1], x.shape[2] * x.shape[3]))


def _jax_on_cpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def fused_attention(qw, kw, vw, keep, scale):
    """softmax(q·kᵀ·scale, masked by ``keep``)·v through ``keras.ops.dot_product_attention``.

    q, k, v are (b, n, heads, d); ``keep`` is a boolean mask broadcastable to (b, heads, n_q, n_k)
    or None.  The backend may run it as one fused kernel (cuDNN flash attention on a GPU under
    JAX).  A query row without any valid key gives zeros, as :func:`attention_normalize` does.
    """
    while keep is not None and len(keep.shape) < 4:
        keep = ops.expand_dims(keep, 0)
    o = ops.dot_product_attention(qw, kw, vw, mask=keep, scale=scale)
    if keep is not None:
        row_valid = ops.transpose(ops.any(keep, axis=-1), (0, 2, 1))[..., None]
        o = o * ops.cast(row_valid, o.dtype)
    return o


class _AttentionBase(keras.layers.Layer):
    """Options and pieces shared by MHA and GAU: normalisation, scaling, dropout, serialisation."""

    def __init__(self, normalization, attention_scale, attention_dropout, kernel_initializer,
                 softmax_plus_clamp, **kwargs):
        super().__init__(**kwargs)
        check_choice("normalization", normalization, ATTENTION_NORMALIZATIONS)
        self.normalization = normalization
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.softmax_plus_clamp = softmax_plus_clamp
        self.dropout = Dropout(attention_dropout or 0.0, dtype=self.dtype_policy,
                               name="attention_dropout")
        self.supports_masking = True

    def _check_call_args(self, a_bias, p_bias, allowed_p_bias):
        check_choice("a_bias", a_bias, ATTENTION_BIASES)
        check_choice("p_bias", p_bias, allowed_p_bias)

    def _weights(self, logits, mask, additive, training):
        """Scaled logits → attention weights (dropout applied)."""
        if additive is not None:
            logits = logits + ops.cast(additive, logits.dtype)
        probs = attention_normalize(logits, mask, -1, self.normalization, self.softmax_plus_clamp)
        if self.attention_dropout:
            probs = self.dropout(probs, training=training)
        return probs

    def get_config(self):
        config = super().get_config()
        config.update(
            normalization=self.normalization,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            softmax_plus_clamp=self.softmax_plus_clamp,
        )
        return config


@register
class MultiHeadAttention(_AttentionBase):
    """Multi-head attention with bert4keras' call convention.

    call(inputs=[q, k, v, (a_bias tensor), (position tensor)], mask=None, a_bias=None, p_bias=None)
    - a_bias: None/False; True (next input is a bias: boolean (b, n_q, n_k) / (n_q, n_k) ANDed with
      the key mask, or float added to the logits); 'causal' (built-in LM mask).
    - p_bias: None; 'rotary' (input (b|1, n, Dk) sinusoid table); 'typical_relative' (NEZHA, input
      (n_q, n_k, Dk), adds ⟨q_i, R_ij⟩ to the logits and Σ_j A_ij R_ij to the output, needs
      Dv = Dk); 't5_relative' (input (n_q, n_k, heads) added to the logits); 'rerope' ((Leaky)
      ReRoPE on the rotary table input, settings in position_options, see position_logits).
    The key padding mask is the mask of v; the output carries the mask of q (a single mask tensor
    serves as both). With
    return_attention_scores the output is [o, scaled logits before masking].
    head_size=None infers Dv = input width // heads.
    """

    # Backends on which the supported cases (softmax, boolean or no bias, no relative position
    # term, key_size == head_size, no attention dropout in training, no returned scores) go
    # through keras.ops.dot_product_attention.  TensorFlow's version is the same
    # einsum-softmax-einsum with a full-size mask, so it keeps this layer's own path there.
    fused_backends = ("jax", "torch")

    def __init__(self, heads, head_size=None, out_dim=None, key_size=None, use_bias=True,
                 normalization="softmax", attention_scale=True, attention_dropout=None,
                 return_attention_scores=False, kernel_initializer="glorot_uniform",
                 softmax_plus_clamp=16, **kwargs):
        super().__init__(normalization, attention_scale, attention_dropout, kernel_initializer,
                         softmax_plus_clamp, **kwargs)
        if not isinstance(heads, int) or heads <= 0:
            raise ValueError(f"heads must be a positive integer, got heads={heads!r}.")
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim
        self.key_size = key_size
        self.use_bias = use_bias
        self.return_attention_scores = return_attention_scores

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) and isinstance(
            input_shape[0], (list, tuple)) else [input_shape]
        if len(shapes) < 3:
            raise ValueError(f"MultiHeadAttention expects inputs=[q, k, v, ...], got {len(shapes)} "
                             "tensor(s).")
        width = shapes[0][-1]
        if self.head_size is None and width % self.heads:
            raise ValueError(f"heads={self.heads} must divide the input width {width} when "
                             "head_size is None.")
        self.dv = self.head_size or width // self.heads
        self.dk = self.key_size or self.dv
        common = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer)
        self.q_dense = build_dense(self, "q_dense", self.heads * self.dk, shapes[0], **common)
        self.k_dense = build_dense(self, "k_dense", self.heads * self.dk, shapes[1], **common)
        self.v_dense = build_dense(self, "v_dense", self.heads * self.dv, shapes[2], **common)
        self.o_dense = build_dense(self, "o_dense", self.out_dim or self.heads * self.dv,
                                   (None, None, self.heads * self.dv), **common)
        self.built = True

    def call(self, inputs, mask=None, a_bias=None, p_bias=None, training=None,
             position_options=None):
        self._check_call_args(a_bias, p_bias, MHA_POSITION_BIASES)
        (q, k, v), bias, position = _parse_inputs(self, inputs, 3, a_bias, p_bias, "q, k, v")
        v_mask = mask[2] if isinstance(mask, (list, tuple)) else mask  # one mask: q = k = v
        qw = _split_heads(self.q_dense(q), self.heads, self.dk)
        kw = _split_heads(self.k_dense(k), self.heads, self.dk)
        vw = _split_heads(self.v_dense(v), self.heads, self.dv)
        if p_bias == "rotary":
            qw, kw = apply_rotary_position_embeddings(position, qw, kw)
        o, logits = self._attend(qw, kw, vw, v_mask, bias, position, a_bias, p_bias, 0, training,
                                 position_options)
        return [o, logits] if self.return_attention_scores else o

    def _attend(self, qw, kw, vw, key_mask, bias, position, a_bias, p_bias, q_offset, training,
                position_options=None, logits=None):
        """Attention of projected heads qw (b, n_q, h, dk) over kw, vw (b, n_k, h, d·); the
        queries sit at key positions q_offset + i (a cached call). RoPE is already applied;
        (Leaky) ReRoPE and log-n scaling come from position_options, or the unscaled q·k
        ``logits`` are given (a cached ReRoPE call). Returns (o, scaled logits)."""
        if logits is None and self._fusable(p_bias, bias, training) and not position_options:
            # logits are not returned on this path
            keep, _ = combine_attention_bias(
                key_mask, bias, a_bias, ops.shape(qw)[1], ops.shape(kw)[1], head_axis=True,
                q_offset=q_offset)
            scale = 1.0 / math.sqrt(self.dk) if self.attention_scale else 1.0
            return self.o_dense(_merge_heads(fused_attention(qw, kw, vw, keep, scale))), None
        if logits is None and (p_bias == "rerope" or position_options):
            logits = position_logits(qw, kw, position, "rerope" if p_bias == "rerope" else None,
                                     position_options, "bjhd,bkhd->bhjk")
        elif logits is None:
            logits = ops.einsum("bjhd,bkhd->bhjk", qw, kw)
        if p_bias == "typical_relative":
            if self.dv != self.dk:
                raise ValueError("p_bias='typical_relative' needs head_size == key_size, got "
                                 f"{self.dv} and {self.dk}.")
            position = ops.cast(position, qw.dtype)
            logits = logits + ops.einsum("bjhd,jkd->bhjk", qw, position)
        elif p_bias == "t5_relative":
            logits = logits + ops.expand_dims(
                ops.transpose(ops.cast(position, logits.dtype), (2, 0, 1)), 0)
        if self.attention_scale:
            logits = logits / math.sqrt(self.dk)
        keep, additive = combine_attention_bias(
            key_mask, bias, a_bias, ops.shape(qw)[1], ops.shape(kw)[1], head_axis=True,
            q_offset=q_offset)
        probs = self._weights(logits, keep, additive, training)
        o = ops.einsum("bhjk,bkhd->bjhd", probs, vw)
        if p_bias == "typical_relative":
            o = o + ops.einsum("bhjk,jkd->bjhd", probs, position)
        return self.o_dense(_merge_heads(o)), logits

    def init_cache(self, batch_size, length, dtype=None):
        """Zero key/value cache [k (b, L, heads, key_size), v (b, L, heads, head_size)].

        Memory: batch_size · length · heads · (key_size + head_size) values of `dtype`
        (the layer's compute dtype by default), per attention layer.
        """
        dtype = dtype or self.compute_dtype
        return [ops.zeros((batch_size, length, self.heads, self.dk), dtype),
                ops.zeros((batch_size, length, self.heads, self.dv), dtype)]

    def cache_context(self, k, v):
        """Projected keys/values [kw, vw] of a fixed context (k, v): the cross-attention cache,
        computed once per generation instead of once per step."""
        return [_split_heads(self.k_dense(k), self.heads, self.dk),
                _split_heads(self.v_dense(v), self.heads, self.dv)]

    def call_context_cached(self, inputs, cache, key_mask, a_bias=None, p_bias=None):
        """Attention of new queries over a context cached by cache_context: inputs [q,
        (a_bias (b|1, n, n_k)), (position (n, n_k, ·)) for the new queries]; key_mask (b, n_k)."""
        self._check_call_args(a_bias, p_bias, MHA_POSITION_BIASES)
        if a_bias == "causal" or p_bias in ("rotary", "rerope", "typical_relative"):
            raise ValueError(f"{self.name}: a cached context supports a_bias None/True and "
                             f"p_bias None/'t5_relative'; got {a_bias!r}, {p_bias!r}.")
        inputs = as_list(inputs)
        bias = inputs[1] if a_bias is True else None
        position = inputs[-1] if p_bias is not None else None
        qw = _split_heads(self.q_dense(inputs[0]), self.heads, self.dk)
        kw, vw = (ops.cast(c, qw.dtype) for c in cache)
        o, _ = self._attend(qw, kw, vw, key_mask, bias, position, a_bias, p_bias, 0, None)
        return o

    def call_cached(self, inputs, cache, index, key_mask, a_bias=None, p_bias=None,
                    position_options=None, positions=None):
        """Self-attention of n new positions through a key/value cache (incremental decoding).

        inputs: [x (b, n, d), (a_bias tensor (b|1, n, L)), (position tensor for the new
        positions: rotary (b|1, n, Dk); typical_relative (n, L, Dk); t5_relative (n, L, heads))].
        The projected keys/values of x are written into cache = [k, v] (from init_cache) at
        slots index … index + n − 1; the queries attend over all L slots, masked by key_mask
        (b, L) (unwritten slots must be False) and the bias ('causal' compares slots).
        Returns (o (b, n, out_dim), new cache). Same weights and order of operations as call().
        With ``p_bias='rerope'`` the cache holds pre-RoPE keys (:func:`_cached_rerope`);
        log-n scaling in ``position_options`` needs ``positions`` (b, n), the new tokens' true
        positions.
        """
        self._check_call_args(a_bias, p_bias, MHA_POSITION_BIASES)
        inputs = as_list(inputs)
        check_input_count(self, inputs, 1 + (a_bias is True) + (p_bias is not None),
                          "[x" + (", a_bias" if a_bias is True else "")
                          + (f", position ({p_bias})" if p_bias else "") + "] (cached call)")
        x = inputs[0]
        bias = inputs[1] if a_bias is True else None
        position = inputs[-1] if p_bias is not None else None
        qw = _split_heads(self.q_dense(x), self.heads, self.dk)
        kw = _split_heads(self.k_dense(x), self.heads, self.dk)
        vw = _split_heads(self.v_dense(x), self.heads, self.dv)
        qw = _cached_log_n(qw, position_options, positions)
        if p_bias == "rotary":
            qw, kw = apply_rotary_position_embeddings(position, qw, kw)
        k_cache, v_cache = cache
        start = (0, index, 0, 0)
        k_cache = ops.slice_update(k_cache, start, ops.cast(kw, k_cache.dtype))
        v_cache = ops.slice_update(v_cache, start, ops.cast(vw, v_cache.dtype))
        logits = None
        if p_bias == "rerope":
            logits = _cached_rerope(qw, ops.cast(k_cache, qw.dtype), index, position_options)
        o, _ = self._attend(qw, ops.cast(k_cache, qw.dtype), ops.cast(v_cache, vw.dtype),
                            key_mask, bias, position, a_bias, p_bias, index, None,
                            logits=logits)
        return o, [k_cache, v_cache]

    def _fusable(self, p_bias, bias, training):
        """Whether this call can use :func:`fused_attention` (see ``fused_backends``)."""
        return (keras.backend.backend() in self.fused_backends
                and self.normalization == "softmax" and not self.return_attention_scores
                and self.dk == self.dv  # jax.nn.dot_product_attention needs one head size
                and not (self.compute_dtype == "float16" and _jax_on_cpu())  # no f16 dot there
                and p_bias in (None, "rotary")
                and not (self.attention_dropout and training)
                and (bias is None or keras.backend.standardize_dtype(bias.dtype) == "bool"))

    def compute_mask(self, inputs, mask=None):
        q_mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        return [q_mask, None] if self.return_attention_scores else q_mask

    def compute_output_spec(self, inputs, mask=None, a_bias=None, p_bias=None, training=None,
                            position_options=None):
        # Shapes from the arguments instead of tracing call() in a scratch graph (model
        # construction cost); the argument checks of call() still run here.
        if not self.built:  # head sizes are known from build(); trace call() instead
            return super().compute_output_spec(inputs, mask=mask, a_bias=a_bias, p_bias=p_bias,
                                               training=training,
                                               position_options=position_options)
        self._check_call_args(a_bias, p_bias, MHA_POSITION_BIASES)
        (q, k, _), _, _ = _parse_inputs(self, inputs, 3, a_bias, p_bias, "q, k, v")
        if p_bias == "typical_relative" and self.dv != self.dk:
            raise ValueError("p_bias='typical_relative' needs head_size == key_size, got "
                             f"{self.dv} and {self.dk}.")
        dtype = self.compute_dtype
        o = keras.KerasTensor(tuple(q.shape[:-1]) + (self.out_dim or self.heads * self.dv,),
                              dtype=dtype)
        if not self.return_attention_scores:
            return o
        return [o, keras.KerasTensor((q.shape[0], self.heads, q.shape[1], k.shape[1]), dtype=dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, head_size=self.head_size, out_dim=self.out_dim,
                      key_size=self.key_size, use_bias=self.use_bias,
                      return_attention_scores=self.return_attention_scores)
        return config


@register
class GatedAttentionUnit(_AttentionBase):
    """Gated Attention Unit (arXiv 2202.10447) as in bert4keras / GAU-α.

    Self-attention (default): inputs [x, (a_bias), (rotary table)] or x; Z = act(x·W_i + b) split
    into u (units), v (units), z (key_size); q, k = per-dimension scale-offsets of z (q_scaleoffset,
    k_scaleoffset; offsets only with use_bias); RoPE if p_bias='rotary' ((Leaky) ReRoPE if 'rerope',
    with position_options); A = normalise(q·kᵀ/√s);
    o = (u ⊙ A·v)·W_o + b (o_dense). Cross mode (self_attention=False): inputs [q, k, v, ...];
    uq_dense(q) → (u, q), k_dense(k), v_dense(v); the key mask is the mask of v.
    """

    def __init__(self, units, key_size, activation="swish", use_bias=True,
                 normalization="squared_relu", self_attention=True, attention_scale=True,
                 attention_dropout=None, kernel_initializer="glorot_uniform", softmax_plus_clamp=16,
                 **kwargs):
        super().__init__(normalization, attention_scale, attention_dropout, kernel_initializer,
                         softmax_plus_clamp, **kwargs)
        self.units = units
        self.key_size = key_size
        self.activation = activation
        self.use_bias = use_bias
        self.self_attention = self_attention

    def build(self, input_shape):
        nested = isinstance(input_shape, list) and isinstance(input_shape[0], (list, tuple))
        shapes = input_shape if nested else [input_shape]
        e, s = self.units, self.key_size
        common = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                      activation=get_activation(self.activation))
        if self.self_attention:
            self.i_dense = build_dense(self, "i_dense", 2 * e + s, shapes[0], **common)
            self.q_scaleoffset, self.k_scaleoffset = (
                ScaleOffset(offset=self.use_bias, name=name, dtype=self.dtype_policy)
                for name in ("q_scaleoffset", "k_scaleoffset"))
            self.q_scaleoffset.build((None, None, s))
            self.k_scaleoffset.build((None, None, s))
        else:
            if len(shapes) < 3:
                raise ValueError("GatedAttentionUnit(self_attention=False) expects inputs="
                                 f"[q, k, v, ...], got {len(shapes)} tensor(s).")
            self.uq_dense = build_dense(self, "uq_dense", e + s, shapes[0], **common)
            self.k_dense = build_dense(self, "k_dense", s, shapes[1], **common)
            self.v_dense = build_dense(self, "v_dense", e, shapes[2], **common)
        self.o_dense = build_dense(self, "o_dense", shapes[0][-1], (None, None, e),
                                   use_bias=self.use_bias,
                                   kernel_initializer=self.kernel_initializer)
        self.built = True

    def call(self, inputs, mask=None, a_bias=None, p_bias=None, training=None,
             position_options=None):
        self._check_call_args(a_bias, p_bias, GAU_POSITION_BIASES)
        n_main, layout = (1, "x") if self.self_attention else (3, "q, k, v")
        main, bias, position = _parse_inputs(self, inputs, n_main, a_bias, p_bias, layout)
        masks = as_list(mask)
        key_mask = masks[0 if self.self_attention else 2] if len(masks) >= n_main else None
        e, s = self.units, self.key_size
        if self.self_attention:
            z = self.i_dense(main[0])
            u, v, qk = z[..., :e], z[..., e:2 * e], z[..., 2 * e:]
            q, k = self.q_scaleoffset(qk), self.k_scaleoffset(qk)
        else:
            uq = self.uq_dense(main[0])
            u, q = uq[..., :e], uq[..., e:]
            k, v = self.k_dense(main[1]), self.v_dense(main[2])
        logits = position_logits(q, k, position, p_bias, position_options, "bmd,bnd->bmn")
        if self.attention_scale:
            logits = logits / math.sqrt(s)
        keep, additive = combine_attention_bias(
            key_mask, bias, a_bias, ops.shape(q)[1], ops.shape(k)[1], head_axis=False)
        probs = self._weights(logits, keep, additive, training)
        return self.o_dense(u * ops.einsum("bmn,bnd->bmd", probs, v))

    def init_cache(self, batch_size, length, dtype=None):
        """Zero cache [k (b, L, key_size), v (b, L, units)] of a self-attention GAU."""
        dtype = dtype or self.compute_dtype
        return [ops.zeros((batch_size, length, self.key_size), dtype),
                ops.zeros((batch_size, length, self.units), dtype)]

    def call_cached(self, inputs, cache, index, key_mask, a_bias=None, p_bias=None,
                    position_options=None, positions=None):
        """Self-attention of n new positions through a key/value cache, as
        :meth:`MultiHeadAttention.call_cached` (inputs [x, (a_bias), (position)]; keys cached
        before RoPE under p_bias='rerope'). Returns (o (b, n, d), new cache)."""
        self._check_call_args(a_bias, p_bias, GAU_POSITION_BIASES)
        if not self.self_attention:
            raise ValueError(f"{self.name}: only a self-attention GAU can be cached.")
        inputs = as_list(inputs)
        check_input_count(self, inputs, 1 + (a_bias is True) + (p_bias is not None),
                          "[x" + (", a_bias" if a_bias is True else "")
                          + (f", position ({p_bias})" if p_bias else "") + "] (cached call)")
        bias = inputs[1] if a_bias is True else None
        position = inputs[-1] if p_bias is not None else None
        e, s = self.units, self.key_size
        z = self.i_dense(inputs[0])
        u, v, qk = z[..., :e], z[..., e:2 * e], z[..., 2 * e:]
        q, k = self.q_scaleoffset(qk), self.k_scaleoffset(qk)
        q = _cached_log_n(q, position_options, positions)
        if p_bias == "rotary":
            q, k = apply_rotary_position_embeddings(position, q, k)
        k_cache = ops.slice_update(cache[0], (0, index, 0), ops.cast(k, cache[0].dtype))
        v_cache = ops.slice_update(cache[1], (0, index, 0), ops.cast(v, cache[1].dtype))
        keys = ops.cast(k_cache, q.dtype)
        if p_bias == "rerope":
            logits = _cached_rerope(q, keys, index, position_options, "bqd,bkd->bqk")
        else:
            logits = ops.einsum("bmd,bnd->bmn", q, keys)
        if self.attention_scale:
            logits = logits / math.sqrt(s)
        keep, additive = combine_attention_bias(
            key_mask, bias, a_bias, ops.shape(q)[1], ops.shape(keys)[1], head_axis=False,
            q_offset=index)
        probs = self._weights(logits, keep, additive, None)
        o = u * ops.einsum("bmn,bnd->bmd", probs, ops.cast(v_cache, u.dtype))
        return self.o_dense(o), [k_cache, v_cache]

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_spec(self, inputs, mask=None, a_bias=None, p_bias=None, training=None,
                            position_options=None):
        # Output = shape of the first input; avoids tracing call() at model construction.
        self._check_call_args(a_bias, p_bias, GAU_POSITION_BIASES)
        n_main, layout = (1, "x") if self.self_attention else (3, "q, k, v")
        main, _, _ = _parse_inputs(self, inputs, n_main, a_bias, p_bias, layout)
        return keras.KerasTensor(tuple(main[0].shape), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, key_size=self.key_size,
                      activation=serialize_activation(self.activation), use_bias=self.use_bias,
                      self_attention=self.self_attention)
        return config
