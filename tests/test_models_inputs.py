"""Bad ids at predict / train time: the same behaviour in every precision, a clear error wherever
the values can be checked (eager calls, predict and fit without XLA), and zero rows under XLA."""

import keras
import numpy as np
import pytest

from bert4keras_ng import training
from bert4keras_ng.models import build_transformer_model

TINY = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, hidden_act="gelu", max_position_embeddings=24)


def build(policy="float32", **options):
    with training.dtype_policy(policy):
        keras.utils.set_random_seed(0)
        return build_transformer_model(**TINY, **options)


def derived(policy="float32"):
    """A plain keras.Model over the encoder (how a head is added): only the layers check."""
    model = build(policy)
    return keras.Model(model.inputs, model.outputs)


def feed(length=6, token=None, segment=None):
    x = np.random.default_rng(0).integers(1, 30, (2, length)).astype("int32")
    s = np.zeros_like(x)
    if token is not None:
        x[0, 2] = token
    if segment is not None:
        s[1, 3] = segment
    return [x, s]


def as_float(out):
    return keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))


@pytest.mark.parametrize("bad", [dict(token=-1), dict(token=30), dict(segment=-1), dict(segment=2)])
def test_eager_call_rejects_out_of_range_ids(bad):
    model = derived()
    with pytest.raises(ValueError, match=r"Embedding-(Token|Segment): ids for a table of (30|2) rows: "
                                         r"id -?\d+ at index \[\d, \d\] is outside"):
        model(feed(**bad))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("bad", [dict(token=-1), dict(segment=-1), dict(segment=5)])
def test_predict_rejects_out_of_range_ids_in_every_precision(policy, bad):
    model = derived(policy)
    model.predict(feed(), verbose=0)  # fine
    with pytest.raises(Exception, match=r"ids for a table of (30|2) rows: an id is outside"):
        model.predict(feed(**bad), verbose=0)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_under_xla_out_of_range_ids_give_zero_rows_in_every_precision(policy):
    model = build(policy)
    x, s = feed()
    compiled = keras.Model(model.inputs, model.outputs)
    compiled.compile(jit_compile=True)
    out_of_range = compiled.predict([x, np.full_like(s, 5)], verbose=0)
    table = model.get_layer("Embedding-Segment").embeddings
    table.assign(np.zeros(table.shape, "float32"))
    expected = compiled.predict([x, s], verbose=0)
    np.testing.assert_array_equal(as_float(out_of_range), as_float(expected))


def test_sequence_longer_than_the_position_table_is_always_a_clear_error():
    model = derived()
    for length in (8, 16, 24):  # Keras relaxes the traced shape after several lengths
        model.predict(feed(length), verbose=0)
    for _ in range(2):
        with pytest.raises(Exception, match="exceeds the 24 learned positions"):
            model.predict(feed(25), verbose=0)
    with pytest.raises(ValueError, match="sequence length 25 exceeds the 24 learned positions"):
        model(feed(25))


def test_predict_on_an_empty_batch_is_a_clear_error():
    model = build()
    x, s = feed()
    with pytest.raises(ValueError, match=r"predict: input 'Input-Token' is an empty batch"):
        model.predict([x[:0], s[:0]], verbose=0)


def test_float_token_ids_are_refused_not_truncated():
    model = build()
    x, s = feed()
    with pytest.raises(TypeError, match=r"'Input-Token' must hold integer ids, got float64 value 1.7"):
        model.predict([np.where(x == x[0, 0], 1.7, x), s], verbose=0)
    integral = model.predict([x.astype("float32"), s], verbose=0)  # integral floats are ids
    np.testing.assert_array_equal(integral, model.predict([x, s], verbose=0))


def test_predict_checks_ids_before_an_xla_step_too():
    model = build()
    model.compile(jit_compile=True)
    with pytest.raises(ValueError, match=r"'Input-Segment' holds segment ids outside \[0, 2\): -1"):
        model.predict(feed(segment=-1), verbose=0)
    with pytest.raises(ValueError, match=r"sequence length 25, longer than the 24 learned"):
        model.predict(feed(25), verbose=0)
    with pytest.raises(ValueError, match=r"'Input-Token' holds token ids outside \[0, 30\): 30"):
        model.fit(feed(token=30), np.zeros((2, 6, 16)), verbose=0)


def test_checked_model_saves_and_reloads(tmp_path):
    model = build()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(feed(), verbose=0), model.predict(feed(), verbose=0))
    with pytest.raises(ValueError, match="empty batch"):
        loaded.predict([feed()[0][:0], feed()[1][:0]], verbose=0)
