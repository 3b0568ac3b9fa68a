"""bert4keras-style scripts (tests/porting_scripts/) run end to end after only the import rename.

Each script is written as a bert4keras 0.11.5 user writes one (`from bert4keras.backend import
keras, K`, Loss subclasses, forfit, decoders); the test renames `bert4keras` to `bert4keras_ng`
on its import lines, runs it on a tiny checkpoint and checks what it leaves in `result`.
"""

import math
import os
import re

import keras
import numpy as np
import pytest

from bert4keras_ng import backend
from bert4keras_ng.clue.tiny import ensure_tiny_checkpoint

SCRIPTS = os.path.join(os.path.dirname(__file__), "porting_scripts")


def rename_imports(source):
    """The only edit: `bert4keras` -> `bert4keras_ng` where a line imports it."""
    return re.sub(r"^(\s*(?:from|import)\s+)bert4keras\b", r"\1bert4keras_ng", source,
                  flags=re.M)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return ensure_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_bert")), model="bert")


def run_script(name, tiny_bert, workdir, monkeypatch):
    config, checkpoint, vocab = tiny_bert
    for key, value in (("B4K_CONFIG", config), ("B4K_CHECKPOINT", checkpoint),
                       ("B4K_VOCAB", vocab), ("B4K_WORKDIR", str(workdir))):
        monkeypatch.setenv(key, value)
    with open(os.path.join(SCRIPTS, name), encoding="utf-8") as f:
        source = f.read()
    assert re.search(r"^from bert4keras\.", source, re.M), "scripts import bert4keras.*"
    gelu = backend._ACTIVATIONS["gelu"]
    keras.utils.clear_session()
    namespace = {"__name__": "__main__", "__file__": name}
    try:
        exec(compile(rename_imports(source), name, "exec"), namespace)
    finally:
        backend._ACTIVATIONS["gelu"] = gelu  # set_gelu is global by design: undo it here
    return namespace["result"]


def _finite(values):
    return all(math.isfinite(v) for v in values)


@pytest.mark.slow
def test_seq2seq_unilm_with_beam_search(tiny_bert, tmp_path, monkeypatch):
    result = run_script("seq2seq_unilm.py", tiny_bert, tmp_path, monkeypatch)
    assert len(result["losses"]) == 2 and _finite(result["losses"])
    assert isinstance(result["title"], str)
    assert os.path.exists(tmp_path / "best_model.weights.h5")


@pytest.mark.slow
def test_classification_with_forfit_and_set_gelu(tiny_bert, tmp_path, monkeypatch):
    result = run_script("classification_forfit.py", tiny_bert, tmp_path, monkeypatch)
    assert _finite(result["loss"]) and len(result["accs"]) == 2
    assert result["gelu"] == "gelu_tanh"  # set_gelu('tanh') before building
    assert abs(sum(result["probas"]) - 1) < 1e-5


@pytest.mark.slow
def test_ner_crf_with_viterbi_decoder(tiny_bert, tmp_path, monkeypatch):
    result = run_script("ner_crf.py", tiny_bert, tmp_path, monkeypatch)
    assert _finite(result["loss"]) and len(result["entities"]) == 2
    trans = np.array(result["trans"])
    assert trans.shape == (5, 5) and np.isfinite(trans).all()
    for start, end, label in result["entities"][-1]:
        assert 0 <= start <= end and label in ("LOC", "PER")


@pytest.mark.slow
def test_global_pointer_with_multilabel_loss(tiny_bert, tmp_path, monkeypatch):
    result = run_script("global_pointer.py", tiny_bert, tmp_path, monkeypatch)
    assert _finite(result["loss"])
    assert all(label in ("LOC", "PER") for _, _, label in result["entities"])


@pytest.mark.slow
def test_conditional_layer_norm_language_model(tiny_bert, tmp_path, monkeypatch):
    result = run_script("conditional_lm.py", tiny_bert, tmp_path, monkeypatch)
    assert _finite(result["loss"]) and len(result["texts"]) == 4
    assert all(isinstance(t, str) for t in result["texts"])


@pytest.mark.slow
def test_keras2_style_layers_batch_gather_search_layer(tiny_bert, tmp_path, monkeypatch):
    result = run_script("theseus_style.py", tiny_bert, tmp_path, monkeypatch)
    assert _finite(result["loss"])
    assert result["embedding"] == "Embedding-Token"
    assert result["deterministic_predict"]  # K.in_train_phase picks the target at inference
    assert result["unk"][1] == 0  # tokenizer._token_unk_id = 0 is honoured


def test_scripts_need_nothing_but_the_import_rename():
    """The scripts use no bert4keras_ng name: they are bert4keras scripts."""
    for name in sorted(os.listdir(SCRIPTS)):
        if name.endswith(".py"):
            source = open(os.path.join(SCRIPTS, name), encoding="utf-8").read()
            assert "bert4keras_ng" not in source, name
            renamed = rename_imports(source)
            assert not re.search(r"^\s*(from|import)\s+bert4keras\b", renamed, re.M), name
