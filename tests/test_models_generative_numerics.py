"""The generative families under mixed precision, XLA, .keras save/load, extra padding, causal
invariance (a future token changes no earlier output) and bert4keras' attention_caches option.
Each check starts from a bert4keras golden case (tests/generative_cases.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.models.auxiliary import CachedKeysMask, Concatenate1D
from tests import helpers as H
from tests.generative_cases import CASES, build_case, paths, real_error, valid_positions


def fast(names, everything):
    return [pytest.param(n, marks=() if n in names else pytest.mark.slow) for n in everything]


def feed_list(name, feed):
    return [feed[k] for k in CASES[name]["inputs"]]


def outputs_of(model, inputs):
    out = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


LM_CASES = ["gpt_lm", "gpt2_lm", "gpt2_ml_lm", "t5.1.0_full", "t5.1.1_full", "mt5.1.1_full",
            "t5.1.1_encoder", "mt5.1.1_decoder", "gpt2_conditional_ln"]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", fast({"gpt2_lm", "mt5.1.1_full"}, LM_CASES))
def test_mixed_precision_is_finite_and_close_to_float32(name, policy):
    with H.dtype_policy(policy):
        builder, feed, expected = build_case(name)
        outputs = outputs_of(builder.model, feed_list(name, feed))
    compute = policy.split("_")[1]
    ffn = [l for l in builder.model.layers if l.name.endswith("FeedForward")]
    assert ffn and all(l.compute_dtype == compute for l in ffn)
    assert all(w.dtype == "float32" for w in builder.model.weights), "variables must stay float32"
    tolerance = {"mixed_float16": 1e-2, "mixed_bfloat16": 6e-2}[policy]
    for out, ref in zip(outputs, expected):
        assert np.isfinite(out).all(), "%s under %s: non-finite outputs" % (name, policy)
        err = real_error(out, ref, valid_positions(feed)) / max(1.0, float(np.abs(ref).max()))
        assert err <= tolerance, "%s under %s: scaled error %.3g" % (name, policy, err)


@pytest.mark.parametrize("name", fast({"gpt2_ml_lm", "mt5.1.1_decoder"}, LM_CASES + ["t5.1.1_decoder_cross_caches"]))
def test_jit_compile_equals_eager(name):
    builder, feed, _ = build_case(name)
    inputs = feed_list(name, feed)
    eager = outputs_of(builder.model, inputs)
    compiled = tf.function(lambda xs: builder.model(xs, training=False), jit_compile=True)
    out = compiled([tf.constant(x) for x in inputs] if len(inputs) > 1 else tf.constant(inputs[0]))
    for a, b in zip([keras.ops.convert_to_numpy(o) for o in H.flat(out)], eager):
        assert real_error(a, b, valid_positions(feed)) <= 1e-5, name


@pytest.mark.parametrize("name", fast({"gpt_lm", "t5.1.1_full", "t5.1.1_decoder_cross_caches"}, LM_CASES + ["t5.1.1_decoder_options", "t5.1.1_decoder_cross_caches", "gpt_unilm"]))
def test_keras_save_load_round_trip(tmp_path, name):
    builder, feed, _ = build_case(name)
    inputs = feed_list(name, feed)
    before = outputs_of(builder.model, inputs)
    path = str(tmp_path / (name + ".keras"))
    builder.model.save(path)
    loaded = keras.saving.load_model(path)
    assert [l.name for l in loaded.layers] == [l.name for l in builder.model.layers]
    for a, b in zip(outputs_of(loaded, inputs), before):
        np.testing.assert_array_equal(a, b)


def _pad(x, extra, fill=0):
    return np.concatenate([x, np.full((x.shape[0], extra) + x.shape[2:], fill, x.dtype)], axis=1)


@pytest.mark.parametrize("name", fast({"gpt_lm", "t5.1.1_full"}, LM_CASES))
def test_padding_invariance(name):
    """Extra padding (token id 0; junk context vectors under the decoder's context) leaves
    outputs at real positions unchanged."""
    builder, feed, _ = build_case(name)
    inputs = feed_list(name, feed)
    before = outputs_of(builder.model, inputs)
    padded = []
    for key, x in zip(CASES[name]["inputs"], inputs):
        if key == "context":  # the decoder alone has no context mask: keep its length
            padded.append(x)
        elif key == "segment_ids":
            padded.append(_pad(x, 6, fill=1))
        elif key == "condition":
            padded.append(x)
        else:
            padded.append(_pad(x, 6))
    after = outputs_of(builder.model, padded)
    for a, b in zip(after, before):
        assert real_error(a[:, : b.shape[1]], b, valid_positions(feed)) <= 1e-5, name


@pytest.mark.parametrize("name", fast({"gpt2_lm", "t5.1.1_full"}, ["gpt_lm", "gpt2_lm", "gpt2_ml_lm", "t5.1.0_full", "t5.1.1_full", "mt5.1.1_decoder"]))
def test_causal_invariance(name):
    """Changing the token at position t changes no output before t (and does change t's)."""
    builder, feed, _ = build_case(name)
    key = "decoder_token_ids" if "decoder_token_ids" in feed else "token_ids"
    inputs = feed_list(name, feed)
    before = outputs_of(builder.model, inputs)[0]
    t = 6
    changed = dict(feed)
    ids = feed[key].copy()
    ids[0, t:] = (ids[0, t:] % 9) + 1  # new non-zero tokens from t on, row 0 (unpadded)
    changed[key] = ids
    after = outputs_of(builder.model, feed_list(name, changed))[0]
    np.testing.assert_allclose(after[0, :t], before[0, :t], atol=1e-6)
    assert np.abs(after[0, t:] - before[0, t:]).max() > 1e-4


# ---- attention_caches (bert4keras build option) ----------------------------------------------

def test_cross_attention_caches_equal_a_longer_context():
    """With cross_position_bias=False a decoder whose cross-attentions cache a context c1 and
    read c2 gives what the plain decoder gives on the context [c1, c2]."""
    config, checkpoint = paths("t5.1.1")
    kwargs = dict(cross_position_bias=False, model="t5.1.1_decoder", return_keras_model=False)
    plain = build_transformer_model(config, checkpoint, **kwargs)
    k_in = keras.Input(shape=(None, 32), name="Cache-Key")
    v_in = keras.Input(shape=(None, 32), name="Cache-Value")
    caches = {"Decoder-Transformer-%d-MultiHeadCrossAttention" % i: [k_in, v_in] for i in range(2)}
    cached = build_transformer_model(config, checkpoint, attention_caches=caches,
                                     additional_input_layers=[k_in, v_in], **kwargs)
    assert cached.model.get_layer("Decoder-Transformer-0-MultiHeadCrossAttention-Cached-Key")
    rng = np.random.default_rng(3)
    c1 = rng.standard_normal((2, 5, 32)).astype("float32")
    c2 = rng.standard_normal((2, 7, 32)).astype("float32")
    ids = np.array([[0, 4, 9, 3], [0, 8, 2, 0]], "int32")
    ours = cached.model([c2, ids, c1, c1])
    reference = plain.model([np.concatenate([c1, c2], 1), ids])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(reference), atol=1e-6)


def test_causal_self_attention_caches_are_visible_to_every_query():
    """A GPT2 block whose self-attention caches m positions sees them from every query: the
    extended mask has m leading visible columns, and the model runs on (b, n) tokens."""
    config, checkpoint = paths("gpt2")
    k_in = keras.Input(shape=(None, 32), name="Cache-Key")
    v_in = keras.Input(shape=(None, 32), name="Cache-Value")
    builder = build_transformer_model(
        config, checkpoint, model="gpt2", attention_caches={"Transformer-0-MultiHeadSelfAttention": [k_in, v_in]},
        additional_input_layers=[k_in, v_in], return_keras_model=False)
    ids = np.array([[3, 4, 5]], "int32")
    cache = np.random.default_rng(0).standard_normal((1, 2, 32)).astype("float32")
    out = keras.ops.convert_to_numpy(builder.model([ids, cache, cache]))
    assert out.shape == (1, 3, 60) and np.isfinite(out).all()
    plain = build_transformer_model(config, checkpoint, model="gpt2")
    # a different cache changes every position (each query sees the cache)
    other = keras.ops.convert_to_numpy(builder.model([ids, cache + 1.0, cache]))
    assert (np.abs(other - out).max(axis=-1) > 1e-5).all()
    assert not np.allclose(out, keras.ops.convert_to_numpy(plain(ids)), atol=1e-5)


def test_attention_caches_errors():
    config, checkpoint = paths("t5.1.1")
    k_in = keras.Input(shape=(None, 32))
    with pytest.raises(ValueError, match="position bias"):
        build_transformer_model(config, model="t5.1.1_encoder", additional_input_layers=[k_in],
                                attention_caches={"Encoder-Transformer-0-MultiHeadSelfAttention": [k_in, k_in]})
    with pytest.raises(ValueError, match=r"pair \[k_cache, v_cache\]"):
        build_transformer_model(config, model="t5.1.1_encoder", attention_caches={"x": k_in})


def test_concatenate1d_layer_battery():
    """Sequence-axis concatenation; an input without a mask counts as all valid."""
    rng = np.random.default_rng(0)
    cache = rng.standard_normal((2, 3, 4)).astype("float32")
    x = rng.standard_normal((2, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = H.check_layer(Concatenate1D, [cache, x], masks=[None, mask], expected_output_shape=(2, 8, 4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.concatenate([cache, x], 1))
    layer = Concatenate1D()
    joined = keras.ops.convert_to_numpy(layer.compute_mask([cache, x], [None, mask]))
    np.testing.assert_array_equal(joined, np.concatenate([np.ones((2, 3), bool), mask], 1))
    H.check_padding_invariance(lambda xs: layer(xs, mask=[None, mask])[:, 3:], [cache, x], mask)


def test_cached_keys_mask_layer_battery():
    """[mask (b|1, n_q, n_k), cache (b, m, d)] -> m visible columns in front of the mask."""
    mask = np.tril(np.ones((4, 4), bool))[None]
    cache = np.zeros((2, 3, 5), "float32")
    H.check_config_round_trip(CachedKeysMask, [mask, cache])
    H.check_saving(CachedKeysMask, [mask, cache])
    H.check_jit(CachedKeysMask, [mask, cache])
    out = keras.ops.convert_to_numpy(CachedKeysMask()([mask, cache]))
    np.testing.assert_array_equal(out, np.concatenate([np.ones((1, 4, 3), bool), mask], -1))
