"""CLUE heads and losses against NumPy formulas written out here."""

import numpy as np
import pytest

import keras

from bert4keras_ng.clue.model import ReplaceMask, SequencePooling, task_loss
from bert4keras_ng.clue.tasks import TASKS


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_pooling_cls_mean_max_ignore_padding():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 3)).astype("float32")
    ids = np.array([[5, 6, 7, 0, 0], [0, 4, 0, 0, 0]], dtype="int32")  # row 2: first kept
    valid = [[0, 1, 2], [0, 1]]
    got = {m: _np(SequencePooling(m)([h, ids])) for m in ("cls", "mean", "max")}
    np.testing.assert_allclose(got["cls"], h[:, 0])
    for b, idx in enumerate(valid):
        np.testing.assert_allclose(got["mean"][b], h[b, idx].mean(0), rtol=1e-6)
        np.testing.assert_allclose(got["max"][b], h[b, idx].max(0), rtol=1e-6)
    with pytest.raises(ValueError, match="'cls', 'mean' or 'max'"):
        SequencePooling("first")


def test_replace_mask_sources():
    h = np.zeros((1, 4, 2), "float32")
    ids = np.array([[0, 3, 0, 0]], "int32")
    pos = np.array([[1, 0, 1, 0]], "int32")
    np.testing.assert_array_equal(_np(ReplaceMask("token_ids").compute_mask([h, ids])),
                                  [[True, True, False, False]])
    np.testing.assert_array_equal(_np(ReplaceMask("position_mask").compute_mask([h, pos])),
                                  [[True, False, True, False]])


def _log_softmax(s):
    s = s - s.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def test_classification_loss_with_and_without_rdrop():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3))
    probs = np.exp(_log_softmax(logits)).astype("float32")
    y = np.array([0, 0, 2, 2])
    ce = -np.log(probs[np.arange(4), y]).mean()
    assert float(task_loss(TASKS["afqmc"])(y, probs)) == pytest.approx(ce, rel=1e-5)
    p, q = probs[::2].astype("float64"), probs[1::2].astype("float64")
    kl = ((p - q) * (np.log(p) - np.log(q))).sum(-1).mean()
    got = float(task_loss(TASKS["afqmc"], rdrop_alpha=4.0)(y, probs))
    assert got == pytest.approx(ce + kl, rel=1e-4)


def test_choice_and_span_losses():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(8, 1)).astype("float32")  # 2 questions × 4 choices
    y = np.array([3, 1])
    lp = _log_softmax(scores.reshape(2, 4).astype("float64"))
    assert float(task_loss(TASKS["c3"])(y, scores)) == pytest.approx(-lp[[0, 1], y].mean(),
                                                                     rel=1e-5)
    s = rng.normal(size=(2, 3, 3)).astype("float32")
    s[:, 1, 0] = -np.inf  # masked cells (lower triangle) drop out of the softmax
    spans = np.array([[0, 0], [1, 2]])
    flat = s.reshape(2, 9).astype("float64")
    finite = np.where(np.isfinite(flat), flat, -1e30)
    lp = _log_softmax(finite)
    expected = -np.mean([lp[0, 0], lp[1, 1 * 3 + 2]])
    assert float(task_loss(TASKS["cmrc2018"])(spans, s)) == pytest.approx(expected, rel=1e-5)
