"""Reading CLUE files exactly as distributed, with errors that name the file and line.

Readers return plain example objects; turning them into token ids is :mod:`.features`.
Text-level preparation that the recipe defines on characters (the CLUEWSC span markers, the
CSL keyword join, the C3 passage join and choice padding, the ChID blank split and trimming,
the CMRC2018 normalisation and sliding windows) also lives here, because it does not depend
on the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import unicodedata
from typing import List, Optional

from .tasks import TaskSpec

__all__ = [
    "ClueInputError", "ClueDataError", "ClassificationExample", "C3Question", "ChidBlank",
    "CmrcQuestion", "CmrcWindow", "NerExample", "SplitData", "expected_layout", "require_file",
    "read_split", "read_test", "find_test_files", "example_id", "wsc_marked_text",
    "csl_first_text", "c3_choices", "chid_trim", "normalize_text", "cmrc_windows",
    "IDIOM_PATTERN", "C3_PAD_CHOICE",
]

IDIOM_PATTERN = re.compile(r"#idiom\d{6}#")
C3_PAD_CHOICE = "无效答案"
CSL_KEYWORD_SEPARATOR = "；"


class ClueInputError(ValueError):
    """Bad input to a CLUE run (a flag, a file, a vocabulary): one line, no traceback."""


class ClueDataError(ClueInputError):
    """A CLUE data file is missing or holds a record the task cannot use."""


# --------------------------------------------------------------------------------------
# example containers


@dataclasses.dataclass
class ClassificationExample:
    text_a: str
    text_b: Optional[str]
    label: Optional[int]
    id: Optional[str] = None
    source: str = ""


@dataclasses.dataclass
class C3Question:
    passage: str
    question: str
    choices: List[str]          # always 4 after padding / cutting
    label: Optional[int]
    id: Optional[str] = None
    source: str = ""


@dataclasses.dataclass
class ChidBlank:
    group: int                  # line index of the record: blanks of one record share candidates
    key: str                    # "#idiomNNNNNN#"
    label: Optional[int]
    pieces: List[str]           # the passage split at its blanks
    index: int                  # which blank: between pieces[index] and pieces[index + 1]
    candidates: List[str]
    source: str = ""


@dataclasses.dataclass
class CmrcQuestion:
    id: str
    question: str
    context: str
    answers: List[tuple]        # (text, answer_start); test files: [("", -1)]
    source: str = ""


@dataclasses.dataclass
class CmrcWindow:
    qid: str
    question: str               # normalised
    context: str                # normalised window text
    answer: str                 # normalised answer, "" when the window holds no answer
    start: int                  # character offsets inside the window, -1 when no answer
    end: int                    # exclusive


@dataclasses.dataclass
class NerExample:
    text: str
    entities: List[tuple]       # (start char, end char inclusive, type index)
    record: dict
    source: str = ""


@dataclasses.dataclass
class SplitData:
    examples: list
    skipped: int = 0            # records dropped on purpose (cmnli / ocnli label "-")
    files: tuple = ()


# --------------------------------------------------------------------------------------
# files


_FORMATS = {
    "single": 'JSON Lines; train/dev records {"sentence": ..., "label": "<label>"}, test records '
              '{"id": ..., "sentence": ...}',
    "pair": 'JSON Lines; train/dev records {"sentence1": ..., "sentence2": ..., "label": ...}, '
            'test records {"id": ..., "sentence1": ..., "sentence2": ...}',
    "csl": 'JSON Lines; records {"abst": ..., "keyword": [...], "label": "0"|"1"} (test: "id", '
           'no label)',
    "wsc": 'JSON Lines; records {"text": ..., "target": {"span1_index", "span1_text", '
           '"span2_index", "span2_text"}, "label": "true"|"false"} (test: "id", no label)',
    "c3": 'one JSON list per file of documents [[passage, ...], [{"question", "choice": [...], '
          '"answer", "id"}, ...], document id]',
    "chid": 'question files: JSON Lines {"candidates": [10 idioms], "content": [passages with '
            '#idiomNNNNNN# blanks]}; answer files: one JSON object {"#idiomNNNNNN#": index}',
    "cmrc": 'SQuAD v1 JSON {"data": [{"paragraphs": [{"context", "qas": [{"id", "question", '
            '"answers": [{"text", "answer_start"}]}]}]}]}',
    "ner": 'JSON Lines; records {"text": ..., "label": {type: {entity: [[start, end], ...]}}} '
           '(test: "id" and "text")',
}


def expected_layout(spec: TaskSpec) -> str:
    """A human description of the folder a task expects (used in error messages)."""
    files = ", ".join(spec.all_files)
    return (f"--data-dir must be the folder of the {spec.name} task as unzipped from the CLUE "
            f"download, holding: {files}. Format: {_FORMATS[spec.kind]}.")


def require_file(spec: TaskSpec, data_dir: str, name: str) -> str:
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise ClueDataError(f"{spec.name}: missing data file {path}. {expected_layout(spec)}")
    return path


def _not_utf8(path, data, error, line=None):
    line = data[:error.start].count(b"\n") + 1 if line is None else line
    return ClueDataError(
        f"{path}, line {line}: not UTF-8 (byte 0x{data[error.start]:02x}: {error.reason}); the "
        "CLUE files are UTF-8 — convert the file (e.g. iconv -f GBK -t UTF-8)")


def _iter_json_lines(path):
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, raw, e, lineno) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ClueDataError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ClueDataError(f"{path}, line {lineno}: expected a JSON object, got "
                                    f"{type(record).__name__}")
            yield lineno, record


def _load_json(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None
    if not text.strip():
        raise ClueDataError(f"{path}: the file is empty (expected one JSON document)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ClueDataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def _field(record, name, where, kind=str):
    if name not in record:
        raise ClueDataError(f"{where}: record has no field {name!r} (fields: "
                            f"{', '.join(map(repr, record)) or 'none'})")
    value = record[name]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind):
        raise ClueDataError(f"{where}: field {name!r} should be {kind.__name__}, got "
                            f"{type(value).__name__}")
    return value


def _label_index(spec, label, where):
    label = str(label)
    if label not in spec.labels:
        shown = ", ".join(spec.labels[:20]) + (", ..." if len(spec.labels) > 20 else "")
        raise ClueDataError(f"{where}: label {label!r} is not a {spec.name} label "
                            f"(expected one of: {shown})")
    return spec.labels.index(label)


# --------------------------------------------------------------------------------------
# text-level preparation


def wsc_marked_text(text, target, where=""):
    """Wrap span1 as ``_span1_`` and span2 as ``[span2]``, located by index and length."""
    try:
        s1, t1 = int(target["span1_index"]), str(target["span1_text"])
        s2, t2 = int(target["span2_index"]), str(target["span2_text"])
    except (KeyError, TypeError, ValueError):
        raise ClueDataError(f"{where}: 'target' must hold span1_index, span1_text, span2_index "
                            f"and span2_text") from None
    e1, e2 = s1 + len(t1), s2 + len(t2)
    for s, e, n in ((s1, e1, 1), (s2, e2, 2)):
        if not 0 <= s <= e <= len(text):
            raise ClueDataError(f"{where}: span{n} [{s}, {e}) lies outside the text "
                                f"(length {len(text)})")
    if s1 < s2:
        return (text[:s1] + "_" + text[s1:e1] + "_" + text[e1:s2] + "[" + text[s2:e2] + "]"
                + text[e2:])
    return (text[:s2] + "[" + text[s2:e2] + "]" + text[e2:s1] + "_" + text[s1:e1] + "_"
            + text[e1:])


def csl_first_text(keywords):
    return CSL_KEYWORD_SEPARATOR.join(keywords)


def c3_choices(choices, num_choices=4):
    """Pad with "无效答案" and cut to ``num_choices``."""
    choices = list(choices)
    choices = choices + [C3_PAD_CHOICE] * max(0, num_choices - len(choices))
    return choices[:num_choices]


def chid_trim(pieces, index, maxlen):
    """Character budget of one ChID sample (left pieces, right pieces) for blank ``index``.

    The left side is ``pieces[:index + 1]``, the right side ``pieces[index + 1:]``. The budget
    is ``maxlen - offset`` characters with offset = 3 special tokens + 4 idiom characters + 1
    target marker + 4 per other blank; the far end of the longer side (ties: the right side)
    loses one character at a time, and an outermost piece reduced to one character is dropped
    together with the blank beside it.
    """
    left, right = list(pieces[:index + 1]), list(pieces[index + 1:])
    offset = 3 + 4 + 1 + 4 * (len(left) + len(right) - 2)
    while True:
        n_left = sum(len(t) for t in left)
        n_right = sum(len(t) for t in right)
        if n_left + n_right <= maxlen - offset or not (left or right):
            return left, right
        if n_left > n_right:
            if len(left[0]) > 1:
                left[0] = left[0][1:]
            else:
                left = left[1:]
                offset -= 4
        else:
            if len(right[-1]) > 1:
                right[-1] = right[-1][:-1]
            else:
                right = right[:-1]
                offset -= 4


def normalize_text(text):
    """Lower-case and strip accents (NFD, combining marks removed), as the recipe does."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def cmrc_windows(question: CmrcQuestion, maxlen=512, stride=128):
    """Sliding windows of one question (one set per listed answer).

    Window k covers context characters [stride·k, stride·k + m) with m = maxlen − len(q) − 3;
    windows continue until one reaches the end of the context. A window containing the whole
    answer keeps its offsets, every other window is a "no answer" window. The loop over the
    answers stops after an answer with answer_start −1 (the test-file placeholder).
    """
    q = normalize_text(question.question)
    c = normalize_text(question.context)
    m = maxlen - len(q) - 3
    if m < 1:  # absurdly long question: keep its head so that one context character fits
        q = q[:max(0, maxlen - 4)]
        m = maxlen - len(q) - 3
    windows = []
    for text, start in question.answers:
        a = normalize_text(text)
        if start >= 0:
            # offsets refer to the raw context; re-measure them on the normalised text
            s = len(normalize_text(question.context[:start]))
        else:
            s = -1
        e = s + len(a)
        k = 0
        while True:
            lo, hi = k * stride, k * stride + m
            if s >= 0 and lo <= s < e <= hi:
                windows.append(CmrcWindow(question.id, q, c[lo:hi], a, s - lo, e - lo))
            else:
                windows.append(CmrcWindow(question.id, q, c[lo:hi], "", -1, -1))
            if hi >= len(c):
                break
            k += 1
        if start == -1:
            break
    return windows


# --------------------------------------------------------------------------------------
# per-kind readers


def _read_classification(spec, path, labelled):
    examples, skipped = [], 0
    for lineno, r in _iter_json_lines(path):
        where = f"{path}, line {lineno}"
        if spec.kind == "single":
            a, b = _field(r, "sentence", where), None
        elif spec.kind == "pair":
            a, b = _field(r, "sentence1", where), _field(r, "sentence2", where)
        elif spec.kind == "csl":
            keywords = _field(r, "keyword", where, list)
            if not all(isinstance(k, str) for k in keywords):
                raise ClueDataError(f"{where}: 'keyword' must be a list of strings")
            a, b = csl_first_text(keywords), _field(r, "abst", where)
        elif spec.kind == "wsc":
            text = _field(r, "text", where)
            target = _field(r, "target", where, dict)
            a, b = wsc_marked_text(text, target, where), None
        else:  # pragma: no cover - guarded by the caller
            raise AssertionError(spec.kind)
        if labelled:
            label = str(_field(r, "label", where))
            if label in spec.skip_labels:
                skipped += 1
                continue
            label = _label_index(spec, label, where)
            rid = str(r["id"]) if "id" in r else None
        else:
            label = None
            rid = str(_field(r, "id", where))
        examples.append(ClassificationExample(a, b, label, rid, where))
    return examples, skipped


def _read_c3(spec, path, labelled):
    data = _load_json(path)
    if not isinstance(data, list):
        raise ClueDataError(f"{path}: expected a JSON list of documents, got "
                            f"{type(data).__name__}")
    examples = []
    for d, doc in enumerate(data):
        where = f"{path}, document {d}"
        if not (isinstance(doc, list) and len(doc) >= 2 and isinstance(doc[0], list)
                and isinstance(doc[1], list)):
            raise ClueDataError(f"{where}: expected [[passage, ...], [question, ...], id]")
        passage = "||".join(str(p) for p in doc[0])
        for k, q in enumerate(doc[1]):
            qwhere = f"{where}, question {k}"
            if not isinstance(q, dict):
                raise ClueDataError(f"{qwhere}: expected a JSON object")
            question = _field(q, "question", qwhere)
            raw = _field(q, "choice", qwhere, list)
            if not raw:
                raise ClueDataError(f"{qwhere}: 'choice' is empty")
            choices = c3_choices([str(c) for c in raw], spec.num_choices)
            if labelled:
                answer = _field(q, "answer", qwhere)
                if answer not in choices:
                    raise ClueDataError(f"{qwhere}: answer {answer!r} is not among the first "
                                        f"{spec.num_choices} choices {raw!r}")
                label = choices.index(answer)
                qid = str(q["id"]) if "id" in q else None
            else:
                label, qid = None, str(_field(q, "id", qwhere))
            examples.append(C3Question(passage, question, choices, label, qid, qwhere))
    return examples, 0


def _read_chid(spec, path, answer_path):
    answers = None
    if answer_path is not None:
        answers = _load_json(answer_path)
        if not isinstance(answers, dict):
            raise ClueDataError(f"{answer_path}: expected one JSON object "
                                f'{{"#idiomNNNNNN#": index, ...}}')
    examples = []
    for group, (lineno, r) in enumerate(_iter_json_lines(path)):
        where = f"{path}, line {lineno}"
        candidates = _field(r, "candidates", where, list)
        if len(candidates) != spec.num_choices:
            raise ClueDataError(f"{where}: expected {spec.num_choices} candidates, got "
                                f"{len(candidates)}")
        content = _field(r, "content", where, list)
        for passage in content:
            if not isinstance(passage, str):
                raise ClueDataError(f"{where}: 'content' must be a list of strings")
            pieces = IDIOM_PATTERN.split(passage)
            keys = IDIOM_PATTERN.findall(passage)
            for i, key in enumerate(keys):
                if answers is None:
                    label = None
                else:
                    if key not in answers:
                        raise ClueDataError(f"{answer_path}: no answer for blank {key} "
                                            f"(used in {where})")
                    label = answers[key]
                    if (not isinstance(label, int) or isinstance(label, bool)
                            or not 0 <= label < spec.num_choices):
                        raise ClueDataError(f"{answer_path}: answer for {key} must be an "
                                            f"integer 0–{spec.num_choices - 1}, got {label!r}")
                examples.append(ChidBlank(group, key, label, pieces, i, list(candidates), where))
    return examples, 0


def _read_cmrc(spec, path, labelled):
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ClueDataError(f"{path}: expected a SQuAD-style object with a 'data' list")
    examples = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict)
                                 else []):
            where = f"{path}, data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict):
                raise ClueDataError(f"{where}: expected a JSON object")
            context = _field(para, "context", where)
            for k, qa in enumerate(_field(para, "qas", where, list)):
                qwhere = f"{where}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise ClueDataError(f"{qwhere}: expected a JSON object")
                qid = _field(qa, "id", qwhere)
                question = _field(qa, "question", qwhere)
                answers = []
                for j, ans in enumerate(qa.get("answers") or []):
                    awhere = f"{qwhere}.answers[{j}]"
                    if not isinstance(ans, dict):
                        raise ClueDataError(f"{awhere}: expected a JSON object")
                    text = _field(ans, "text", awhere)
                    start = _field(ans, "answer_start", awhere, int)
                    if labelled and start >= 0 and context[start:start + len(text)] != text:
                        raise ClueDataError(
                            f"{awhere}: answer_start {start} does not point at the answer: the "
                            f"context there reads {context[start:start + len(text)]!r}, the "
                            f"answer text is {text!r}")
                    answers.append((text, start))
                if not answers:
                    if labelled:
                        raise ClueDataError(f"{qwhere}: question has no answers")
                    answers = [("", -1)]
                examples.append(CmrcQuestion(qid, question, context, answers, qwhere))
    return examples, 0


def _read_ner(spec, path, labelled):
    examples = []
    for lineno, r in _iter_json_lines(path):
        where = f"{path}, line {lineno}"
        text = _field(r, "text", where)
        entities = []
        if labelled:
            label = _field(r, "label", where, dict) if "label" in r else {}
            for etype, spans in label.items():
                t = _label_index(spec, etype, where)
                if not isinstance(spans, dict):
                    raise ClueDataError(f"{where}: label[{etype!r}] must map entity text to "
                                        f"[[start, end], ...]")
                for entity, offsets in spans.items():
                    for pair in offsets:
                        if (not isinstance(pair, list) or len(pair) != 2
                                or not all(isinstance(x, int) for x in pair)
                                or not 0 <= pair[0] <= pair[1] < len(text)):
                            raise ClueDataError(
                                f"{where}: entity {entity!r} has bad offsets {pair!r} (expected "
                                f"[start, end] inclusive inside a text of length {len(text)})")
                        if text[pair[0]:pair[1] + 1] != entity:
                            raise ClueDataError(
                                f"{where}: {etype} entity {entity!r} at {pair!r} does not match "
                                f"its text: characters {pair[0]}–{pair[1]} read "
                                f"{text[pair[0]:pair[1] + 1]!r}")
                        entities.append((pair[0], pair[1], t))
        else:
            _field(r, "id", where)
        examples.append(NerExample(text, entities, r, where))
    return examples, 0


_READERS = {"single": _read_classification, "pair": _read_classification,
            "csl": _read_classification, "wsc": _read_classification, "c3": _read_c3,
            "cmrc": _read_cmrc, "ner": _read_ner}


def _read_file(spec, data_dir, name, labelled):
    path = require_file(spec, data_dir, name)
    if spec.kind == "chid":
        answer_name = spec.answer_file_for(name) if labelled else None
        if labelled and answer_name is None:  # pragma: no cover - spec error
            raise AssertionError(name)
        answer_path = require_file(spec, data_dir, answer_name) if answer_name else None
        return _read_chid(spec, path, answer_path)
    return _READERS[spec.kind](spec, path, labelled)


def read_split(spec: TaskSpec, data_dir: str, split: str) -> SplitData:
    """Read the ``train`` or ``dev`` split (all its files, concatenated in order)."""
    names = {"train": spec.train_files, "dev": spec.dev_files}[split]
    examples, skipped = [], 0
    for name in names:
        ex, sk = _read_file(spec, data_dir, name, labelled=True)
        examples.extend(ex)
        skipped += sk
    if not examples:
        raise ClueDataError(f"{spec.name}: the {split} split ({', '.join(names)} in {data_dir}) "
                            f"holds no usable records")
    return SplitData(examples, skipped, names)


def example_id(spec: TaskSpec, example):
    """The id a submission line carries for ``example`` (chid: the blank)."""
    if spec.kind == "chid":
        return example.key
    if spec.kind == "ner":
        return str(example.record.get("id"))
    return example.id


def read_test(spec: TaskSpec, data_dir: str, name: str) -> SplitData:
    """Read one unlabelled test file (labels, if present, are ignored).

    An empty file and an id used twice are errors: the submission would be empty or ambiguous.
    """
    ex, _ = _read_file(spec, data_dir, name, labelled=False)
    path = os.path.join(data_dir, name)
    if not ex:
        raise ClueDataError(f"{path}: the test file holds no records. {expected_layout(spec)}")
    seen = {}
    for e in ex:
        key = example_id(spec, e)
        where = getattr(e, "source", "")
        if key in seen:
            raise ClueDataError(f"{where or path}: test id {key!r} is used twice (first in "
                                f"{seen[key]}); every test record needs its own id")
        seen[key] = where or path
    return SplitData(ex, 0, (name,))


# The CLUE 1.1 test file of a task with two test sets ships as test.json or test1.1.json.
_TEST_ALIASES = {"test.json": "test1.1.json", "test1.1.json": "test.json"}


def find_test_files(spec: TaskSpec, data_dir: str):
    """``(present, skipped)``: the test files found, as ``(file name, submission)`` pairs, and
    ``{submission: reason}`` for those missing. A partial download predicts what it has; no
    test file at all is an error."""
    present, skipped = [], {}
    for name, submission in spec.test_files:
        candidates = [name]
        if len(spec.test_files) > 1 and name in _TEST_ALIASES:
            candidates.append(_TEST_ALIASES[name])
        found = next((c for c in candidates if os.path.isfile(os.path.join(data_dir, c))), None)
        if found is None:
            skipped[submission] = f"{' or '.join(candidates)} not in {data_dir}"
        else:
            present.append((found, submission))
    if not present:
        names = ", ".join(n for n, _ in spec.test_files)
        raise ClueDataError(f"{spec.name}: no test file in {data_dir} (expected {names}). "
                            f"{expected_layout(spec)}")
    return present, skipped
