"""SynthesizerAttention against a NumPy reference; padding/causal invariance; shared checks."""

import functools

import numpy as np
import pytest

from bert4keras_ng.layers import SynthesizerAttention
from tests import helpers as H

RNG = np.random.default_rng(9)
B, N, W, ELL = 2, 5, 6, 8
X = RNG.normal(size=(B, N, W)).astype("float32")
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


def _softmax(a, keep):
    a = np.where(keep, a, -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _dense(x, layer):
    k, b = (w.numpy().astype("float64") for w in layer.weights)
    return x @ k + b


def np_synthesizer(layer, x, mask, causal=False):
    h, s = layer.heads, layer.head_size
    n = x.shape[1]
    split = lambda t, w: t.reshape(t.shape[0], n, h, w).transpose(0, 2, 1, 3)  # noqa: E731
    logits = []
    for kind in layer.kinds:
        if kind == "dense":
            hid = np.maximum(_dense(x, layer.dense_hidden), 0)
            parts = [split(_dense(hid, d), d.units // h) for d in layer.dense_heads]
            if len(parts) == 2:
                a, b = layer.dense_factors
                full = np.tile(parts[0], (1, 1, 1, b)) * np.repeat(parts[1], a, axis=-1)
            else:
                full = parts[0]
            logits.append(full[..., :n])
        elif kind == "random":
            r = [w.numpy().astype("float64") for w in layer.random_weights]
            full = r[0] if len(r) == 1 else np.einsum("hik,hjk->hij", r[0], r[1])
            logits.append(np.broadcast_to(full[None, :, :n, :n], (x.shape[0], h, n, n)))
        else:
            q, k = split(_dense(x, layer.q_dense), s), split(_dense(x, layer.k_dense), s)
            logits.append(np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(s))
    if len(logits) > 1:
        alpha = layer.mixture.numpy().astype("float64")
        total = sum(alpha[None, :, m, None, None] * a for m, a in enumerate(logits))
    else:
        total = logits[0]
    keep = mask[:, None, None, :]
    if causal:
        keep = keep & np.tril(np.ones((n, n), bool))
    p = _softmax(total, keep)
    o = np.einsum("bhij,bhjd->bhid", p, split(_dense(x, layer.v_dense), s))
    return _dense(o.transpose(0, 2, 1, 3).reshape(x.shape[0], n, h * s), layer.o_dense)


CASES = {
    "dense": dict(kinds="dense"),
    "dense_factorised": dict(kinds="dense", dense_factors=(2, 4)),
    "random": dict(kinds="random"),
    "random_factorised_fixed": dict(kinds="random", random_rank=3, random_trainable=False),
    "mixture_causal": dict(kinds=("dense", "random", "dot"), causal=True),
}


def _layer(name):
    layer = SynthesizerAttention(2, 3, ELL, **CASES[name])
    layer(X, mask=MASK)
    for v in layer.weights:
        v.assign(RNG.normal(size=v.shape).astype("float32") * 0.7)
    return layer


@pytest.mark.parametrize("name", list(CASES))
def test_synthesizer_matches_numpy_and_is_padding_invariant(name):
    layer = _layer(name)
    out = H.to_numpy(layer(X, mask=MASK))
    ref = np_synthesizer(layer, X.astype("float64"), MASK, CASES[name].get("causal", False))
    np.testing.assert_allclose(out[MASK], ref[MASK], atol=2e-5, rtol=1e-5)
    H.check_padding_invariance(lambda x: layer(x, mask=MASK), X, MASK)
    if CASES[name].get("causal"):  # changing later tokens leaves earlier outputs unchanged
        later = X.copy()
        later[:, 3:] += 5.0
        np.testing.assert_allclose(H.to_numpy(layer(later, mask=MASK))[:, :3], out[:, :3],
                                   atol=1e-5)


@pytest.mark.parametrize("name", ["dense_factorised", "mixture_causal"])
def test_synthesizer_shared_checks(name):
    H.check_layer(functools.partial(SynthesizerAttention, 2, 3, ELL, **CASES[name]), X, MASK,
                  expected_output_shape=(B, N, W))


def test_synthesizer_errors():
    with pytest.raises(ValueError, match="kinds"):
        SynthesizerAttention(2, 3, ELL, kinds=("dense", "conv"))
    with pytest.raises(ValueError, match="multiply"):
        SynthesizerAttention(2, 3, ELL, dense_factors=(3, 3))
    with pytest.raises(ValueError, match="max_length"):
        SynthesizerAttention(2, 3, 4)(X)
