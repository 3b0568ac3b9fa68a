"""Shared access to the bert4keras golden model cases (tests/fixtures/models)."""

import json
import os

import keras
import numpy as np

from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.models.transformer import _weights_by_name

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "models")
with open(os.path.join(FIXTURES, "cases.json")) as f:
    SPEC = json.load(f)
CASES = SPEC["cases"]
ATOL = 1e-5


def build_case(name, **overrides):
    """Build a fixture case with bert4keras_ng; returns (builder, feed, expected outputs)."""
    record = CASES[name]
    directory = os.path.join(FIXTURES, record["checkpoint"])
    data = np.load(os.path.join(FIXTURES, name + ".npz"))
    kwargs = dict(record["kwargs"])
    kwargs.update(overrides)
    if "condition" in record["inputs"]:
        condition = keras.Input(shape=(8,), name="Input-Condition")
        kwargs.update(layer_norm_cond=condition, additional_input_layers=condition)
    builder = build_transformer_model(
        os.path.join(directory, "bert_config.json"),
        os.path.join(directory, "bert_model.ckpt"),
        model=record["model"],
        application=record["application"],
        return_keras_model=False,
        **kwargs,
    )
    # weights no checkpoint holds (conditional LayerNorm projections), as bert4keras had them
    for key in data.files:
        if key.startswith("extra/"):
            _, layer_name, weight_name = key.split("/", 2)
            _weights_by_name(builder.layers[layer_name])[weight_name].assign(data[key])
    feed = [data["input/" + k] for k in record["inputs"]]
    expected = [data["output/%d" % i] for i in range(len(record["outputs"]))]
    return builder, feed, expected


def real_token_error(actual, expected, token_ids):
    """Max abs error over real tokens for (b, n, ...) outputs, over everything for (b, ...)."""
    actual = np.asarray(actual, dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.ndim >= 3 and actual.shape[1] == token_ids.shape[1]:
        return float(np.abs(actual - expected)[token_ids != 0].max())
    return float(np.abs(actual - expected).max())


def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
