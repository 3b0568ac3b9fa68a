"""Shared access to the bert4keras golden cases of the generative families
(tests/fixtures/models_gen, written by tests/fixtures/make_generative_goldens.py)."""

import json
import os

import keras
import numpy as np

from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.models.transformer import _weights_by_name

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "models_gen")
with open(os.path.join(FIXTURES, "cases.json")) as f:
    SPEC = json.load(f)
CASES = SPEC["cases"]
ATOL = 1e-5


def paths(checkpoint):
    directory = os.path.join(FIXTURES, checkpoint)
    return os.path.join(directory, "config.json"), os.path.join(directory, "model.ckpt")


def build_case(name, **overrides):
    """Build a fixture case with bert4keras_ng; returns (builder, feed dict, expected outputs)."""
    record = CASES[name]
    data = np.load(os.path.join(FIXTURES, name + ".npz"))
    kwargs = dict(record["kwargs"])
    kwargs.update(overrides)
    if "condition" in record["inputs"]:
        condition = keras.Input(shape=(8,), name="Input-Condition")
        kwargs.update(layer_norm_cond=condition, additional_input_layers=condition)
    if "cache" in record["inputs"]:  # bert4keras' attention_caches on every cross-attention
        cache = keras.Input(shape=(None, 32), name="Input-Cache")
        layers = ["Decoder-Transformer-%d-MultiHeadCrossAttention" % i for i in range(2)]
        kwargs.update(attention_caches={n: [cache, cache] for n in layers}, additional_input_layers=cache)
    config, checkpoint = paths(record["checkpoint"])
    builder = build_transformer_model(
        config, checkpoint, model=record["model"], application=record["application"],
        return_keras_model=False, **kwargs
    )
    for key in data.files:  # weights no checkpoint holds (conditional LayerNorm projections)
        if key.startswith("extra/"):
            _, layer_name, weight_name = key.split("/", 2)
            _weights_by_name(builder.layers[layer_name])[weight_name].assign(data[key])
    feed = {k: data["input/" + k] for k in record["inputs"]}
    expected = [data["output/%d" % i] for i in range(len(record["outputs"]))]
    return builder, feed, expected


def valid_positions(feed):
    """(b, n) mask of the real (non-padded) positions of the model's output sequence: decoder
    tokens for T5 decoders, else the (encoder) tokens; position 0 is always real (T5 id 0)."""
    ids = feed.get("decoder_token_ids", feed.get("token_ids", feed.get("encoder_token_ids")))
    valid = ids != 0
    valid[:, 0] = True
    return valid


def real_error(actual, expected, valid):
    actual = np.asarray(keras.ops.convert_to_numpy(actual), dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected)[valid].max())
