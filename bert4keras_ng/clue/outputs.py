"""Run outputs that are complete or absent: atomic files and one staging folder per run.

A run writes everything (best weights, submissions, ``results.json``) into a hidden staging
folder inside ``--output``; only a finished run moves its files into place (``results.json``
last, so its presence marks a complete set) and removes the files an earlier run of the same
task left there that this run did not write again. An interrupted run keeps its staging folder
under a visible name and leaves the earlier run's files as they were; a failed run leaves
nothing. Every single file is written to a temporary name in the same folder and renamed, so
a full disk never leaves a truncated file under a real name.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
import uuid

from .data import ClueInputError

__all__ = ["atomic_open", "new_run_id", "check_output_folder", "RunOutputs"]

RESULTS = "results.json"
WEIGHTS = "best.weights.h5"


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8"):
    """Open a temporary file beside ``path``; on a clean exit it is synced and renamed to
    ``path``, on an error it is removed (``path`` keeps its old content)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def new_run_id():
    """``20261201-101500-3f9a2c``: the start time (UTC) and a random suffix."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def check_output_folder(path, flag="--output"):
    """``path`` must be a folder or not exist yet (a file there is an error, raised early)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ClueInputError(f"{flag} {path} is a file; give a folder for the results")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ClueInputError(f"{flag} {path}: {parent} is a file, not a folder")


class RunOutputs:
    """The output files of one run, staged in ``<folder>/.run-<run id>.partial``.

    ``managed`` names every file a run of this task may write; on :meth:`commit` those that
    this run did not write are stale and removed.
    """

    def __init__(self, folder, run_id, managed):
        check_output_folder(folder)
        self.folder, self.run_id = folder, run_id
        self.managed = tuple(dict.fromkeys(tuple(managed) + (WEIGHTS, RESULTS)))
        self.staging = os.path.join(folder, f".run-{run_id}.partial")
        os.makedirs(self.staging)

    def path(self, name):
        """Where to write ``name`` during the run (inside the staging folder)."""
        return os.path.join(self.staging, name)

    def staged(self):
        return sorted(n for n in os.listdir(self.staging) if not n.startswith("."))

    def commit(self):
        """Move the staged files into place, results.json last; returns (written, removed)."""
        written = self.staged()
        removed = []
        for name in self.managed:
            target = os.path.join(self.folder, name)
            if name not in written and os.path.isfile(target):
                os.remove(target)
                removed.append(name)
        for name in sorted(written, key=lambda n: n == RESULTS):
            os.replace(os.path.join(self.staging, name), os.path.join(self.folder, name))
        shutil.rmtree(self.staging, ignore_errors=True)
        return written, removed

    def keep_interrupted(self):
        """Rename the staging folder to ``interrupted-<run id>`` (if it holds anything);
        returns that folder or None."""
        if not os.path.isdir(self.staging):
            return None
        if not self.staged():
            shutil.rmtree(self.staging, ignore_errors=True)
            return None
        kept = os.path.join(self.folder, f"interrupted-{self.run_id}")
        os.replace(self.staging, kept)
        return kept

    def discard(self):
        shutil.rmtree(self.staging, ignore_errors=True)
