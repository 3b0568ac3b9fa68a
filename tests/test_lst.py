"""Ladder Side-Tuning: taps, frozen backbone (no gradient), parameter count, masks, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4keras_ng import lst
from bert4keras_ng.models import build_transformer_model
from tests import helpers as H

HB, H_, I_, L_ = 16, 8, 12, 2


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return build_transformer_model(None, None, model="bert", vocab_size=30, hidden_size=HB,
                                   num_hidden_layers=4, num_attention_heads=2,
                                   intermediate_size=32, hidden_act="gelu", dropout_rate=0.1)


def _lst(backbone):
    backbone.trainable = True
    return lst.ladder_side_tuning(backbone, ladder_layers=L_, hidden_size=H_,
                                  num_attention_heads=2, intermediate_size=I_)


def _feed(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 30, size=(3, 7))
    ids[0, 4:] = 0
    return [ids, np.zeros_like(ids)]


def test_taps_follow_the_skip_rule(backbone):
    taps = lst.backbone_taps(backbone, 2)
    expected = ["Embedding-Dropout", "Transformer-1-FeedForward-Norm",
                "Transformer-3-FeedForward-Norm"]
    assert [t._keras_history.operation.name for t in taps] == expected
    with pytest.raises(ValueError, match="ladder_layers"):
        lst.backbone_taps(backbone, 5)


def test_only_the_side_network_trains_and_parameter_count(backbone):
    model = _lst(backbone)
    assert not backbone.trainable
    per_block = (4 * (H_ * H_ + H_) + 2 * H_ + (H_ * I_ + I_ + I_ * H_ + H_) + 2 * H_ + HB * H_)
    expected = HB * H_ + L_ * per_block
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected
    assert all(w.path.startswith("Side-") for w in model.trainable_weights)
    backbone_ids = {id(w) for w in backbone.weights}
    assert not any(id(w) in backbone_ids for w in model.trainable_weights)


def test_backbone_receives_no_gradient_and_does_not_change(backbone):
    model = _lst(backbone)
    x = _feed()
    with tf.GradientTape() as tape:
        for w in backbone.weights:
            tape.watch(w.value)
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, [w.value for w in backbone.weights])
    assert all(g is None for g in grads)
    head = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(model.output))
    clf = keras.Model(model.inputs, head)
    clf.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in backbone.weights]
    side_before = [w.numpy().copy() for w in model.trainable_weights]
    clf.fit(x, np.array([0, 1, 1]), epochs=2, verbose=0)
    for w, b in zip(backbone.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.trainable_weights,
                                                                   side_before))


def test_lst_is_padding_invariant_and_saves(backbone, tmp_path):
    model = _lst(backbone)
    x = _feed(1)
    mask = x[0] != 0

    def perturb(inputs, m, rng):
        ids = inputs[0].copy()
        ids[~m] = 0  # padding stays padding; only the length of the batch changes below
        return [np.pad(ids, ((0, 0), (0, 3))), np.pad(inputs[1], ((0, 0), (0, 3)))]

    out = H.to_numpy(model(x))
    longer = H.to_numpy(model(perturb(x, mask, None)))[:, :7]
    np.testing.assert_allclose(longer[mask], out[mask], atol=1e-5)
    path = str(tmp_path / "lst.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(H.to_numpy(again(x)), out, atol=1e-6)


@pytest.mark.parametrize("model,dropout", [("bert", 0.0), ("roformer_v2", 0.1)])
def test_taps_find_the_embedding_output_without_dropout_or_after_it(model, dropout):
    keras.utils.set_random_seed(0)
    net = build_transformer_model(None, None, model=model, vocab_size=30, hidden_size=HB,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, hidden_act="gelu", dropout_rate=dropout)
    first = lst.backbone_taps(net, 1)[0]._keras_history.operation.name
    assert first == "Embedding-Norm"
