"""build_transformer_model: options, builder API, checkpoint save/load and the errors users see."""

import json
import os

import keras
import numpy as np
import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.models import MODELS, CheckpointMismatchError, build_transformer_model

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "models")
TINY = dict(
    vocab_size=30,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    hidden_act="gelu",
    max_position_embeddings=24,
)


def ckpt(family):
    return os.path.join(FIXTURES, family, "bert_model.ckpt")


def config(family):
    return os.path.join(FIXTURES, family, "bert_config.json")


def tokens(batch=2, length=7, vocab=30, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, length)).astype("int32")
    if batch > 1:
        ids[1, length - 3 :] = 0
    return ids


# ---- registry and options ----------------------------------------------------------------------


def test_model_names_are_case_insensitive_and_classes_are_accepted():
    model = build_transformer_model(model="RoFormer_V2", **TINY)
    assert model.get_layer("Embedding-Rotary-Position") is not None
    model = build_transformer_model(model=MODELS["nezha"], **TINY)
    assert model.get_layer("Embedding-Relative-Position") is not None


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model='bart'.*albert, albert_unshared, bert"):
        build_transformer_model(model="bart", **TINY)


def test_missing_config_key_is_named(tmp_path):
    path = tmp_path / "bert_config.json"
    cfg = dict(TINY)
    del cfg["intermediate_size"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Missing required config key.*'intermediate_size'.*bert_config.json"):
        build_transformer_model(str(path))


def test_kwargs_override_config_and_aliases(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(dict(TINY, type_vocab_size=3, hidden_dropout_prob=0.1)))
    builder = build_transformer_model(str(path), num_hidden_layers=1, return_keras_model=False)
    assert builder.num_hidden_layers == 1
    assert builder.segment_vocab_size == 3 and builder.max_position == 24
    assert builder.dropout_rate == 0.1
    assert builder.model.get_layer("Embedding-Dropout") is not None
    # rate 0 removes the Dropout layers altogether
    model = build_transformer_model(**TINY)
    assert not [l for l in model.layers if isinstance(l, keras.layers.Dropout)]


def test_outputs_convention_and_builder_object():
    builder = build_transformer_model(with_pool=True, with_mlm=True, return_keras_model=False, **TINY)
    assert len(builder.model.outputs) == 2  # several heads -> [pool, mlm]
    assert builder.num_hidden_layers == 2 and isinstance(builder.layers, dict)
    assert callable(builder.initializer)
    assert builder.layers["Embedding-Token"] is builder.model.get_layer("Embedding-Token")
    one = build_transformer_model(with_mlm="linear", **TINY)  # one head -> that head
    assert tuple(one.outputs[0].shape) == (None, None, 30)
    seq = build_transformer_model(**TINY)  # no head -> sequence
    assert tuple(seq.outputs[0].shape) == (None, None, 16)


def test_mlm_head_is_tied_to_the_token_embedding():
    model = build_transformer_model(with_mlm=True, **TINY)
    embedding = model.get_layer("Embedding-Token")
    n_weights = len(model.weights)
    unheaded = len(build_transformer_model(**TINY).weights)
    # MLM adds only Dense (2), Norm (2) and the output bias (1): no second vocabulary matrix
    assert n_weights == unheaded + 5
    ids = tokens()
    seg = np.zeros_like(ids)
    before = keras.ops.convert_to_numpy(model([ids, seg]))
    embedding.embeddings.assign(embedding.embeddings * 2.0)
    after = keras.ops.convert_to_numpy(model([ids, seg]))
    assert not np.allclose(before, after)


def test_albert_shares_one_block():
    shallow = build_transformer_model(model="albert", embedding_size=8, **dict(TINY, num_hidden_layers=1))
    deep = build_transformer_model(model="albert", embedding_size=8, **dict(TINY, num_hidden_layers=5))
    assert len(shallow.weights) == len(deep.weights)
    names = {l.name for l in deep.layers}
    assert "Transformer-FeedForward-Norm" in names and "Transformer-0-FeedForward-Norm" not in names
    unshared = build_transformer_model(model="albert_unshared", **TINY)
    assert "Transformer-1-FeedForward-Norm" in {l.name for l in unshared.layers}


def test_prefix_name_and_sequence_length():
    model = build_transformer_model(prefix="Student-", name="student", sequence_length=12, **TINY)
    assert model.name == "student"
    assert model.get_layer("Student-Embedding-Token") is not None
    assert tuple(model.inputs[0].shape) == (None, 12)


def test_segment_vocab_size_zero_removes_segment_input():
    model = build_transformer_model(segment_vocab_size=0, **TINY)
    assert [i.name for i in model.inputs] == ["Input-Token"]
    assert "Embedding-Segment" not in {l.name for l in model.layers}


def test_attention_normalization_option_reaches_every_attention_layer():
    for name in ("bert", "roformer", "nezha"):
        model = build_transformer_model(model=name, attention_normalization="softmax_plus", **TINY)
        attention = [l for l in model.layers if "MultiHeadSelfAttention" in l.name and l.name.endswith("Attention")]
        assert attention and all(l.normalization == "softmax_plus" for l in attention)
    gau = build_transformer_model(model="gau_alpha", attention_key_size=8, **TINY)
    assert gau.get_layer("Transformer-0-GatedAttentionUnit").normalization == "softmax_plus"


def test_application_checks():
    with pytest.raises(ValueError, match="application must be one of"):
        build_transformer_model(application="seq2seq", **TINY)
    with pytest.raises(ValueError, match="electra"):
        build_transformer_model(model="electra", application="lm", **TINY)
    with pytest.raises(ValueError, match="electra.*with_discriminator"):
        build_transformer_model(model="electra", with_pool=True, **TINY)
    with pytest.raises(ValueError, match="segment_vocab_size"):
        build_transformer_model(application="unilm", segment_vocab_size=0, **TINY)
    lm = build_transformer_model(application="lm", **TINY)  # lm switches the MLM head on
    assert lm.get_layer("Attention-LM-Mask") is not None and lm.get_layer("MLM-Activation") is not None


def test_lm_model_is_causal():
    model = build_transformer_model(application="lm", **TINY)
    ids = tokens(batch=1, length=8)
    seg = np.zeros_like(ids)
    full = keras.ops.convert_to_numpy(model([ids, seg]))
    changed = ids.copy()
    changed[0, 5:] = (changed[0, 5:] % 29) + 1
    part = keras.ops.convert_to_numpy(model([changed, seg]))
    np.testing.assert_allclose(full[0, :5], part[0, :5], atol=1e-6)
    assert not np.allclose(full[0, 5:], part[0, 5:])


def test_unilm_source_does_not_see_target():
    model = build_transformer_model(application="unilm", **TINY)
    ids = tokens(batch=1, length=8)
    seg = np.array([[0, 0, 0, 0, 1, 1, 1, 1]], dtype="int32")
    full = keras.ops.convert_to_numpy(model([ids, seg]))
    changed = ids.copy()
    changed[0, 6:] = (changed[0, 6:] % 29) + 1
    part = keras.ops.convert_to_numpy(model([changed, seg]))
    np.testing.assert_allclose(full[0, :6], part[0, :6], atol=1e-6)


# ---- checkpoints: save / load -----------------------------------------------------------------


@pytest.mark.parametrize(
    "family, model, kwargs",
    [
        ("bert", "bert", dict(with_pool=True, with_nsp=True, with_mlm=True)),
        ("albert", "albert", dict(with_pool=True, with_nsp=True, with_mlm=True)),
        ("electra", "electra", dict(with_discriminator=True)),
        ("gau_alpha", "gau_alpha", {}),
        ("roformer_v2", "roformer_v2", {}),
    ],
)
def test_save_then_load_is_bit_exact(tmp_path, family, model, kwargs):
    builder = build_transformer_model(
        config(family), ckpt(family), model=model, return_keras_model=False, **kwargs
    )
    prefix = str(tmp_path / "export" / "bert_model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    written = checkpoints.load_variables(prefix)
    original = checkpoints.load_variables(ckpt(family))
    # every mapped variable is written under its original name, with the original bits
    assert set(written) <= set(original)
    assert len(written) == len(builder.checkpoint_entries())
    for name, value in written.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    # and the export loads back into a fresh model
    again = build_transformer_model(config(family), prefix, model=model, return_keras_model=False, **kwargs)
    for a, b in zip(builder.model.weights, again.model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_variable_mapping_lists_checkpoint_names_per_layer():
    builder = build_transformer_model(config("bert"), model="bert", with_nsp=True, return_keras_model=False)
    mapping = builder.variable_mapping()
    assert mapping["NSP-Proba"] == ["cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"]
    assert mapping["Transformer-1-MultiHeadSelfAttention-Norm"] == [
        "bert/encoder/layer_1/attention/output/LayerNorm/beta",
        "bert/encoder/layer_1/attention/output/LayerNorm/gamma",
    ]
    # 5 + 16·L + pooler 2 + NSP 2 (checkpoints.md §6)
    assert sum(len(v) for v in mapping.values()) == 5 + 16 * 2 + 4


def test_load_from_dict_and_keep_tokens_rows():
    arrays = checkpoints.load_variables(ckpt("bert"))
    keep = [0, 7, 3]
    builder = build_transformer_model(
        config("bert"), arrays, keep_tokens=keep, compound_tokens=[[1, 2]], with_mlm=True,
        return_keras_model=False,
    )
    table = keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].embeddings)
    words = arrays["bert/embeddings/word_embeddings"]
    np.testing.assert_array_equal(table[:3], words[keep])
    np.testing.assert_allclose(table[3], (words[7] + words[3]) / 2, rtol=1e-6)
    bias = keras.ops.convert_to_numpy(builder.layers["MLM-Bias"].beta)
    np.testing.assert_allclose(bias, np.r_[arrays["cls/predictions/output_bias"][keep],
                                           arrays["cls/predictions/output_bias"][[7, 3]].mean()], rtol=1e-6)


def test_checkpoint_path_not_existing(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        build_transformer_model(config("bert"), str(tmp_path / "bert_model.ckpt"))


def test_wrong_model_names_missing_variables_and_hints_the_right_model():
    with pytest.raises(CheckpointMismatchError) as info:
        build_transformer_model(config("albert"), ckpt("albert"), model="bert")
    message = str(info.value)
    assert "bert/encoder/layer_0/attention/self/query/kernel" in message
    assert "closest present: bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel" in message
    assert "model='albert'" in message
    with pytest.raises(CheckpointMismatchError, match="model='electra'"):
        build_transformer_model(config("electra"), ckpt("electra"), model="bert")


def test_shape_mismatch_names_variable_and_both_shapes():
    with pytest.raises(CheckpointMismatchError) as info:
        build_transformer_model(config("bert"), ckpt("bert"), vocab_size=61)
    message = str(info.value)
    assert "bert/embeddings/word_embeddings: checkpoint shape (60, 32), layer Embedding-Token expects (61, 32)" in message
    assert "vocab_size" in message


def test_nothing_is_half_loaded():
    builder = build_transformer_model(config("bert"), vocab_size=61, return_keras_model=False)
    before = [keras.ops.convert_to_numpy(w).copy() for w in builder.model.weights]
    with pytest.raises(CheckpointMismatchError, match="Nothing was loaded"):
        builder.load_weights_from_checkpoint(ckpt("bert"))
    for w, b in zip(builder.model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)


def test_ignore_invalid_weights_loads_the_rest_with_a_warning():
    with pytest.warns(UserWarning, match="position_embeddings"):
        builder = build_transformer_model(
            config("nezha"), ckpt("nezha"), model="bert", ignore_invalid_weights=True,
            return_keras_model=False,
        )
    words = checkpoints.load_variables(ckpt("nezha"), ["bert/embeddings/word_embeddings"])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].embeddings),
        words["bert/embeddings/word_embeddings"],
    )


def test_sequence_longer_than_learned_positions():
    with pytest.raises(ValueError, match="sequence_length=30 exceeds max_position_embeddings=24"):
        build_transformer_model(sequence_length=30, **TINY)
    model = build_transformer_model(**TINY)
    ids = tokens(length=30)
    with pytest.raises(ValueError, match="max_position"):
        model([ids, np.zeros_like(ids)])
    # relative / rotary positions have no such limit
    rope = build_transformer_model(model="roformer", **TINY)
    assert keras.ops.convert_to_numpy(rope([ids, np.zeros_like(ids)])).shape == (2, 30, 16)


REFERENCE_PYTHON = os.environ.get("BERT4KERAS_REFERENCE_PYTHON", "/work/refvenv/bin/python")
_REFERENCE_SCRIPT = """
import os, sys
os.environ.update(TF_KERAS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
import numpy as np
from bert4keras.models import build_transformer_model
config, prefix, model, data, out = sys.argv[1:6]
z = np.load(data)
kwargs = dict(with_discriminator=True) if model == "electra" else dict(with_pool=True, with_nsp=True, with_mlm=True)
m = build_transformer_model(config, prefix, model=model, **kwargs)
res = m.predict([z["token_ids"], z["segment_ids"]], verbose=0)
res = res if isinstance(res, list) else [res]
np.savez(out, *res)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(REFERENCE_PYTHON), reason="bert4keras reference venv not available")
@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_bert4keras_loads_what_we_write(tmp_path, family):
    """A checkpoint exported by save_weights_as_checkpoint loads in bert4keras 0.11.5 and gives
    the same outputs there as here."""
    import subprocess

    kwargs = dict(with_discriminator=True) if family == "electra" else dict(with_pool=True, with_nsp=True, with_mlm=True)
    builder = build_transformer_model(config(family), ckpt(family), model=family, return_keras_model=False, **kwargs)
    rng = np.random.default_rng(5)
    for w in builder.model.trainable_weights:  # fine-tuned weights, different from the fixture
        w.assign(keras.ops.convert_to_numpy(w) + 0.05 * rng.standard_normal(w.shape).astype("float32"))
    prefix = str(tmp_path / "ft" / "bert_model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    ids = tokens(batch=2, length=9, vocab=60)
    seg = (np.arange(9)[None] >= 4).astype("int32").repeat(2, 0)
    np.savez(tmp_path / "inputs.npz", token_ids=ids, segment_ids=seg)
    ours = [keras.ops.convert_to_numpy(o) for o in
            (builder.model([ids, seg]) if isinstance(builder.model.output, list) else [builder.model([ids, seg])])]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    subprocess.run(
        [REFERENCE_PYTHON, "-c", _REFERENCE_SCRIPT, config(family), prefix, family,
         str(tmp_path / "inputs.npz"), str(tmp_path / "theirs.npz")],
        check=True, capture_output=True, env=env, timeout=600,
    )
    theirs = np.load(tmp_path / "theirs.npz")
    assert len(theirs.files) == len(ours)
    for i, out in enumerate(ours):
        ref = theirs["arr_%d" % i]
        mask = ids != 0
        diff = np.abs(out - ref)
        err = diff[mask].max() if diff.ndim >= 3 else diff.max()
        assert err <= 1e-5, "output %d: %.3g" % (i, err)


def test_roformer_custom_positions_feed_the_rotary_table():
    """With Input-Position, RoPE sees those ids: 0..n-1 equals the default, and shifting every
    position by a constant changes nothing (attention depends on relative positions only)."""
    plain = build_transformer_model(model="roformer", return_keras_model=False, **TINY)
    custom = build_transformer_model(model="roformer", custom_position_ids=True, return_keras_model=False, **TINY)
    custom.model.set_weights(plain.model.get_weights())
    assert [i.name for i in custom.model.inputs] == ["Input-Token", "Input-Segment", "Input-Position"]
    ids = tokens()
    seg = np.zeros_like(ids)
    pos = np.tile(np.arange(ids.shape[1], dtype="int32"), (2, 1))
    ref = keras.ops.convert_to_numpy(plain.model([ids, seg]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(custom.model([ids, seg, pos])), ref, atol=1e-6)
    shifted = keras.ops.convert_to_numpy(custom.model([ids, seg, pos + 11]))
    np.testing.assert_allclose(shifted[ids != 0], ref[ids != 0], atol=2e-5)
