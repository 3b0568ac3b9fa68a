"""bert4keras_ng layers reproduce bert4keras 0.11.5 outputs (fixtures/make_layers_golden.py).

Weights are set positionally, so these tests also pin the weight order the checkpoint tables use
(q, k, v, o kernels/biases; beta before gamma; GAU i_dense, q/k scale-offsets, o_dense).
"""

import os

import numpy as np
import pytest

from bert4keras_ng import layers as L
from tests import helpers as H

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "layers_golden.npz"))
ATOL, RTOL = 1e-5, 1e-5

CASES = {
    "mha_softmax": (lambda: L.MultiHeadAttention(2, 4), {}),
    "mha_sizes": (lambda: L.MultiHeadAttention(2, 4, key_size=3, out_dim=6, use_bias=False), {}),
    "mha_rotary_softmax_plus": (lambda: L.MultiHeadAttention(2, 4, normalization="softmax_plus"),
                                {"p_bias": "rotary"}),
    "mha_nezha": (lambda: L.MultiHeadAttention(2, 4), {"p_bias": "typical_relative"}),
    "mha_t5": (lambda: L.MultiHeadAttention(2, 4, use_bias=False, attention_scale=False),
               {"p_bias": "t5_relative"}),
    "mha_unilm_squared_relu": (lambda: L.MultiHeadAttention(2, 4, normalization="squared_relu"),
                               {"a_bias": True}),
    "mha_float_bias": (lambda: L.MultiHeadAttention(2, 4), {"a_bias": True}),
    "gau_alpha": (lambda: L.GatedAttentionUnit(6, 4, use_bias=False,
                                               normalization="softmax_plus"), {"p_bias": "rotary"}),
    "gau_squared_relu": (lambda: L.GatedAttentionUnit(6, 4), {}),
    "ln_bert": (lambda: L.LayerNormalization(epsilon=1e-12), {}),
    "ln_default_eps": (lambda: L.LayerNormalization(), {}),
    "rms_free": (lambda: L.LayerNormalization(zero_mean=False, scale=False, offset=False), {}),
    "ln_conditional": (lambda: L.LayerNormalization(conditional=True, hidden_units=3,
                                                    hidden_activation="swish"), {}),
    "ffn_glu": (lambda: L.FeedForward(5, activation=["gelu", "linear"], use_bias=False), {}),
    "ffn_relu": (lambda: L.FeedForward(5, activation="relu"), {}),
    "pos_hierarchical": (lambda: L.PositionEmbedding(6, 8, hierarchical=True,
                                                     custom_position_ids=True), {}),
}


def _case_arrays(name, prefix):
    keys = sorted((k for k in GOLDEN.files if k.startswith(f"{name}/{prefix}")),
                  key=lambda k: int(k.rsplit(prefix, 1)[1]))
    return [GOLDEN[k] for k in keys]


@pytest.mark.parametrize("name", list(CASES))
def test_layer_matches_bert4keras(name):
    make, call_kwargs = CASES[name]
    layer = make()
    inputs = _case_arrays(name, "in")
    masks = None
    if f"{name}/mask" in GOLDEN.files:
        mask = GOLDEN[f"{name}/mask"]
        main = 3 if isinstance(layer, L.MultiHeadAttention) else 1
        masks = [mask] * main + [None] * (len(inputs) - main)
    arg = inputs if len(inputs) > 1 or isinstance(layer, L.MultiHeadAttention) else inputs[0]
    if masks is not None and not isinstance(arg, list):
        masks = masks[0]
    H.call_layer(layer, arg, masks, call_kwargs)
    weights = _case_arrays(name, "w")
    assert [w.shape for w in layer.get_weights()] == [w.shape for w in weights]
    layer.set_weights(weights)
    out = H.to_numpy(H.call_layer(layer, arg, masks, call_kwargs))
    expected = GOLDEN[f"{name}/out"]
    if masks is not None:  # bert4keras leaves padded query rows unspecified; compare real ones
        keep = GOLDEN[f"{name}/mask"]
        out, expected = out[keep], expected[keep]
    np.testing.assert_allclose(out, expected, atol=ATOL, rtol=RTOL)


def test_position_tables_match_bert4keras():
    x = np.zeros((2, 6, 8), "float32")
    rotary = L.SinusoidalPositionEmbedding(4, merge_mode="zero")(x)
    np.testing.assert_allclose(H.to_numpy(rotary), GOLDEN["rotary/out"], atol=1e-6)
    nezha = L.RelativePositionEmbedding(129, 4, embeddings_initializer="sinusoidal")([x, x])
    np.testing.assert_allclose(H.to_numpy(nezha), GOLDEN["nezha_table/out"], atol=1e-6)
    for name, bidirectional in (("t5_bi", True), ("t5_uni", False)):
        layer = L.RelativePositionEmbeddingT5(32, 2, bidirectional=bidirectional)
        layer([x, x])
        layer.set_weights([GOLDEN[f"{name}/table"]])
        np.testing.assert_array_equal(H.to_numpy(layer([x, x])), GOLDEN[f"{name}/out"])
