"""bert4keras compatibility surface: K, search_layer, batch_gather, set_gelu, Loss, forfit,
uniout, WebServing, tokenizer._token_unk_id."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from helpers import check_layer
from bert4keras_ng import backend
from bert4keras_ng.backend import K, batch_gather, search_layer, set_gelu


# ----- K -------------------------------------------------------------------------------------
def test_k_configuration_and_values():
    assert K.floatx() == keras.config.floatx()
    assert K.epsilon() == keras.config.epsilon()
    v = keras.Variable(np.zeros((2, 3), "float32"))
    K.set_value(v, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(K.eval(v), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(K.get_value(v * 2), 2 * np.arange(6).reshape(2, 3))
    assert K.int_shape(v) == (2, 3) and K.ndim(v) == 2 and K.dtype(v) == "float32"
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(3,\)"):
        K.set_value(v, np.zeros(3))
    with pytest.raises(TypeError, match="keras.Variable"):
        K.set_value(np.zeros(3), np.ones(3))


def test_k_keras2_defaults_differ_from_ops():
    a, b = np.ones((2, 3), "float32"), np.zeros((2, 1), "float32")
    assert K.concatenate([a, b]).shape == (2, 4)  # last axis, not axis 0
    assert K.expand_dims(a).shape == (2, 3, 1)
    assert K.sum(a, 1, keepdims=True).shape == (2, 1)  # falls through to keras.ops
    assert K.permute_dimensions(np.zeros((2, 3, 4)), (0, 2, 1)).shape == (2, 4, 3)
    np.testing.assert_allclose(K.l2_normalize(np.array([[3.0, 4.0]]), axis=-1), [[0.6, 0.8]],
                               rtol=1e-6)


def test_k_batch_dot_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
    np.testing.assert_allclose(K.batch_dot(x, y, axes=(2, 2)),
                               np.einsum("bik,bjk->bij", x, y), rtol=1e-5)
    m, n = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    np.testing.assert_allclose(K.batch_dot(m, n, axes=1), (m * n).sum(1, keepdims=True),
                               rtol=1e-5)
    z = rng.normal(size=(2, 4, 6))
    np.testing.assert_allclose(K.batch_dot(x, z), np.einsum("bik,bkj->bij", x, z), rtol=1e-5)


def test_k_losses_accept_float_and_trailing_targets():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], "float32")
    expected = -np.log([0.8, 0.6])
    for target in (np.array([1, 0]), np.array([1.0, 0.0], "float32"), np.array([[1], [0]])):
        np.testing.assert_allclose(K.sparse_categorical_crossentropy(target, probs), expected,
                                   rtol=1e-5)
    np.testing.assert_allclose(K.categorical_crossentropy(np.eye(2)[[1, 0]], probs), expected,
                               rtol=1e-5)
    bce = K.binary_crossentropy(np.array([[1.0, 0.0]]), np.array([[0.9, 0.2]]))
    np.testing.assert_allclose(bce, [[-np.log(0.9), -np.log(0.8)]], rtol=1e-5)


def test_k_random_binomial_and_in_train_phase():
    draws = K.eval(K.random_binomial((2000,), p=0.25, seed=1))
    assert set(np.unique(draws)) <= {0.0, 1.0} and abs(draws.mean() - 0.25) < 0.05
    assert K.in_train_phase(1, 2, training=True) == 1
    assert K.in_train_phase(lambda: 1, lambda: 2, training=False) == 2

    class Choose(keras.layers.Layer):
        def call(self, inputs):
            return K.in_train_phase(inputs * 0 + 1.0, inputs * 0 - 1.0)

    inp = keras.Input((2,))
    model = keras.Model(inp, Choose()(inp))
    x = np.zeros((1, 2), "float32")
    np.testing.assert_array_equal(model(x, training=True), [[1.0, 1.0]])
    np.testing.assert_array_equal(model(x, training=False), [[-1.0, -1.0]])
    np.testing.assert_array_equal(model.predict(x, verbose=0), [[-1.0, -1.0]])


@pytest.mark.parametrize("name", ["gradients", "function", "get_session", "placeholder"])
def test_k_graph_mode_names_raise_with_replacement(name):
    with pytest.raises(AttributeError, match=r"K\.%s is TensorFlow 1 graph mode.*: \w" % name):
        getattr(K, name)


def test_k_unknown_name_is_clear():
    with pytest.raises(AttributeError, match="K.no_such_function.*keras.ops"):
        K.no_such_function  # noqa: B018


# ----- search_layer, batch_gather, set_gelu, re-exports ------------------------------------
def test_search_layer_walks_the_graph():
    inp = keras.Input((4,), dtype="int32")
    emb = keras.layers.Embedding(10, 3, name="Embedding-Token")
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(emb(inp)))
    assert search_layer(out, "Embedding-Token") is emb
    assert search_layer(out, "out").name == "out"
    assert search_layer(out, "missing") is None
    with pytest.raises(TypeError, match="symbolic Keras tensor"):
        search_layer(np.zeros(3), "out")


def test_batch_gather_matches_numpy():
    rng = np.random.default_rng(1)
    params = rng.normal(size=(3, 5, 4)).astype("float32")
    idx = np.array([[0, 4], [2, 2], [1, 3]])
    expected = np.stack([params[b, idx[b]] for b in range(3)])
    np.testing.assert_allclose(batch_gather(params, idx), expected)
    np.testing.assert_allclose(batch_gather(params, idx.astype("float32")), expected)
    flat_params = rng.normal(size=(3, 5))
    np.testing.assert_allclose(batch_gather(flat_params, idx),
                               np.take_along_axis(flat_params, idx, 1), rtol=1e-6)


def test_set_gelu_acts_on_models_built_afterwards():
    from bert4keras_ng.layers import FeedForward

    x = np.linspace(-3, 3, 7, dtype="float32")[None, :, None] * np.ones((1, 1, 2), "float32")
    before = backend.get_activation("gelu")
    try:
        set_gelu("tanh")
        assert backend.get_activation("gelu") is backend.gelu_tanh
        layer = FeedForward(2, activation="gelu", kernel_initializer="ones")
        tanh_out = K.eval(layer(x))
        set_gelu("erf")
        assert backend.get_activation("gelu") is backend.gelu_erf
        # the layer built under 'tanh' keeps its function
        np.testing.assert_array_equal(K.eval(layer(x)), tanh_out)
        with pytest.raises(ValueError, match="'erf' or 'tanh'"):
            set_gelu("sigmoid")
    finally:
        backend._ACTIVATIONS["gelu"] = before


def test_set_gelu_is_kept_in_the_model_config():
    from bert4keras_ng.models import build_transformer_model

    config = dict(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16, hidden_act="gelu", max_position_embeddings=16)
    before = backend.get_activation("gelu")
    try:
        set_gelu("tanh")
        model = build_transformer_model(None, **config)
    finally:
        backend._ACTIVATIONS["gelu"] = before
    assert model.get_layer("Transformer-0-FeedForward").get_config()["activation"] == "gelu_tanh"
    assert build_transformer_model(None, **config).get_layer(
        "Transformer-0-FeedForward").get_config()["activation"] == "gelu_erf"


def test_forfit_casts_float64_to_float32():
    from bert4keras_ng.data_feed import normalize_batch

    x, y = normalize_batch(([np.zeros((1, 2), "int64")], np.zeros((1, 3))))
    assert x[0].dtype == np.int64 and y.dtype == np.float32


def test_backend_reexports_multilabel_losses():
    from bert4keras_ng import losses
    from bert4keras_ng.backend import (multilabel_categorical_crossentropy,
                                       sparse_multilabel_categorical_crossentropy)

    assert multilabel_categorical_crossentropy is losses.multilabel_categorical_crossentropy
    assert (sparse_multilabel_categorical_crossentropy
            is losses.sparse_multilabel_categorical_crossentropy)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        backend.nothing  # noqa: B018


# ----- Loss ----------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tests")
class MaskedMean(__import__("bert4keras_ng.layers", fromlist=["Loss"]).Loss):
    """mean(y_pred * y_mask) over the positions the integer y_mask marks (bert4keras style)."""

    def compute_loss(self, inputs, mask=None):
        y_mask, y_pred = inputs
        assert K.dtype(y_mask) == "float32", "Loss must hand integer inputs over as float32"
        y_pred = K.mean(K.cast(y_pred, "float32"), axis=-1)
        return K.sum(y_pred * y_mask) / K.sum(y_mask)


def test_loss_layer_adds_the_loss_and_keeps_integer_outputs():
    segments = np.array([[0, 1, 1, 0], [0, 0, 1, 0]], "int32")
    values = np.arange(8, dtype="float32").reshape(2, 4, 1) * np.ones((1, 1, 3), "float32")
    seg_in, val_in = keras.Input((4,), dtype="int32"), keras.Input((4, 3))
    out = MaskedMean(0)([seg_in, val_in])
    assert out.dtype == "int32"
    model = keras.Model([seg_in, val_in], out)
    result = model([segments, values])
    np.testing.assert_array_equal(result, segments)
    expected = (values.mean(-1) * segments).sum() / segments.sum()
    np.testing.assert_allclose(float(model.losses[0]), expected, rtol=1e-6)
    layer = MaskedMean([1, 0])
    both = layer([ops.convert_to_tensor(segments), ops.convert_to_tensor(values)])
    assert [tuple(t.shape) for t in both] == [(2, 4, 3), (2, 4)]


def test_loss_layer_battery():
    values = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    segments = np.array([[0, 1, 1, 0], [0, 0, 1, 1]], "int32")
    check_layer(lambda **kw: MaskedMean(1, **kw), [segments, values],
                expected_output_shape=(2, 4, 3))


def test_loss_layer_trains_with_fit_on_none_targets():
    rng = np.random.default_rng(0)
    seg_in, x_in = keras.Input((None,), dtype="int32"), keras.Input((None, 3))
    y = keras.layers.Dense(1)(x_in)
    out = MaskedMean(1)([seg_in, y])
    model = keras.Model([seg_in, x_in], out)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    segments = (rng.random((8, 5)) > 0.5).astype("int32")
    segments[:, 0] = 1
    history = model.fit([segments, rng.normal(size=(8, 5, 3)).astype("float32")], None,
                        epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses


def test_loss_layer_without_compute_loss_is_clear():
    from bert4keras_ng.layers import Loss

    with pytest.raises(NotImplementedError, match="must implement compute_loss"):
        Loss()(ops.ones((1, 2)))


# ----- forfit --------------------------------------------------------------------------------
class _Batches:
    """A bert4keras-style DataGenerator yielding ([tokens, segments], labels) of varying length."""

    lengths = (4, 4, 7, 3, 9, 4)

    def make(self):
        from bert4keras_ng.snippets import DataGenerator, sequence_padding

        lengths = self.lengths

        class Gen(DataGenerator):
            def __iter__(self, random=False):
                for i, (is_end, n) in enumerate(self.sample(random)):
                    tokens = sequence_padding([list(range(1, n + 1)), [1, 2]])
                    segments = np.zeros_like(tokens)
                    yield [tokens, segments], np.array([[i % 2], [1]])

        return Gen(list(lengths), batch_size=1)


def _pooled_model():
    tokens, segments = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 4)(tokens) + keras.layers.Embedding(2, 4)(segments)
    y = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model([tokens, segments], y)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def test_forfit_feeds_fit_with_list_batches_of_varying_length():
    gen = _Batches().make()
    # the first two batches agree on length 4: Keras 3 would fix it for later batches
    model = _pooled_model()
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    preds = model.predict(gen.fortest(), steps=len(gen), verbose=0)
    assert preds.shape == (2 * len(gen), 1)


def test_forfit_keeps_b1_sparse_labels_squeezable():
    gen = _Batches().make()
    tokens, segments = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 4)(tokens) + keras.layers.Embedding(2, 4)(segments)
    y = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model([tokens, segments], y)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["sparse_categorical_accuracy"])
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_forfit_is_still_a_plain_iterator():
    stream = _Batches().make().forfit(random=False)
    (tokens, segments), labels = next(stream)
    assert isinstance(next(stream)[0], list)
    assert tokens.shape == (2, 4) and labels.shape == (2, 1)
    lengths = [next(stream)[0][0].shape[1] for _ in range(4)]
    assert lengths == [7, 3, 9, 4]
    assert next(stream)[0][0].shape[1] == 4  # endless: the next epoch starts


def test_forfit_rejects_ragged_batches_clearly():
    from bert4keras_ng.data_feed import normalize_batch

    with pytest.raises(TypeError, match="sequence_padding"):
        normalize_batch(([np.zeros((2, 2)), [[1, 2], [1]]], None))
    labels = normalize_batch(([np.zeros((2, 2))], [[1], [0]]))[1]  # a nested list is a leaf
    assert isinstance(labels, np.ndarray) and labels.shape == (2, 1)
    with pytest.raises(TypeError, match="trailing"):
        normalize_batch((None, np.zeros(2)))
    assert len(normalize_batch(([np.zeros((1, 2)), np.zeros((1, 2))], None))) == 1


# ----- snippets and tokenizer ----------------------------------------------------------------
def test_uniout_and_web_serving():
    from bert4keras_ng.snippets import WebServing, uniout  # noqa: F401

    web = WebServing(port=0)
    web.route("/add", lambda a, b=1: a + b, {"a": (int, True), "b": (int, False)})
    status, body = web.handle("/add", "GET", "a=2&b=5")
    assert status == "200 OK" and json.loads(body) == {"code": 0, "desc": "succeeded", "data": 7}
    assert json.loads(web.handle("/add", "GET", "b=5")[1])["code"] == 1
    bad = json.loads(web.handle("/add", "GET", "a=1&b=x")[1])
    assert bad["code"] == 1 and '"b"' in bad["desc"]
    web.route("/fail", lambda: 1 / 0, {})
    assert json.loads(web.handle("/fail")[1])["code"] == 2
    assert web.handle("/nothing")[0].startswith("404")
    with pytest.raises(ValueError, match="converter or None, required"):
        web.route("/bad", len, {"a": int})


def test_tokenizer_token_unk_id_is_honoured():
    from bert4keras_ng.tokenizers import Tokenizer

    tokenizer = Tokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4})
    assert tokenizer.encode("a b")[0] == [2, 4, 1, 3]
    tokenizer._token_unk_id = 0  # bert4keras scripts do this
    assert tokenizer.encode("a b")[0] == [2, 4, 0, 3]
    assert tokenizer.token_to_id("zzz") == 0
