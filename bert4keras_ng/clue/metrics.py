"""Dev metrics of the CLUE recipe, and the linear assignment used by ChID.

* accuracy for classification and multiple choice;
* entity F1 with the recipe's running sums X = Σ pred·gold, Y = Σ pred, Z = Σ gold;
* CMRC2018 window accuracy (the recipe's selection metric) plus exact match / F1 on answer
  text in the style of the official CMRC2018 evaluation (CJK characters count one by one,
  other runs of characters count as words, punctuation ignored, F1 from the longest common
  subsequence, best over the reference answers);
* ``linear_assignment``: the Hungarian algorithm on a rectangular cost matrix.
"""

from __future__ import annotations

import string
import unicodedata

import numpy as np

__all__ = ["accuracy", "EntityF1", "cmrc_exact_match", "cmrc_f1", "cmrc_scores",
           "linear_assignment", "chid_assign"]


def accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch {y_true.shape} vs {y_pred.shape}")
    if y_true.size == 0:
        return 0.0
    return float(np.mean(y_true == y_pred))


class EntityF1:
    """Running X, Y, Z sums (each started at 1e-10) → f1 = 2X/(Y+Z), precision X/Y, recall X/Z."""

    def __init__(self):
        self.x = self.y = self.z = 1e-10

    def update(self, pred, gold):
        """``pred``/``gold``: 0/1 arrays of the same shape, or sets of hashable entities."""
        if isinstance(pred, (set, frozenset)) or isinstance(gold, (set, frozenset)):
            pred, gold = set(pred), set(gold)
            self.x += len(pred & gold)
            self.y += len(pred)
            self.z += len(gold)
        else:
            pred = np.asarray(pred, dtype="float64")
            gold = np.asarray(gold, dtype="float64")
            self.x += float((pred * gold).sum())
            self.y += float(pred.sum())
            self.z += float(gold.sum())
        return self

    def result(self):
        return {"f1": 2 * self.x / (self.y + self.z), "precision": self.x / self.y,
                "recall": self.x / self.z}


# --------------------------------------------------------------------------------------
# CMRC2018 text metrics

_EXTRA_PUNCT = set("－：_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』<>【】|〈〉·—.－")


def _is_punct(ch):
    return (ch in string.punctuation or ch in _EXTRA_PUNCT
            or unicodedata.category(ch).startswith("P"))


def _is_cjk(ch):
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


def _segments(text):
    """CJK characters one by one; other characters grouped into words; punctuation dropped."""
    out, word = [], ""
    for ch in text.lower().strip():
        if _is_punct(ch) or ch.isspace():
            if word:
                out.append(word)
                word = ""
            continue
        if _is_cjk(ch):
            if word:
                out.append(word)
                word = ""
            out.append(ch)
        else:
            word += ch
    if word:
        out.append(word)
    return out


def _lcs_length(a, b):
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def cmrc_f1(prediction, answers):
    best = 0.0
    pred = _segments(prediction)
    for ans in answers:
        gold = _segments(ans)
        lcs = _lcs_length(pred, gold)
        if lcs == 0:
            continue
        p, r = lcs / len(pred), lcs / len(gold)
        best = max(best, 2 * p * r / (p + r))
    return best


def cmrc_exact_match(prediction, answers):
    pred = "".join(_segments(prediction))
    return float(any(pred == "".join(_segments(a)) for a in answers))


def cmrc_scores(predictions, references):
    """``predictions``: {qid: text}; ``references``: {qid: [answer texts]} → em, f1 (0–1)."""
    if not references:
        return {"em": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for qid, answers in references.items():
        pred = predictions.get(qid, "")
        em += cmrc_exact_match(pred, answers)
        f1 += cmrc_f1(pred, answers)
    return {"em": em / len(references), "f1": f1 / len(references)}


# --------------------------------------------------------------------------------------
# linear assignment


def _hungarian(cost):
    """Rows ≤ columns. Returns the column chosen for each row (minimum total cost).

    Shortest augmenting paths with row/column potentials (O(rows² · columns)).
    """
    n, m = cost.shape
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=int)      # owner[j] = row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            delta, j1 = inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while True:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
            if j0 == 0:
                break
    cols = np.full(n, -1, dtype=int)
    for j in range(1, m + 1):
        if owner[j]:
            cols[owner[j] - 1] = j - 1
    return cols


def linear_assignment(cost):
    """Minimum-cost assignment of rows to distinct columns.

    Returns an int array with one column index per row. With more rows than columns every
    column is used once and the rows left over take their own cheapest column.
    """
    cost = np.asarray(cost, dtype="float64")
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0:
        return np.zeros(0, dtype=int)
    if not np.all(np.isfinite(cost)):
        finite = cost[np.isfinite(cost)]
        big = (np.abs(finite).max() + 1) * (n + m) if finite.size else 1.0
        cost = np.where(np.isfinite(cost), cost, np.where(cost > 0, big, -big))
    if n <= m:
        return _hungarian(cost)
    rows_for_cols = _hungarian(cost.T)       # each column → a distinct row
    cols = np.argmin(cost, axis=1)
    for j, i in enumerate(rows_for_cols):
        cols[i] = j
    return cols


def chid_assign(scores, groups):
    """Per group (record), assign distinct candidates to its blanks by maximising the score.

    ``scores``: (blanks, candidates); ``groups``: the record index of each blank, blanks of
    one record consecutive. Returns the chosen candidate per blank.
    """
    scores = np.asarray(scores, dtype="float64")
    groups = list(groups)
    out = np.zeros(len(groups), dtype=int)
    lo = 0
    while lo < len(groups):
        hi = lo
        while hi < len(groups) and groups[hi] == groups[lo]:
            hi += 1
        out[lo:hi] = linear_assignment(-scores[lo:hi])
        lo = hi
    return out
