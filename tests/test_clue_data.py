"""CLUE task specs, readers, input construction, metrics and submission writers.

Everything here is plain Python/NumPy (no model): expectations are written from the CLUE
reference (file names, label sets, marker and truncation rules) and checked on hand-made
records, the shipped sample data and a character-level fake tokenizer.
"""

import filecmp
import itertools
import json
import os

import numpy as np
import pytest

from bert4keras_ng.clue import data as D
from bert4keras_ng.clue import features as F
from bert4keras_ng.clue import make_sample_data, metrics, writers
from bert4keras_ng.clue.tasks import TASKS, get_task
from tests.clue_fakes import CharTokenizer

SAMPLE = os.path.join(os.path.dirname(make_sample_data.__file__), "sample_data")

# (task, train files, dev files, {test file: submission file}) straight from the reference
EXPECTED_FILES = {
    "iflytek": (["train.json"], ["dev.json"], {"test.json": "iflytek_predict.json"}),
    "tnews": (["train.json"], ["dev.json"], {"test1.0.json": "tnews10_predict.json",
                                             "test.json": "tnews11_predict.json"}),
    "afqmc": (["train.json"], ["dev.json"], {"test.json": "afqmc_predict.json"}),
    "cmnli": (["train.json"], ["dev.json"], {"test.json": "cmnli_predict.json"}),
    "ocnli": (["train.50k.json"], ["dev.json"], {"test.json": "ocnli_50k_predict.json"}),
    "csl": (["train.json"], ["dev.json"], {"test.json": "csl_predict.json"}),
    "wsc": (["train.json"], ["dev.json"], {"test1.0.json": "cluewsc10_predict.json",
                                           "test.json": "cluewsc11_predict.json"}),
    "c3": (["m-train.json", "d-train.json"], ["m-dev.json", "d-dev.json"],
           {"test1.0.json": "c310_predict.json", "test1.1.json": "c311_predict.json"}),
    "chid": (["train.json"], ["dev.json"], {"test1.0.json": "chid10_predict.json",
                                            "test1.1.json": "chid11_predict.json"}),
    "cmrc2018": (["train.json"], ["dev.json"], {"test.json": "cmrc2018_predict.json"}),
    "cluener": (["train.json"], ["dev.json"], {"test.json": "cluener_predict.json"}),
}


def test_specs_match_the_reference_table():
    assert set(TASKS) == set(EXPECTED_FILES)
    recipe = {"c3": (512, 4, 10, 4), "chid": (64, 12, 5, 2), "cmrc2018": (512, 16, 10, 2),
              "cluener": (256, 32, 10, 1), "wsc": (128, 32, 30, 1)}
    for name, (train, dev, tests) in EXPECTED_FILES.items():
        spec = TASKS[name]
        assert list(spec.train_files) == train and list(spec.dev_files) == dev
        assert dict(spec.test_files) == tests
        assert (spec.maxlen, spec.batch_size, spec.epochs, spec.grad_accum) == \
            recipe.get(name, (128, 32, 10, 1)), name
    assert TASKS["tnews"].labels == ("100", "101", "102", "103", "104", "106", "107", "108",
                                     "109", "110", "112", "113", "114", "115", "116")
    assert TASKS["iflytek"].num_labels == 119 and TASKS["iflytek"].labels[118] == "118"
    assert TASKS["cmnli"].labels == ("entailment", "neutral", "contradiction")
    assert TASKS["wsc"].labels == ("false", "true")
    assert len(TASKS["cluener"].labels) == 10 and list(TASKS["cluener"].labels) == sorted(
        TASKS["cluener"].labels)
    with pytest.raises(ValueError, match="afqmc"):
        get_task("nope")


# ----------------------------------------------------------------------------- sample data


def test_sample_data_is_small_complete_and_reproducible(tmp_path):
    total = 0
    for name, spec in TASKS.items():
        for f in spec.all_files:
            path = os.path.join(SAMPLE, name, f)
            assert os.path.isfile(path), path
            total += os.path.getsize(path)
    assert total < 1.5e6, total
    make_sample_data.generate(str(tmp_path), tasks=["afqmc", "chid", "cmrc2018"])
    for name in ("afqmc", "chid", "cmrc2018"):
        cmp = filecmp.dircmp(os.path.join(SAMPLE, name), str(tmp_path / name))
        assert not cmp.diff_files and not cmp.left_only and not cmp.right_only, name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_data_reads_with_every_reader(name):
    spec = TASKS[name]
    d = os.path.join(SAMPLE, name)
    train, dev = D.read_split(spec, d, "train"), D.read_split(spec, d, "dev")
    assert 200 <= len(train.examples) <= 700 and 50 <= len(dev.examples) <= 300
    for test_file, _ in spec.test_files:
        test = D.read_test(spec, d, test_file)
        assert test.examples
    if name in ("cmnli", "ocnli"):
        assert train.skipped == 6 and dev.skipped == 1
    else:
        assert train.skipped == 0
    labels = [getattr(e, "label", None) for e in train.examples]
    if spec.kind not in ("cmrc", "ner"):
        # more than one class present, every label a valid index
        assert len(set(labels)) > 1
        assert all(0 <= y < max(spec.num_labels, spec.num_choices) for y in labels)


# ----------------------------------------------------------------------------- bad input


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_missing_file_names_the_file_and_the_layout(tmp_path):
    spec = TASKS["ocnli"]
    with pytest.raises(D.ClueDataError) as e:
        D.read_split(spec, str(tmp_path), "train")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "train.50k.json") in msg
    assert "dev.json" in msg and "test.json" in msg and "sentence1" in msg


def test_malformed_record_names_file_and_line(tmp_path):
    spec = TASKS["afqmc"]
    good = json.dumps({"sentence1": "a", "sentence2": "b", "label": "1"})
    _write(tmp_path / "train.json", [good, good, '{"sentence1": "a", "sentence2": '])
    with pytest.raises(D.ClueDataError, match=r"train\.json, line 3: not valid JSON"):
        D.read_split(spec, str(tmp_path), "train")
    _write(tmp_path / "train.json", [good, json.dumps({"sentence1": "a", "label": "0"})])
    with pytest.raises(D.ClueDataError, match=r"line 2: record has no field 'sentence2'"):
        D.read_split(spec, str(tmp_path), "train")


def test_unknown_label_is_an_error_and_dash_is_counted(tmp_path):
    rec = lambda y: json.dumps({"sentence1": "a", "sentence2": "b", "label": y})
    _write(tmp_path / "train.json", [rec("neutral"), rec("-"), rec("-"), rec("entailment")])
    out = D.read_split(TASKS["cmnli"], str(tmp_path), "train")
    assert [e.label for e in out.examples] == [1, 0] and out.skipped == 2
    _write(tmp_path / "train.json", [rec("neutral"), rec("maybe")])
    with pytest.raises(D.ClueDataError, match=r"line 2: label 'maybe' is not a cmnli label"):
        D.read_split(TASKS["cmnli"], str(tmp_path), "train")
    # afqmc has no "-" exemption
    _write(tmp_path / "train.json", [rec("-")])
    with pytest.raises(D.ClueDataError, match="not a afqmc label"):
        D.read_split(TASKS["afqmc"], str(tmp_path), "train")


def test_test_records_need_an_id(tmp_path):
    _write(tmp_path / "test.json", [json.dumps({"sentence": "x"})])
    with pytest.raises(D.ClueDataError, match=r"test\.json, line 1: record has no field 'id'"):
        D.read_test(TASKS["iflytek"], str(tmp_path), "test.json")


def test_chid_missing_answer_and_cluener_bad_type(tmp_path):
    spec = TASKS["chid"]
    _write(tmp_path / "train.json", [json.dumps({"candidates": list("abcdefghij"),
                                                 "content": ["x#idiom000001#y"]})])
    (tmp_path / "train_answer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(D.ClueDataError, match=r"train_answer\.json: no answer for blank "
                                              r"#idiom000001#"):
        D.read_split(spec, str(tmp_path), "train")
    bad = {"text": "abc", "label": {"animal": {"a": [[0, 0]]}}}
    _write(tmp_path / "train.json", [json.dumps(bad)])
    with pytest.raises(D.ClueDataError, match="label 'animal' is not a cluener label"):
        D.read_split(TASKS["cluener"], str(tmp_path), "train")


# ----------------------------------------------------------------------------- input construction


def test_wsc_markers_in_both_orders():
    text = "小明拿起了手机，后来他很开心。"
    t = {"span1_index": 0, "span1_text": "小明", "span2_index": 10, "span2_text": "他"}
    assert D.wsc_marked_text(text, t) == "_小明_拿起了手机，后来[他]很开心。"
    text = "他说小红来了"
    t = {"span1_index": 2, "span1_text": "小红", "span2_index": 0, "span2_text": "他"}
    assert D.wsc_marked_text(text, t) == "[他]说_小红_来了"
    with pytest.raises(D.ClueDataError, match="span1"):
        D.wsc_marked_text("abc", {"span1_index": 2, "span1_text": "xyz", "span2_index": 0,
                                  "span2_text": "a"})


def test_csl_and_pair_inputs_have_zero_segments():
    tok = CharTokenizer()
    ex = D.ClassificationExample(D.csl_first_text(["甲", "乙"]), "摘要", 1)
    assert ex.text_a == "甲；乙"
    f = F.classification_feature(tok, ex, 128)
    tokens = [tok.id_to_token(i) for i in f.rows[0]]
    assert tokens == tok.tokenize("甲；乙") + tok.tokenize("摘要")[1:]
    x, y = F.collate(TASKS["csl"], [f])
    assert not x["Input-Segment"].any() and y.tolist() == [1]


def test_c3_rows_padding_and_truncation():
    tok = CharTokenizer()
    assert D.c3_choices(["a", "b"]) == ["a", "b", "无效答案", "无效答案"]
    assert D.c3_choices(list("abcde")) == list("abcd")
    q = D.C3Question("p" * 20, "q" * 6, ["c" * 3, "dd", "无效答案", "无效答案"], 1)
    f = F.c3_feature(tok, q, 16)
    assert len(f.rows) == 4
    sep = tok.token_to_id("[SEP]")
    for row, choice in zip(f.rows, q.choices):
        assert len(row) == 16 and row.count(sep) == 3
        # the longest part (the passage) is the one that gave up tokens; the choice is whole
        tail = [tok.id_to_token(i) for i in row[-len(choice) - 1:-1]]
        assert "".join(tail) == choice.lower()
    # equal lengths: the choice (first in the order choice, question, passage) shrinks first
    assert F.truncate_longest(5, -2, [1, 2, 3], [4, 5, 6]) == [[1, 3], [4, 5, 6]]


def test_chid_trim_budget_and_rows():
    pieces = ["左" * 40, "中" * 10, "右" * 40]
    # blank 0: left = [左*40], right = [中*10, 右*40]; offset = 3 + 4 + 1 + 4 * 1 = 12
    left, right = D.chid_trim(pieces, 0, 64)
    assert sum(map(len, left)) + sum(map(len, right)) <= 64 - 12
    assert left[0] == "左" * len(left[0]) and right[0] == "中" * 10
    tok = CharTokenizer()
    blank = D.ChidBlank(0, "#idiom000000#", 3, pieces, 0, [f"成语{i}号" for i in range(10)])
    f = F.chid_feature(tok, blank, 64)
    assert len(f.rows) == 10 and f.label == 3
    row = [tok.id_to_token(i) for i in f.rows[0]]
    assert row[:6] == ["[CLS]", "成", "语", "0", "号", "[SEP]"]
    assert row.count("[unused1]") == 1 and row.count("[MASK]") == 4 and row[-1] == "[SEP]"
    assert len(row) <= 64
    # a piece reduced to one character is dropped with its blank: the offset shrinks by 4
    left, right = D.chid_trim(["ab", "c" * 80, "d"], 1, 30)
    assert left[0].startswith("c") or len(left) == 1
    assert sum(map(len, left)) + sum(map(len, right)) <= 30 - 8 - 4 * (len(left) + len(right) - 2)


def test_chid_sample_blanks_share_groups():
    spec = TASKS["chid"]
    dev = D.read_split(spec, os.path.join(SAMPLE, "chid"), "dev").examples
    groups = [b.group for b in dev]
    assert groups == sorted(groups) and len(set(groups)) < len(groups)
    assert all(D.IDIOM_PATTERN.fullmatch(b.key) for b in dev)


def test_cmrc_windows_and_labels():
    context = "前" * 300 + "答案在这里" + "后" * 100
    q = D.CmrcQuestion("q1", "问题是什么？", context, [("答案", 300)])
    ws = D.cmrc_windows(q, maxlen=128, stride=64)
    m = 128 - len("问题是什么？") - 3
    assert [len(w.context) for w in ws[:-1]] == [m] * (len(ws) - 1)
    assert all(w.context == D.normalize_text(context)[64 * k:64 * k + m] for k, w in enumerate(ws))
    assert 64 * (len(ws) - 1) + m >= len(context) > 64 * (len(ws) - 2) + m
    hits = [w for w in ws if w.start >= 0]
    assert hits and all(w.context[w.start:w.end] == "答案" for w in hits)
    tok = CharTokenizer()
    for w in ws:
        f = F.cmrc_feature(tok, w, 128)
        ids = f.rows[0]
        assert len(ids) <= 128 and len(f.mask) == len(ids)
        n_q = len(w.question) + 2
        assert f.mask[:n_q] == [1] + [0] * (n_q - 1) and f.mask[-1] == 0
        assert all(f.mask[n_q:-1])
        s, e = f.label
        if w.start >= 0:
            spans = f.key
            assert w.context[spans[s][0]:spans[e][1] + 1] == "答案"
        else:
            assert (s, e) == (0, 0)
    # normalisation: lower case and accents stripped; answers located on the normalised text
    assert D.normalize_text("Café ÀB") == "cafe ab"
    q = D.CmrcQuestion("q", "Q", "Élan vital", [("VITAL", 5)])
    (w,) = D.cmrc_windows(q, 64, 128)
    assert w.context[w.start:w.end] == "vital" and w.answer == "vital"


def test_cmrc_test_placeholder_stops_the_answer_loop():
    q = D.CmrcQuestion("q", "问", "文" * 10, [("", -1), ("x", 1)])
    ws = D.cmrc_windows(q, 64, 128)
    assert len(ws) == 1 and ws[0].start == -1


def test_ner_feature_cells_and_boundaries():
    tok = CharTokenizer()
    ex = D.NerExample("住在北京市，张伟说", [(2, 4, 0), (6, 7, 6)], {})
    f = F.ner_feature(tok, ex, 256)
    assert f.label == [(0, 3, 5), (6, 7, 8)] and f.extra["dropped"] == 0
    f = F.ner_feature(tok, ex, 6)  # [CLS] + 4 chars + [SEP]: the name falls outside
    assert f.label == [] and f.extra["dropped"] == 2
    x, y = F.collate(TASKS["cluener"], [F.ner_feature(tok, ex, 256)])
    assert y.shape == (1, 10, 11, 11) and y.sum() == 2 and y[0, 6, 7, 8] == 1


# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_entity_f1():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    m = metrics.EntityF1()
    gold = np.zeros((2, 3, 4, 4))
    pred = np.zeros((2, 3, 4, 4))
    gold[0, 1, 0, 2] = gold[1, 0, 1, 1] = gold[1, 2, 2, 3] = 1
    pred[0, 1, 0, 2] = pred[1, 2, 0, 0] = 1
    r = m.update(pred, gold).result()
    assert r["precision"] == pytest.approx(1 / 2) and r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(2 * 1 / (2 + 3))
    assert metrics.EntityF1().result()["f1"] == pytest.approx(1.0)  # 2e-10 / 2e-10


def test_cmrc_text_metrics():
    assert metrics.cmrc_exact_match("「白云」", ["白云"]) == 1.0
    assert metrics.cmrc_exact_match("白云山", ["白云", "云"]) == 0.0
    # pred 白云山 vs gold 白云: lcs 2, p 2/3, r 1 → f1 0.8
    assert metrics.cmrc_f1("白云山", ["白云"]) == pytest.approx(0.8)
    # English words count as one unit each
    assert metrics.cmrc_f1("the big apple", ["big apple pie"]) == pytest.approx(2 / 3)
    s = metrics.cmrc_scores({"a": "白云", "b": ""}, {"a": ["白云"], "b": ["x"]})
    assert s == {"em": 0.5, "f1": 0.5}


def _brute_force(cost):
    n, m = cost.shape
    best, arg = np.inf, None
    for perm in itertools.permutations(range(m), n):
        c = cost[np.arange(n), perm].sum()
        if c < best - 1e-12:
            best, arg = c, perm
    return best, np.array(arg)


def test_linear_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (2, 2), (3, 5), (4, 4), (5, 7), (2, 10), (6, 6)]:
        for _ in range(5):
            cost = rng.normal(size=(n, m))
            if rng.random() < 0.3:
                cost = np.round(cost)  # ties
            cols = metrics.linear_assignment(cost)
            assert len(set(cols.tolist())) == n
            assert cost[np.arange(n), cols].sum() == pytest.approx(_brute_force(cost)[0])


def test_linear_assignment_more_rows_than_columns_and_chid_groups():
    cost = np.array([[0.0, 5], [5, 0], [1, 2]])
    cols = metrics.linear_assignment(cost)
    assert cols.tolist() == [0, 1, 0]
    scores = np.array([[0.9, 0.8, 0.1], [0.95, 0.1, 0.1], [0.1, 0.2, 0.3]])
    # record 0 has blanks 0 and 1: both prefer candidate 0; the joint optimum gives 0 → 1, 1 → 0
    assert metrics.chid_assign(scores, [0, 0, 1]).tolist() == [1, 0, 2]


# ----------------------------------------------------------------------------- writers


def test_writers_exact_formats(tmp_path):
    p = writers.write_label_lines(str(tmp_path / "afqmc_predict.json"), [0, 7], ["1", "0"])
    expected = '{"id": "0", "label": "1"}\n{"id": "7", "label": "0"}\n'
    assert open(p, encoding="utf-8").read() == expected
    p = writers.write_json_object(str(tmp_path / "chid10_predict.json"),
                                  {"#idiom000001#": 3, "#idiom000002#": 0})
    assert open(p, encoding="utf-8").read() == \
        '{\n    "#idiom000001#": 3,\n    "#idiom000002#": 0\n}'
    p = writers.write_json_object(str(tmp_path / "cmrc2018_predict.json"), {"TEST_0": "白云"})
    assert '"TEST_0": "白云"' in open(p, encoding="utf-8").read()
    p = writers.write_cluener(str(tmp_path / "cluener_predict.json"),
                              [{"id": 0, "text": "张伟说张伟"}],
                              [[("name", 0, 1), ("name", 3, 4)]])
    line = json.loads(open(p, encoding="utf-8").read())
    assert line == {"id": 0, "text": "张伟说张伟", "label": {"name": {"张伟": [[0, 1], [3, 4]]}}}
    assert "张伟" in open(p, encoding="utf-8").read()  # non-ASCII kept
