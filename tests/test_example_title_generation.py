"""Smoke test of examples/title_generation.py: the tiny checkpoint and the embedded CSL sample,
no downloads; it must load, fine-tune (the loss falls), and beam-search titles that end with
[SEP] or run the full title length."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example():
    path = os.path.join(ROOT, "examples", "title_generation.py")
    spec = importlib.util.spec_from_file_location("title_generation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_title_generation_runs_on_the_tiny_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERT4KERAS_NG_CACHE", str(tmp_path / "cache"))
    example = load_example()
    titles = example.main(["--steps", "12", "--show", "3", "--title-maxlen", "6",
                           "--batch-size", "4"])
    out = capsys.readouterr().out
    losses = [float(line.split("loss")[1]) for line in out.splitlines() if line.startswith("step")]
    assert losses[-1] < losses[0], out
    assert len(titles) == 3
    sep = 13  # [SEP] in the tiny vocabulary ([PAD], [unused1..9], [UNK], [CLS], [SEP])
    for ids in titles:
        assert 1 <= len(ids) <= 6
        assert len(ids) == 6 or ids[-1] == sep
    assert out.count("generated:") == 3


def test_data_errors_name_the_file_and_line(tmp_path):
    example = load_example()
    path = tmp_path / "bad.json"
    path.write_text('{"abst": "x", "keyword": ["y"]}\n{"abst": "z"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.json:2: expected fields 'abst' and 'keyword'"):
        example.load_data(str(path), "abst", "keyword")
