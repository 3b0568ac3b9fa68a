"""Smoke test of examples/sentence_embeddings.py on the tiny checkpoint (slow: builds 3 models)."""

import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sentence_embeddings_example_cosent_and_simcse_beat_the_untrained_encoder():
    example = runpy.run_path(os.path.join(ROOT, "examples", "sentence_embeddings.py"))
    results = example["run"](k=8)
    for name, value in results.items():
        values = value if name.endswith("loss") else list(value.values())
        assert np.isfinite(values).all(), name
    assert results["cosent loss"][-1] < results["cosent loss"][0]
    assert results["simcse loss"][-1] < results["simcse loss"][0]
    untrained, cosent = results["untrained"], results["cosent"]
    assert cosent["pair_accuracy"] > untrained["pair_accuracy"]
    assert cosent["spearman"] > untrained["spearman"] + 0.03
    # SimCSE (mean pooling, the posts' batch / dropout / temperature) against the untrained
    # encoder with the same pooling and against the [CLS] baseline
    simcse, same = results["simcse"], results["untrained (mean)"]
    assert simcse["spearman"] > same["spearman"] + 0.01
    assert simcse["pair_accuracy"] > same["pair_accuracy"]
    assert simcse["spearman"] > untrained["spearman"] + 0.03
    # binary labels: a perfect ranking reaches about the ceiling (< 1), not 1
    assert results["ceiling"]["pair_accuracy"] == 1.0 and results["ceiling"]["spearman"] < 0.9
