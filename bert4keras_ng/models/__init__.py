"""Model registry and :func:`build_transformer_model` (the bert4keras entry point).

    model = build_transformer_model(config_path, checkpoint_path, model='roformer',
                                    application='unilm', with_mlm=True)
"""

import json
import os

from bert4keras_ng import huggingface as hf_io
from bert4keras_ng.models import huggingface as hf_config
from bert4keras_ng.models.albert import ALBERT, ALBERT_Unshared
from bert4keras_ng.models.bert import BERT
from bert4keras_ng.models.config import ConfigSource
from bert4keras_ng.models.electra import ELECTRA
from bert4keras_ng.models.gau_alpha import GAU_alpha
from bert4keras_ng.models.gpt import GPT, GPT2, GPT2_ML
from bert4keras_ng.models.nezha import NEZHA
from bert4keras_ng.models.roformer import RoFormer, RoFormerV2
from bert4keras_ng.models.t5 import T5, T5_Decoder, T5_Encoder
from bert4keras_ng.models.transformer import (
    REQUIRED_CONFIG_KEYS,
    CheckpointMismatchError,
    Transformer,
)

MODELS = {
    "bert": BERT,
    "roberta": BERT,
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
    "nezha": NEZHA,
    "electra": ELECTRA,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "gau_alpha": GAU_alpha,
    "gpt": GPT,
    "gpt2": GPT2,
    "gpt2_ml": GPT2_ML,
}
# T5 strings: '<version>', '<version>_encoder', '<version>_decoder'; 't5' is 't5.1.0'.
T5_STRINGS = {"t5": "t5.1.0", "t5.1.0": "t5.1.0", "t5.1.1": "t5.1.1", "mt5.1.1": "mt5.1.1"}
for _name in T5_STRINGS:
    MODELS[_name], MODELS[_name + "_encoder"], MODELS[_name + "_decoder"] = T5, T5_Encoder, T5_Decoder

__all__ = [
    "build_transformer_model",
    "MODELS",
    "Transformer",
    "BERT",
    "ALBERT",
    "ALBERT_Unshared",
    "NEZHA",
    "ELECTRA",
    "RoFormer",
    "RoFormerV2",
    "GAU_alpha",
    "GPT",
    "GPT2",
    "GPT2_ML",
    "T5",
    "T5_Encoder",
    "T5_Decoder",
    "CheckpointMismatchError",
]


def _read_config(config_path):
    if config_path is None:
        return {}
    config_path = os.fspath(config_path)
    if not os.path.exists(config_path):
        raise FileNotFoundError("Config file not found: %r." % config_path)
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError("Config file %r is not valid JSON: %s" % (config_path, e)) from None
    if not isinstance(config, dict):
        raise ValueError("Config file %r must hold a JSON object." % config_path)
    return config


def _hf_configs(reader, config_path, model):
    """(config, builder attributes, model name) for a Hugging Face folder."""
    folder = reader.folder
    if config_path is not None and os.path.abspath(os.fspath(config_path)) != os.path.abspath(
        os.path.join(folder, "config.json")
    ):
        raise ValueError(
            "checkpoint_path %r is a Hugging Face folder with its own config.json; pass "
            "config_path=None (got %r)." % (folder, os.fspath(config_path))
        )
    _, default, _ = hf_config.family_of(reader.config, folder)
    if model is None:
        model = default
    else:
        name, _ = resolve_model(model)
        hf_config.check_model_name(name, reader.config, folder)
    configs, attributes = hf_config.from_hf_config(reader.config, folder)
    return configs, attributes, model


def t5_version(model_name):
    """The T5 version a model string names ('t5.1.1_encoder' -> 't5.1.1'), or None."""
    for prefix in ("t5.1.1", "mt5.1.1", "t5.1.0", "t5"):
        if model_name in (prefix, prefix + "_encoder", prefix + "_decoder"):
            return T5_STRINGS[prefix]
    return None


def resolve_model(model):
    """Model class for a case-insensitive model name, or the class itself."""
    if isinstance(model, str):
        key = model.lower().replace("-", "_")
        if key not in MODELS:
            raise ValueError(
                "Unknown model=%r. Valid names: %s (or pass a Transformer subclass)."
                % (model, ", ".join(sorted(MODELS)))
            )
        return key, MODELS[key]
    if isinstance(model, type) and issubclass(model, Transformer):
        return model.__name__, model
    raise ValueError(
        "model must be a model name (%s) or a Transformer subclass, got %r."
        % (", ".join(sorted(MODELS)), model)
    )


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model=None,
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """Build a BERT-family model from a ``config.json`` and optionally load a TF1 checkpoint.

    Keyword arguments override config values. Aliases are filled only when the short name is
    absent: ``max_position`` ← ``max_position_embeddings`` (512), ``dropout_rate`` ←
    ``hidden_dropout_prob``, ``attention_dropout_rate`` ← ``attention_probs_dropout_prob``,
    ``segment_vocab_size`` ← ``type_vocab_size`` (2).

    checkpoint_path: a TF1 checkpoint (prefix, directory or dict) or a Hugging Face folder
        (``config.json`` with a ``model_type``, weights in ``model.safetensors``, shards or
        ``pytorch_model.bin``); for a folder, leave ``config_path`` out: the config and the
        family come from the folder, and an explicit ``model=`` must agree with it.
    model: 'bert' (the default), 'roberta', 'albert', 'albert_unshared', 'nezha', 'electra',
        'roformer', 'roformer_v2', 'gau_alpha', 'gpt', 'gpt2', 'gpt2_ml', 't5' (= 't5.1.0'),
        't5.1.1', 'mt5.1.1' and each T5 string with '_encoder' / '_decoder' (case-insensitive)
        or a ``Transformer`` subclass.
    application: 'encoder', 'lm' (causal mask) or 'unilm' (seq2seq mask from segment ids);
        'lm' and 'unilm' switch the MLM head on. GPTs are always causal; T5 takes neither.
    Options: with_pool, with_nsp, with_mlm (True or an activation name), with_discriminator
        (ELECTRA), keep_tokens, compound_tokens, hierarchical_position, custom_position_ids,
        segment_vocab_size, shared_segment_embeddings, residual_attention_scores,
        ignore_invalid_weights (skip missing / mis-shaped variables), ignore_unused_variables
        (drop checkpoint variables the model does not use), layer_norm_cond (+
        layer_norm_cond_hidden_size, layer_norm_cond_hidden_act), additional_input_layers,
        sequence_length, prefix, name, embedding_size, attention_head_size, attention_key_size,
        attention_normalization
        ('softmax', 'softmax_plus', 'squared_relu'; the default is the family's),
        softmax_plus_clamp (16); GPT family: final_activation ('softmax'); T5: version (set
        from the string), with_lm, cross_position_bias; build option attention_caches
        ({attention layer name: [k_cache, v_cache]}); RoPE models only: rerope_window, rerope_leaky (Leaky ReRoPE k),
        logn_train_length, logn_clip (length extrapolation, :mod:`~bert4keras_ng.models.extrapolation`);
        attention_type ('dot', Synthesizer terms 'dense' / 'random' / 'factorized_*' joined
        with '+', e.g. 'random+dot'; one kind, a per-block list or {block: kind}) and
        synthesizer_options (:mod:`~bert4keras_ng.models.attention_types`).
    Returns the Keras model, or with ``return_keras_model=False`` the builder (``.model``,
    ``.layers``, ``.load_weights_from_checkpoint``, ``.save_weights_as_checkpoint``, ...).
    """
    attributes = {}
    if hf_io.is_hf_folder(checkpoint_path):
        checkpoint_path = hf_io.HFReader(checkpoint_path)
        configs, attributes, model = _hf_configs(checkpoint_path, config_path, model)
    else:
        configs = _read_config(config_path)
        model = "bert" if model is None else model
    configs.update(kwargs)
    source = ConfigSource(None if config_path is None else os.fspath(config_path), kwargs)
    configs.setdefault("max_position", configs.get("max_position_embeddings"))
    configs.setdefault("dropout_rate", configs.get("hidden_dropout_prob"))
    configs.setdefault("attention_dropout_rate", configs.get("attention_probs_dropout_prob"))
    configs.setdefault("segment_vocab_size", configs.get("type_vocab_size", 2))
    model_name, cls = resolve_model(model)
    if not isinstance(application, str) or application.lower() not in ("encoder", "lm", "unilm"):
        raise ValueError(
            "application must be one of 'encoder', 'lm', 'unilm'; got %r." % (application,)
        )
    application = application.lower()
    missing = [k for k in REQUIRED_CONFIG_KEYS if configs.get(k) is None]
    if missing:
        where = ("config %r" % os.fspath(config_path)) if config_path is not None else "the arguments"
        raise ValueError(
            "Missing required config key(s) %s in %s (model=%r needs %s)."
            % (", ".join(repr(k) for k in missing), where, model_name, ", ".join(REQUIRED_CONFIG_KEYS))
        )
    build_options = {
        k: configs.pop(k)
        for k in (
            "layer_norm_cond",
            "layer_norm_cond_hidden_size",
            "layer_norm_cond_hidden_act",
            "additional_input_layers",
            "attention_caches",
        )
        if k in configs
    }
    version = t5_version(model_name)
    if version is not None:  # 't5' / 't5.1.0' let an explicit version= stand, as bert4keras
        if model_name.startswith(("t5.1.1", "mt5.1.1")) or "version" not in configs:
            configs["version"] = version
    configs["application"] = application
    builder = cls(config_source=source, **configs)
    builder.model_name = model_name
    for key, value in attributes.items():  # Hugging Face layer_norm_eps
        setattr(builder, key, value)
    if checkpoint_path is None:
        builder.build(**build_options)
    else:  # the loaded weights skip their random initialisation
        builder.build_from_checkpoint(checkpoint_path, **build_options)
    return builder.model if return_keras_model else builder
