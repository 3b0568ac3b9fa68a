"""The shared block recipes. Every family runs one of them; what differs between families
(biases, norm kind and epsilon, position scheme, shared or indexed layer names) is read from the
builder's declared attributes.

Post-norm sub-layer: y = Norm(x + Dropout(F(x))), named ``<name>``, ``<name>-Dropout``,
``<name>-Add``, ``<name>-Norm``.
- attention block: F = multi-head self-attention, then F = feed-forward;
- GAU block: F = one gated attention unit (no feed-forward).
"""

import keras

from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.models.auxiliary import Add


def residual(builder, x, y, name):
    """Dropout → Add (with the sub-layer input) → Norm, the tail of every post-norm sub-layer."""
    y = builder.apply(y, Dropout, rate=builder.dropout_rate, name=name + "-Dropout")
    y = builder.apply([x, y], Add, name=name + "-Add")
    return builder.apply_norm(y, name + "-Norm", builder.block_epsilon)


def _attention_inputs(builder, xs, width, index=None):
    """Append the attention mask and position tensor to the layer inputs; the call arguments."""
    arguments = {}
    mask = builder.compute_attention_bias()
    if builder.residual_attention_scores and builder.attention_scores is not None:
        mask = builder.attention_scores  # RealFormer: previous logits as an additive bias
    hwfa = getattr(builder, "hwfa", None)
    hwfa_last = hwfa is not None and index == builder.num_hidden_layers - 1
    if hwfa is not None and not hwfa_last:  # HWFA: window attention in all but the last block
        from bert4keras_ng.models.extrapolation import WindowMask

        mask = builder.apply(xs[0] if mask is None else [xs[0], mask], WindowMask,
                             window=hwfa[0], name="Attention-Window-Mask")
    if mask is not None:
        xs.append(mask)
        arguments["a_bias"] = True
    if hwfa_last:  # full attention, no positions, log-n query scaling
        arguments["position_options"] = dict(hwfa[1])
        return xs, arguments
    position = builder.compute_position_bias(xs[0], width)
    if position is not None:
        xs.append(position)
        arguments["p_bias"] = builder.position_bias_kind
        if builder.position_options:
            arguments["position_options"] = builder.position_options
    return xs, arguments


def attention_block(builder, x, index):
    """Self-attention sub-layer then feed-forward sub-layer (BERT, ALBERT, NEZHA, RoFormer(V2),
    ELECTRA)."""
    from bert4keras_ng.layers import FeedForward, MultiHeadAttention

    name = builder.block_name(index, "MultiHeadSelfAttention")
    inputs, arguments = _attention_inputs(builder, [x, x, x], builder.attention_key_size, index)
    y = builder.apply(
        inputs,
        MultiHeadAttention,
        arguments=arguments,
        heads=builder.num_attention_heads,
        head_size=builder.attention_head_size,
        out_dim=builder.hidden_size,
        key_size=builder.attention_key_size,
        use_bias=builder.use_bias,
        normalization=builder.attention_normalization,
        softmax_plus_clamp=builder.softmax_plus_clamp,
        attention_dropout=builder.attention_dropout_rate or None,
        return_attention_scores=bool(builder.residual_attention_scores),
        kernel_initializer=builder.initializer,
        name=name,
    )
    if builder.residual_attention_scores:
        y, builder.attention_scores = y
    x = residual(builder, x, y, name)

    name = builder.block_name(index, "FeedForward")
    y = builder.apply(
        x,
        FeedForward,
        units=builder.intermediate_size,
        activation=builder.hidden_act,
        use_bias=builder.use_bias,
        kernel_initializer=builder.initializer,
        name=name,
    )
    return residual(builder, x, y, name)


def gau_block(builder, x, index):
    """One gated attention unit sub-layer (GAU-alpha)."""
    from bert4keras_ng.layers import GatedAttentionUnit

    name = builder.block_name(index, "GatedAttentionUnit")
    inputs, arguments = _attention_inputs(builder, [x], builder.attention_key_size, index)
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
