"""Per-block choice of the self-attention kind: dot-product or Synthesizer (arXiv 2005.00743).

``build_transformer_model(..., attention_type=T, synthesizer_options=None)`` with ``T`` one
kind for every block, a list (one per block) or a dict ``{block index: kind}`` (others 'dot').
A kind is ``'dot'`` (the family's MultiHeadAttention) or ``'+'``-joined Synthesizer terms:
``dense``, ``random``, ``factorized_dense``, ``factorized_random`` and ``dot`` (the mixture
with dot-product attention), e.g. ``'dense'``, ``'factorized_random'``, ``'random+dot'``.

A Synthesizer block keeps the layer name ``Transformer-{i}-MultiHeadSelfAttention`` and the
value / output projections (and, with ``+dot``, query / key) of the checkpoint; its synthetic
weights are declared not-from-checkpoint, and the checkpoint's query / key variables of a
block without ``dot`` are declared unused by choice, so loading accounts for every variable.
ℓ = ``max_position``; ``synthesizer_options``: ``dense_units`` (head size), ``dense_factors``
(the pair a·b = ℓ closest to √ℓ), ``random_rank`` (8), ``random_trainable`` (True).
"""

import math

from bert4keras_ng.models import mappings

TERMS = ("dense", "random", "factorized_dense", "factorized_random", "dot")
OPTION_KEYS = ("dense_units", "dense_factors", "random_rank", "random_trainable")


def parse_kind(kind, where):
    """'random+dot' -> ('random', 'dot'); 'dot' -> None (plain dot-product attention)."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"attention_type{where} must be a string such as 'dot', 'dense' or "
                         f"'random+dot'; got {kind!r}.")
    terms = tuple(t.strip() for t in kind.lower().split("+"))
    bad = [t for t in terms if t not in TERMS]
    if bad or len(set(terms)) != len(terms):
        raise ValueError(f"attention_type{where}={kind!r}: terms must be distinct names from "
                         f"{TERMS} joined with '+'.")
    kinds = {t.replace("factorized_", "") for t in terms}
    if len(kinds) != len(terms):
        raise ValueError(f"attention_type{where}={kind!r} names a term both plain and "
                         "factorised.")
    return None if terms == ("dot",) else terms


def attention_types(spec, num_layers):
    """The per-block tuple of parsed kinds (None = dot-product) of an ``attention_type``."""
    if spec is None:
        return (None,) * num_layers
    if isinstance(spec, str):
        return (parse_kind(spec, ""),) * num_layers
    if isinstance(spec, dict):
        bad = [i for i in spec if not (isinstance(i, int) and 0 <= i < num_layers)]
        if bad:
            raise ValueError(f"attention_type keys {bad} are not block indices 0..{num_layers - 1}.")
        return tuple(parse_kind(spec[i], f"[{i}]") if i in spec else None
                     for i in range(num_layers))
    if isinstance(spec, (list, tuple)):
        if len(spec) != num_layers:
            raise ValueError(f"attention_type lists {len(spec)} kinds for {num_layers} blocks.")
        return tuple(parse_kind(k, f"[{i}]") for i, k in enumerate(spec))
    raise ValueError(f"attention_type must be a string, a list or a dict; got {type(spec).__name__}.")


def closest_factors(n):
    """(a, b) with a·b = n and a <= b as close to √n as possible."""
    a = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    return a, n // a


def layer_options(terms, options, max_length):
    """SynthesizerAttention keyword arguments for parsed ``terms``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"synthesizer_options: unknown key(s) {unknown}; allowed {OPTION_KEYS}.")
    kwargs = dict(kinds=tuple(t.replace("factorized_", "") for t in terms),
                  dense_units=options.get("dense_units"),
                  random_trainable=options.get("random_trainable", True))
    if "factorized_dense" in terms:
        kwargs["dense_factors"] = tuple(options.get("dense_factors") or closest_factors(max_length))
    if "factorized_random" in terms:
        kwargs["random_rank"] = int(options.get("random_rank") or 8)
    return kwargs


def check_builder(builder):
    """Refuse option combinations a Synthesizer block cannot honour, naming them."""
    used = [i for i, t in enumerate(builder.attention_types) if t is not None]
    if not used:
        return
    where = f"attention_type (Synthesizer in block(s) {used})"
    if builder.position == "t5_relative":
        raise ValueError(f"{where}: T5 models are not supported (BERT-style encoders, the GPT "
                         "family and RoPE models are).")
    if builder.block == "gau":
        raise ValueError(f"{where}: {type(builder).__name__} has gated attention units, not "
                         "multi-head attention blocks.")
    if builder.application == "unilm":
        raise ValueError(f"{where} supports application='encoder' and 'lm', not 'unilm'.")
    if builder.residual_attention_scores or getattr(builder, "hwfa", None):
        raise ValueError(f"{where} cannot be combined with residual_attention_scores or "
                         "hwfa_window.")
    if builder.shared_blocks and len(set(builder.attention_types)) > 1:
        raise ValueError(f"{where}: {type(builder).__name__} shares one block; give one kind.")
    mixed = [i for i in used if "dot" in builder.attention_types[i]]
    if mixed and builder.position not in ("learned", "rotary"):
        raise ValueError(f"{where}: the '+dot' term supports learned or rotary positions; this "
                         f"model's are {builder.position!r}.")
    if mixed and builder.attention_key_size != builder.attention_head_size:
        raise ValueError(f"{where}: the '+dot' term needs attention_key_size == "
                         f"attention_head_size, got {builder.attention_key_size} and "
                         f"{builder.attention_head_size}.")
    if builder.position_options:
        raise ValueError(f"{where} cannot be combined with rerope_window / logn_train_length.")


def declare_checkpoint_use(builder):
    """Extend the builder's not-from-checkpoint patterns with the synthetic weights and its
    ignorable checkpoint variables with the query / key of blocks without a dot term."""
    from bert4keras_ng.layers import SynthesizerAttention
    from bert4keras_ng.models.transformer import _fill

    extra, dropped = [], []
    for index, terms in enumerate(builder.attention_types):
        if terms is None:
            continue
        layer = builder.prefixed(builder.block_name(index, "MultiHeadSelfAttention"))
        extra += [layer + "/" + w for w in SynthesizerAttention.SYNTHETIC_WEIGHTS]
        if "dot" in terms:
            continue
        key = builder.block_prefix + "Transformer-{i}-MultiHeadSelfAttention"
        if builder.shared_blocks:
            key = builder.block_prefix + "Transformer-MultiHeadSelfAttention"
        for table in (builder.table, builder.hf_table or {}):
            for weight, spec in table.get(key, {}).items():
                if weight.split("/")[0] in ("q_dense", "k_dense"):
                    dropped.append(mappings.parse(_fill(spec, index, builder.scope))[0])
    builder.not_from_checkpoint = tuple(builder.not_from_checkpoint) + tuple(
        _escape(p) for p in extra)
    builder.ignorable = tuple(builder.ignorable) + tuple(_escape(n) for n in dropped)


def _escape(name):
    """A literal name as an fnmatch pattern (the trailing '*' of a weight pattern kept)."""
    return "".join("[%s]" % c if c in "[]?" else c for c in name)


def synthesizer_attention(builder, x, name, index, mask, position):
    """The Synthesizer self-attention of block ``index`` (mask: None or the LM mask)."""
    from bert4keras_ng.layers import SynthesizerAttention

    terms = builder.attention_types[index]
    if builder.attention_caches.get(builder.prefixed(name)) is not None:
        raise ValueError(f"attention_caches for {name!r}: a Synthesizer block has no key/value "
                         "cache.")
    inputs, arguments = x, {}
    if position is not None and "dot" in terms:
        inputs, arguments = [x, position], {"p_bias": "rotary"}
    return builder.apply(
        inputs,
        SynthesizerAttention,
        arguments=arguments,
        heads=builder.num_attention_heads,
        head_size=builder.attention_head_size,
        max_length=builder.max_position,
        causal=mask is not None,
        out_dim=builder.hidden_size,
        use_bias=builder.use_bias,
        kernel_initializer=builder.initializer,
        name=name,
        **layer_options(terms, builder.synthesizer_options, builder.max_position),
    )
