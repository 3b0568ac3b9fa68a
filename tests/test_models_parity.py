"""Model builders against independent references.

- bert4keras 0.11.5 (tests/fixtures/make_model_goldens.py): every model string, application and
  head, built from a tiny random TF1 checkpoint written under each family's own variable names.
- Hugging Face transformers BertModel / RoFormerModel (tests/fixtures/make_hf_goldens.py).

Outputs are compared on real (non-padded) tokens with max abs error <= 1e-5.
"""

import os

import keras
import numpy as np
import pytest

from bert4keras_ng.models import build_transformer_model
from tests.model_cases import ATOL, CASES, as_list, build_case, real_token_error

HERE = os.path.dirname(os.path.abspath(__file__))
HF_FIXTURES = os.path.join(HERE, "fixtures", "models_hf")


# One case per family and feature runs in the fast suite; the rest are marked slow.
FAST = {
    "bert_pool_nsp_mlm",
    "bert_unilm",
    "bert_keep_tokens",
    "bert_conditional_ln",
    "albert_pool_nsp_mlm",
    "albert_unshared_mlm",
    "nezha_mlm",
    "electra_discriminator",
    "roformer_pool_mlm",
    "roformer_v2_mlm",
    "gau_alpha_unilm",
}
PARAMS = [
    pytest.param(name, marks=() if name in FAST else pytest.mark.slow) for name in sorted(CASES)
]


@pytest.mark.parametrize("name", PARAMS)
def test_matches_bert4keras(name):
    builder, feed, expected = build_case(name)
    # the public layer names and the number of weights are bert4keras'
    ours = {layer.name for layer in builder.model.layers}
    theirs = set(CASES[name]["layer_names"])
    assert ours == theirs, "layers only ours: %s; only bert4keras: %s" % (
        sorted(ours - theirs), sorted(theirs - ours))
    assert len(builder.model.weights) == CASES[name]["num_weights"]
    outputs = as_list(builder.model(feed if len(feed) > 1 else feed[0], training=False))
    assert len(outputs) == len(expected), "number of model outputs differs from bert4keras"
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        err = real_token_error(keras.ops.convert_to_numpy(out), ref, feed[0])
        assert err <= ATOL, "%s output %d: max abs err %.3g vs bert4keras" % (name, i, err)


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
