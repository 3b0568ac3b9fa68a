"""Hugging Face checkpoint tables: Keras layer name -> {weight: Hugging Face parameter name}.

The same kind of data as :mod:`bert4keras_ng.models.mappings` (same ``{i}`` placeholder and
``[T]`` / ``[k]`` marks), for ``transformers`` state-dict names with the head model's base
prefix (``bert.``, ``albert.``, ...) removed (:class:`bert4keras_ng.huggingface.HFReader`
removes it on reading; the exporter puts it back for head models). ``torch.nn.Linear`` stores
``(out, in)``, so every Dense kernel is ``[T]``; embeddings are stored as Keras holds them.

RoPE layout: Hugging Face RoFormer rotates interleaved pairs ``(x[2j], x[2j+1])`` with
``sin/cos`` of frequency ``j`` repeated pairwise, which is our layout
(``bert4keras_ng.backend``); its q/k kernels therefore load unpermuted (checked numerically
against ``RoFormerForMaskedLM`` in tests/test_huggingface.py). No table entry needs a RoPE
permutation mark.

``IGNORED`` lists the parameters a folder may hold that are no model weight of ours: tied
copies of the token embedding and of the MLM bias, RoFormer's fixed sinusoid table (a constant
of the architecture), position-id buffers, NEZHA's fixed relative-position table. ``HEADS`` lists
per family the name prefixes of pretraining heads, unused (and allowed) when the head is not
built.
"""


def dense(path):
    return {"kernel": path + ".weight [T]", "bias": path + ".bias"}


def layer_norm(path):
    return {"gamma": path + ".weight", "beta": path + ".bias"}


def attention(self_scope, output):
    table = {}
    for ours, theirs in (("q_dense", "query"), ("k_dense", "key"), ("v_dense", "value")):
        table[ours + "/kernel"] = self_scope + theirs + ".weight [T]"
        table[ours + "/bias"] = self_scope + theirs + ".bias"
    table["o_dense/kernel"] = output + ".weight [T]"
    table["o_dense/bias"] = output + ".bias"
    return table


def feed_forward(inner, outer):
    return {
        "i0_dense/kernel": inner + ".weight [T]",
        "i0_dense/bias": inner + ".bias",
        "o_dense/kernel": outer + ".weight [T]",
        "o_dense/bias": outer + ".bias",
    }


_EMBEDDINGS = {
    "Embedding-Token": {"embeddings": "embeddings.word_embeddings.weight [k]"},
    "Embedding-Segment": {"embeddings": "embeddings.token_type_embeddings.weight"},
    "Embedding-Position": {"embeddings": "embeddings.position_embeddings.weight"},
    "Embedding-Norm": layer_norm("embeddings.LayerNorm"),
}
_LAYER = "encoder.layer.{i}."
_BLOCKS = {
    "Transformer-{i}-MultiHeadSelfAttention": attention(
        _LAYER + "attention.self.", _LAYER + "attention.output.dense"
    ),
    "Transformer-{i}-MultiHeadSelfAttention-Norm": layer_norm(_LAYER + "attention.output.LayerNorm"),
    "Transformer-{i}-FeedForward": feed_forward(_LAYER + "intermediate.dense", _LAYER + "output.dense"),
    "Transformer-{i}-FeedForward-Norm": layer_norm(_LAYER + "output.LayerNorm"),
}
_BERT_HEADS = {
    "Pooler-Dense": dense("pooler.dense"),
    "NSP-Proba": dense("cls.seq_relationship"),
    "MLM-Dense": dense("cls.predictions.transform.dense"),
    "MLM-Norm": layer_norm("cls.predictions.transform.LayerNorm"),
    "MLM-Bias": {"beta": "cls.predictions.bias [k]"},
}

# BertModel / BertForPreTraining / BertForMaskedLM (also Chinese RoBERTa-wwm-ext and MacBERT,
# published in the BERT layout); NezhaModel (transformers 4.x) has the same names without the
# position table; RoFormer adds ``embeddings_project`` when embedding_size != hidden_size.
BERT = dict(_EMBEDDINGS, **_BLOCKS, **_BERT_HEADS)
NEZHA = BERT
ROFORMER = dict(BERT, **{"Embedding-Mapping": dense("embeddings_project")})

# ALBERT: one shared layer (num_hidden_groups = inner_group_num = 1).
_ALBERT_LAYER = "encoder.albert_layer_groups.0.albert_layers.0."
_ALBERT_BLOCK = {
    "MultiHeadSelfAttention": attention(_ALBERT_LAYER + "attention.", _ALBERT_LAYER + "attention.dense"),
    "MultiHeadSelfAttention-Norm": layer_norm(_ALBERT_LAYER + "attention.LayerNorm"),
    "FeedForward": feed_forward(_ALBERT_LAYER + "ffn", _ALBERT_LAYER + "ffn_output"),
    "FeedForward-Norm": layer_norm(_ALBERT_LAYER + "full_layer_layer_norm"),
}
_ALBERT_OUTSIDE = dict(
    _EMBEDDINGS,
    **{
        "Embedding-Mapping": dense("encoder.embedding_hidden_mapping_in"),
        "Pooler-Dense": dense("pooler"),
        "NSP-Proba": dense("sop_classifier.classifier"),
        "MLM-Dense": dense("predictions.dense"),
        "MLM-Norm": layer_norm("predictions.LayerNorm"),
        "MLM-Bias": {"beta": "predictions.bias [k]"},
    },
)
ALBERT = dict(_ALBERT_OUTSIDE, **{"Transformer-" + k: v for k, v in _ALBERT_BLOCK.items()})
ALBERT_UNSHARED = dict(_ALBERT_OUTSIDE, **{"Transformer-{i}-" + k: v for k, v in _ALBERT_BLOCK.items()})

# ElectraForPreTraining (discriminator) / ElectraForMaskedLM (generator).
ELECTRA = dict(
    _EMBEDDINGS,
    **_BLOCKS,
    **{
        "Embedding-Mapping": dense("embeddings_project"),
        "Discriminator-Dense": dense("discriminator_predictions.dense"),
        "Discriminator-Prediction": dense("discriminator_predictions.dense_prediction"),
        "MLM-Dense": dense("generator_predictions.dense"),
        "MLM-Norm": layer_norm("generator_predictions.LayerNorm"),
        "MLM-Bias": {"beta": "generator_lm_head.bias [k]"},
    },
)

# GPT2LMHeadModel (CPM-LM, uer/gpt2-chinese-*): Conv1D weights are stored (in, out) like Keras
# kernels (no [T]); the fused c_attn is addressed as three views ``|split=axis:index:3``.
def _gpt2_attention(path):
    table = {}
    for n, ours in enumerate(("q_dense", "k_dense", "v_dense")):
        table[ours + "/kernel"] = path + "c_attn.weight|split=1:%d:3" % n
        table[ours + "/bias"] = path + "c_attn.bias|split=0:%d:3" % n
    table["o_dense/kernel"] = path + "c_proj.weight"
    table["o_dense/bias"] = path + "c_proj.bias"
    return table


GPT2 = {
    "Embedding-Token": {"embeddings": "wte.weight [k]"},
    "Embedding-Position": {"embeddings": "wpe.weight"},
    "Transformer-{i}-MultiHeadSelfAttention": _gpt2_attention("h.{i}.attn."),
    "Transformer-{i}-MultiHeadSelfAttention-Norm": layer_norm("h.{i}.ln_1"),
    "Transformer-{i}-FeedForward": {
        "i0_dense/kernel": "h.{i}.mlp.c_fc.weight",
        "i0_dense/bias": "h.{i}.mlp.c_fc.bias",
        "o_dense/kernel": "h.{i}.mlp.c_proj.weight",
        "o_dense/bias": "h.{i}.mlp.c_proj.bias",
    },
    "Transformer-{i}-FeedForward-Norm": layer_norm("h.{i}.ln_2"),
    "Output-Norm": layer_norm("ln_f"),
}


# T5ForConditionalGeneration / MT5ForConditionalGeneration (no bias anywhere, RMSNorm scale as
# ``.weight``; relative position tables stored (buckets, heads) as we hold them). An untied LM
# head (T5.1.1 / mT5) is applied by transformers to the unscaled decoder output, by us after
# Decoder-Output-Scale (x H^-0.5): its kernel is read times sqrt(d_model).
def _t5_attention(path):
    return {ours + "/kernel": path + theirs + ".weight [T]" for ours, theirs in
            (("q_dense", "q"), ("k_dense", "k"), ("v_dense", "v"), ("o_dense", "o"))}


def _t5_feed_forward(path, gated):
    inner = ("wi_0", "wi_1") if gated else ("wi",)
    table = {"i%d_dense/kernel" % n: path + name + ".weight [T]" for n, name in enumerate(inner)}
    table["o_dense/kernel"] = path + "wo.weight [T]"
    return table


def t5(version):
    gated = version != "t5.1.0"
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    table = {
        "Embedding-Token": {"embeddings": "shared.weight [k]"},
        "Encoder-Embedding-Relative-Position": {"embeddings": "encoder." + bias},
        "Encoder-Output-Norm": {"gamma": "encoder.final_layer_norm.weight"},
        "Decoder-Embedding-Relative-Position": {"embeddings": "decoder." + bias},
        "Decoder-Output-Norm": {"gamma": "decoder.final_layer_norm.weight"},
    }
    for stack, parts in (("Encoder", ("SelfAttention",)), ("Decoder", ("SelfAttention", "EncDecAttention"))):
        path = stack.lower() + ".block.{i}.layer."
        for n, part in enumerate(parts):
            kind = "MultiHeadSelfAttention" if part == "SelfAttention" else "MultiHeadCrossAttention"
            table["%s-Transformer-{i}-%s" % (stack, kind)] = _t5_attention(path + "%d.%s." % (n, part))
            table["%s-Transformer-{i}-%s-Norm" % (stack, kind)] = {"gamma": path + "%d.layer_norm.weight" % n}
        n = len(parts)
        table["%s-Transformer-{i}-FeedForward" % stack] = _t5_feed_forward(path + "%d.DenseReluDense." % n, gated)
        table["%s-Transformer-{i}-FeedForward-Norm" % stack] = {"gamma": path + "%d.layer_norm.weight" % n}
    if gated:
        table["Decoder-Output-LM"] = {"kernel": "lm_head.weight|scale=sqrt:d_model [T] [k-last]"}
    return table


# Parameters that are not weights of ours (fnmatch patterns on the unprefixed names).
IGNORED = (
    "cls.predictions.decoder.weight",  # tied to the token embedding
    "cls.predictions.decoder.bias",  # tied to cls.predictions.bias
    "predictions.decoder.weight",
    "predictions.decoder.bias",
    "generator_lm_head.weight",
    "encoder.embed_positions.weight",  # RoFormer's fixed sinusoid table
    "embeddings.position_ids",
    "encoder.layer.*.attention.self.relative_positions_encoding.positions_encoding",  # NEZHA
    "lm_head.weight",  # GPT2 / T5.1.0: tied to the token embedding
    "h.*.attn.bias",  # GPT2's causal-mask buffers
    "h.*.attn.masked_bias",
    "encoder.embed_tokens.weight",  # T5: copies of shared.weight
    "decoder.embed_tokens.weight",
)

# Pretraining heads a folder may carry for a model built without them (name prefixes).
HEADS = ("pooler.", "cls.", "predictions.", "sop_classifier.", "discriminator_predictions.",
         "generator_predictions.", "generator_lm_head.")
