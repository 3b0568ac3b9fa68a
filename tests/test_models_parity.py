"""Model builders against independent references.

- bert4keras 0.11.5 (tests/fixtures/make_model_goldens.py): every model string, application and
  head, built from a tiny random TF1 checkpoint written under each family's own variable names.
- Hugging Face transformers BertModel / RoFormerModel (tests/fixtures/make_hf_goldens.py).

Outputs are compared on real (non-padded) tokens with max abs error <= 1e-5.
"""

import json
import os

import keras
import numpy as np
import pytest

from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.models.transformer import _weights_by_name

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "models")
HF_FIXTURES = os.path.join(HERE, "fixtures", "models_hf")
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_bert4keras(name):
    builder, feed, expected = build_case(name)
    outputs = as_list(builder.model(feed if len(feed) > 1 else feed[0], training=False))
    assert len(outputs) == len(expected), "number of model outputs differs from bert4keras"
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        err = real_token_error(keras.ops.convert_to_numpy(out), ref, feed[0])
        assert err <= ATOL, "%s output %d: max abs err %.3g vs bert4keras" % (name, i, err)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_names_and_weight_count_match_bert4keras(name):
    builder, _, _ = build_case(name)
    ours = {layer.name for layer in builder.model.layers}
    theirs = set(CASES[name]["layer_names"])
    assert ours == theirs, "only ours: %s; only bert4keras: %s" % (sorted(ours - theirs), sorted(theirs - ours))
    assert len(builder.model.weights) == CASES[name]["num_weights"]


@pytest.mark.parametrize("kind", ["bert", "roformer"])
def test_matches_hugging_face(kind):
    directory = os.path.join(HF_FIXTURES, kind)
    data = np.load(os.path.join(HF_FIXTURES, kind + ".npz"))
    feed = [data["input/token_ids"], data["input/segment_ids"]]
    model = build_transformer_model(
        os.path.join(directory, "bert_config.json"),
        os.path.join(directory, "bert_model.ckpt"),
        model=kind,
        with_pool=kind == "bert",
    )
    outputs = as_list(model(feed, training=False))
    if kind == "bert":
        # one head -> only the head; take the sequence from the last block as users do
        sequence_model = keras.Model(
            model.inputs, model.get_layer("Transformer-1-FeedForward-Norm").output
        )
        sequence = sequence_model(feed, training=False)
        err = real_token_error(keras.ops.convert_to_numpy(outputs[0]), data["output/pooled"], feed[0])
        assert err <= ATOL, "HF pooler_output: %.3g" % err
    else:
        sequence = outputs[0]
    err = real_token_error(keras.ops.convert_to_numpy(sequence), data["output/sequence"], feed[0])
    assert err <= ATOL, "HF last_hidden_state: %.3g" % err
