"""The CLUE runner never finishes "successfully" with garbage, never leaves a mixed set of
files from two runs, and reports bad input before training, naming file, line and value.

Runs use a trimmed copy of the tnews sample (48 train, 16 dev, 8 + 8 test records). The fast
tests replace the model and its compiled steps by a NumPy stand-in (``fake_training``), which
scripts the loss per step, so they check the runner's own logic (what is written where, what
is said) in well under a second; the ``slow`` tests train the tiny random checkpoint for real.
"""

import json
import os
import shutil

import numpy as np
import pytest

from bert4keras_ng.clue import data as D
from bert4keras_ng.clue import outputs as O
from bert4keras_ng.clue import runner
from bert4keras_ng.clue.tasks import TASKS
from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint

SIZES = {"train.json": 48, "dev.json": 16, "test1.0.json": 8, "test.json": 8}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERT4KERAS_NG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tnews(tmp_path):
    """A small tnews folder with the layout of the CLUE download."""
    folder = tmp_path / "tnews"
    folder.mkdir()
    for name, n in SIZES.items():
        with open(os.path.join(SAMPLE_DIR, "tnews", name), encoding="utf-8") as f:
            lines = [line for line in f if line.strip()][:n]
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def _args(data, out, *extra, quiet=True):
    return ["--data-dir", str(data), "--output", str(out), "--epochs", "1", "--batch-size",
            "16", "--maxlen", "32", "--lr", "2e-2", *extra] + (["--quiet"] if quiet else [])


class _FakeModel:
    """What the runner needs of a Keras model: weights to keep, save and restore."""

    def __init__(self):
        self.weights = [np.zeros(3, "float32")]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save_weights(self, path):
        assert path.endswith(".weights.h5")
        with open(path, "wb") as f:
            f.write(self.weights[0].tobytes())


class _FakeTrainer:
    """Losses from ``losses`` (one per step, the last repeated); logits from the token ids."""

    losses = [1.0]

    def __init__(self, model, loss_fn, optimizer, xla=False, adversarial_epsilon=0.0,
                 strategy=None, unit=1):
        self.model, self.step = model, 0

    def train_on_batch(self, x, y):
        loss = self.losses[min(self.step, len(self.losses) - 1)]
        self.step += 1
        self.model.weights[0] += 1.0
        return float(loss)

    def predict_on_batch(self, x):
        ids = np.asarray(x["Input-Token"])
        return np.stack([np.sin(ids.sum(1) * (k + 1)) for k in range(15)], 1).astype("float32")


@pytest.fixture
def fake_training(monkeypatch, cache):
    from bert4keras_ng.clue import model as clue_model

    monkeypatch.setattr(runner, "_load_backbone", lambda cfg: None)
    monkeypatch.setattr(clue_model, "build_task_model", lambda *a, **k: _FakeModel())
    monkeypatch.setattr(runner, "_Trainer", _FakeTrainer)
    monkeypatch.setattr(_FakeTrainer, "losses", [1.0])
    return _FakeTrainer


def _snapshot(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n))}


def _not_built(monkeypatch):
    """Fail loudly if a test that expects an early error reaches model building."""
    def boom(cfg):
        raise AssertionError("the model was built before the input error was reported")
    monkeypatch.setattr(runner, "_load_backbone", boom)


# ------------------------------------------------------------------------------ divergence


def test_divergence_stops_naming_epoch_and_step_and_writes_nothing(tmp_path, tnews,
                                                                   fake_training, capsys):
    out = tmp_path / "out"
    fake_training.losses = [2.0, 1.5, 1.2, 1.1, float("nan")]  # 3 steps per epoch
    rc = runner.main(_args(tnews, out, "--epochs", "3"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Training diverged: loss is nan at step 5 (epoch 2/3, batch 2/3)" in err
    assert "no submission or results.json was written" in err
    assert os.listdir(out) == []  # no results.json, submission, weights or staging folder
    fake_training.losses = [1.0, float("inf")]
    assert runner.main(_args(tnews, out)) == 1
    assert "loss is inf at step 2 (epoch 1/1, batch 2/3)" in capsys.readouterr().err


def test_nan_weights_after_the_last_checked_loss_stop_before_any_submission(
        tmp_path, tnews, fake_training, capsys, monkeypatch):
    # the last update of epoch 2 makes the weights NaN: its loss was still finite, but the
    # dev outputs are NaN (argmax would give label 0 for every test record)
    real = fake_training.predict_on_batch

    def predict(self, x):
        p = real(self, x)
        return p * np.nan if self.step >= 6 else p

    monkeypatch.setattr(fake_training, "predict_on_batch", predict)
    out = tmp_path / "out"
    assert runner.main(_args(tnews, out, "--epochs", "3")) == 1
    err = capsys.readouterr().err
    assert "outputs on the dev set after epoch 2 (step 6) are NaN" in err, err
    assert os.listdir(out) == []


@pytest.mark.slow
def test_huge_learning_rate_diverges_for_real_and_exits_non_zero(tmp_path, tnews, cache, capsys):
    out = tmp_path / "out"
    rc = runner.main(_args(tnews, out, "--lr", "1e6", "--epochs", "2"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Training diverged: loss is nan at step" in err and "(epoch 1/2, batch" in err
    assert os.listdir(out) == []


def test_non_finite_learning_rate_is_rejected_by_argparse(tmp_path, capsys):
    for bad in ("nan", "inf", "-1", "0"):
        with pytest.raises(SystemExit) as e:
            runner.main(["--lr", bad, "--output", str(tmp_path / "o")])
        assert e.value.code == 2
        assert "argument --lr: must be a finite number > 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------ outputs


def test_run_records_its_id_and_arguments_and_valid_json(tmp_path, tnews, fake_training):
    out = tmp_path / "out"
    argv = _args(tnews, out)
    assert runner.main(argv) == 0
    text = (out / "results.json").read_text(encoding="utf-8")
    results = json.loads(text)  # strict JSON: no NaN
    assert "NaN" not in text
    assert results["arguments"] == argv and len(results["run_id"]) == len("20261201-101500-abcdef")
    assert sorted(os.listdir(out)) == ["best.weights.h5", "results.json",
                                       "tnews10_predict.json", "tnews11_predict.json"]


def test_interrupt_keeps_the_earlier_run_intact_and_says_what_was_kept(tmp_path, tnews, capsys,
                                                                      fake_training, monkeypatch):
    out = tmp_path / "out"
    assert runner.main(_args(tnews, out)) == 0
    before = _snapshot(out)
    first_id = json.loads(before["results.json"])["run_id"]
    real_evaluate, calls = runner.evaluate, []

    def evaluate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C during the second epoch's evaluation
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", evaluate_then_interrupt)
    capsys.readouterr()
    rc = runner.main(_args(tnews, out, "--epochs", "3"))
    err = capsys.readouterr().err
    assert rc == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted during epoch 2")
    assert "kept best.weights.h5 of epoch 1" in lines[0]
    assert "are unchanged" in lines[0]
    # the earlier run's complete set is untouched; the new weights sit in their own folder
    assert _snapshot(out) == before
    assert json.loads((out / "results.json").read_text())["run_id"] == first_id
    kept = [n for n in os.listdir(out) if os.path.isdir(out / n)]
    assert len(kept) == 1 and kept[0].startswith("interrupted-")
    assert os.listdir(out / kept[0]) == ["best.weights.h5"]
    assert str(out / kept[0]) in lines[0]


def test_full_disk_while_writing_leaves_the_earlier_run_intact(tmp_path, tnews, fake_training,
                                                                capsys, monkeypatch):
    out = tmp_path / "out"
    assert runner.main(_args(tnews, out)) == 0
    before = _snapshot(out)

    def full_disk(path, ids, labels):
        with O.atomic_open(path) as f:
            f.write('{"id": "0", "la')
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner.W, "write_label_lines", full_disk)
    assert runner.main(_args(tnews, out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert "earlier runs are unchanged" in err
    assert _snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)


def test_partial_download_predicts_what_is_there_and_removes_stale_files(tmp_path, tnews,
                                                                         fake_training, capsys):
    out = tmp_path / "out"
    assert runner.main(_args(tnews, out)) == 0
    old11 = (out / "tnews11_predict.json").read_bytes()
    os.remove(tnews / "test.json")
    capsys.readouterr()
    assert runner.main(_args(tnews, out, quiet=False)) == 0
    log = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["submissions"] == [str(out / "tnews10_predict.json")]
    assert results["skipped_submissions"] == {
        "tnews11_predict.json": f"test.json or test1.1.json not in {tnews}"}
    assert "skipped tnews11_predict.json: test.json or test1.1.json not in" in log
    # the earlier run's 1.1 submission would be a mixed set: it is removed, and said so
    assert not (out / "tnews11_predict.json").exists() and old11
    assert "removed " + str(out / "tnews11_predict.json") in log
    # the 1.1 file under its other download name is used
    shutil.copy(tnews / "test1.0.json", tnews / "test1.1.json")
    assert runner.main(_args(tnews, out)) == 0
    assert (out / "tnews11_predict.json").exists()


def test_no_test_file_at_all_is_an_error_before_training(tmp_path, tnews, capsys, monkeypatch):
    _not_built(monkeypatch)
    os.remove(tnews / "test.json")
    os.remove(tnews / "test1.0.json")
    assert runner.main(_args(tnews, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "tnews: no test file in" in err and "test1.0.json, test.json" in err


def test_atomic_open_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(OSError, match="disk full"):
        with O.atomic_open(str(path)) as f:
            f.write("new, half written")
            raise OSError(28, "disk full")
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left
    with O.atomic_open(str(path)) as f:
        f.write("new")
    assert path.read_text(encoding="utf-8") == "new" and os.listdir(tmp_path) == ["results.json"]


# ------------------------------------------------------------------------------ validation


def test_bad_numbers_are_argparse_errors(tmp_path, capsys):
    cases = [(["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
             (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
             (["--batch-size", "-4"], "argument --batch-size: must be a positive integer"),
             (["--grad-accum", "0"], "argument --grad-accum: must be a positive integer"),
             (["--grad-accum", "-1"], "argument --grad-accum: must be a positive integer"),
             (["--maxlen", "2"], "--maxlen 2 is too small for tnews"),
             (["--task", "afqmc", "--maxlen", "3"], "give --maxlen >= 4")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            runner.main(argv + ["--output", str(tmp_path / "o")])
        assert e.value.code == 2
        assert message in capsys.readouterr().err, argv
    with pytest.raises(ValueError, match="--epochs must be a positive integer; got 0"):
        runner.run(runner.RunConfig(epochs=0, output=str(tmp_path / "o"), verbose=0))


def test_output_pointing_at_a_file_is_an_error(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("not a folder")
    with pytest.raises(SystemExit):
        runner.main(["--output", str(target)])
    assert f"--output {target} is a file" in capsys.readouterr().err


def _write_lines(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")


def test_bad_test_files_are_found_before_training(tmp_path, tnews, capsys, monkeypatch):
    _not_built(monkeypatch)
    out = tmp_path / "out"
    good = (tnews / "test.json").read_text(encoding="utf-8")
    (tnews / "test.json").write_text(good + '{"id": 99, "sentence": \n', encoding="utf-8")
    assert runner.main(_args(tnews, out)) == 2
    assert f"{tnews / 'test.json'}, line 9: not valid JSON" in capsys.readouterr().err
    (tnews / "test.json").write_text("\n", encoding="utf-8")
    assert runner.main(_args(tnews, out)) == 2
    assert "test.json: the test file holds no records" in capsys.readouterr().err
    _write_lines(tnews / "test.json", [{"id": 1, "sentence": "a"}, {"id": 2, "sentence": "b"},
                                       {"id": 1, "sentence": "c"}])
    assert runner.main(_args(tnews, out)) == 2
    err = capsys.readouterr().err
    assert "line 3: test id '1' is used twice (first in" in err and "line 1)" in err
    assert not out.exists() or os.listdir(out) == []


def test_non_utf8_file_names_file_and_line(tmp_path, tnews, capsys, monkeypatch):
    _not_built(monkeypatch)
    lines = (tnews / "dev.json").read_text(encoding="utf-8").splitlines()
    (tnews / "dev.json").write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    assert runner.main(_args(tnews, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{tnews / 'dev.json'}, line 1: not UTF-8" in err and "iconv" in err
    # a BOM at the start of a JSON Lines file is not an error
    (tnews / "dev.json").write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    assert len(D.read_split(TASKS["tnews"], str(tnews), "dev").examples) == SIZES["dev.json"]


def test_cmrc_answer_start_must_point_at_the_answer(tmp_path):
    data = {"version": "v1.0", "data": [{"paragraphs": [{"context": "今天北京下雨了", "qas": [
        {"id": "Q1", "question": "哪里?", "answers": [{"text": "北京", "answer_start": 2}]},
        {"id": "Q2", "question": "什么?", "answers": [{"text": "下雨", "answer_start": 3}]},
    ]}]}]}
    for name in ("train.json", "dev.json", "test.json"):
        (tmp_path / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(D.ClueDataError) as e:
        D.read_split(TASKS["cmrc2018"], str(tmp_path), "train")
    msg = str(e.value)
    assert "train.json, data[0].paragraphs[0].qas[1].answers[0]" in msg
    assert "answer_start 3" in msg and "'京下'" in msg and "'下雨'" in msg
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 4
    (tmp_path / "train.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert len(D.read_split(TASKS["cmrc2018"], str(tmp_path), "train").examples) == 2


def test_cluener_span_must_spell_the_entity(tmp_path):
    _write_lines(tmp_path / "train.json", [
        {"text": "住在北京市。", "label": {"address": {"北京市": [[2, 4]]}}},
        {"text": "担任记者。", "label": {"position": {"记者": [[1, 2]]}}},
    ])
    with pytest.raises(D.ClueDataError) as e:
        D.read_split(TASKS["cluener"], str(tmp_path), "train")
    msg = str(e.value)
    assert "train.json, line 2: position entity '记者' at [1, 2]" in msg
    assert "read '任记'" in msg


def test_vocab_larger_than_the_checkpoint_is_an_error_before_training(tmp_path, tnews, capsys,
                                                                       monkeypatch):
    config, ckpt, vocab = ensure_tiny_checkpoint(str(tmp_path / "ck"), "roformer")
    size = json.load(open(config))["vocab_size"]
    big = tmp_path / "vocab_big.txt"
    big.write_text(open(vocab, encoding="utf-8").read() + "extra1\nextra2\n", encoding="utf-8")
    _not_built(monkeypatch)
    rc = runner.main(_args(tnews, tmp_path / "out", "--config", config, "--checkpoint", ckpt,
                           "--vocab", str(big)))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"--vocab {big} has {size + 2} tokens" in err and f"has {size}" in err


# ------------------------------------------------------------------------------ console


def test_log_without_a_terminal_has_one_plain_line_per_epoch(tmp_path, tnews, fake_training,
                                                             capsys):
    assert runner.main(_args(tnews, tmp_path / "out", "--epochs", "2", quiet=False)) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out and "━" not in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(" loss " in line and " dev accuracy: " in line for line in epochs)


def test_checkpoint_of_another_family_stops_with_the_loaders_message(tmp_path, tnews, capsys):
    # a RoFormer checkpoint has no position table: model=bert cannot load it whole
    config, ckpt, vocab = ensure_tiny_checkpoint(str(tmp_path / "ck"), "roformer")
    out = tmp_path / "out"
    rc = runner.main(_args(tnews, out, "--config", config, "--checkpoint", ckpt, "--vocab",
                           vocab, "--model", "bert"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "position_embeddings" in err, err
    assert "Traceback" not in err
    assert os.listdir(out) == []  # the staging folder is gone, nothing was written


@pytest.mark.slow
def test_real_sigint_after_an_epoch_ends_with_one_line(tmp_path, tnews, cache):
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=root, PYTHONUNBUFFERED="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    # a shell's background job (`cmd &`) inherits SIGINT ignored, and Python then keeps it
    # ignored: give the child Ctrl-C's default action, as a terminal's foreground job has
    proc = subprocess.Popen(
        [sys.executable, os.path.join(root, "examples", "clue.py")]
        + _args(tnews, out, "--epochs", "200", quiet=False),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/200"):
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted during epoch"), err
    assert "kept best.weights.h5 of epoch" in lines[0]
    (kept,) = os.listdir(out)
    assert kept.startswith("interrupted-") and os.listdir(out / kept) == ["best.weights.h5"]


def test_default_model_with_a_bert_checkpoint_stops(tmp_path, tnews, capsys):
    # the default --model is roformer; a BERT checkpoint's position table would be dropped
    config, ckpt, vocab = ensure_tiny_checkpoint(str(tmp_path / "ck"), "bert")
    out = tmp_path / "out"
    rc = runner.main(_args(tnews, out, "--config", config, "--checkpoint", ckpt, "--vocab",
                           vocab))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: "), err
    assert "bert/embeddings/position_embeddings" in err and "looks like model='bert'" in err
    assert "Traceback" not in err
    assert os.listdir(out) == []


# ------------------------------------------------------------------------------ --strategy


def test_strategy_rejects_what_the_replicated_step_cannot_do(tmp_path, capsys):
    cases = [(["--xla"], "--xla is not available with --strategy"),
             (["--adversarial"], "--adversarial is not available with --strategy"),
             (["--grad-accum", "2"], "--grad-accum 2 uses Keras's gradient accumulation")]
    for extra, message in cases:
        with pytest.raises(SystemExit):
            runner.main(["--strategy", "mirrored", "--output", str(tmp_path / "o"), *extra])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--strategy", "ring"])
    assert "invalid choice: 'ring'" in capsys.readouterr().err


def _h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
def test_multiworker_strategy_on_loopback_matches_one_process(tmp_path, tnews):
    """Two workers (127.0.0.1, a TF_CONFIG each) run the same command with --strategy
    multiworker; the chief's best weights equal one process's on the same global batches."""
    import socket
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config, ckpt, vocab = ensure_tiny_checkpoint(str(tmp_path / "ck"), "roformer")
    settings = json.load(open(config))
    settings.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    json.dump(settings, open(config, "w"))  # no dropout: the runs are comparable step by step
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}

    def command(out, *extra):
        return [sys.executable, os.path.join(root, "examples", "clue.py")] + _args(
            tnews, out, "--epochs", "2", "--config", config, "--checkpoint", ckpt, "--vocab",
            vocab, *extra)

    def env(index=None):
        e = dict(os.environ, PYTHONPATH=root, CUDA_VISIBLE_DEVICES="-1",
                 KERAS_BACKEND="tensorflow")
        e.pop("TF_CONFIG", None)
        if index is not None:
            e["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}})
        return e

    workers = [subprocess.Popen(command(tmp_path / f"w{i}", "--strategy", "multiworker"),
                                env=env(i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for i in range(2)]
    try:
        logs = [w.communicate(timeout=400)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for i, (w, log) in enumerate(zip(workers, logs)):
        assert w.returncode == 0, f"worker {i}:\n{log[-4000:]}"
    single = subprocess.run(command(tmp_path / "single"), env=env(), capture_output=True,
                            text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-4000:]

    assert not (tmp_path / "w1").exists() or os.listdir(tmp_path / "w1") == []  # chief writes
    chief = json.load(open(tmp_path / "w0" / "results.json"))
    one = json.load(open(tmp_path / "single" / "results.json"))
    assert chief["settings"]["strategy"] == "multiworker"
    assert (chief["replicas"], one["replicas"]) == (2, 1)
    np.testing.assert_allclose([h["loss"] for h in chief["history"]],
                               [h["loss"] for h in one["history"]], rtol=1e-5)
    a = _h5_arrays(tmp_path / "w0" / "best.weights.h5")
    b = _h5_arrays(tmp_path / "single" / "best.weights.h5")
    assert a.keys() == b.keys() and len(a) > 10
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print("multi-worker vs one process, max weight difference (AdaFactor, 6 steps):", worst)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5, err_msg=k)
    assert (tmp_path / "w0" / "tnews10_predict.json").read_text() == \
        (tmp_path / "single" / "tnews10_predict.json").read_text()
