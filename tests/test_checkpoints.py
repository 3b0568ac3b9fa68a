"""TF1 checkpoint IO: what a user handing us a release zip (or a dict) can rely on."""

import os

import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng import checkpoints as ck


def _arrays(rng):
    return {
        "bert/embeddings/word_embeddings": rng.standard_normal((11, 4)).astype("float32"),
        "bert/encoder/layer_0/attention/self/query/kernel": rng.standard_normal((4, 4)).astype("float32"),
        "cls/predictions/output_bias": rng.standard_normal(11).astype("float32"),
        "global_step": np.int64(1234),
    }


def test_save_then_read_is_bit_exact_and_readable_by_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    prefix = str(tmp_path / "bert_model.ckpt")
    assert ck.save_variables(prefix, arrays) == prefix
    assert os.path.exists(prefix + ".index")
    assert os.path.exists(prefix + ".data-00000-of-00001")
    # TensorFlow's own reader sees the TF1 names and shapes (no object-graph keys).
    listed = dict(tf.train.list_variables(prefix))
    assert listed == {k: list(np.shape(v)) for k, v in arrays.items()}
    for name, value in arrays.items():
        got = tf.train.load_variable(prefix, name)
        np.testing.assert_array_equal(got, value)
        assert got.dtype == np.asarray(value).dtype
    # ... and ours, through every accepted form of the path.
    for path in (prefix, prefix + ".index", prefix + ".data-00000-of-00001", str(tmp_path)):
        loaded = ck.load_variables(path)
        assert sorted(loaded) == sorted(arrays)
        for name in arrays:
            np.testing.assert_array_equal(loaded[name], arrays[name])
    assert ck.list_variables(prefix) == sorted((k, np.shape(v)) for k, v in arrays.items())


def test_float64_arrays_are_written_as_float32_by_default(tmp_path):
    prefix = str(tmp_path / "m.ckpt")
    ck.save_variables(prefix, {"a/b": np.arange(6, dtype="float64").reshape(2, 3)})
    assert tf.train.load_variable(prefix, "a/b").dtype == np.float32
    ck.save_variables(prefix, {"a/b": np.arange(3, dtype="float64")}, dtype=None)
    assert tf.train.load_variable(prefix, "a/b").dtype == np.float64


def test_dict_source_behaves_like_a_checkpoint():
    arrays = _arrays(np.random.default_rng(1))
    reader = ck.open_checkpoint(arrays)
    assert reader.names() == sorted(arrays)
    assert reader.shape("bert/embeddings/word_embeddings") == (11, 4)
    assert "global_step" in reader and "nope" not in reader


def test_missing_checkpoint_path_is_named(tmp_path):
    missing = str(tmp_path / "nowhere" / "bert_model.ckpt")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ck.open_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match="No TF1 checkpoint in directory"):
        ck.open_checkpoint(str(tmp_path))


def test_wrong_prefix_lists_checkpoints_found_beside_it(tmp_path):
    ck.save_variables(str(tmp_path / "bert_model.ckpt"), {"x": np.zeros(2)})
    with pytest.raises(FileNotFoundError, match="bert_model.ckpt"):
        ck.open_checkpoint(str(tmp_path / "model.ckpt"))


def test_reading_an_absent_variable_suggests_close_names():
    reader = ck.open_checkpoint(_arrays(np.random.default_rng(2)))
    with pytest.raises(KeyError, match="Closest names present: bert/embeddings/word_embeddings"):
        reader.read("bert/embedding/word_embeddings")


def test_invalid_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=":0"):
        ck.save_variables(str(tmp_path / "m.ckpt"), {"a/b:0": np.zeros(1)})
    with pytest.raises(ValueError, match="empty"):
        ck.save_variables(str(tmp_path / "m.ckpt"), {})


def test_keep_and_compound_tokens_worked_example():
    # checkpoints.md §3: keep [0,5,7,9,11] + compound [[1,2], ([3,4],[1,3])] -> 7 rows.
    table = np.arange(13 * 3, dtype="float32").reshape(13, 3)
    bias = np.arange(13, dtype="float32") * 10
    keep = [0, 5, 7, 9, 11]
    compound = [[1, 2], ([3, 4], [1, 3])]
    new = ck.select_vocabulary(table, keep, compound)
    assert new.shape == (7, 3) and new.dtype == np.float32
    np.testing.assert_array_equal(new[:5], table[keep])
    np.testing.assert_allclose(new[5], (table[5] + table[7]) / 2)
    np.testing.assert_allclose(new[6], (1 * table[9] + 3 * table[11]) / 4)
    new_bias = ck.select_vocabulary(bias, keep, compound)
    np.testing.assert_allclose(new_bias, [0, 50, 70, 90, 110, 60, 105])
    # vocabulary on the last axis (e.g. an (H, V) output kernel)
    np.testing.assert_allclose(ck.select_vocabulary(table.T, keep, compound, axis=-1), new.T)


def test_compound_without_keep_and_bad_ids():
    table = np.eye(4, dtype="float32")
    np.testing.assert_allclose(ck.select_vocabulary(table, None, [[0, 3]])[-1], [0.5, 0, 0, 0.5])
    with pytest.raises(ValueError, match="keep_tokens"):
        ck.select_vocabulary(table, [0, 9])
    with pytest.raises(ValueError, match=r"compound_tokens\[0\]"):
        ck.select_vocabulary(table, [0, 1], [[2]])
