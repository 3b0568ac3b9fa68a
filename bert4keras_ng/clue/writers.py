"""Submission files in the exact formats the CLUE leaderboard expects.

Each file is written to a temporary name beside ``path`` and renamed into place, so an
interrupted or failed write never leaves a truncated submission.
"""

from __future__ import annotations

import json

from .outputs import atomic_open

__all__ = ["write_label_lines", "write_json_object", "write_cluener"]


def write_label_lines(path, ids, labels):
    """JSON Lines ``{"id": "<id>", "label": "<label>"}``, one per test record, in file order.

    Used by the classification tasks and c3 (label = choice index as a string).
    """
    ids, labels = list(ids), list(labels)
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    with atomic_open(path) as f:
        for i, label in zip(ids, labels):
            f.write(json.dumps({"id": str(i), "label": str(label)}) + "\n")
    return path


def write_json_object(path, mapping):
    """One JSON object, indented by 4, non-ASCII kept (chid: blank → index; cmrc: id → text)."""
    with atomic_open(path) as f:
        json.dump(mapping, f, ensure_ascii=False, indent=4)
    return path


def write_cluener(path, records, entities):
    """JSON Lines: each test record with ``label`` rebuilt as {type: {text: [[start, end]]}}.

    ``entities[i]`` is a list of (type name, start char, end char inclusive) for record i.
    """
    records, entities = list(records), list(entities)
    if len(records) != len(entities):
        raise ValueError(f"{len(records)} records but {len(entities)} entity lists")
    with atomic_open(path) as f:
        for record, ents in zip(records, entities):
            out = dict(record)
            label = {}
            for etype, start, end in ents:
                text = record["text"][start:end + 1]
                spans = label.setdefault(etype, {}).setdefault(text, [])
                if [start, end] not in spans:
                    spans.append([start, end])
            out["label"] = label
            f.write(json.dumps(out, ensure_ascii=False) + "\n")
    return path
