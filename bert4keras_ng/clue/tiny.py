"""A tiny randomly initialised checkpoint in the original TF1 release layout.

``ensure_tiny_checkpoint(folder, model)`` writes ``bert_config.json``,
``bert_model.ckpt.index`` / ``.data-00000-of-00001`` and ``vocab.txt`` (once; later calls reuse
them), exactly the files of a released zip, so the CLUE runner exercises the same loading path
as with a real checkpoint. The vocabulary holds the special tokens in their usual places
(``[PAD]`` 0, ``[unused1]``…, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``), ASCII letters and
digits (with ``##`` continuations) and every character of the shipped sample data. Weights are
random (truncated normal, stddev 0.02): the model knows nothing until it is fine-tuned.
"""

from __future__ import annotations

import json
import os
import string

import numpy as np

__all__ = ["TINY_CONFIG", "TINY_MODELS", "default_cache_dir", "tiny_vocabulary",
           "tiny_config", "tiny_variables", "tiny_folder_name", "ensure_tiny_checkpoint"]

TINY_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}
TINY_MODELS = ("bert", "roberta", "nezha", "roformer", "roformer_v2", "gau_alpha")
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")


def default_cache_dir():
    """``$BERT4KERAS_NG_CACHE`` or ``~/.cache/bert4keras_ng`` (read only, never written)."""
    root = os.environ.get("BERT4KERAS_NG_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "bert4keras_ng")
    return root


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def tiny_vocabulary(sample_dir=SAMPLE_DIR):
    """Special tokens, ASCII pieces, then every (lower-cased) character of the sample data."""
    specials = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 10)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                     "[MASK]"]
    ascii_chars = list(string.digits + string.ascii_lowercase + string.punctuation)
    ascii_chars += ["##" + c for c in string.digits + string.ascii_lowercase]
    chars = set()
    for root, _, files in os.walk(sample_dir):
        for name in files:
            if not name.endswith(".json"):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as f:
                text = f.read()
            try:
                docs = [json.loads(text)]
            except json.JSONDecodeError:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            for s in _strings(docs):
                chars.update(c for c in s.lower() if not c.isspace() and not c.isascii())
    return specials + ascii_chars + sorted(chars)


def _layer_names(model, num_layers):
    """TF1 variable names of an encoder (plus the pooler / MLM head where the family has one)."""
    names = ["bert/embeddings/word_embeddings", "bert/embeddings/token_type_embeddings"]
    if model in ("bert", "roberta"):
        names.append("bert/embeddings/position_embeddings")
    if model == "gau_alpha":
        for i in range(num_layers):
            p = f"GAU_alpha/encoder/layer_{i}/gau/"
            names += [p + "i_dense/kernel", p + "q_scaleoffset/gamma",
                      p + "k_scaleoffset/gamma", p + "o_dense/kernel"]
        return names
    biases = model != "roformer_v2"
    if biases:
        names += ["bert/embeddings/LayerNorm/beta", "bert/embeddings/LayerNorm/gamma"]
    for i in range(num_layers):
        p = f"bert/encoder/layer_{i}/"
        for part in ("attention/self/query", "attention/self/key", "attention/self/value",
                     "attention/output/dense", "intermediate/dense", "output/dense"):
            names.append(p + part + "/kernel")
            if biases:
                names.append(p + part + "/bias")
        if biases:
            for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
                names += [p + norm + "/beta", p + norm + "/gamma"]
    if biases:
        names += ["bert/pooler/dense/kernel", "bert/pooler/dense/bias",
                  "cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
                  "cls/predictions/transform/LayerNorm/beta",
                  "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/output_bias"]
    return names


def tiny_config(model, vocab_size):
    config = dict(TINY_CONFIG, vocab_size=vocab_size)
    if model == "roformer_v2":
        config["hidden_act"] = "relu"
    if model == "gau_alpha":
        config.update(hidden_act="swish", num_attention_heads=1, attention_key_size=32)
    return config


def tiny_variables(model, config, seed=0):
    """``{tf1 name: float32 array}`` with the shapes of the checkpoint reference."""
    rng = np.random.default_rng(seed)
    V, H = config["vocab_size"], config["hidden_size"]
    I, S = config["intermediate_size"], config["type_vocab_size"]
    P, L = config["max_position_embeddings"], config["num_hidden_layers"]
    Dk = config.get("attention_key_size", H // config["num_attention_heads"])
    shapes = {
        "bert/embeddings/word_embeddings": (V, H),
        "bert/embeddings/token_type_embeddings": (S, H),
        "bert/embeddings/position_embeddings": (P, H),
        "cls/predictions/output_bias": (V,),
        "bert/pooler/dense/kernel": (H, H),
        "cls/predictions/transform/dense/kernel": (H, H),
    }
    out = {}
    for name in _layer_names(model, L):
        if name in shapes:
            shape = shapes[name]
        elif name.endswith("i_dense/kernel"):
            shape = (H, 2 * I + Dk)
        elif name.endswith("o_dense/kernel"):
            shape = (I, H)
        elif "scaleoffset" in name:
            shape = (Dk,)
        elif "intermediate/dense" in name:
            shape = (H, I) if name.endswith("kernel") else (I,)
        elif "/output/dense" in name and "attention" not in name:
            shape = (I, H) if name.endswith("kernel") else (H,)
        else:
            shape = (H, H) if name.endswith("kernel") else (H,)
        if name.endswith("gamma"):
            value = np.ones(shape)
        elif name.endswith("beta") or name.endswith("bias"):
            value = np.zeros(shape)
        else:
            value = np.clip(rng.normal(0, 0.02, size=shape), -0.04, 0.04)
        out[name] = value.astype("float32")
    return out


def tiny_folder_name(model):
    """Cache folder name: the model type plus a digest of vocabulary and config, so that a
    changed sample data set or tiny config never reuses a stale checkpoint."""
    import hashlib

    vocab = tiny_vocabulary()
    blob = json.dumps([model, vocab, tiny_config(model, len(vocab))], ensure_ascii=False)
    return f"clue-tiny-{model}-{hashlib.sha1(blob.encode('utf-8')).hexdigest()[:10]}"


def ensure_tiny_checkpoint(folder=None, model="roformer", seed=0):
    """Create (once) a tiny ``model`` checkpoint under ``folder``; return its three paths.

    Returns ``(config_path, checkpoint_prefix, vocab_path)``.
    """
    if model not in TINY_MODELS:
        raise ValueError(f"no tiny checkpoint for model={model!r}; expected one of "
                         f"{', '.join(TINY_MODELS)}")
    folder = folder or os.path.join(default_cache_dir(), tiny_folder_name(model))
    config_path = os.path.join(folder, "bert_config.json")
    prefix = os.path.join(folder, "bert_model.ckpt")
    vocab_path = os.path.join(folder, "vocab.txt")
    if all(os.path.exists(p) for p in (config_path, prefix + ".index", vocab_path)):
        return config_path, prefix, vocab_path
    from ..checkpoints import save_variables

    os.makedirs(folder, exist_ok=True)
    vocab = tiny_vocabulary()
    config = tiny_config(model, len(vocab))
    save_variables(prefix, tiny_variables(model, config, seed))
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(config_path, "w", encoding="utf-8") as f:  # written last: marks completion
        json.dump(config, f, indent=2)
    return config_path, prefix, vocab_path
