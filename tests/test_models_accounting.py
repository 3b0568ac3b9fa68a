"""A checkpoint is loaded whole or not at all: every model weight comes from the checkpoint (or
is declared not to), and every checkpoint variable is used or known to be ignorable."""

import os

import numpy as np
import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.models import CheckpointMismatchError, GAU_alpha, build_transformer_model
from bert4keras_ng.models import mappings

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "models")


def ckpt(family):
    return os.path.join(FIXTURES, family, "bert_model.ckpt")


def config(family):
    return os.path.join(FIXTURES, family, "bert_config.json")


def tokens(batch=2, length=7, vocab=60, seed=0):
    ids = np.random.default_rng(seed).integers(1, vocab, (batch, length)).astype("int32")
    ids[1, length - 2:] = 0
    return ids


@pytest.mark.parametrize("model", ["roformer", "nezha"])
def test_bert_checkpoint_built_without_its_position_table_fails(model):
    with pytest.raises(CheckpointMismatchError) as error:
        build_transformer_model(config("bert"), ckpt("bert"), model=model)
    message = str(error.value)
    assert "bert/embeddings/position_embeddings (64, 32)" in message
    assert "looks like model='bert'" in message
    assert "ignore_unused_variables=True" in message


def test_fewer_layers_than_the_checkpoint_fails_naming_the_depth():
    with pytest.raises(CheckpointMismatchError) as error:
        build_transformer_model(config("bert"), ckpt("bert"), num_hidden_layers=1)
    message = str(error.value)
    assert "bert/encoder/layer_1/attention/self/query/kernel" in message
    assert "blocks up to layer_1 but num_hidden_layers=1" in message


def test_load_weights_from_checkpoint_assigns_nothing_when_variables_are_unused():
    builder = build_transformer_model(config("bert"), model="roformer", return_keras_model=False)
    before = [w.copy() for w in builder.model.get_weights()]
    with pytest.raises(CheckpointMismatchError, match="position_embeddings"):
        builder.load_weights_from_checkpoint(ckpt("bert"))
    for a, b in zip(before, builder.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_explicit_opt_out_loads_the_rest_with_a_warning():
    with pytest.warns(UserWarning, match="position_embeddings"):
        model = build_transformer_model(
            config("bert"), ckpt("bert"), model="roformer", ignore_unused_variables=True
        )
    reference = checkpoints.load_variables(ckpt("bert"), ["bert/embeddings/word_embeddings"])
    np.testing.assert_array_equal(
        model.get_layer("Embedding-Token").embeddings.numpy(),
        reference["bert/embeddings/word_embeddings"],
    )


def test_unknown_extra_variable_fails_but_optimizer_slots_and_heads_are_ignorable():
    arrays = checkpoints.load_variables(ckpt("bert"))
    known = dict(arrays)
    known["bert/embeddings/word_embeddings/adam_v"] = arrays["bert/embeddings/word_embeddings"]
    known["global_step"] = np.array(7, dtype="int64")
    build_transformer_model(config("bert"), known)  # heads (cls/, pooler) unused: fine
    unknown = dict(arrays, **{"bert/encoder/layer_0/extra/kernel": np.ones((2, 2), "float32")})
    with pytest.raises(CheckpointMismatchError, match=r"layer_0/extra/kernel \(2, 2\)"):
        build_transformer_model(config("bert"), unknown)


def test_segment_table_of_a_model_built_without_segments_is_ignorable():
    model = build_transformer_model(config("bert"), ckpt("bert"), segment_vocab_size=0)
    assert len(model.inputs) == 1


def test_a_reader_declares_its_own_ignorable_families():
    class Reader(checkpoints.CheckpointReader):
        ignorable = ("*/position_ids",)

    arrays = checkpoints.load_variables(ckpt("bert"))
    arrays["bert/embeddings/position_ids"] = np.arange(64)
    build_transformer_model(config("bert"), Reader(arrays))
    with pytest.raises(CheckpointMismatchError, match="position_ids"):
        build_transformer_model(config("bert"), arrays)


def test_gau_alpha_embedding_mapping_survives_save_and_reload(tmp_path):
    options = dict(model="gau_alpha", embedding_size=16)
    builder = build_transformer_model(config("gau_alpha"), return_keras_model=False, **options)
    x = [tokens(), np.zeros_like(tokens())]
    expected = builder.model.predict(x, verbose=0)
    builder.save_weights_as_checkpoint(str(tmp_path / "gau.ckpt"))
    assert "bert/encoder/embedding_hidden_mapping_in/kernel" in dict(
        checkpoints.list_variables(str(tmp_path / "gau.ckpt"))
    )
    reloaded = build_transformer_model(config("gau_alpha"), str(tmp_path / "gau.ckpt"), **options)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)


def test_a_built_weight_without_table_entry_refuses_the_build():
    class NoMappingEntry(GAU_alpha):
        table = {k: v for k, v in mappings.GAU_ALPHA.items() if k != "Embedding-Mapping"}

    with pytest.raises(ValueError, match=r"Embedding-Mapping/kernel \(16, 32\).*no entry"):
        build_transformer_model(config("gau_alpha"), model=NoMappingEntry, embedding_size=16)
    build_transformer_model(config("gau_alpha"), model=NoMappingEntry)  # no mapping: fine


def test_conditional_layer_norm_projections_are_declared_not_from_checkpoint():
    import keras

    condition = keras.Input((8,), name="Input-Condition")
    model = build_transformer_model(
        config("bert"), ckpt("bert"), layer_norm_cond=condition, additional_input_layers=condition
    )
    names = [w.path for w in model.trainable_weights]
    assert "Embedding-Norm/gamma_dense/kernel" in names


def test_variables_of_weights_the_architecture_lacks_are_fine_only_at_their_constant_value():
    """RoFormerV2 has no biases: a checkpoint bias of zeros loses nothing, a non-zero one does."""
    arrays = checkpoints.load_variables(ckpt("roformer_v2"))
    name = "bert/encoder/layer_0/attention/self/query/bias"
    assert name not in arrays
    build_transformer_model(config("roformer_v2"), dict(arrays, **{name: np.zeros(32, "float32")}),
                            model="roformer_v2")
    with pytest.raises(CheckpointMismatchError, match="query/bias"):
        build_transformer_model(config("roformer_v2"), dict(arrays, **{name: np.ones(32, "float32")}),
                                model="roformer_v2")
