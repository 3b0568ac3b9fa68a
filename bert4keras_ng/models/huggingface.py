"""Hugging Face configs in and out: family detection, config translation, folder export.

``from_hf_config`` turns a folder's ``config.json`` into our builder's keyword arguments (and the
norm epsilons, which are declared per family here and set from ``layer_norm_eps`` there);
a setting we cannot honour raises, an unknown key warns. ``save_weights_as_huggingface`` walks
the family's Hugging Face table (the same walk as loading) and writes an atomic folder that
``transformers.AutoModel.from_pretrained`` loads.
"""

import os
import warnings

import keras
import numpy as np

from bert4keras_ng import huggingface as hf_io
from bert4keras_ng.models import hf_mappings

# model_type -> (our default model name, model names that fit the folder)
FAMILIES = {
    "bert": ("bert", ("bert", "roberta")),
    "albert": ("albert", ("albert", "albert_unshared")),
    "nezha": ("nezha", ("nezha",)),
    "electra": ("electra", ("electra",)),
    "roformer": ("roformer", ("roformer",)),
    "gpt2": ("gpt2", ("gpt2",)),
    "mt5": ("mt5.1.1", ("mt5.1.1", "mt5.1.1_encoder", "mt5.1.1_decoder")),
}
_T5_NAMES = {
    "t5.1.0": ("t5.1.0", "t5", "t5.1.0_encoder", "t5.1.0_decoder", "t5_encoder", "t5_decoder"),
    "t5.1.1": ("t5.1.1", "t5.1.1_encoder", "t5.1.1_decoder"),
}
_UNSUPPORTED_TYPES = {
    "roberta": "RobertaModel offsets positions by padding_idx + 1; Chinese RoBERTa-wwm-ext / "
    "MacBERT folders are published with model_type 'bert', which loads",
}

# HF activation name -> ours (and back)
_ACT_IN = {
    "gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh",
    "linear": "linear",
}
_ACT_OUT = {"gelu": "gelu", "gelu_erf": "gelu", "gelu_tanh": "gelu_new", "relu": "relu",
            "silu": "silu", "swish": "silu", "tanh": "tanh", "linear": "linear"}

# HF key -> our keyword
_RENAMED = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "embedding_size": "embedding_size",
}
# HF key -> values we can honour (anything else is an error)
_REQUIRED = {
    "position_embedding_type": ("absolute",),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
    "chunk_size_feed_forward": (0,),
    "num_hidden_groups": (1,),
    "inner_group_num": (1,),
    "rotary_value": (False,),
    "max_relative_position": (64,),
    "use_relative_position": (True,),
    "tie_word_embeddings": (True,),
}
# keys with no effect on the network's function (training, generation, bookkeeping)
_NEUTRAL = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
    "use_cache", "classifier_dropout", "classifier_dropout_prob", "gradient_checkpointing",
    "output_past", "directionality", "tokenizer_class", "id2label", "label2id", "num_labels",
    "problem_type", "return_dict", "output_hidden_states", "output_attentions",
    "torchscript", "finetuning_task", "summary_type", "summary_use_proj", "summary_activation",
    "summary_last_dropout", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
    "pooler_size_per_head", "pooler_type", "layer_norm_eps", "hidden_act", "embedding_size",
    "_name_or_path", "vocab_type", "pruned_heads", "tie_encoder_decoder", "chunk_size_feed_forward",
    "max_length", "min_length", "do_sample", "num_beams", "decoder_start_token_id",
    "is_encoder_decoder", "task_specific_params", "prefix", "bad_words_ids",
}


def family_of(config, folder):
    """(model_type, default model name, fitting names) for a folder's config."""
    model_type = config["model_type"]
    if model_type in _UNSUPPORTED_TYPES:
        raise ValueError(
            "Hugging Face folder %r: model_type %r is not supported (%s)."
            % (folder, model_type, _UNSUPPORTED_TYPES[model_type])
        )
    if model_type == "t5":  # T5 (relu FFN, tied) or T5.1.1 (gated GELU, untied)
        version = "t5.1.0" if config.get("feed_forward_proj", "relu") == "relu" else "t5.1.1"
        return model_type, version, _T5_NAMES[version]
    if model_type not in FAMILIES:
        raise ValueError(
            "Hugging Face folder %r: model_type %r has no counterpart here; supported model "
            "types: %s." % (folder, model_type, ", ".join(sorted(FAMILIES)))
        )
    default, names = FAMILIES[model_type]
    return model_type, default, names


def check_model_name(model_name, config, folder):
    """Raise when an explicit ``model=`` contradicts the folder's model_type."""
    model_type, _, names = family_of(config, folder)
    if model_name not in names:
        raise ValueError(
            "model=%r contradicts Hugging Face folder %r, whose config.json has model_type %r "
            "(architectures %s): use model=%s or leave model= out."
            % (model_name, folder, model_type, config.get("architectures"),
               " or ".join(repr(n) for n in names))
        )


_RENAMED_GPT2 = {
    "vocab_size": "vocab_size", "n_embd": "hidden_size", "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads", "n_inner": "intermediate_size", "n_positions": "max_position",
    "resid_pdrop": "dropout_rate", "attn_pdrop": "attention_dropout_rate",
}
_RENAMED_T5 = {
    "vocab_size": "vocab_size", "d_model": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "d_ff": "intermediate_size", "d_kv": "attention_head_size",
    "dropout_rate": "dropout_rate",
}
_REQUIRED_GPT2 = {"scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
                  "add_cross_attention": (False,)}
_REQUIRED_T5 = {"relative_attention_num_buckets": (32,), "relative_attention_max_distance": (128,),
                "feed_forward_proj": ("relu", "gated-gelu", "gated-gelu_new", "gated-gelu_python",
                                      "gated-silu"),
                "is_decoder": (False,)}
_NEUTRAL_GENERATIVE = {
    "n_ctx", "embd_pdrop", "reorder_and_upcast_attn", "activation_function", "layer_norm_epsilon",
    "num_decoder_layers", "dense_act_fn", "is_gated_act", "tie_word_embeddings",
    "scale_decoder_outputs", "use_cache", "summary_first_dropout", "summary_proj_to_labels",
    "initializer_factor",
    "gradient_checkpointing",
}


def _check_required(config, required, where):
    for key, allowed in required.items():
        if key in config and config[key] is not None and config[key] not in allowed:
            raise ValueError(
                "%s: %s=%r cannot be honoured by this package (supported: %s)."
                % (where, key, config[key], ", ".join(repr(a) for a in allowed))
            )


def _warn_unknown(config, known, where):
    unknown = sorted(set(config) - set(known) - _NEUTRAL)
    if unknown:
        warnings.warn(
            "%s: config key(s) %s are not understood and were not applied; check that they "
            "do not change the network." % (where, ", ".join(unknown)),
            stacklevel=4,
        )


def _activation_in(act, where):
    if not isinstance(act, str) or act not in _ACT_IN:
        raise ValueError(
            "%s: hidden_act=%r is not supported; supported: %s." % (where, act, ", ".join(sorted(_ACT_IN)))
        )
    return _ACT_IN[act]


def _generative_config(config, where):
    """GPT2 / T5 / mT5 configs: (keyword arguments, builder attributes)."""
    if config["model_type"] == "gpt2":
        renamed, required = _RENAMED_GPT2, _REQUIRED_GPT2
    else:
        renamed, required = _RENAMED_T5, _REQUIRED_T5
    _check_required(config, required, where)
    kwargs = {ours: config[theirs] for theirs, ours in renamed.items() if config.get(theirs) is not None}
    eps = config.get("layer_norm_epsilon")
    attributes = {} if eps is None else {"block_epsilon": eps, "embedding_epsilon": eps}
    if config["model_type"] == "gpt2":
        kwargs["hidden_act"] = _activation_in(config.get("activation_function", "gelu_new"), where)
        kwargs.setdefault("intermediate_size", 4 * kwargs["hidden_size"])
        kwargs["segment_vocab_size"] = 0
    else:
        layers = config.get("num_decoder_layers")
        if layers is not None and layers != config.get("num_layers"):
            raise ValueError("%s: num_decoder_layers=%r != num_layers=%r cannot be honoured (one "
                             "depth for both stacks)." % (where, layers, config.get("num_layers")))
        gated = config.get("feed_forward_proj", "relu") != "relu"
        # transformers scales the decoder output by d_model^-0.5 before a tied LM head only
        # (config.scale_decoder_outputs in transformers 5); we always scale (as bert4keras),
        # so T5 must scale and an untied T5.1.1 / mT5 head is read times sqrt(d_model)
        scales = config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True) is not False)
        if scales == gated:
            raise ValueError("%s: feed_forward_proj=%r with a%s scaled decoder output cannot be "
                             "honoured (T5: relu, tied, scaled; T5.1.1 / mT5: gated-gelu, untied, "
                             "unscaled)." % (where, config.get("feed_forward_proj"), "" if scales else "n un"))
        # transformers derives the activation from feed_forward_proj ('gated-<act>' or '<act>');
        # its 'gated-gelu' is the tanh GELU (gelu_new)
        proj = config.get("feed_forward_proj", "relu")
        act = _activation_in("gelu_new" if proj == "gated-gelu" else proj.split("-")[-1], where)
        kwargs["hidden_act"] = [act, "linear"] if gated else act
        kwargs["attention_dropout_rate"] = kwargs.get("dropout_rate")
        kwargs["cross_position_bias"] = False  # transformers' cross-attention has no position bias
        kwargs["segment_vocab_size"] = 0
    _warn_unknown(config, set(renamed) | set(required) | _NEUTRAL_GENERATIVE, where)
    return kwargs, attributes


def from_hf_config(config, folder):
    """(keyword arguments, builder attributes) for a Hugging Face ``config.json`` dict."""
    where = "%r" % os.path.join(os.fspath(folder), "config.json")
    if config["model_type"] in ("gpt2", "t5", "mt5"):
        return _generative_config(config, where)
    kwargs = {ours: config[theirs] for theirs, ours in _RENAMED.items() if config.get(theirs) is not None}
    act = config.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in _ACT_IN:
        raise ValueError(
            "%s: hidden_act=%r is not supported; supported: %s." % (where, act, ", ".join(sorted(_ACT_IN)))
        )
    kwargs["hidden_act"] = _ACT_IN[act]
    for key, allowed in _REQUIRED.items():
        if key in config and config[key] is not None and config[key] not in allowed:
            raise ValueError(
                "%s: %s=%r cannot be honoured by this package (supported: %s)."
                % (where, key, config[key], ", ".join(repr(a) for a in allowed))
            )
    head_size = config.get("head_dim") or config.get("attention_head_size")
    if head_size is not None:
        kwargs["attention_head_size"] = head_size
    unknown = sorted(set(config) - set(_RENAMED) - set(_REQUIRED) - _NEUTRAL - {"head_dim", "attention_head_size"})
    if unknown:
        warnings.warn(
            "%s: config key(s) %s are not understood and were not applied; check that they "
            "do not change the network." % (where, ", ".join(unknown)),
            stacklevel=3,
        )
    attributes = {}
    eps = config.get("layer_norm_eps")
    if eps is not None:
        attributes = {"embedding_epsilon": eps, "block_epsilon": eps, "mlm_epsilon": eps}
    return kwargs, attributes


# ---- export ------------------------------------------------------------------------------

# model_type -> architectures by (has MLM, has NSP/SOP, has discriminator)
def _architecture(model_type, builder):
    mlm, nsp = bool(builder.with_mlm), bool(builder.with_nsp)
    cls = {"bert": "Bert", "albert": "Albert", "nezha": "Nezha", "electra": "Electra",
           "roformer": "RoFormer"}[model_type]
    if model_type == "electra":
        if getattr(builder, "with_discriminator", False):
            return cls + "ForPreTraining"
        return cls + ("ForMaskedLM" if mlm else "Model")
    if mlm and nsp:
        return cls + "ForPreTraining"
    if mlm:
        return cls + "ForMaskedLM"
    if nsp:
        return cls + ("ForNextSentencePrediction" if model_type == "bert" else "ForPreTraining")
    return cls + "Model"


def _export_checks(builder):
    problems = []
    if builder.residual_attention_scores:
        problems.append("residual_attention_scores=True (RealFormer)")
    if getattr(builder, "layer_norm_cond", None) is not None:
        problems.append("layer_norm_cond (conditional LayerNorm)")
    if builder.hierarchical_position:
        problems.append("hierarchical_position")
    if builder.attention_normalization != "softmax":
        problems.append("attention_normalization=%r" % builder.attention_normalization)
    generative = builder.hf_model_type in ("gpt2", "t5", "mt5")
    if not generative and builder.attention_head_size * builder.num_attention_heads != builder.hidden_size:
        problems.append("attention_head_size * num_attention_heads != hidden_size")
    if builder.attention_key_size != builder.attention_head_size:
        problems.append("attention_key_size != attention_head_size")
    if builder.with_pool not in (False, True) or builder.with_mlm not in (False, True, "softmax", "linear"):
        problems.append("a pooler / MLM activation other than the standard one")
    if problems:
        raise ValueError(
            "Cannot export %s as a Hugging Face folder: %s has no Hugging Face equivalent."
            % (type(builder).__name__, "; ".join(problems))
        )
    if builder.application != "encoder" and not generative:
        warnings.warn(
            "application=%r: the exported Hugging Face model is a bidirectional encoder; apply "
            "the %s mask yourself there." % (builder.application, builder.application), stacklevel=3
        )


def hf_config(builder, model_type):
    """The ``config.json`` dict of ``builder`` for ``model_type``."""
    if builder.hidden_act not in _ACT_OUT:
        raise ValueError(
            "Cannot export hidden_act=%r as a Hugging Face activation (supported: %s)."
            % (builder.hidden_act, ", ".join(sorted(_ACT_OUT)))
        )
    eps = [builder.block_epsilon]
    present = {layer.name for layer in builder.model.layers}
    if builder.prefixed("Embedding-Norm") in present:
        eps.append(builder.embedding_epsilon)
    if builder.prefixed("MLM-Norm") in present:
        eps.append(builder.mlm_epsilon)
    if len(set(eps)) > 1:
        warnings.warn(
            "%s uses LayerNorm epsilons %s; Hugging Face has one layer_norm_eps, written as %g "
            "(outputs differ by about the epsilon)." % (type(builder).__name__, sorted(set(eps)), eps[0]),
            stacklevel=3,
        )
    config = {
        "model_type": model_type,
        "architectures": [_architecture(model_type, builder)],
        "vocab_size": builder.vocab_size,
        "hidden_size": builder.hidden_size,
        "num_hidden_layers": builder.num_hidden_layers,
        "num_attention_heads": builder.num_attention_heads,
        "intermediate_size": builder.intermediate_size,
        "hidden_act": _ACT_OUT[builder.hidden_act],
        "hidden_dropout_prob": builder.dropout_rate,
        "attention_probs_dropout_prob": builder.attention_dropout_rate,
        "max_position_embeddings": builder.max_position,
        "type_vocab_size": builder.segment_vocab_size,
        "layer_norm_eps": eps[0],
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }
    if model_type in ("albert", "electra", "roformer"):
        config["embedding_size"] = builder.embedding_size
    elif builder.embedding_size != builder.hidden_size:
        raise ValueError(
            "Cannot export model_type %r with embedding_size %d != hidden_size %d (Hugging Face "
            "%s has no embedding projection)." % (model_type, builder.embedding_size, builder.hidden_size, model_type)
        )
    if model_type == "albert":
        config.update(num_hidden_groups=1, inner_group_num=1)
    if model_type == "roformer":
        config["rotary_value"] = False
    if model_type == "nezha":
        config.update(max_relative_position=64, use_relative_position=True)
    return config


def generative_hf_config(builder, model_type):
    """config.json of a GPT2 or T5 / mT5 builder."""
    act = builder.hidden_act
    gated = isinstance(act, (list, tuple))
    first = act[0] if gated else act
    if first not in _ACT_OUT or (gated and list(act[1:]) != ["linear"]):
        raise ValueError("Cannot export hidden_act=%r as a Hugging Face activation." % (act,))
    if model_type == "gpt2":
        return {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": builder.vocab_size, "n_embd": builder.hidden_size,
            "n_layer": builder.num_hidden_layers, "n_head": builder.num_attention_heads,
            "n_inner": builder.intermediate_size, "n_positions": builder.max_position,
            "n_ctx": builder.max_position, "activation_function": _ACT_OUT[first],
            "resid_pdrop": builder.dropout_rate, "attn_pdrop": builder.attention_dropout_rate,
            "embd_pdrop": 0.0, "layer_norm_epsilon": builder.block_epsilon,
            "scale_attn_weights": True, "tie_word_embeddings": True,
        }
    if type(builder).__name__ != "T5":
        raise ValueError("Export the full T5 builder (model=%r), not one stack: a Hugging Face "
                         "T5 folder holds both." % builder.version)
    if getattr(builder._decoder, "cross_position_bias", False):
        raise ValueError("Cannot export a T5 built with cross_position_bias=True: transformers' "
                         "cross-attention has no position bias (build with cross_position_bias=False).")
    # transformers' "gated-gelu" means the tanh GELU; the erf one is spelled gated-gelu_python
    proj = ("gated-" + {"gelu": "gelu_python", "gelu_erf": "gelu_python", "gelu_tanh": "gelu"}.get(first, _ACT_OUT[first])
            if gated else _ACT_OUT[first])
    arch = "MT5ForConditionalGeneration" if model_type == "mt5" else "T5ForConditionalGeneration"
    return {
        "model_type": model_type, "architectures": [arch], "vocab_size": builder.vocab_size,
        "d_model": builder.hidden_size, "d_kv": builder.attention_head_size,
        "d_ff": builder.intermediate_size, "num_layers": builder.num_hidden_layers,
        "num_decoder_layers": builder.num_hidden_layers, "num_heads": builder.num_attention_heads,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dropout_rate": builder.dropout_rate, "layer_norm_epsilon": builder.block_epsilon,
        "feed_forward_proj": proj, "tie_word_embeddings": not gated, "is_encoder_decoder": True,
        "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
    }


def roformer_sinusoid(max_position, head_size):
    """Hugging Face RoFormer's fixed position table (sin half, then cos half), float32."""
    position = np.arange(max_position, dtype=np.float64)[:, None]
    j = np.arange(head_size)
    angle = position / np.power(10000, 2 * (j // 2) / head_size)
    half = head_size // 2 + head_size % 2
    table = np.zeros((max_position, head_size))
    table[:, :half] = np.sin(angle[:, 0::2])
    table[:, half:] = np.cos(angle[:, 1::2])
    return table.astype(np.float32)


def save_weights_as_huggingface(builder, folder, vocab=None, dtype="float32"):
    """Write ``builder``'s weights, config and vocabulary as a Hugging Face folder.

    vocab: a vocab.txt path (copied) or a :class:`~bert4keras_ng.tokenizers.Tokenizer` (its
    vocabulary written in id order); its size must equal the model's vocab_size.
    """
    model_type = builder.hf_model_type
    if model_type is None or builder.hf_table is None:
        raise ValueError(
            "%s has no Hugging Face counterpart; exportable: %s."
            % (type(builder).__name__, ", ".join(sorted(FAMILIES)))
        )
    if getattr(builder, "hf_exportable", True) is not True:
        raise ValueError("Cannot export %s: %s." % (type(builder).__name__, builder.hf_exportable))
    _export_checks(builder)
    if model_type in ("gpt2", "t5", "mt5"):
        config = generative_hf_config(builder, model_type)
        prefix = "transformer." if model_type == "gpt2" else ""
        heads = ()
    else:
        config = hf_config(builder, model_type)
        # head models store the encoder under the base prefix (bert., albert., ...), bare ones not
        prefix = "" if config["architectures"][0].endswith("Model") else model_type + "."
        heads = hf_mappings.HEADS
    tensors, parts = {}, {}
    for _, weight, name, transposed, _ in builder.checkpoint_entries(table=builder.hf_table):
        value = keras.ops.convert_to_numpy(weight).astype(dtype)
        value = value.T if transposed else value
        if not name.startswith(heads) or name.startswith("pooler."):
            name = prefix + name
        base, view = hf_io.split_view(name)
        if view is None:
            tensors.setdefault(name, np.ascontiguousarray(value))
        elif view[0] == "split":  # put the fused tensor back together below
            parts.setdefault(base, {})[view[1]] = value
        else:  # a scale view: undo the factor the reader applies
            tensors.setdefault(base, np.ascontiguousarray(value / np.sqrt(config[view[1]]), dtype=dtype))
    for base, pieces in parts.items():
        (axis, _, count), = {(a, 0, c) for a, _, c in pieces}
        tensors[base] = np.concatenate([pieces[(axis, n, count)] for n in range(count)], axis=axis)
    if model_type == "roformer":
        tensors[prefix + "encoder.embed_positions.weight"] = roformer_sinusoid(
            builder.max_position, builder.attention_head_size
        )
    extra = {}
    if vocab is not None:
        extra["vocab.txt"] = _vocab_bytes(vocab, builder.vocab_size)
        extra["tokenizer_config.json"] = (
            '{"tokenizer_class": "BertTokenizer", "do_lower_case": true}\n'
        ).encode()
    return hf_io.write_hf_folder(folder, config, tensors, extra)


def _vocab_bytes(vocab, vocab_size):
    if isinstance(vocab, (str, os.PathLike)):
        with open(vocab, encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n") for line in f if line.strip()]
        source = repr(os.fspath(vocab))
    else:
        token_dict = getattr(vocab, "_token_dict", None) or getattr(vocab, "token_dict", None)
        if not isinstance(token_dict, dict):
            raise TypeError("vocab must be a vocab.txt path or a Tokenizer, got %r." % (vocab,))
        tokens = [t for t, _ in sorted(token_dict.items(), key=lambda item: item[1])]
        source = "the tokenizer"
    if len(tokens) != vocab_size:
        raise ValueError(
            "Vocabulary from %s has %d tokens but the model's vocab_size is %d (with keep_tokens, "
            "pass the Tokenizer built on the kept tokens)." % (source, len(tokens), vocab_size)
        )
    return ("\n".join(tokens) + "\n").encode("utf-8")
