"""Sentence embeddings: whitening algebra, the Whitening/SentencePooling layers, the encoder."""

import functools

import keras
import numpy as np
import pytest

from bert4keras_ng import sentence as S
from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.tokenizers import Tokenizer
from tests.helpers import check_layer


def _vectors(n=200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ mix + 3.0).astype("float32")


def _cos(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def test_classic_whitening_gives_zero_mean_identity_covariance():
    x = _vectors()
    kernel, bias = S.fit_whitening(x, beta=1.0, gamma=1.0)
    y = S.whiten(x, kernel, bias).astype("float64")
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.T @ y / len(y), np.eye(6), atol=1e-3)


def test_rotation_only_whitening_preserves_cosines_exactly_and_k_keeps_leading_columns():
    x = _vectors(seed=1)
    kernel, bias = S.fit_whitening(x, beta=0.0, gamma=0.0)
    assert not bias.any()
    y = S.whiten(x, kernel, bias)
    np.testing.assert_allclose(_cos(y), _cos(x), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    k3, b3 = S.fit_whitening(x, beta=0.5, gamma=0.5, k=3)
    full, _ = S.fit_whitening(x, beta=0.5, gamma=0.5)
    assert k3.shape == (6, 3)
    np.testing.assert_allclose(np.abs(k3), np.abs(full[:, :3]), rtol=1e-4, atol=1e-6)
    # the kept directions carry the largest variance, in descending order
    var = S.whiten(x, *S.fit_whitening(x, beta=1.0, gamma=0.0)).var(0)
    assert np.all(np.diff(var) <= 1e-3)


def test_fit_whitening_errors():
    with pytest.raises(ValueError, match="k"):
        S.fit_whitening(_vectors(), k=7)
    with pytest.raises(ValueError, match=r"\(N, dim\)"):
        S.fit_whitening(np.zeros(5))


def test_whitening_layer_matches_numpy_and_passes_the_layer_checks():
    x = _vectors(8, seed=2)
    kernel, bias = S.fit_whitening(_vectors(seed=3), k=4)
    layer = S.Whitening.from_fit(kernel, bias)
    np.testing.assert_allclose(np.asarray(layer(x)), S.whiten(x, kernel, bias), rtol=1e-5,
                               atol=1e-5)
    assert not layer.trainable_weights

    def factory(**extra):
        made = S.Whitening(4, **extra)
        made.build((None, 6))
        made.kernel.assign(kernel)
        made.bias.assign(bias)
        return made

    check_layer(factory, x / 3.0, run_global_dtype=False)


def test_spearman_matches_definition_with_ties():
    x = np.array([1.0, 2.0, 2.0, 5.0, 3.0])
    y = np.array([2.0, 1.0, 4.0, 4.0, 9.0])
    rx = np.array([0.0, 1.5, 1.5, 4.0, 3.0])
    ry = np.array([1.0, 0.0, 2.5, 2.5, 4.0])
    np.testing.assert_allclose(S.spearman_correlation(x, y), np.corrcoef(rx, ry)[0, 1])
    assert S.spearman_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        S.spearman_correlation([1, 2], [1, 2, 3])


def test_sentence_pooling_modes_against_numpy_and_layer_checks():
    rng = np.random.default_rng(4)
    ids = np.array([[5, 3, 2, 0, 0], [4, 4, 1, 6, 2]])
    h1, h2 = rng.normal(size=(2, 2, 5, 3)).astype("float32")
    m = (ids != 0)[..., None]
    for pooling, expected in [
        ("cls", h1[:, 0]),
        ("mean", (h1 * m).sum(1) / m.sum(1)),
        ("first-last-avg", ((h1 + h2) / 2 * m).sum(1) / m.sum(1)),
    ]:
        inputs = [ids, h1] if pooling != "first-last-avg" else [ids, h1, h2]
        out = check_layer(functools.partial(S.SentencePooling, pooling), inputs,
                          run_global_dtype=False)
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        S.SentencePooling("max")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + list("abcdefghij")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        None, None, model="bert", vocab_size=len(vocab), hidden_size=8, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=16, hidden_act="gelu", dropout_rate=0.1)
    return model, Tokenizer(str(folder / "vocab.txt"))


@pytest.mark.parametrize("pooling", S.POOLINGS)
def test_encoder_batches_are_padding_invariant(tiny_encoder, pooling):
    model, tokenizer = tiny_encoder
    texts = ["abc", "abcdefgh", "ji", "a", "hhhhhh"]
    encoder = S.SentenceEncoder(model, tokenizer, pooling=pooling, batch_size=2)
    batched = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert batched.shape == (5, 8)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    unit = encoder.encode(texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    if pooling == "first-last-avg":
        first = keras.Model(model.inputs, model.get_layer("Transformer-0-FeedForward-Norm").output)
        x = encoder.inputs(texts[:2])
        m = (x[0] != 0)[..., None]
        h = (np.asarray(first.predict_on_batch(x)) + np.asarray(model.predict_on_batch(x))) / 2
        np.testing.assert_allclose(batched[:2], (h * m).sum(1) / m.sum(1), atol=1e-5)
