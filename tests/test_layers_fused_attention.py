"""MultiHeadAttention through keras.ops.dot_product_attention equals its own attention path."""

import keras
import numpy as np
import pytest

from bert4keras_ng.layers import MultiHeadAttention
from bert4keras_ng.layers.attention import fused_attention
from tests import helpers as H
from tests.test_backend import np_sinusoid

RNG = np.random.default_rng(7)
B, N, W = 3, 6, 16
X = RNG.normal(size=(B, N, W)).astype("float32")
MASK = np.array([[1, 1, 1, 1, 0, 0], [1] * 6, [0] * 6], bool)  # last sample: all padding
ROPE = np_sinusoid(np.arange(N), 4)[None].astype("float32")
SEGMENTS = np.cumsum(np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0] * 6]), 1)
UNILM = SEGMENTS[:, None, :] <= SEGMENTS[:, :, None]

CASES = {
    "key_mask": ({}, [X, X, X], {}),
    "rotary": ({}, [X, X, X, ROPE], {"p_bias": "rotary"}),
    "causal": ({}, [X, X, X], {"a_bias": "causal"}),
    "unilm_bool_bias": ({}, [X, X, X, UNILM], {"a_bias": True}),
    "no_scale_dropout_at_inference": ({"attention_scale": False, "attention_dropout": 0.1},
                                      [X, X, X], {}),
}


def outputs(layer, inputs, kwargs, fused, monkeypatch, training=None):
    backends = (keras.backend.backend(),) if fused else ()
    monkeypatch.setattr(MultiHeadAttention, "fused_backends", backends)
    return H.to_numpy(layer(inputs, mask=[MASK, MASK, MASK], training=training, **kwargs))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_path_equals_the_layer_path(name, monkeypatch):
    options, inputs, kwargs = CASES[name]
    layer = MultiHeadAttention(heads=4, head_size=4, **options)
    own = outputs(layer, inputs, kwargs, False, monkeypatch)
    monkeypatch.setattr(MultiHeadAttention, "fused_backends", (keras.backend.backend(),))
    assert layer._fusable(kwargs.get("p_bias"), inputs[3] if kwargs.get("a_bias") is True
                          else None, None)
    fused = outputs(layer, inputs, kwargs, True, monkeypatch)
    H.assert_all_close(fused, own, atol=2e-6, rtol=1e-5)


def test_fused_path_under_mixed_bfloat16_and_jit(monkeypatch):
    with H.dtype_policy("mixed_bfloat16"):
        layer = MultiHeadAttention(heads=4, head_size=4)
    own = outputs(layer, [X, X, X], {}, False, monkeypatch)
    fused = outputs(layer, [X, X, X], {}, True, monkeypatch)
    H.assert_close_scaled(fused, own, 5e-2)
    monkeypatch.setattr(MultiHeadAttention, "fused_backends", (keras.backend.backend(),))
    run = H.xla_function(lambda x, m: layer([x, x, x], mask=[m, m, m]))
    H.assert_close_scaled(H.to_numpy(run(keras.ops.convert_to_tensor(X),
                                         keras.ops.convert_to_tensor(MASK))), own, 5e-2)


def test_cases_outside_the_fused_kernel_keep_the_layer_path(monkeypatch):
    monkeypatch.setattr(MultiHeadAttention, "fused_backends", (keras.backend.backend(),))
    float_bias = keras.ops.convert_to_tensor(RNG.normal(size=(B, N, N)).astype("float32"))
    assert not MultiHeadAttention(2, attention_dropout=0.1)._fusable(None, None, True)
    assert not MultiHeadAttention(2, normalization="squared_relu")._fusable(None, None, None)
    assert not MultiHeadAttention(2, return_attention_scores=True)._fusable(None, None, None)
    assert not MultiHeadAttention(2)._fusable("t5_relative", None, None)
    assert not MultiHeadAttention(2)._fusable(None, float_bias, None)


def test_fused_attention_matches_numpy_softmax():
    q, k, v = (RNG.normal(size=(2, 5, 3, 4)).astype("float32") for _ in range(3))
    keep = np.ones((2, 1, 5, 5), bool)
    keep[0, :, :, 3:] = False
    keep[1, :, 2, :] = False  # one query row without keys
    o = H.to_numpy(fused_attention(q, k, v, keep, 0.5))
    logits = np.einsum("bjhd,bkhd->bhjk", q, k) * 0.5
    logits = np.where(keep, logits, -np.inf)
    with np.errstate(invalid="ignore"):
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p = np.nan_to_num(p / p.sum(-1, keepdims=True))
    expected = np.einsum("bhjk,bkhd->bjhd", p, v)
    np.testing.assert_allclose(o, expected, atol=1e-5)
    assert np.all(o[1, 2] == 0)
