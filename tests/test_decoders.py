"""ViterbiDecoder and AutoRegressiveDecoder: brute force, greedy / enumeration, bert4keras heads_goldens."""

import itertools

import numpy as np
import pytest

from bert4keras_ng.decoders import AutoRegressiveDecoder, ViterbiDecoder




# ----------------------------------------------------------------------------- Viterbi


def brute_force_path(nodes, trans, starts=None, ends=None):
    n, c = nodes.shape
    best, best_path = -np.inf, None
    for path in itertools.product(range(c), repeat=n):
        if starts is not None and path[0] not in starts:
            continue
        if ends is not None and path[-1] not in ends:
            continue
        score = sum(nodes[t, path[t]] for t in range(n))
        score += sum(trans[path[t], path[t + 1]] for t in range(n - 1))
        if score > best:
            best, best_path = score, path
    return np.array(best_path), best


def path_score(nodes, trans, path):
    return sum(nodes[t, p] for t, p in enumerate(path)) + sum(
        trans[a, b] for a, b in zip(path[:-1], path[1:])
    )


@pytest.mark.parametrize("seed", range(12))
def test_viterbi_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 6)), int(rng.integers(2, 5))
    trans, nodes = rng.normal(size=(c, c)), rng.normal(size=(n, c))
    starts = ends = None
    if seed % 3 == 1:
        starts = [int(i) for i in rng.choice(c, size=max(1, c // 2), replace=False)]
    if seed % 4 == 2:
        ends = [int(i) for i in rng.choice(c, size=1)]
    expected, best = brute_force_path(nodes, trans, starts, ends)
    got = ViterbiDecoder(trans, starts=starts, ends=ends).decode(nodes)
    assert got.shape == (n,)
    np.testing.assert_allclose(path_score(nodes, trans, got), best, rtol=1e-12)
    np.testing.assert_array_equal(got, expected)


def test_viterbi_matches_bert4keras(heads_goldens):
    for case in heads_goldens["viterbi"]:
        dec = ViterbiDecoder(np.array(case["trans"]), case["starts"], case["ends"])
        np.testing.assert_array_equal(dec.decode(np.array(case["nodes"])), case["path"])


def test_viterbi_does_not_modify_nodes_and_accepts_float32():
    nodes = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    before = nodes.copy()
    ViterbiDecoder(np.zeros((3, 3)), starts=[0], ends=[1]).decode(nodes)
    np.testing.assert_array_equal(nodes, before)


def test_viterbi_bad_inputs():
    with pytest.raises(ValueError, match="trans"):
        ViterbiDecoder(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="starts"):
        ViterbiDecoder(np.zeros((3, 3)), starts=[5])
    with pytest.raises(ValueError, match="nodes"):
        ViterbiDecoder(np.zeros((3, 3))).decode(np.zeros((4, 2)))


# ------------------------------------------------------------------- autoregressive


def toy_logits(table, pos, x, output_ids, states):
    """Same toy model as tests/fixtures/make_heads_goldens.py."""
    vocab = table.shape[1]
    rows = output_ids.shape[0]
    last = output_ids[:, -1] if output_ids.shape[1] else np.full(rows, vocab)
    out = table[last] + pos[output_ids.shape[1]] + x
    if states is not None:
        out = out + 0.1 * states
    return out


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def make_toy(table, pos, rtype, use_states):
    class Toy(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype=rtype, use_states=use_states)
        def predict(self, inputs, output_ids, states):
            logits = toy_logits(table, pos, inputs[0], output_ids, states if use_states else None)
            if rtype == "probas":
                logits = np.exp(log_softmax(logits))
            if use_states:
                return logits, (0 if states is None else states) + 1
            return logits

    return Toy


@pytest.fixture(scope="module")
def toy(heads_goldens):
    d = heads_goldens["decoders"]
    return np.array(d["table"]), np.array(d["pos"]), np.array(d["x"]), d


def test_decoders_match_bert4keras(toy):
    table, pos, x, d = toy
    for case in d["cases"]:
        cfg = case["config"]
        dec = make_toy(table, pos, cfg["rtype"], cfg["use_states"])(
            start_id=cfg["start_id"], end_id=cfg["end_id"], maxlen=d["maxlen"],
            minlen=cfg["minlen"],
        )
        for key, expected in case["beam"].items():
            topk, temperature, min_ends = key.split("-")
            got = dec.beam_search([x], int(topk), temperature=float(temperature),
                                  min_ends=int(min_ends))
            np.testing.assert_array_equal(got, expected, err_msg=f"{cfg} beam {key}")
        state = np.random.get_state()
        try:
            for key, expected in case["sample"].items():
                seed, n, topk, topp, temperature = key.split("-")
                np.random.seed(int(seed))
                got = dec.random_sample(
                    [x], int(n), topk=None if topk == "None" else int(topk),
                    topp=None if topp == "None" else float(topp),
                    temperature=float(temperature),
                )
                assert [list(g) for g in got] == expected, f"{cfg} sample {key}"
        finally:
            np.random.set_state(state)


def greedy(table, pos, x, start_id, end_id, maxlen, minlen=1):
    ids = [] if start_id is None else [start_id]
    for _ in range(maxlen):
        logits = toy_logits(table, pos, x, np.array([ids], dtype=int).reshape(1, -1), None)[0]
        ids.append(int(np.argmax(logits)))
        if ids[-1] == end_id and len(ids) >= minlen:
            break
    return ids


@pytest.mark.parametrize("seed", range(6))
def test_beam_one_equals_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    vocab, maxlen = 6, 7
    table = rng.normal(size=(vocab + 1, vocab)) * 2
    pos = rng.normal(size=(maxlen + 2, vocab))
    x = rng.normal(size=(vocab,))
    start_id = None if seed % 2 else 0
    minlen = 1 + seed % 3
    dec = make_toy(table, pos, "logits", False)(start_id=start_id, end_id=2, maxlen=maxlen,
                                                minlen=minlen)
    expected = greedy(table, pos, x, start_id, 2, maxlen, minlen)
    np.testing.assert_array_equal(dec.beam_search([x], 1), expected)


@pytest.mark.parametrize("rtype", ["logits", "probas"])
def test_exhaustive_beam_finds_enumerated_best(rtype):
    """Without an end token and a beam as wide as all prefixes, beam search is exact."""
    rng = np.random.default_rng(7)
    vocab, maxlen = 3, 4
    table = rng.normal(size=(vocab + 1, vocab)) * 2
    pos = rng.normal(size=(maxlen + 2, vocab))
    x = rng.normal(size=(vocab,))
    best, best_seq = -np.inf, None
    for seq in itertools.product(range(vocab), repeat=maxlen):
        score = 0.0
        for t in range(maxlen):
            ids = np.array([seq[:t]], dtype=int).reshape(1, -1)
            score += log_softmax(toy_logits(table, pos, x, ids, None))[0, seq[t]]
        if score > best:
            best, best_seq = score, seq
    dec = make_toy(table, pos, rtype, False)(start_id=None, end_id=-1, maxlen=maxlen)
    np.testing.assert_array_equal(dec.beam_search([x], vocab ** maxlen), best_seq)


def test_beam_search_stops_at_best_finished_sequence():
    """A model that puts almost all mass on end after two tokens ends there."""
    vocab = 4
    table = np.zeros((vocab + 1, vocab))
    pos = np.full((10, vocab), -5.0)
    pos[0, 1] = pos[1, 2] = 5.0
    pos[2:, 3] = 10.0
    dec = make_toy(table, pos, "logits", False)(start_id=None, end_id=3, maxlen=8)
    np.testing.assert_array_equal(dec.beam_search([np.zeros(vocab)], 3), [1, 2, 3])
    # min_ends=2 forces a second end token
    np.testing.assert_array_equal(dec.beam_search([np.zeros(vocab)], 3, min_ends=2),
                                  [1, 2, 3, 3])


def test_random_sample_topk_topp_and_rng():
    rng = np.random.default_rng(3)
    vocab = 6
    table = rng.normal(size=(vocab + 1, vocab))
    pos = rng.normal(size=(12, vocab))
    dec = make_toy(table, pos, "logits", False)(start_id=None, end_id=5, maxlen=8)
    x = np.zeros(vocab)
    a = dec.random_sample([x], 6, topk=2, rng=11)
    b = dec.random_sample([x], 6, topk=2, rng=np.random.default_rng(11))
    assert [list(s) for s in a] == [list(s) for s in b]
    assert len(a) == 6
    for seq in a:  # each step only picks among the two most probable tokens
        for t, tok in enumerate(seq):
            logits = toy_logits(table, pos, x, np.array([seq[:t]], dtype=int).reshape(1, -1),
                                None)[0]
            assert tok in np.argsort(-logits)[:2]
    # topp tiny: always the most probable token, i.e. greedy
    c = dec.random_sample([x], 3, topp=1e-9, rng=0)
    g = greedy(table, pos, x, None, 5, 8)
    assert all(list(s) == g for s in c)
    # topp >= 1 truncates nothing (bert4keras): the same draws as no topp at all
    plain = dec.random_sample([x], 4, rng=5)
    for topp in (1, 1.0, 1.5):
        same = dec.random_sample([x], 4, topp=topp, rng=5)
        assert [list(s) for s in same] == [list(s) for s in plain]


def test_wraps_temperature_and_rtype():
    table = np.array([[0.0, 1.0, 2.0]] * 4)
    pos = np.zeros((4, 3))
    for rtype in ["logits", "probas"]:
        dec = make_toy(table, pos, rtype, False)(start_id=None, end_id=0, maxlen=2)
        ids = np.zeros((1, 0), dtype=int)
        p, states = dec.predict([np.zeros((1, 3))], ids, None, 0.5, "probas")
        assert states is None
        expected = np.exp([0.0, 2.0, 4.0])
        np.testing.assert_allclose(p[0], expected / expected.sum(), rtol=1e-10)
        lp, _ = dec.predict([np.zeros((1, 3))], ids, None, 1, "logits")
        np.testing.assert_allclose(lp[0], log_softmax(np.array([0.0, 1.0, 2.0])), atol=1e-9)
        with pytest.raises(ValueError, match="rtype"):
            dec.predict([np.zeros((1, 3))], ids, None, 1, "bad")
    with pytest.raises(ValueError, match="default_rtype"):
        AutoRegressiveDecoder.wraps(default_rtype="scores")


def test_autoregressive_bad_arguments():
    dec = make_toy(np.zeros((4, 3)), np.zeros((6, 3)), "logits", False)(
        start_id=None, end_id=0, maxlen=3
    )
    with pytest.raises(ValueError, match="topk"):
        dec.beam_search([np.zeros(3)], 0)
    with pytest.raises(ValueError, match="inputs"):
        dec.beam_search(np.zeros(3), 2)
    with pytest.raises(ValueError, match="topp"):
        dec.random_sample([np.zeros(3)], 2, topp=0)
    with pytest.raises(ValueError, match="maxlen"):
        AutoRegressiveDecoder(start_id=None, end_id=0, maxlen=0)
    with pytest.raises(NotImplementedError):
        AutoRegressiveDecoder(None, 0, 3).beam_search([np.zeros(3)], 1)


def test_last_token_model():
    import keras

    inp = keras.Input((None,), dtype="int32")
    out = keras.layers.Embedding(7, 3)(inp)
    model = keras.Model(inp, out)
    dec = AutoRegressiveDecoder(start_id=None, end_id=0, maxlen=3)
    last = dec.last_token(model)
    assert dec.last_token(model) is last  # cached
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(last.predict(ids, verbose=0), model.predict(ids, verbose=0)[:, -1])
