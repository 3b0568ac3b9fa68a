"""Built models under mixed precision, XLA, .keras save/load and extra padding.

Each check starts from a bert4keras golden case (real random checkpoint weights) so the numbers
have realistic magnitudes; the float32 reference is bert4keras' own output.
"""

import keras
import numpy as np
import pytest

from tests import helpers as H
from tests.model_cases import as_list, build_case, real_token_error

# one case per family, tied MLM / LM heads and GAU-alpha included
FAMILIES = [
    "bert_pool_nsp_mlm",
    "bert_lm",
    "bert_conditional_ln",
    "albert_pool_nsp_mlm",
    "nezha_mlm",
    "electra_discriminator",
    "roformer_unilm",
    "roformer_v2_mlm",
    "gau_alpha_mlm",
]


def fast(names, everything):
    return [pytest.param(n, marks=() if n in names else pytest.mark.slow) for n in everything]


def outputs_of(model, feed):
    return [keras.ops.convert_to_numpy(o) for o in as_list(model(feed if len(feed) > 1 else feed[0], training=False))]


def scaled_error(actual, expected, token_ids):
    return real_token_error(actual, expected, token_ids) / max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", fast({"bert_pool_nsp_mlm", "roformer_v2_mlm", "gau_alpha_mlm"}, FAMILIES))
def test_mixed_precision_is_finite_and_close_to_float32(name, policy):
    with H.dtype_policy(policy):
        builder, feed, expected = build_case(name)
        outputs = outputs_of(builder.model, feed)
    compute = policy.split("_")[1]
    blocks = [l for l in builder.model.layers if l.name.endswith(("FeedForward", "GatedAttentionUnit"))]
    assert blocks and all(l.compute_dtype == compute for l in blocks)
    assert all(w.dtype == "float32" for w in builder.model.weights), "variables must stay float32"
    for out, ref in zip(outputs, expected):
        assert np.isfinite(out).all(), "%s under %s: non-finite outputs" % (name, policy)
        err = scaled_error(out, ref, feed[0])
        tolerance = H.MIXED_TOLERANCES[policy]
        if policy == "mixed_bfloat16" and out.shape[-1] == 60:
            # vocabulary probabilities: bf16 keeps 8 significant bits, so logits of magnitude
            # ~20 carry errors ~0.1 before the float32 softmax
            tolerance = 0.1
        assert err <= tolerance, "%s under %s: scaled error %.3g" % (name, policy, err)


@pytest.mark.parametrize("name", fast({"roformer_unilm"}, ["bert_pool_nsp_mlm", "roformer_unilm", "nezha_mlm", "gau_alpha_mlm", "bert_lm", "bert_realformer", "albert_pool_nsp_mlm"]))
def test_jit_compile_equals_eager(name):
    builder, feed, _ = build_case(name)
    eager = outputs_of(builder.model, feed)
    compiled = H.xla_function(lambda xs: builder.model(xs, training=False))
    jitted = [keras.ops.convert_to_numpy(o)
              for o in as_list(compiled([keras.ops.convert_to_tensor(x) for x in feed]))]
    for a, b in zip(jitted, eager):
        err = real_token_error(a, b, feed[0])
        assert err <= 1e-5, "%s: XLA differs from eager by %.3g" % (name, err)


@pytest.mark.parametrize(
    "name", fast({"bert_conditional_ln", "gau_alpha_unilm"}, ["bert_conditional_ln", "gau_alpha_unilm", "nezha_unilm", "albert_pool_nsp_mlm", "roformer_v2_mlm", "bert_custom_hierarchical_positions", "bert_lm", "electra_discriminator", "bert_realformer"])
)
def test_keras_save_load_round_trip(tmp_path, name):
    builder, feed, _ = build_case(name)
    before = outputs_of(builder.model, feed)
    path = str(tmp_path / (name + ".keras"))
    builder.model.save(path)
    loaded = keras.saving.load_model(path)
    assert [l.name for l in loaded.layers] == [l.name for l in builder.model.layers]
    for a, b in zip(outputs_of(loaded, feed), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "name", fast({"bert_unilm", "nezha_mlm", "gau_alpha_mlm"}, ["bert_unilm", "nezha_mlm", "gau_alpha_mlm", "roformer_pool_mlm", "albert_pool_nsp_mlm", "electra_discriminator", "roformer_v2_mlm", "bert_realformer"])
)
def test_padding_invariance(name):
    """Extra padding columns (and junk segment ids under padding) leave real tokens unchanged."""
    builder, feed, _ = build_case(name)
    before = outputs_of(builder.model, feed)
    extra = 6
    padded = []
    for i, x in enumerate(feed):
        if x.ndim == 2:
            fill = 0 if i == 0 else 1  # segment/position ids under padding need not be zero
            x = np.concatenate([x, np.full((x.shape[0], extra), fill, x.dtype)], axis=1)
            if i > 0:
                x = np.where(np.concatenate([feed[0], np.zeros((x.shape[0], extra), "int32")], 1) == 0, 1, x)
        padded.append(x)
    after = outputs_of(builder.model, padded)
    for a, b in zip(after, before):
        if a.ndim >= 3:
            a = a[:, : b.shape[1]]
        err = real_token_error(a, b, feed[0])
        assert err <= 1e-5, "%s: padding changed real-token outputs by %.3g" % (name, err)
