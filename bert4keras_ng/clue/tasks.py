"""The eleven CLUE tasks as data: files, label sets, input kind and the published recipe.

Everything a runner needs to know about a task lives in one :class:`TaskSpec`; no other
module branches on task names except through the ``kind`` field.

Kinds:

``single``   one text → class (iflytek, tnews)
``pair``     two texts → class (afqmc, cmnli, ocnli)
``csl``      keywords joined by "；" + abstract → class
``wsc``      one text with the two spans marked → class
``c3``       passage + question + each of 4 choices → one score per row, softmax over 4
``chid``     idiom + passage with the target blank marked → one score per row, softmax over 10
``cmrc``     question + sliding context window → span (GlobalPointer, one head)
``ner``      text → typed spans (GlobalPointer, one head per type)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["TaskSpec", "TASKS", "get_task", "TASK_NAMES"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static description of one CLUE task.

    Attributes:
        name: task name used on the command line (``afqmc``, ``wsc``, ...).
        kind: input/head family, see the module docstring.
        train_files / dev_files: file names inside the task's data folder; several files are
            concatenated in the given order (c3: ``m-*`` then ``d-*``).
        test_files: ``(test file, submission file)`` pairs, predicted in this order.
        answer_files: chid only: question file → answer file.
        labels: label strings in class-index order (``None`` for span tasks).
        maxlen / batch_size / epochs / grad_accum: the published recipe.
        num_choices: rows per sample for multiple-choice tasks.
        skip_labels: train/dev labels that are dropped (and counted) instead of rejected.
        metric: name of the dev metric used to keep the best checkpoint.
        keep_on_equal: keep a new checkpoint when the metric ties the best (cluener recipe).
    """

    name: str
    kind: str
    train_files: tuple
    dev_files: tuple
    test_files: tuple
    labels: Optional[tuple] = None
    maxlen: int = 128
    batch_size: int = 32
    epochs: int = 10
    grad_accum: int = 1
    num_choices: int = 0
    answer_files: tuple = ()
    skip_labels: tuple = ()
    metric: str = "accuracy"
    keep_on_equal: bool = False
    stride: int = 128
    description: str = ""

    @property
    def num_labels(self):
        return len(self.labels) if self.labels is not None else 0

    def answer_file_for(self, question_file):
        for q, a in self.answer_files:
            if q == question_file:
                return a
        return None

    @property
    def all_files(self):
        """Every file the runner will open, in the order it opens them."""
        names = list(self.train_files) + list(self.dev_files)
        names += [a for _, a in self.answer_files]
        names += [t for t, _ in self.test_files]
        return tuple(dict.fromkeys(names))


TNEWS_CODES = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110",
               "112", "113", "114", "115", "116")
NLI_LABELS = ("entailment", "neutral", "contradiction")
CLUENER_TYPES = ("address", "book", "company", "game", "government", "movie", "name",
                 "organization", "position", "scene")

_SPECS = [
    TaskSpec("iflytek", "single", ("train.json",), ("dev.json",),
             (("test.json", "iflytek_predict.json"),),
             labels=tuple(str(i) for i in range(119)),
             description="app description → one of 119 app categories"),
    TaskSpec("tnews", "single", ("train.json",), ("dev.json",),
             (("test1.0.json", "tnews10_predict.json"), ("test.json", "tnews11_predict.json")),
             labels=TNEWS_CODES, description="news title → one of 15 categories"),
    TaskSpec("afqmc", "pair", ("train.json",), ("dev.json",),
             (("test.json", "afqmc_predict.json"),), labels=("0", "1"),
             description="do two questions mean the same? (0/1)"),
    TaskSpec("cmnli", "pair", ("train.json",), ("dev.json",),
             (("test.json", "cmnli_predict.json"),), labels=NLI_LABELS, skip_labels=("-",),
             description="natural language inference (translated MNLI)"),
    TaskSpec("ocnli", "pair", ("train.50k.json",), ("dev.json",),
             (("test.json", "ocnli_50k_predict.json"),), labels=NLI_LABELS, skip_labels=("-",),
             description="natural language inference (native Chinese)"),
    TaskSpec("csl", "csl", ("train.json",), ("dev.json",),
             (("test.json", "csl_predict.json"),), labels=("0", "1"),
             description="are all keywords genuine for this abstract? (0/1)"),
    TaskSpec("wsc", "wsc", ("train.json",), ("dev.json",),
             (("test1.0.json", "cluewsc10_predict.json"), ("test.json", "cluewsc11_predict.json")),
             labels=("false", "true"), epochs=30,
             description="does the pronoun refer to the marked noun phrase? (CLUEWSC2020)"),
    TaskSpec("c3", "c3", ("m-train.json", "d-train.json"), ("m-dev.json", "d-dev.json"),
             (("test1.0.json", "c310_predict.json"), ("test1.1.json", "c311_predict.json")),
             labels=("0", "1", "2", "3"), maxlen=512, batch_size=4, grad_accum=4, num_choices=4,
             description="multiple-choice reading comprehension (4 choices)"),
    TaskSpec("chid", "chid", ("train.json",), ("dev.json",),
             (("test1.0.json", "chid10_predict.json"), ("test1.1.json", "chid11_predict.json")),
             answer_files=(("train.json", "train_answer.json"), ("dev.json", "dev_answer.json")),
             maxlen=64, batch_size=12, epochs=5, grad_accum=2, num_choices=10,
             description="idiom cloze: pick one of 10 idioms per blank"),
    TaskSpec("cmrc2018", "cmrc", ("train.json",), ("dev.json",),
             (("test.json", "cmrc2018_predict.json"),),
             maxlen=512, batch_size=16, grad_accum=2, metric="span_accuracy",
             description="span-extraction reading comprehension"),
    TaskSpec("cluener", "ner", ("train.json",), ("dev.json",),
             (("test.json", "cluener_predict.json"),), labels=CLUENER_TYPES,
             maxlen=256, metric="f1", keep_on_equal=True,
             description="fine-grained named entity recognition (10 types)"),
]

TASKS = {spec.name: spec for spec in _SPECS}
TASK_NAMES = tuple(TASKS)


def get_task(name):
    """Return the :class:`TaskSpec` for ``name`` (case-insensitive); ValueError otherwise."""
    key = str(name).lower()
    if key == "cluewsc" or key == "cluewsc2020":
        key = "wsc"
    if key not in TASKS:
        raise ValueError(
            f"Unknown CLUE task {name!r}; expected one of: {', '.join(TASK_NAMES)}")
    return TASKS[key]
