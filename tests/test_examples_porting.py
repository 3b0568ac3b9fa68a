"""The examples that replace bert4keras's TF1-internals scripts run (tiny checkpoint)."""

import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fgm_example_runs(capsys):
    assert load_example("adversarial_training_fgm").main(["--epochs", "1", "--batch-size", "16"]) == 0
    assert "valid accuracy:" in capsys.readouterr().out


def _accuracy(text):
    """The valid accuracy an example printed; it must be a fraction."""
    lines = [l for l in text.splitlines() if l.startswith("valid accuracy:")]
    assert len(lines) == 1, text[-2000:]
    value = float(lines[0].split(":")[1])
    assert 0.0 <= value <= 1.0
    return value


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradient_penalty", "virtual_adversarial_training"])
def test_regularised_training_examples_run(name, capsys):
    """The replacements for task_iflytek_gradient_penalty.py and
    task_sentiment_virtual_adversarial_training.py train and evaluate (tiny checkpoint)."""
    assert load_example(name).main(["--epochs", "1", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    _accuracy(out)
    assert "nan" not in out.lower()


@pytest.mark.slow
def test_integrated_gradients_are_complete():
    """Completeness: the attributions sum to p(label | x) - p(label | zero token embeddings)."""
    import keras

    from bert4keras_ng.clue.tiny import ensure_tiny_checkpoint
    from bert4keras_ng.models import build_transformer_model
    from bert4keras_ng.tokenizers import Tokenizer

    ig = load_example("integrated_gradients")
    config, checkpoint, vocab = ensure_tiny_checkpoint(model="bert")
    bert = build_transformer_model(config, checkpoint, with_pool=True, return_keras_model=False)
    model = keras.Model(bert.model.inputs,
                        keras.layers.Dense(2, activation="softmax")(bert.model.output))
    token_ids, segment_ids = Tokenizer(vocab).encode("今天天气很好")
    x = [np.array([token_ids]), np.array([segment_ids])]
    scores = ig.integrated_gradients(model, token_ids, segment_ids, 1, steps=64)
    embeddings = model.get_layer("Embedding-Token").embeddings
    values = embeddings.numpy()
    p_x = float(model(x)[0, 1])
    embeddings.assign(np.zeros_like(values))
    p_0 = float(model(x)[0, 1])
    embeddings.assign(values)
    assert scores.shape == (len(token_ids),)
    np.testing.assert_allclose(scores.sum(), p_x - p_0, atol=0.05 * abs(p_x - p_0) + 1e-4)
    np.testing.assert_array_equal(embeddings.numpy(), values)  # the matrix is restored
