"""GPT, GPT2, GPT2_ML and T5 / mT5 (encoder, decoder, full) against bert4keras 0.11.5.

Goldens: tests/fixtures/make_generative_goldens.py (random tiny checkpoints in each family's own
TF1 naming, padded inputs). Outputs are compared on real positions, max abs error <= 1e-5.
"""

import os

import keras
import numpy as np
import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.models import CheckpointMismatchError, build_transformer_model
from tests.generative_cases import ATOL, CASES, build_case, paths, real_error, valid_positions


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_bert4keras(name):
    builder, feed, expected = build_case(name)
    record = CASES[name]
    ours = sorted(layer.name for layer in builder.model.layers)
    theirs = record["layer_names"]
    assert ours == theirs, "layers only ours: %s; only bert4keras: %s" % (
        sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours)))
    assert len(builder.model.weights) == record["num_weights"]
    inputs = [feed[k] for k in record["inputs"]]
    outputs = builder.model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert len(outputs) == len(expected)
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        err = real_error(out, ref, valid_positions(feed))
        assert err <= ATOL, "%s output %d: max abs err %.3g vs bert4keras" % (name, i, err)


# ---- checkpoints: counts, round trip, keep_tokens on the untied LM kernel ---------------------

# variables per family for L = 2 (checkpoints.md §13-16), written with every layer built
COUNTS = {"gpt": 3 + 16 * 2, "gpt2": 2 + 16 * 2 + 2, "gpt2_ml": 4 + 16 * 2,
          "t5.1.0": 5 + 21 * 2, "t5.1.1": 6 + 23 * 2, "mt5.1.1": 6 + 23 * 2}
FULL = {"gpt": "gpt", "gpt2": "gpt2", "gpt2_ml": "gpt2_ml", "t5.1.0": "t5", "t5.1.1": "t5.1.1",
        "mt5.1.1": "mt5.1.1"}


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_save_then_load_is_bit_exact(tmp_path, family):
    config, checkpoint = paths(family)
    builder = build_transformer_model(config, checkpoint, model=FULL[family], return_keras_model=False)
    assert len(builder.checkpoint_entries()) == COUNTS[family]
    prefix = str(tmp_path / "export" / "model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    written = checkpoints.load_variables(prefix)
    original = checkpoints.load_variables(checkpoint)
    assert len(written) == COUNTS[family] and set(written) <= set(original)
    for name, value in written.items():  # original names, original bits (T5 tables transposed back)
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    again = build_transformer_model(config, prefix, model=FULL[family], return_keras_model=False)
    for a, b in zip(builder.model.weights, again.model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_keep_tokens_slice_the_t5_lm_kernel_columns():
    config, checkpoint = paths("mt5.1.1")
    keep, compound = [0, 9, 4, 1], [[1, 2], ([0, 3], [1.0, 3.0])]
    builder = build_transformer_model(config, checkpoint, model="mt5.1.1", keep_tokens=keep,
                                      compound_tokens=compound, return_keras_model=False)
    original = checkpoints.load_variables(checkpoint)
    logits = original["decoder/logits/kernel"][:, keep]
    kernel = keras.ops.convert_to_numpy(builder.layers["Decoder-Output-LM"].kernel)
    assert kernel.shape == (32, 6)
    np.testing.assert_array_equal(kernel[:, :4], logits)
    np.testing.assert_allclose(kernel[:, 4], logits[:, [1, 2]].mean(1), atol=1e-6)
    np.testing.assert_allclose(kernel[:, 5], (logits[:, 0] + 3 * logits[:, 3]) / 4, atol=1e-6)
    table = keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].embeddings)
    np.testing.assert_array_equal(table[:4], original["shared/embedding"][keep])


@pytest.mark.parametrize(
    "family, wrong, hint",
    [("mt5.1.1", "t5.1.1", "mt5.1.1"), ("t5.1.1", "mt5.1.1", "t5.1.1"), ("gpt2", "gpt", "gpt2"),
     ("gpt2_ml", "gpt2", "gpt2_ml")],
)
def test_wrong_model_string_names_missing_variables_and_hints_the_right_one(family, wrong, hint):
    config, checkpoint = paths(family)
    with pytest.raises(CheckpointMismatchError) as info:
        build_transformer_model(config, checkpoint, model=wrong)
    assert "model=%r" % hint in str(info.value)


# ---- the T5 builder: encoder, decoder and model share one set of layers -----------------------

@pytest.mark.parametrize("version", ["t5.1.0", "t5.1.1", "mt5.1.1"])
def test_t5_encoder_and_decoder_of_the_full_builder(version):
    builder, feed, expected = build_case(version + "_full")
    _, enc_feed, enc_expected = build_case(version + "_encoder")
    _, dec_feed, dec_expected = build_case(version + "_decoder")
    assert [i.name for i in builder.model.inputs] == ["Encoder-Input-Token", "Decoder-Input-Token"]
    assert [i.name for i in builder.decoder.inputs] == ["Input-Context", "Decoder-Input-Token"]
    assert builder.layers is builder._encoder.layers is builder._decoder.layers
    np.testing.assert_array_equal(enc_feed["encoder_token_ids"], feed["encoder_token_ids"])
    err = real_error(builder.encoder(enc_feed["encoder_token_ids"]), enc_expected[0], valid_positions(enc_feed))
    assert err <= ATOL
    err = real_error(builder.decoder([dec_feed["context"], dec_feed["decoder_token_ids"]]),
                     dec_expected[0], valid_positions(dec_feed))
    assert err <= ATOL
    # the full model is the decoder run on the encoder's output
    context = keras.ops.convert_to_numpy(builder.encoder(feed["encoder_token_ids"]))
    composed = builder.decoder([context, feed["decoder_token_ids"]])
    whole = builder.model([feed["encoder_token_ids"], feed["decoder_token_ids"]])
    valid = valid_positions(feed)
    # padded encoder positions are masked in the full model only, so compare on unpadded rows
    assert real_error(composed[:1], keras.ops.convert_to_numpy(whole)[:1], valid[:1]) <= ATOL


# ---- Hugging Face transformers as a second reference (make_hf_generative_goldens.py) ----------

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "models_hf_gen")


@pytest.mark.parametrize("kind", ["gpt2", "t5.1.0", "t5.1.1", "mt5.1.1"])
def test_matches_hugging_face(kind):
    data = np.load(os.path.join(HF, kind + ".npz"))
    config, checkpoint = os.path.join(HF, kind, "config.json"), os.path.join(HF, kind, "model.ckpt")
    if kind == "gpt2":
        model = build_transformer_model(config, checkpoint, model="gpt2", final_activation="linear")
        ids = data["input/token_ids"]
        logits = model(ids)
        feed = {"token_ids": ids}
    else:  # HF T5 has no cross-attention position bias
        builder = build_transformer_model(config, checkpoint, model=kind, with_lm="linear",
                                          cross_position_bias=False, return_keras_model=False)
        enc, dec = data["input/encoder_token_ids"], data["input/decoder_token_ids"]
        logits = builder.model([enc, dec])
        encoded = builder.encoder(enc)
        err = real_error(encoded, data["output/encoder"], valid_positions({"token_ids": enc}))
        assert err <= ATOL, "%s encoder: max abs err %.3g vs HF" % (kind, err)
        feed = {"decoder_token_ids": dec}
    err = real_error(logits, data["output/logits"], valid_positions(feed))
    assert err <= ATOL, "%s logits (magnitude ~10): max abs err %.3g vs HF" % (kind, err)


# ---- options and the errors users see --------------------------------------------------------

TINY = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, hidden_act="gelu")


@pytest.mark.parametrize("option", ["with_mlm", "with_pool", "with_nsp"])
def test_gpt_family_has_only_the_lm_head(option):
    with pytest.raises(ValueError, match="final_activation"):
        build_transformer_model(model="gpt2", **{option: True}, **TINY)


@pytest.mark.parametrize("model", ["t5", "t5.1.1_encoder", "mt5.1.1_decoder"])
def test_t5_rejects_lm_and_unilm_applications(model):
    with pytest.raises(ValueError, match="T5 models cannot be used with application='lm'"):
        build_transformer_model(model=model, application="lm", **TINY)


@pytest.mark.parametrize("model, act", [("t5", ["gelu", "linear"]), ("t5.1.1", "gelu"), ("mt5.1.1_decoder", "relu")])
def test_t5_version_and_feed_forward_kind_must_agree(model, act):
    with pytest.raises(ValueError, match="t5.1.0 has one feed-forward branch"):
        build_transformer_model(model=model, **dict(TINY, hidden_act=act))


def test_token_only_gpts_reject_unilm_and_version_is_checked():
    with pytest.raises(ValueError, match="segment_vocab_size > 0"):
        build_transformer_model(model="gpt2_ml", application="unilm", **TINY)
    with pytest.raises(ValueError, match="T5 version must be one of t5.1.0, t5.1.1, mt5.1.1"):
        build_transformer_model(model="t5", version="t5.2", **TINY)


def test_gpt_is_causal_and_version_follows_the_string():
    builder = build_transformer_model(model="gpt", return_keras_model=False, **TINY)
    assert builder.model.get_layer("Attention-LM-Mask") is not None
    assert [i.name for i in builder.model.inputs] == ["Input-Token", "Input-Segment"]
    gpt2 = build_transformer_model(model="gpt2", type_vocab_size=2, **TINY)
    assert [i.name for i in gpt2.inputs] == ["Input-Token"]
    for name, version in (("t5", "t5.1.0"), ("t5_encoder", "t5.1.0"), ("t5.1.1_decoder", "t5.1.1"),
                          ("mt5.1.1", "mt5.1.1")):
        act = "gelu" if version == "t5.1.0" else ["gelu", "linear"]
        builder = build_transformer_model(model=name, return_keras_model=False, **dict(TINY, hidden_act=act))
        assert builder.version == version
    # 't5' lets an explicit version stand, as in bert4keras
    gated = dict(TINY, hidden_act=["gelu", "linear"])
    assert build_transformer_model(model="t5", version="t5.1.1", return_keras_model=False, **gated).version == "t5.1.1"


REFERENCE_PYTHON = os.environ.get("BERT4KERAS_REFERENCE_PYTHON", "/work/refvenv/bin/python")
_REFERENCE_SCRIPT = """
import os, sys
os.environ.update(TF_KERAS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
import numpy as np
from bert4keras.models import build_transformer_model
config, prefix, model, data, out = sys.argv[1:6]
z = np.load(data)
m = build_transformer_model(config, prefix, model=model)
res = m.predict([z[k] for k in sorted(z.files)], verbose=0)
np.save(out, res)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(REFERENCE_PYTHON), reason="bert4keras reference venv not available")
@pytest.mark.parametrize("family", ["gpt2", "gpt2_ml", "mt5.1.1", "t5.1.0"])
def test_bert4keras_loads_what_we_write(tmp_path, family):
    """A fine-tuned model exported by save_weights_as_checkpoint loads in bert4keras 0.11.5 and
    gives the same outputs there."""
    import subprocess

    config, checkpoint = paths(family)
    builder = build_transformer_model(config, checkpoint, model=FULL[family], return_keras_model=False)
    rng = np.random.default_rng(5)
    for w in builder.model.trainable_weights:
        w.assign(keras.ops.convert_to_numpy(w) + 0.05 * rng.standard_normal(w.shape).astype("float32"))
    prefix = str(tmp_path / "ft" / "model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    ids = np.array([[5, 9, 3, 7, 2, 0, 0], [4, 8, 1, 6, 3, 2, 9]], "int32")
    inputs = [ids] if family.startswith("gpt") else [ids, np.array([[0, 3, 5], [0, 7, 0]], "int32")]
    np.savez(tmp_path / "inputs.npz", **{"x%d" % i: x for i, x in enumerate(inputs)})
    ours = keras.ops.convert_to_numpy(builder.model(inputs if len(inputs) > 1 else inputs[0]))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    subprocess.run([REFERENCE_PYTHON, "-c", _REFERENCE_SCRIPT, config, prefix, FULL[family],
                    str(tmp_path / "inputs.npz"), str(tmp_path / "theirs.npy")],
                   check=True, capture_output=True, env=env, timeout=600)
    theirs = np.load(tmp_path / "theirs.npy")
    valid = valid_positions({"token_ids" if family.startswith("gpt") else "decoder_token_ids": inputs[-1]})
    assert real_error(ours, theirs, valid) <= ATOL


def test_t5_with_a_condition_takes_it_once_and_composes():
    """layer_norm_cond on T5: the full model takes the condition once; it equals its decoder
    run on its encoder's output (both conditioned)."""
    condition = keras.Input(shape=(8,), name="Input-Condition")
    builder = build_transformer_model(model="t5.1.1", layer_norm_cond=condition,
                                      additional_input_layers=condition, return_keras_model=False,
                                      **dict(TINY, hidden_act=["gelu", "linear"]))
    assert [i.name for i in builder.model.inputs] == ["Encoder-Input-Token", "Input-Condition", "Decoder-Input-Token"]
    rng = np.random.default_rng(1)
    for w in builder.model.weights:  # the condition projections start at zero: make them matter
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.3 + keras.ops.convert_to_numpy(w))
    enc, dec = np.array([[3, 4, 7, 9]], "int32"), np.array([[0, 5, 2]], "int32")
    z = rng.standard_normal((1, 8)).astype("float32")
    whole = keras.ops.convert_to_numpy(builder.model([enc, z, dec]))
    context = keras.ops.convert_to_numpy(builder.encoder([enc, z]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(builder.decoder([context, dec, z])), whole, atol=1e-6)
    other = keras.ops.convert_to_numpy(builder.model([enc, z + 1.0, dec]))
    assert np.abs(other - whole).max() > 1e-4
