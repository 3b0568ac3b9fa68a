"""Token-level input construction per task kind, and batching.

The tokenizer is anything with the bert4keras Tokenizer interface: ``tokenize(text,
maxlen=None)`` (with ``[CLS]``/``[SEP]``), ``encode(first, second=None, maxlen=None)`` →
``(token_ids, segment_ids)``, ``tokens_to_ids``, ``token_to_id`` and ``rematch(text, tokens)``.
Segment ids are all zero for every task (the recipe replaces the pair segments by zeros).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from .data import (C3Question, ChidBlank, ClassificationExample, CmrcWindow, NerExample,
                   chid_trim, cmrc_windows)

__all__ = [
    "Feature", "truncate_longest", "build_features", "collate", "iter_batches", "bucketed_order",
    "feature_length",
    "classification_feature", "c3_feature", "chid_feature", "cmrc_feature", "ner_feature",
]


@dataclasses.dataclass
class Feature:
    """One training/prediction unit: a row, a group of rows (multiple choice) or a window."""

    rows: List[List[int]]               # token ids; one row, or num_choices rows
    label: object = None                # int, (start, end), or list of (type, start, end)
    mask: Optional[List[int]] = None    # cmrc: 1 at [CLS] and the context tokens
    group: object = None                # chid: record index; cmrc: question id
    key: object = None                  # chid: blank key; cmrc: window; ner: token mapping
    extra: dict = dataclasses.field(default_factory=dict)


def _ids(tokenizer, text):
    """Token ids of ``text`` with [CLS] and [SEP]."""
    return list(tokenizer.encode(text)[0])


def truncate_longest(maxlen, pop_index, *sequences):
    """Pop ``pop_index`` from the longest sequence (first one on ties) until the total fits."""
    sequences = [list(s) for s in sequences]
    while sum(len(s) for s in sequences) > maxlen:
        lengths = [len(s) for s in sequences]
        i = int(np.argmax(lengths))
        if lengths[i] <= 1:
            break
        sequences[i].pop(pop_index)
    return sequences


def classification_feature(tokenizer, ex: ClassificationExample, maxlen):
    ids, _ = tokenizer.encode(ex.text_a, ex.text_b, maxlen=maxlen)
    return Feature([list(ids)], ex.label)


def c3_feature(tokenizer, q: C3Question, maxlen):
    """Four rows ``[CLS] passage [SEP] question [SEP] choice [SEP]``."""
    p_ids = _ids(tokenizer, q.passage)
    q_ids = _ids(tokenizer, q.question)[1:]
    rows = []
    for choice in q.choices:
        c_ids = _ids(tokenizer, choice)[1:]
        c_ids, qq, pp = truncate_longest(maxlen, -2, c_ids, q_ids, p_ids)
        rows.append(pp + qq + c_ids)
    return Feature(rows, q.label, key=q.id)


def chid_feature(tokenizer, blank: ChidBlank, maxlen):
    """Ten rows ``[CLS] idiom [SEP] left … [unused1] … right [SEP]``."""
    mark = tokenizer.token_to_id("[unused1]")
    mask = tokenizer.token_to_id("[MASK]")
    unk = tokenizer.token_to_id("[UNK]")
    if mark == unk or mask == unk:
        raise ValueError("chid needs the tokens [unused1] and [MASK] in vocab.txt")
    left, right = chid_trim(blank.pieces, blank.index, maxlen)
    context = []
    for i, piece in enumerate(left):
        context += _ids(tokenizer, piece)[1:-1]
        if i != len(left) - 1:
            context += [mask] * 4
    context.append(mark)
    for i, piece in enumerate(right):
        context += _ids(tokenizer, piece)[1:-1]
        if i != len(right) - 1:
            context += [mask] * 4
    context.append(_ids(tokenizer, "")[-1])  # [SEP]
    rows = [_ids(tokenizer, c) + context for c in blank.candidates]
    return Feature(rows, blank.label, group=blank.group, key=blank.key)


def _tokens_with_offsets(tokenizer, text, base):
    """Context tokens of ``text`` (no specials) and their inclusive char spans shifted by base."""
    tokens = tokenizer.tokenize(text)[1:-1]
    mapping = tokenizer.rematch(text, tokens)
    spans = [(m[0] + base, m[-1] + base) if len(m) else None for m in mapping]
    return list(tokenizer.tokens_to_ids(tokens)), spans


def cmrc_feature(tokenizer, w: CmrcWindow, maxlen):
    """``[CLS] question [SEP] context [SEP]`` with a position mask and a (start, end) label.

    The mask is 1 at [CLS] and at every context token. Answer windows tokenize the context in
    three parts (before, answer, after) so that the answer starts and ends on token boundaries;
    "no answer" windows are labelled (0, 0). ``key`` keeps the inclusive character span of
    every token in the window text (None for special tokens).
    """
    q_ids = _ids(tokenizer, w.question)
    sep = q_ids[-1]
    spans = [None] * len(q_ids)
    label = (0, 0)
    if w.start < 0:
        ids, sp = _tokens_with_offsets(tokenizer, w.context, 0)
        c_ids, spans_c = ids, sp
    else:
        l_ids, l_sp = _tokens_with_offsets(tokenizer, w.context[:w.start], 0)
        a_ids, a_sp = _tokens_with_offsets(tokenizer, w.context[w.start:w.end], w.start)
        r_ids, r_sp = _tokens_with_offsets(tokenizer, w.context[w.end:], w.end)
        c_ids, spans_c = l_ids + a_ids + r_ids, l_sp + a_sp + r_sp
        if a_ids:
            start = len(q_ids) + len(l_ids)
            label = (start, start + len(a_ids) - 1)
    room = maxlen - len(q_ids) - 1
    if len(c_ids) > room:  # only when tokens outnumber characters budgeted by the window
        c_ids, spans_c = c_ids[:max(room, 0)], spans_c[:max(room, 0)]
        if label[1] >= len(q_ids) + len(c_ids):
            label = (0, 0)
    ids = q_ids + c_ids + [sep]
    spans = spans + spans_c + [None]
    mask = [1] + [0] * (len(q_ids) - 1) + [1] * len(c_ids) + [0]
    return Feature([ids], label, mask=mask, group=w.qid, key=spans,
                   extra={"context": w.context})


def ner_feature(tokenizer, ex: NerExample, maxlen, spec=None):
    """Token ids plus the gold (type, start token, end token) cells.

    Entities whose first or last character is not a token boundary are dropped, as in the
    recipe (the number dropped is kept in ``extra['dropped']``).
    """
    tokens = tokenizer.tokenize(ex.text, maxlen=maxlen)
    mapping = tokenizer.rematch(ex.text, tokens)
    starts = {m[0]: i for i, m in enumerate(mapping) if len(m)}
    ends = {m[-1]: i for i, m in enumerate(mapping) if len(m)}
    cells, dropped = [], 0
    for s, e, t in ex.entities:
        if s in starts and e in ends:
            cells.append((t, starts[s], ends[e]))
        else:
            dropped += 1
    spans = [(m[0], m[-1]) if len(m) else None for m in mapping]
    return Feature([list(tokenizer.tokens_to_ids(tokens))], cells, key=spans,
                   extra={"dropped": dropped})


def build_features(spec, tokenizer, examples, maxlen=None, stride=None):
    """Features for a list of examples of ``spec``'s kind (cmrc: one per window)."""
    maxlen = maxlen or spec.maxlen
    kind = spec.kind
    if kind in ("single", "pair", "csl", "wsc"):
        return [classification_feature(tokenizer, ex, maxlen) for ex in examples]
    if kind == "c3":
        return [c3_feature(tokenizer, ex, maxlen) for ex in examples]
    if kind == "chid":
        return [chid_feature(tokenizer, ex, maxlen) for ex in examples]
    if kind == "cmrc":
        stride = stride or spec.stride
        feats = []
        for q in examples:
            for w in cmrc_windows(q, maxlen, stride):
                feats.append(cmrc_feature(tokenizer, w, maxlen))
        return feats
    if kind == "ner":
        return [ner_feature(tokenizer, ex, maxlen) for ex in examples]
    raise ValueError(f"unknown task kind {kind!r}")


def _pad(rows, length):
    out = np.zeros((len(rows), length), dtype="int32")
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def collate(spec, features, pad_multiple=1, num_types=None):
    """Stack features into model inputs ``x`` (dict) and targets ``y``.

    Rows are padded with 0 to the longest row, rounded up to ``pad_multiple`` (fewer distinct
    shapes, which helps XLA).
    """
    rows = [r for f in features for r in f.rows]
    n = max(len(r) for r in rows)
    if pad_multiple > 1:
        n = -(-n // pad_multiple) * pad_multiple
    token_ids = _pad(rows, n)
    x = {"Input-Token": token_ids, "Input-Segment": np.zeros_like(token_ids)}
    kind = spec.kind
    if kind in ("single", "pair", "csl", "wsc", "c3", "chid"):
        y = np.array([f.label if f.label is not None else 0 for f in features], dtype="int32")
    elif kind == "cmrc":
        x["Input-Mask"] = _pad([f.mask for f in features], n)
        y = np.array([f.label for f in features], dtype="int32").reshape(-1, 2)
    elif kind == "ner":
        num_types = num_types or spec.num_labels
        y = np.zeros((len(features), num_types, n, n), dtype="float32")
        for i, f in enumerate(features):
            for t, s, e in f.label or ():
                y[i, t, s, e] = 1.0
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    return x, y


def bucketed_order(lengths, batch_size, rng=None, pool_batches=50):
    """Random-bucket batch order: lists of indices, each batch of similar lengths.

    The indices are shuffled, cut into pools of ``pool_batches * batch_size``, each pool sorted by
    length (ties in shuffled order) and cut into batches, and the batches of all pools shuffled
    again: each batch is a random draw of neighbours in length, the batch order random, and
    every index appears exactly once.  Padding shrinks to about the spread within a pool's batch.
    """
    if not isinstance(pool_batches, int) or pool_batches < 1:
        raise ValueError(f"pool_batches must be a positive integer, got {pool_batches!r}.")
    rng = rng or np.random
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    rng.shuffle(order)
    pool = pool_batches * batch_size
    batches = []
    for lo in range(0, len(order), pool):
        chunk = order[lo:lo + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = np.arange(len(batches))
    rng.shuffle(perm)
    return [batches[i] for i in perm]


def feature_length(feature):
    """Padded length a feature needs: its longest row."""
    return max(len(r) for r in feature.rows)


def iter_batches(spec, features, batch_size, shuffle=False, rng=None, pad_multiple=1,
                 bucket=False):
    """Yield ``(x, y, indices)`` batches; every feature appears exactly once per pass.

    ``bucket=True`` (with ``shuffle``) batches features of similar length together in a random
    order (:func:`bucketed_order`), so short texts are not padded to a long neighbour's length.
    """
    if bucket and shuffle:
        batches = bucketed_order([feature_length(f) for f in features], batch_size, rng)
    else:
        order = np.arange(len(features))
        if shuffle:
            (rng or np.random).shuffle(order)
        batches = [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]
    for idx in batches:
        x, y = collate(spec, [features[i] for i in idx], pad_multiple)
        yield x, y, idx
