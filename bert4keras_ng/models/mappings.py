"""Checkpoint tables: Keras layer name -> {weight name inside the layer: TF1 variable name}.

Tables are plain data. Placeholders: ``{i}`` is the block index (a key with ``{i}`` is expanded
for every block; a value with ``{i}`` names a per-block variable, one without it a variable
shared by all blocks, as for ALBERT) and ``{scope}`` the family's scope (``bert/``,
``electra/``, ...). Marks after the variable name:

- ``[T]`` the variable is stored transposed relative to the Keras weight;
- ``[k]`` the variable's first axis is the vocabulary: keep_tokens / compound_tokens apply;
- ``[k-last]`` as ``[k]`` on the last axis (T5.1.1's untied ``decoder/logits/kernel`` (H, V)).

``{i:02d}`` / ``{i:03d}`` in a variable name is the zero-padded block index (GPT2_ML, T5).

Loading and saving both walk these tables (see ``Transformer.checkpoint_entries``). A weight
listed here that a built layer does not have (no bias, no LayerNorm parameters, a head that was
not built) is simply not part of the model's checkpoint.

Loading accounts for both directions: every trainable weight a model creates is in its table or
matches :data:`NOT_FROM_CHECKPOINT`, and every checkpoint variable is used or matches
:data:`IGNORABLE` (or belongs to an :data:`OPTIONAL_LAYERS` entry whose layer was not built).
"""

import fnmatch

# Checkpoint variables a model may leave unused without losing anything it computes (fnmatch
# patterns, ``{scope}`` filled): optimizer slots and counters, and the pretraining heads and
# companion networks released inside the checkpoints.
IGNORABLE = (
    "global_step",
    "*/adam_m",
    "*/adam_v",
    "*/Adam",
    "*/Adam_1",
    "*/Momentum",
    "*/lamb_m",
    "*/lamb_v",
    "*/AdaFactor_*",
    "*/ExponentialMovingAverage",
    "cls/*",  # BERT MLM and NSP heads
    "{scope}pooler/*",
    "discriminator_predictions/*",  # ELECTRA heads and its generator
    "generator_predictions/*",
    "generator/*",
)

# Table entries of layers that only some options build (segment table, heads): their variables
# are ignorable when the layer was not built.
OPTIONAL_LAYERS = (
    "Embedding-Segment",
    "Pooler-Dense",
    "NSP-Proba",
    "MLM-Dense",
    "MLM-Norm",
    "MLM-Bias",
    "Discriminator-Dense",
    "Discriminator-Prediction",
    "Decoder-Output-LM",  # T5.1.1 decoders built with with_lm=False
)

# Trainable weights that no checkpoint holds, as ``<layer>/<weight>`` fnmatch patterns: the
# projections of conditional LayerNorm (layer_norm_cond) start from their initializers.
NOT_FROM_CHECKPOINT = (
    "*-Norm/hidden_dense/*",
    "*-Norm/gamma_dense/*",
    "*-Norm/beta_dense/*",
    "*-Norm-[01]/hidden_dense/*",  # GPT2_ML's FeedForward-Norm-0 / -Norm-1
    "*-Norm-[01]/gamma_dense/*",
    "*-Norm-[01]/beta_dense/*",
)


def matches(name, patterns):
    """Whether ``name`` matches one of the fnmatch ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def dense(path):
    return {"kernel": path + "/kernel", "bias": path + "/bias"}


def layer_norm(path):
    return {"beta": path + "/beta", "gamma": path + "/gamma"}


def attention(self_scope, output):
    """MultiHeadAttention weights: q/k/v projections under ``self_scope``, output Dense."""
    table = {}
    for ours, theirs in (("q_dense", "query"), ("k_dense", "key"), ("v_dense", "value")):
        table[ours + "/kernel"] = self_scope + theirs + "/kernel"
        table[ours + "/bias"] = self_scope + theirs + "/bias"
    table["o_dense/kernel"] = output + "/kernel"
    table["o_dense/bias"] = output + "/bias"
    return table


def feed_forward(inner, outer):
    return {
        "i0_dense/kernel": inner + "/kernel",
        "i0_dense/bias": inner + "/bias",
        "o_dense/kernel": outer + "/kernel",
        "o_dense/bias": outer + "/bias",
    }


_LAYER = "{scope}encoder/layer_{i}/"

# Google BERT layout (bert, roberta, nezha, roformer; roformer_v2 keeps the weights it has).
BERT = {
    "Embedding-Token": {"embeddings": "{scope}embeddings/word_embeddings [k]"},
    "Embedding-Segment": {"embeddings": "{scope}embeddings/token_type_embeddings"},
    "Embedding-Position": {"embeddings": "{scope}embeddings/position_embeddings"},
    "Embedding-Norm": layer_norm("{scope}embeddings/LayerNorm"),
    "Embedding-Mapping": dense("{scope}encoder/embedding_hidden_mapping_in"),
    "Transformer-{i}-MultiHeadSelfAttention": attention(
        _LAYER + "attention/self/", _LAYER + "attention/output/dense"
    ),
    "Transformer-{i}-MultiHeadSelfAttention-Norm": layer_norm(_LAYER + "attention/output/LayerNorm"),
    "Transformer-{i}-FeedForward": feed_forward(_LAYER + "intermediate/dense", _LAYER + "output/dense"),
    "Transformer-{i}-FeedForward-Norm": layer_norm(_LAYER + "output/LayerNorm"),
    "Pooler-Dense": dense("{scope}pooler/dense"),
    "NSP-Proba": {
        "kernel": "cls/seq_relationship/output_weights [T]",
        "bias": "cls/seq_relationship/output_bias",
    },
    "MLM-Dense": dense("cls/predictions/transform/dense"),
    "MLM-Norm": layer_norm("cls/predictions/transform/LayerNorm"),
    "MLM-Bias": {"beta": "cls/predictions/output_bias [k]"},
}

# ALBERT: one block stored once (group_0/inner_group_0), BERT embeddings and heads.
_ALBERT_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
_ALBERT_BLOCK_TABLE = {
    "MultiHeadSelfAttention": attention(
        _ALBERT_BLOCK + "attention_1/self/", _ALBERT_BLOCK + "attention_1/output/dense"
    ),
    "MultiHeadSelfAttention-Norm": layer_norm(_ALBERT_BLOCK + "LayerNorm"),
    "FeedForward": feed_forward(
        _ALBERT_BLOCK + "ffn_1/intermediate/dense", _ALBERT_BLOCK + "ffn_1/intermediate/output/dense"
    ),
    "FeedForward-Norm": layer_norm(_ALBERT_BLOCK + "LayerNorm_1"),
}
_BERT_OUTSIDE_BLOCKS = {k: v for k, v in BERT.items() if not k.startswith("Transformer-")}

ALBERT = dict(_BERT_OUTSIDE_BLOCKS, **{"Transformer-" + k: v for k, v in _ALBERT_BLOCK_TABLE.items()})
# albert_unshared: indexed BERT layers, each initialised from the one shared set of variables.
ALBERT_UNSHARED = dict(
    _BERT_OUTSIDE_BLOCKS, **{"Transformer-{i}-" + k: v for k, v in _ALBERT_BLOCK_TABLE.items()}
)

# ELECTRA: BERT names under electra/, its own embedding projection, discriminator head and the
# generator's MLM head.
ELECTRA = {k: v for k, v in BERT.items() if k not in ("Pooler-Dense", "NSP-Proba") and not k.startswith("MLM-")}
ELECTRA["Embedding-Mapping"] = dense("{scope}embeddings_project")
ELECTRA["Discriminator-Dense"] = dense("discriminator_predictions/dense")
ELECTRA["Discriminator-Prediction"] = dense("discriminator_predictions/dense_1")
ELECTRA["MLM-Dense"] = dense("generator_predictions/dense")
ELECTRA["MLM-Norm"] = layer_norm("generator_predictions/LayerNorm")
ELECTRA["MLM-Bias"] = {"beta": "generator_predictions/output_bias [k]"}

# GAU-alpha: BERT token/segment embeddings, one GatedAttentionUnit per block, no norm weights;
# the embedding projection (embedding_size != hidden_size; no release has one) under RoFormerV2's
# name, so that save_weights_as_checkpoint -> load keeps it.
GAU_ALPHA = {
    "Embedding-Token": {"embeddings": "bert/embeddings/word_embeddings [k]"},
    "Embedding-Segment": {"embeddings": "bert/embeddings/token_type_embeddings"},
    "Embedding-Mapping": {"kernel": "bert/encoder/embedding_hidden_mapping_in/kernel"},
    "Transformer-{i}-GatedAttentionUnit": {
        "i_dense/kernel": "GAU_alpha/encoder/layer_{i}/gau/i_dense/kernel",
        "i_dense/bias": "GAU_alpha/encoder/layer_{i}/gau/i_dense/bias",
        "q_scaleoffset/gamma": "GAU_alpha/encoder/layer_{i}/gau/q_scaleoffset/gamma",
        "q_scaleoffset/beta": "GAU_alpha/encoder/layer_{i}/gau/q_scaleoffset/beta",
        "k_scaleoffset/gamma": "GAU_alpha/encoder/layer_{i}/gau/k_scaleoffset/gamma",
        "k_scaleoffset/beta": "GAU_alpha/encoder/layer_{i}/gau/k_scaleoffset/beta",
        "o_dense/kernel": "GAU_alpha/encoder/layer_{i}/gau/o_dense/kernel",
        "o_dense/bias": "GAU_alpha/encoder/layer_{i}/gau/o_dense/bias",
    },
}


# GPT (CDial-GPT): BERT names with bert/ -> gpt/ and encoder -> transformer.
def _gpt_name(variable):
    return variable.replace("{scope}", "gpt/").replace("encoder", "transformer")


GPT = {
    layer: {weight: _gpt_name(variable) for weight, variable in weights.items()}
    for layer, weights in BERT.items()
    if layer not in ("Pooler-Dense", "NSP-Proba") and not layer.startswith("MLM-")
}

# GPT2 (CPM-LM): pre-LN blocks read their norms from .../input/LayerNorm, plus the final norm.
_GPT2_LAYER = "gpt/transformer/layer_{i}/"
GPT2 = {k: v for k, v in GPT.items() if k not in ("Embedding-Segment", "Embedding-Norm")}
GPT2["Transformer-{i}-MultiHeadSelfAttention-Norm"] = layer_norm(_GPT2_LAYER + "attention/input/LayerNorm")
GPT2["Transformer-{i}-FeedForward-Norm"] = layer_norm(_GPT2_LAYER + "input/LayerNorm")
GPT2["Output-Norm"] = layer_norm("gpt/output/LayerNorm")

# GPT2_ML (imcaspar/gpt2-ml, scope newslm/): no norm before attention, two norms around the FFN.
_ML = "newslm/layer{i:02d}/"
GPT2_ML = {
    "Embedding-Token": {"embeddings": "newslm/embeddings/word_embed [k]"},
    "Embedding-Position": {"embeddings": "newslm/embeddings/pos_embed"},
    "Embedding-Norm": layer_norm("newslm/embeddings/LayerNorm_embed_norm"),
    "Transformer-{i}-MultiHeadSelfAttention": {
        "q_dense/kernel": _ML + "query_layer/kernel",
        "q_dense/bias": _ML + "query_layer/bias",
        "k_dense/kernel": _ML + "key_layer/kernel",
        "k_dense/bias": _ML + "key_layer/bias",
        "v_dense/kernel": _ML + "value_layer/kernel",
        "v_dense/bias": _ML + "value_layer/bias",
        "o_dense/kernel": _ML + "context_projection_layer/kernel",
        "o_dense/bias": _ML + "context_projection_layer/bias",
    },
    "Transformer-{i}-FeedForward-Norm-0": layer_norm(_ML + "LayerNorm_mlp_ln0"),
    "Transformer-{i}-FeedForward": feed_forward(_ML + "intermediate", _ML + "output"),
    "Transformer-{i}-FeedForward-Norm-1": layer_norm(_ML + "LayerNorm_mlp_ln1"),
}


def _t5_attention(path):
    return {ours + "/kernel": path + theirs for ours, theirs in
            (("q_dense", "q"), ("k_dense", "k"), ("v_dense", "v"), ("o_dense", "o"))}


def _t5_feed_forward(path, gated):
    inner = ("wi_0", "wi_1") if gated else ("wi",)
    table = {"i%d_dense/kernel" % n: path + name + "/kernel" for n, name in enumerate(inner)}
    table["o_dense/kernel"] = path + "wo/kernel"
    return table


def t5(version):
    """Google T5 (``t5.1.0``), T5.1.1 (gated FFN, untied LM) and mT5 (``rms_norm`` names)."""
    gated = version in ("t5.1.1", "mt5.1.1")
    norm = "rms_norm" if version == "mt5.1.1" else "layer_norm"
    final = "rms_norm" if version == "mt5.1.1" else "final_layer_norm"
    enc, dec = "encoder/block_{i:03d}/", "decoder/block_{i:03d}/"
    bias = "block_000/layer_000/SelfAttention/relative_attention_bias [T]"
    table = {
        "Embedding-Token": {"embeddings": "shared/embedding [k]"},
        "Encoder-Embedding-Relative-Position": {"embeddings": "encoder/" + bias},
        "Encoder-Output-Norm": {"gamma": "encoder/%s/scale" % final},
        "Decoder-Embedding-Relative-Position": {"embeddings": "decoder/" + bias},
        "Decoder-Output-Norm": {"gamma": "decoder/%s/scale" % final},
        "Encoder-Transformer-{i}-MultiHeadSelfAttention": _t5_attention(enc + "layer_000/SelfAttention/"),
        "Encoder-Transformer-{i}-MultiHeadSelfAttention-Norm": {"gamma": enc + "layer_000/%s/scale" % norm},
        "Encoder-Transformer-{i}-FeedForward": _t5_feed_forward(enc + "layer_001/DenseReluDense/", gated),
        "Encoder-Transformer-{i}-FeedForward-Norm": {"gamma": enc + "layer_001/%s/scale" % norm},
        "Decoder-Transformer-{i}-MultiHeadSelfAttention": _t5_attention(dec + "layer_000/SelfAttention/"),
        "Decoder-Transformer-{i}-MultiHeadSelfAttention-Norm": {"gamma": dec + "layer_000/%s/scale" % norm},
        "Decoder-Transformer-{i}-MultiHeadCrossAttention": _t5_attention(dec + "layer_001/EncDecAttention/"),
        "Decoder-Transformer-{i}-MultiHeadCrossAttention-Norm": {"gamma": dec + "layer_001/%s/scale" % norm},
        "Decoder-Transformer-{i}-FeedForward": _t5_feed_forward(dec + "layer_002/DenseReluDense/", gated),
        "Decoder-Transformer-{i}-FeedForward-Norm": {"gamma": dec + "layer_002/%s/scale" % norm},
    }
    if gated:
        table["Decoder-Output-LM"] = {"kernel": "decoder/logits/kernel [k-last]"}
    return table


MARKS = ("[T]", "[k]", "[k-last]")


def parse(variable):
    """'name [T] [k]' -> (name, transposed, vocabulary axis: None, 0 or -1)."""
    parts = variable.split()
    name, marks = parts[0], set(parts[1:])
    unknown = marks - set(MARKS)
    if unknown:
        raise ValueError("Unknown mark(s) %s in checkpoint table entry %r." % (sorted(unknown), variable))
    vocabulary = 0 if "[k]" in marks else (-1 if "[k-last]" in marks else None)
    return name, "[T]" in marks, vocabulary
