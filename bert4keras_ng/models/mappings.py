"""Checkpoint tables: Keras layer name -> {weight name inside the layer: TF1 variable name}.

Tables are plain data. Placeholders: ``{i}`` is the block index (a key with ``{i}`` is expanded
for every block; a value with ``{i}`` names a per-block variable, one without it a variable
shared by all blocks, as for ALBERT) and ``{scope}`` the family's scope (``bert/``,
``electra/``, ...). Marks after the variable name:

- ``[T]`` the variable is stored transposed relative to the Keras weight;
- ``[k]`` the variable's first axis is the vocabulary: keep_tokens / compound_tokens apply.

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
)

# Trainable weights that no checkpoint holds, as ``<layer>/<weight>`` fnmatch patterns: the
# projections of conditional LayerNorm (layer_norm_cond) start from their initializers.
NOT_FROM_CHECKPOINT = (
    "*-Norm/hidden_dense/*",
    "*-Norm/gamma_dense/*",
    "*-Norm/beta_dense/*",
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

# ELECTRA: BERT names under electra/, its own embedding projection and discriminator head.
ELECTRA = {k: v for k, v in BERT.items() if k not in ("Pooler-Dense", "NSP-Proba") and not k.startswith("MLM-")}
ELECTRA["Embedding-Mapping"] = dense("{scope}embeddings_project")
ELECTRA["Discriminator-Dense"] = dense("discriminator_predictions/dense")
ELECTRA["Discriminator-Prediction"] = dense("discriminator_predictions/dense_1")

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


def parse(variable):
    """'name [T] [k]' -> (name, transposed, vocabulary)."""
    parts = variable.split()
    name, marks = parts[0], set(parts[1:])
    unknown = marks - {"[T]", "[k]"}
    if unknown:
        raise ValueError("Unknown mark(s) %s in checkpoint table entry %r." % (sorted(unknown), variable))
    return name, "[T]" in marks, "[k]" in marks
