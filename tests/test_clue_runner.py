"""End-to-end CLUE runs: tiny TF1 checkpoint → fine-tuning → dev metric → submission files.

The fast tests run the default no-argument demo (tnews) and the error paths; every other task
runs end to end in the ``slow`` suite. Chance levels are computed from the sample dev files
(majority class), never taken from our own outputs.
"""

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from bert4keras_ng.clue import runner
from bert4keras_ng.clue.tasks import TASKS
from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _majority_rate(labels):
    counts = collections.Counter(labels)
    return max(counts.values()) / len(labels)


def _dev_chance(task):
    """Accuracy of always answering the most frequent dev label (1/k for choice tasks)."""
    d = os.path.join(SAMPLE_DIR, task)
    spec = TASKS[task]
    if spec.kind == "chid":
        return 1.0 / spec.num_choices
    if spec.kind == "c3":
        labels = []
        for name in spec.dev_files:
            for doc in json.load(open(os.path.join(d, name), encoding="utf-8")):
                labels += [q["choice"].index(q["answer"]) for q in doc[1]]
        return _majority_rate(labels)
    if spec.kind in ("cmrc", "ner"):
        return 0.0
    labels = [r["label"] for r in _lines(os.path.join(d, "dev.json")) if r["label"] != "-"]
    return _majority_rate(labels)


def _test_ids(task, test_file):
    return [str(r["id"]) for r in _lines(os.path.join(SAMPLE_DIR, task, test_file))]


def _check_label_lines(path, ids, labels):
    text = open(path, encoding="utf-8").read()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in rows] == ids
    for r, line in zip(rows, text.splitlines()):
        assert list(r) == ["id", "label"] and isinstance(r["label"], str)
        assert r["label"] in labels
        assert line == json.dumps(r)


def _check_submissions(task, out):
    spec = TASKS[task]
    d = os.path.join(SAMPLE_DIR, task)
    for test_file, submission in spec.test_files:
        path = os.path.join(out, submission)
        assert os.path.isfile(path), submission
        if spec.kind in ("single", "pair", "csl", "wsc"):
            _check_label_lines(path, _test_ids(task, test_file), spec.labels)
        elif spec.kind == "c3":
            docs = json.load(open(os.path.join(d, test_file), encoding="utf-8"))
            ids = [q["id"] for doc in docs for q in doc[1]]
            _check_label_lines(path, ids, ["0", "1", "2", "3"])
        elif spec.kind == "chid":
            text = open(path, encoding="utf-8").read()
            obj = json.loads(text)
            keys = [k for r in _lines(os.path.join(d, test_file)) for c in r["content"]
                    for k in re.findall(r"#idiom\d{6}#", c)]
            assert list(obj) == keys and all(isinstance(v, int) and 0 <= v < 10
                                             for v in obj.values())
            assert text == json.dumps(obj, ensure_ascii=False, indent=4)
            # one record's blanks never share an idiom (the assignment)
            for r in _lines(os.path.join(d, test_file)):
                ks = [k for c in r["content"] for k in re.findall(
                    r"#idiom\d{6}#", c)]
                assert len({obj[k] for k in ks}) == len(ks)
        elif spec.kind == "cmrc":
            text = open(path, encoding="utf-8").read()
            obj = json.loads(text)
            data = json.load(open(os.path.join(d, test_file), encoding="utf-8"))["data"]
            ids = [qa["id"] for a in data for p in a["paragraphs"] for qa in p["qas"]]
            assert list(obj) == ids and all(isinstance(v, str) for v in obj.values())
            assert text == json.dumps(obj, ensure_ascii=False, indent=4)
        elif spec.kind == "ner":
            rows = _lines(path)
            src = _lines(os.path.join(d, test_file))
            assert [r["id"] for r in rows] == [r["id"] for r in src]
            for r, s in zip(rows, src):
                assert r["text"] == s["text"] and set(r) == {"id", "text", "label"}
                for etype, ents in r["label"].items():
                    assert etype in spec.labels
                    for ent, spans in ents.items():
                        for a, b in spans:
                            assert r["text"][a:b + 1] == ent
            assert "\\u" not in open(path, encoding="utf-8").read()


def _run(task, tmp_path, **kw):
    out = str(tmp_path / task)
    cfg = runner.RunConfig(task=task, output=out, verbose=0, **kw)
    return runner.run(cfg), out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERT4KERAS_NG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_default_demo_runs_end_to_end(tmp_path, cache):
    out = tmp_path / "out"
    assert runner.main(["--output", str(out), "--quiet"]) == 0
    results = json.load(open(out / "results.json", encoding="utf-8"))
    task = runner.DEFAULT_TASK
    assert results["task"] == task and results["tiny_checkpoint"]
    assert results["embedded_sample_data"]
    # the tiny checkpoint is a TF1 release layout
    (folder,) = list(cache.iterdir())
    assert {"bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index",
            "vocab.txt"} <= set(os.listdir(folder))
    history = results["history"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert results["best"] == max(h["accuracy"] for h in history)
    chance = _dev_chance(task)
    assert results["best"] >= chance + 0.3, (results["best"], chance)
    _check_submissions(task, str(out))
    assert os.path.isfile(out / "best.weights.h5")


def test_missing_file_is_reported_before_any_model_is_built(tmp_path, capsys):
    rc = runner.main(["--task", "c3", "--data-dir", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert os.path.join(str(tmp_path), "m-train.json") in err
    assert "d-dev.json" in err and "test1.1.json" in err


def test_partial_checkpoint_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="missing: --checkpoint, --vocab"):
        runner.run(runner.RunConfig(config=str(tmp_path / "c.json"), verbose=0,
                                    output=str(tmp_path)))


def test_model_not_matching_the_checkpoint_gets_the_loader_error(tmp_path):
    config, ckpt, vocab = ensure_tiny_checkpoint(str(tmp_path / "ck"), "roformer")
    with pytest.raises(Exception, match="position_embeddings"):
        runner.run(runner.RunConfig(task="afqmc", config=config, checkpoint=ckpt, vocab=vocab,
                                    model="bert", epochs=1, verbose=0,
                                    output=str(tmp_path / "out")))


def test_command_line_help_lists_the_flags():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "clue.py"), "--help"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(env, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    # TensorFlow's C++ start-up notices are filtered while it loads (examples/clue.py)
    for notice in ("oneDNN", "cuInit", "absl::InitializeLog", "cpu_feature_guard", "I0000"):
        assert notice not in out.stderr, out.stderr[-2000:]
    for flag in ("--task", "--data-dir", "--config", "--checkpoint", "--vocab", "--model",
                 "--epochs", "--batch-size", "--maxlen", "--lr", "--optimizer", "--grad-accum",
                 "--pooling", "--mixed-precision", "--xla", "--rdrop", "--adversarial", "--lst",
                 "--output", "--seed"):
        assert flag in out.stdout


# ------------------------------------------------------------------------------ slow


# dev metric the demo must reach on the sample data: chance + margin (accuracy tasks) or an
# absolute floor (span accuracy, entity F1)
MARGIN = {"iflytek": 0.25, "wsc": 0.2, "afqmc": 0.2, "c3": 0.3, "chid": 0.25}
FLOOR = {"cmrc2018": 0.5, "cluener": 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(t for t in TASKS if t != runner.DEFAULT_TASK))
def test_every_task_end_to_end(task, tmp_path, cache):
    results, out = _run(task, tmp_path)
    best = results["best"]
    if task in FLOOR:
        assert best >= FLOOR[task], results["history"]
    else:
        chance = _dev_chance(task)
        assert best >= chance + MARGIN.get(task, 0.3), (best, chance, results["history"])
    if task in ("cmnli", "ocnli"):
        assert results["skipped_records"] == {"train": 6, "dev": 1}
    _check_submissions(task, out)


@pytest.mark.slow
@pytest.mark.parametrize("task,policy", [
    ("tnews", "float16"), ("afqmc", "bfloat16"), ("c3", "float16"), ("chid", "bfloat16"),
    ("cmrc2018", "float16"), ("cluener", "bfloat16"), ("wsc", "float16"),
])
def test_mixed_precision_and_xla(task, policy, tmp_path, cache):
    import keras

    before = keras.config.dtype_policy().name
    results, out = _run(task, tmp_path, mixed_precision=policy, xla=True, epochs=2)
    assert keras.config.dtype_policy().name == before  # restored
    assert all(h["loss"] == h["loss"] for h in results["history"])  # no NaN
    _check_submissions(task, out)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["afqmc", "chid", "cluener", "cmrc2018"])
def test_rdrop_and_adversarial_training(task, tmp_path, cache):
    results, out = _run(task, tmp_path, rdrop=True, adversarial=True, epochs=2)
    assert all(h["loss"] == h["loss"] and h["loss"] > 0 for h in results["history"])
    _check_submissions(task, out)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "lion", "tiger"])
def test_other_optimizers_and_pooling(optimizer, tmp_path, cache):
    results, out = _run("tnews", tmp_path, optimizer=optimizer, lr=1e-3, epochs=2,
                        pooling={"adamw": "mean", "lion": "max", "tiger": "cls"}[optimizer],
                        grad_accum=2)
    assert len(results["history"]) == 2
    _check_submissions("tnews", out)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_ladder_side_tuning_runs_every_task(task, tmp_path, cache):
    results, out = _run(task, tmp_path, lst=True, epochs=2)
    assert all(h["loss"] == h["loss"] and h["loss"] > 0 for h in results["history"])
    _check_submissions(task, out)
