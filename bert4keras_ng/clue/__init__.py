"""CLUE fine-tuning: the 11 tasks of the CLUE benchmark with the CLUE-bert4keras recipe.

Modules:

* :mod:`.tasks` — the tasks as data (files, label sets, recipe settings, submission names);
* :mod:`.data` — readers with errors naming file and line, character-level preparation;
* :mod:`.features` — token ids per task kind and batching;
* :mod:`.model` — heads (classifier, choice score, GlobalPointer) and their losses;
* :mod:`.metrics` — accuracy, entity F1, CMRC2018 EM/F1, Hungarian assignment;
* :mod:`.writers` — submission files;
* :mod:`.outputs` — atomic files and the per-run staging folder (complete outputs or none);
* :mod:`.optim` — the recipe's AdaFactor and the other optimiser choices;
* :mod:`.tiny` — a tiny random checkpoint in the TF1 release layout;
* :mod:`.make_sample_data` — the generator of ``sample_data/``;
* :mod:`.runner` — ``run(RunConfig(...))`` and the command line of ``examples/clue.py``.
"""

from .data import ClueDataError, ClueInputError
from .tasks import TASK_NAMES, TASKS, TaskSpec, get_task

__all__ = ["ClueDataError", "ClueInputError", "TASK_NAMES", "TASKS", "TaskSpec", "get_task"]
