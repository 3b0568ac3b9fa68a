"""attention_type: Synthesizer attention in chosen blocks of a built model — checkpoint
accounting, the dot-product term as the checkpoint's attention, padding / causal invariance,
mixed precision, XLA, .keras save/load, config round trip and the errors users see."""

import os

import keras
import numpy as np
import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.layers import MultiHeadAttention, SynthesizerAttention
from bert4keras_ng.models import CheckpointMismatchError, build_transformer_model
from bert4keras_ng.models.attention_types import attention_types, closest_factors
from tests import helpers as H

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "models")
TINY = dict(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=24, hidden_act="gelu", max_position=16)
IDS = np.array([[5, 7, 9, 11, 3, 0, 0], [4, 8, 2, 6, 10, 12, 13]], "int32")


def _family(family, **kwargs):
    directory = os.path.join(FIXTURES, family)
    return build_transformer_model(os.path.join(directory, "bert_config.json"),
                                   os.path.join(directory, "bert_model.ckpt"), model=family,
                                   return_keras_model=False, **kwargs)


def _run(model, ids=IDS):
    feed = [ids, np.zeros_like(ids)] if len(model.inputs) == 2 else [ids]
    return keras.ops.convert_to_numpy(model(feed, training=False))


def test_attention_type_forms_and_defaults():
    assert attention_types(None, 2) == (None, None)
    assert attention_types("dot", 2) == (None, None)
    assert attention_types("random+dot", 2) == (("random", "dot"),) * 2
    assert attention_types({1: "factorized_dense"}, 3) == (None, ("factorized_dense",), None)
    assert attention_types(["dense", "dot"], 2) == (("dense",), None)
    assert closest_factors(64) == (8, 8) and closest_factors(12) == (3, 4)
    builder = build_transformer_model(attention_type=["dot", "factorized_dense",
                                                      "factorized_random+dot"],
                                      synthesizer_options={"random_rank": 3},
                                      return_keras_model=False, **TINY)
    kinds = [type(builder.layers["Transformer-%d-MultiHeadSelfAttention" % i]).__name__
             for i in range(3)]
    assert kinds == ["MultiHeadAttention", "SynthesizerAttention", "SynthesizerAttention"]
    layer1 = builder.layers["Transformer-1-MultiHeadSelfAttention"]
    layer2 = builder.layers["Transformer-2-MultiHeadSelfAttention"]
    assert layer1.dense_factors == (4, 4) and layer1.max_length == 16
    assert layer2.kinds == ("random", "dot") and layer2.random_rank == 3


def test_checkpoint_loads_shared_projections_and_accounts_for_every_variable(tmp_path):
    """Block 1 keeps the checkpoint's value / output projections; its query / key are left out
    by choice (no 'unused variables' error), the synthetic weights start from initializers;
    block 0 is the checkpoint's attention unchanged."""
    plain = _family("bert")
    synth = _family("bert", attention_type={1: "dense"})
    stored = checkpoints.load_variables(os.path.join(FIXTURES, "bert", "bert_model.ckpt"))
    layer = synth.layers["Transformer-1-MultiHeadSelfAttention"]
    assert isinstance(layer, SynthesizerAttention)
    v = "bert/encoder/layer_1/attention/self/value/kernel"
    o = "bert/encoder/layer_1/attention/output/dense/kernel"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.v_dense.kernel), stored[v])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.o_dense.kernel), stored[o])
    names = {name for _, _, name, _, _ in synth.checkpoint_entries()}
    assert "bert/encoder/layer_1/attention/self/query/kernel" not in names
    assert "bert/encoder/layer_0/attention/self/query/kernel" in names
    # the weights left to their initializers are exactly the synthetic ones
    loaded = {id(w) for _, w, _, _, _ in synth.checkpoint_entries()}
    fresh = sorted(w.path for w in synth.model.trainable_weights if id(w) not in loaded)
    prefix = "Transformer-1-MultiHeadSelfAttention/"
    assert fresh == [prefix + "dense_hidden/bias", prefix + "dense_hidden/kernel",
                     prefix + "dense_logits_0/bias", prefix + "dense_logits_0/kernel"]
    # the accounting is not switched off: a variable nobody uses is still reported
    extra = dict(stored, **{"bert/encoder/layer_1/attention/self/extra": np.zeros(3, "float32")})
    with pytest.raises(CheckpointMismatchError, match="attention/self/extra"):
        build_transformer_model(os.path.join(FIXTURES, "bert", "bert_config.json"), extra,
                                attention_type={1: "dense"})
    # block 0 (dot-product) computes what the plain model computes
    sub = lambda b: keras.Model(b.model.inputs, b.layers["Transformer-0-FeedForward-Norm"].output)  # noqa: E731
    np.testing.assert_allclose(_run(sub(synth)), _run(sub(plain)), atol=1e-6)
    assert np.abs(_run(synth.model) - _run(plain.model))[IDS != 0].max() > 1e-3
    # what is saved loads back into the same configuration, bit for bit
    saved = str(tmp_path / "bert_model.ckpt")
    synth.save_weights_as_checkpoint(saved)
    again = build_transformer_model(os.path.join(FIXTURES, "bert", "bert_config.json"), saved,
                                    attention_type={1: "dense"}, return_keras_model=False)
    again.layers["Transformer-1-MultiHeadSelfAttention"].set_weights(layer.get_weights())
    np.testing.assert_array_equal(_run(again.model), _run(synth.model))


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_dot_term_alone_reproduces_the_checkpoint_attention(family):
    """'random+dot' with mixture weights (0, 1) is the family's attention (learned positions or
    RoPE on the dot term): the built model equals the plain checkpoint model."""
    plain = _family(family)
    mixed = _family(family, attention_type="random+dot")
    for i in range(2):
        layer = mixed.layers["Transformer-%d-MultiHeadSelfAttention" % i]
        alpha = np.zeros(tuple(layer.mixture.shape), "float32")
        alpha[:, 1] = 1.0
        layer.mixture.assign(alpha)
    out, ref = _run(mixed.model), _run(plain.model)
    np.testing.assert_allclose(out[IDS != 0], ref[IDS != 0], atol=1e-5)


KINDS = ["dense", "factorized_random+dot"]


@pytest.mark.parametrize("model", ["bert", "roformer"])
@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance_of_a_synthesizer_model(model, kind):
    builder = build_transformer_model(model=model, attention_type={0: kind, 2: kind},
                                      return_keras_model=False, **TINY)
    builder.model.set_weights([w * 20 if w.ndim == 2 else w for w in builder.model.get_weights()])
    before = _run(builder.model)
    padded = np.concatenate([IDS, np.zeros((2, 5), "int32")], axis=1)
    after = _run(builder.model, padded)[:, :IDS.shape[1]]
    assert np.abs(after - before)[IDS != 0].max() <= 1e-5


def test_lm_application_is_causal():
    builder = build_transformer_model(model="bert", application="lm", attention_type="dense+dot",
                                      return_keras_model=False, **TINY)
    assert builder.layers["Transformer-0-MultiHeadSelfAttention"].causal
    builder.model.set_weights([w * 20 if w.ndim == 2 else w for w in builder.model.get_weights()])
    ids = IDS[1:]
    later = ids.copy()
    later[:, 4:] = [20, 21, 22]
    a, b = _run(builder.model, ids), _run(builder.model, later)
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-4


def _synthesizer_model(policy="float32"):
    with H.dtype_policy(policy):
        keras.utils.set_random_seed(3)
        options = dict(TINY, num_hidden_layers=2)
        return build_transformer_model(model="roformer", with_mlm=True,
                                       attention_type=["dense+dot", "factorized_random"],
                                       return_keras_model=False, **options).model


def test_synthesizer_model_config_round_trip_and_saving(tmp_path):
    model = _synthesizer_model()
    expected = _run(model)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(_run(clone), expected)
    path = str(tmp_path / "synth.keras")
    model.save(path)
    np.testing.assert_array_equal(_run(keras.saving.load_model(path)), expected)


def test_synthesizer_model_under_xla():
    model = _synthesizer_model()
    expected = _run(model)
    compiled = H.xla_function(lambda xs: model(xs, training=False))
    jitted = keras.ops.convert_to_numpy(compiled([keras.ops.convert_to_tensor(IDS),
                                                  keras.ops.convert_to_tensor(IDS * 0)]))
    np.testing.assert_allclose(jitted, expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_synthesizer_model_under_mixed_precision(policy):
    reference = _synthesizer_model()
    model = _synthesizer_model(policy)
    model.set_weights(reference.get_weights())
    layer = model.get_layer("Transformer-0-MultiHeadSelfAttention")
    assert layer.compute_dtype == policy.split("_")[1]
    H.assert_close_scaled(_run(model), _run(reference), H.MIXED_TOLERANCES[policy], msg=policy)


def test_synthesizer_layer_with_rotary_dot_term_equals_rope_attention():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1] * 5], bool)
    from bert4keras_ng.backend import sinusoidal_embeddings

    table = keras.ops.convert_to_numpy(sinusoidal_embeddings(np.arange(5), 4))[None]
    mha = MultiHeadAttention(2, 4)
    ref = mha([x, x, x, table], mask=[mask, mask, mask, None], p_bias="rotary")
    synth = SynthesizerAttention(2, 4, 8, kinds=("dense", "dot"))
    synth([x, table], mask=[mask, None], p_bias="rotary")
    for name in ("q_dense", "k_dense", "v_dense", "o_dense"):
        getattr(synth, name).set_weights(getattr(mha, name).get_weights())
    synth.mixture.assign(np.array([[0.0, 1.0]] * 2, "float32"))
    out = synth([x, table], mask=[mask, None], p_bias="rotary")
    np.testing.assert_allclose(H.to_numpy(out)[mask], H.to_numpy(ref)[mask], atol=1e-5)


@pytest.mark.parametrize("options,match", [
    (dict(attention_type="conv"), "terms must be"),
    (dict(attention_type="dense+factorized_dense"), "both plain and factorised"),
    (dict(attention_type=["dense"]), "1 kinds for 3 blocks"),
    (dict(attention_type={5: "dense"}), "block indices"),
    (dict(attention_type="dense", application="unilm"), "unilm"),
    (dict(attention_type="dense", model="gau_alpha"), "gated attention"),
    (dict(attention_type="dense+dot", model="nezha"), "learned or rotary"),
    (dict(attention_type="dense", model="roformer", rerope_window=4), "rerope_window"),
    (dict(attention_type="dense", synthesizer_options={"rank": 2}), "unknown key"),
])
def test_errors_name_the_option(options, match):
    kwargs = dict(TINY)
    kwargs.update(options)
    with pytest.raises(ValueError, match=match):
        build_transformer_model(**kwargs)
