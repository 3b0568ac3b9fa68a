"""The shared block recipes. Every family runs one of them; what differs between families
(biases, norm kind and epsilon, position scheme, shared or indexed layer names) is read from the
builder's declared attributes.

A sub-layer F (self-attention, cross-attention, feed-forward, GAU) named ``<name>`` is wrapped
in one of two residual forms, with layers ``<name>-Norm``, ``<name>-Dropout``, ``<name>-Add``:
- post-norm: y = Norm(x + Dropout(F(x)))  (BERT family, GPT, GAU-alpha);
- pre-norm:  y = x + Dropout(F(Norm(x)))  (GPT2, T5 / mT5).

Blocks:
- ``attention_block``: post-norm self-attention then post-norm feed-forward;
- ``gau_block``: one post-norm gated attention unit (no feed-forward);
- ``pre_norm_block``: pre-norm self-attention then pre-norm feed-forward;
- ``gpt2_ml_block``: self-attention without norm, then Norm-0 → FFN → add → Norm-1;
- ``cross_attention_block``: pre-norm causal self-attention, pre-norm cross-attention over a
  context, pre-norm feed-forward (T5 decoder).
"""

from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.models.auxiliary import Add, CachedKeysMask, Concatenate1D


def residual(builder, x, y, name):
    """Dropout → Add (with the sub-layer input) → Norm, the tail of every post-norm sub-layer."""
    y = _dropout_add(builder, x, y, name)
    return builder.apply_norm(y, name + "-Norm", builder.block_epsilon)


def _dropout_add(builder, x, y, name):
    y = builder.apply(y, Dropout, rate=builder.dropout_rate, name=name + "-Dropout")
    return builder.apply([x, y], Add, name=name + "-Add")


def pre_norm(builder, x, name, sublayer, norm_name=None):
    """Norm → ``sublayer`` → Dropout → Add with ``x``: the pre-norm residual sub-layer."""
    y = builder.apply_norm(x, norm_name or name + "-Norm", builder.block_epsilon)
    return _dropout_add(builder, x, sublayer(y, name), name)


def _with_biases(builder, inputs, mask, position, options=None):
    """Attention layer inputs with the mask and position tensors appended; the call arguments
    that declare them (a_bias, p_bias, position_options)."""
    inputs, arguments = list(inputs), {}
    if mask is not None:
        inputs.append(mask)
        arguments["a_bias"] = True
    if position is not None:
        inputs.append(position)
        arguments["p_bias"] = builder.position_bias_kind
    if options:
        arguments["position_options"] = dict(options)
    return inputs, arguments


def attention(builder, name, q, kv, mask=None, position=None, return_scores=False, options=None):
    """One MultiHeadAttention call with the builder's options (self- or cross-attention).

    ``position`` is the builder's position tensor (kind ``builder.position_bias_kind``). Caches
    given at build time (``attention_caches={name: [k_cache, v_cache]}``, bert4keras' option)
    are concatenated in front of this layer's key and value inputs.
    """
    from bert4keras_ng.layers import MultiHeadAttention

    k = v = kv
    caches = builder.attention_caches.get(builder.prefixed(name))
    if caches is not None:
        if position is not None:
            raise ValueError(
                "attention_caches for %r: this attention has a position bias (%s) computed for "
                "the uncached length; caches work on attentions without one (e.g. BERT-style "
                "learned positions, or T5 cross-attention with cross_position_bias=False)."
                % (name, builder.position_bias_kind)
            )
        k = builder.apply([caches[0], k], Concatenate1D, name=name + "-Cached-Key")
        v = builder.apply([caches[1], v], Concatenate1D, name=name + "-Cached-Value")
        if mask is not None:  # the cached positions are visible to every query
            mask = builder.apply([mask, caches[0]], CachedKeysMask, name=name + "-Cached-Mask")
    inputs, arguments = _with_biases(builder, [q, k, v], mask, position, options)
    return builder.apply(
        inputs,
        MultiHeadAttention,
        arguments=arguments,
        heads=builder.num_attention_heads,
        head_size=builder.attention_head_size,
        out_dim=builder.hidden_size,
        key_size=builder.attention_key_size,
        use_bias=builder.use_bias,
        normalization=builder.attention_normalization,
        attention_scale=builder.attention_scale,
        softmax_plus_clamp=builder.softmax_plus_clamp,
        attention_dropout=builder.attention_dropout_rate or None,
        return_attention_scores=return_scores,
        kernel_initializer=builder.initializer,
        name=name,
    )


def _self_attention_bias(builder, x, width, index):
    """The attention mask, position tensor and position_options of block ``index``'s
    self-attention (mask and positions computed once per model). HWFA (``builder.hwfa``):
    a window mask in all but the last block; the last one has no positions and log-n scaling."""
    mask = builder.compute_attention_bias()
    if builder.residual_attention_scores and builder.attention_scores is not None:
        mask = builder.attention_scores  # RealFormer: previous logits as an additive bias
    hwfa = getattr(builder, "hwfa", None)
    if hwfa is not None and index == builder.num_hidden_layers - 1:
        return mask, None, hwfa[1]
    if hwfa is not None:
        from bert4keras_ng.models.extrapolation import WindowMask

        mask = builder.apply(x if mask is None else [x, mask], WindowMask,
                             window=hwfa[0], name="Attention-Window-Mask")
    position = builder.compute_position_bias(x, width)
    return mask, position, builder.position_options if position is not None else None


def self_attention(builder, x, name, index):
    """Self-attention over ``x`` with the model's mask and position scheme (a Synthesizer in
    the blocks ``attention_type`` chooses, :mod:`~bert4keras_ng.models.attention_types`)."""
    mask, position, options = _self_attention_bias(builder, x, builder.attention_key_size, index)
    if builder.attention_types[index] is not None:
        from bert4keras_ng.models.attention_types import synthesizer_attention

        return synthesizer_attention(builder, x, name, index, mask, position)
    y = attention(builder, name, x, x, mask, position, bool(builder.residual_attention_scores),
                  options)
    if builder.residual_attention_scores:
        y, builder.attention_scores = y
    return y


def feed_forward(builder, x, name):
    from bert4keras_ng.layers import FeedForward

    return builder.apply(
        x,
        FeedForward,
        units=builder.intermediate_size,
        activation=builder.hidden_act,
        use_bias=builder.use_bias,
        kernel_initializer=builder.initializer,
        name=name,
    )


def attention_block(builder, x, index):
    """Post-norm self-attention then post-norm feed-forward (BERT, ALBERT, NEZHA, RoFormer(V2),
    ELECTRA, GPT)."""
    name = builder.block_name(index, "MultiHeadSelfAttention")
    x = residual(builder, x, self_attention(builder, x, name, index), name)
    name = builder.block_name(index, "FeedForward")
    return residual(builder, x, feed_forward(builder, x, name), name)


def pre_norm_block(builder, x, index):
    """Pre-norm self-attention then pre-norm feed-forward (GPT2, T5 encoder)."""
    x = pre_norm(builder, x, builder.block_name(index, "MultiHeadSelfAttention"),
                 lambda y, name: self_attention(builder, y, name, index))
    return pre_norm(builder, x, builder.block_name(index, "FeedForward"),
                    lambda y, name: feed_forward(builder, y, name))


def gpt2_ml_block(builder, x, index):
    """Self-attention → Dropout → Add (no norm), then Norm-0 → FFN → Dropout → Add with the
    un-normalised sum → Norm-1 (GPT2_ML)."""
    name = builder.block_name(index, "MultiHeadSelfAttention")
    x = _dropout_add(builder, x, self_attention(builder, x, name, index), name)
    name = builder.block_name(index, "FeedForward")
    x = pre_norm(builder, x, name, lambda y, n: feed_forward(builder, y, n), name + "-Norm-0")
    return builder.apply_norm(x, name + "-Norm-1", builder.block_epsilon)


def cross_attention_block(builder, x, context, index):
    """Pre-norm causal self-attention, pre-norm cross-attention over ``context`` (with the
    decoder's relative bias when ``builder.cross_position_bias``), pre-norm feed-forward."""

    def cross(y, name):
        position = builder.compute_cross_position_bias(y, context)
        return attention(builder, name, y, context, position=position)

    x = pre_norm(builder, x, builder.block_name(index, "MultiHeadSelfAttention"),
                 lambda y, name: self_attention(builder, y, name, index))
    x = pre_norm(builder, x, builder.block_name(index, "MultiHeadCrossAttention"), cross)
    return pre_norm(builder, x, builder.block_name(index, "FeedForward"),
                    lambda y, name: feed_forward(builder, y, name))


def gau_block(builder, x, index):
    """One gated attention unit sub-layer (GAU-alpha)."""
    from bert4keras_ng.layers import GatedAttentionUnit

    name = builder.block_name(index, "GatedAttentionUnit")
    mask, position, options = _self_attention_bias(builder, x, builder.attention_key_size, index)
    inputs, arguments = _with_biases(builder, [x], mask, position, options)
    y = builder.apply(
        inputs if len(inputs) > 1 else inputs[0],
        GatedAttentionUnit,
        arguments=arguments,
        units=builder.intermediate_size,
        key_size=builder.attention_key_size,
        activation=builder.hidden_act,
        use_bias=builder.use_bias,
        normalization=builder.attention_normalization,
        softmax_plus_clamp=builder.softmax_plus_clamp,
        attention_dropout=builder.attention_dropout_rate or None,
        kernel_initializer=builder.initializer,
        name=name,
    )
    return residual(builder, x, y, name)


BLOCKS = {
    "attention": attention_block,
    "gau": gau_block,
    "pre_norm": pre_norm_block,
    "gpt2_ml": gpt2_ml_block,
}
