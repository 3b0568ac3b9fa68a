"""Random length buckets for CLUE training batches (clue.features.bucketed_order, --bucket)."""

import json

import numpy as np
import pytest

from bert4keras_ng.clue import features as F
from bert4keras_ng.clue import runner
from bert4keras_ng.clue.tasks import TASKS


def skewed_lengths(n, seed=0):
    """Mostly short texts with a long tail, like tnews titles (token counts incl. [CLS]/[SEP])."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(24), 0.45, size=n).astype(int), 3, 128)


def test_bucketed_order_is_a_partition_into_batches_of_neighbouring_lengths():
    lengths = skewed_lengths(1000)
    batches = F.bucketed_order(lengths, 16, np.random.RandomState(1), pool_batches=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))  # every index once
    assert sum(len(b) < 16 for b in batches) <= -(-1000 // 160)  # only a pool's last batch
    # within a batch: a contiguous run of one pool's sorted lengths, so padding is small
    padded = sum(len(b) * lengths[b].max() for b in batches)
    plain = [np.arange(1000)[i:i + 16] for i in range(0, 1000, 16)]
    rng = np.random.RandomState(1)
    order = np.arange(1000)
    rng.shuffle(order)
    plain_padded = sum(len(b) * lengths[order[b]].max() for b in plain)
    assert padded < 0.8 * plain_padded, (padded, plain_padded)
    assert padded >= lengths.sum()


def test_bucketed_order_stays_random_within_and_across_buckets():
    lengths = skewed_lengths(400)
    a = F.bucketed_order(lengths, 8, np.random.RandomState(1))
    b = F.bucketed_order(lengths, 8, np.random.RandomState(2))
    assert [x.tolist() for x in a] != [x.tolist() for x in b]
    # batch lengths are not sorted over the epoch: long and short batches alternate at random
    maxima = [lengths[x].max() for x in a]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    # equal lengths: the shuffle decides which samples share a batch
    same = F.bucketed_order(np.full(64, 10), 8, np.random.RandomState(3))
    assert [x.tolist() for x in same] != [list(range(i, i + 8)) for i in range(0, 64, 8)]


def test_bucketed_order_rejects_a_bad_pool_size():
    with pytest.raises(ValueError, match="pool_batches"):
        F.bucketed_order([1, 2, 3], 2, pool_batches=0)


def test_iter_batches_with_buckets_pads_each_batch_to_its_own_longest_row():
    spec = TASKS["tnews"]
    lengths = skewed_lengths(100, seed=3)
    feats = [F.Feature([list(range(1, n + 1))], label=i % 3) for i, n in enumerate(lengths)]
    seen = []
    for x, y, idx in F.iter_batches(spec, feats, 8, shuffle=True, rng=np.random.RandomState(0),
                                    bucket=True):
        assert x["Input-Token"].shape == (len(idx), max(lengths[idx]))
        np.testing.assert_array_equal(y, [feats[i].label for i in idx])
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(100))
    # without shuffle (evaluation) the order stays the file order, bucket or not
    plain = [idx.tolist() for _, _, idx in F.iter_batches(spec, feats, 8, bucket=True)]
    assert plain == [list(range(i, min(i + 8, 100))) for i in range(0, 100, 8)]


def test_command_line_flag_reaches_the_run_config(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run", lambda cfg: seen.setdefault("cfg", cfg))
    assert runner.main(["--bucket", "--quiet"]) == 0
    assert seen["cfg"].bucket is True


@pytest.mark.slow
def test_bucketed_training_reaches_the_same_dev_accuracy_on_the_sample_data(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("BERT4KERAS_NG_CACHE", str(tmp_path / "cache"))
    best = {}
    for bucket in (False, True):
        out = tmp_path / f"out{int(bucket)}"
        args = ["--output", str(out), "--quiet"] + (["--bucket"] if bucket else [])
        assert runner.main(args) == 0
        best[bucket] = json.load(open(out / "results.json", encoding="utf-8"))["best"]
    assert abs(best[True] - best[False]) <= 0.1, best
