"""Tests for bert4keras_ng.snippets (goldens from tests/fixtures/make_snippets_goldens.py, run
with bert4keras 0.11.5, plus NumPy / plain-Python references)."""

import json
import os
import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4keras_ng import snippets as S

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "snippets_goldens.json"), encoding="utf-8") as _f:
    GOLDEN = json.load(_f)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def test_small_helpers():
    assert S.is_py2 is False
    assert S.is_string("a") and not S.is_string(b"a") and not S.is_string(1)
    a = S.to_array([1, 2])
    assert isinstance(a, np.ndarray) and a.tolist() == [1, 2]
    a, b = S.to_array([1], [[2.0]])
    assert a.shape == (1,) and b.shape == (1, 1)
    assert S.strQ2B("ＡＢＣ１２３！？　ａ") == "ABC123!? a"
    assert S.convert_to_unicode("中".encode("utf-8")) == "中"
    assert S.convert_to_unicode("x") == "x"
    assert S.is_one_of(a, [b, a]) and not S.is_one_of(np.array([1]), [a])
    x = np.array([[1.0, 2.0, 3.0]])
    e = np.exp(x - 3)
    np.testing.assert_allclose(S.softmax(x), e / e.sum(-1, keepdims=True))


def test_lowercase_and_normalize_matches_bert4keras():
    for text, expected in GOLDEN["lowercase_and_normalize"]:
        assert S.lowercase_and_normalize(text) == expected


# ---------------------------------------------------------------------------------------------
# text_segmentate
# ---------------------------------------------------------------------------------------------


def test_text_segmentate_matches_bert4keras():
    for case in GOLDEN["text_segmentate"]:
        got = S.text_segmentate(case["text"], case["maxlen"], case["seps"], case["strips"])
        assert got == case["out"], case


def test_text_segmentate_pieces_cover_text():
    text = "第一句。第二句！第三句稍长，有逗号，再一个逗号。第四句？"
    pieces = S.text_segmentate(text, 10, "。！？，")
    assert "".join(pieces) == text
    assert all(len(p) <= 10 for p in pieces) and len(pieces) > 3


# ---------------------------------------------------------------------------------------------
# sequence_padding
# ---------------------------------------------------------------------------------------------


def test_sequence_padding_matches_bert4keras():
    for case in GOLDEN["sequence_padding"]:
        inputs = [np.array(x, dtype="int64").reshape(s) for x, s in zip(case["inputs"], case["shapes"])]
        out = S.sequence_padding(inputs, length=case["length"], value=case["value"],
                                 seq_dims=case["seq_dims"], mode=case["mode"])
        assert list(out.shape) == case["out_shape"]
        assert out.tolist() == case["out"]


def _reference_padding(inputs, length, value, mode):
    """Plain NumPy reference for seq_dims=1."""
    length = max(len(x) for x in inputs) if length is None else length
    rows = []
    for x in inputs:
        x = list(x)[:length]
        pad = [value] * (length - len(x))
        rows.append(x + pad if mode == "post" else pad + x)
    return np.array(rows)


@settings(max_examples=60, deadline=None)
@given(
    lists=st.lists(st.lists(st.integers(-5, 5), max_size=8), min_size=1, max_size=5),
    length=st.one_of(st.none(), st.integers(0, 10)),
    value=st.integers(-3, 3),
    mode=st.sampled_from(["post", "pre"]),
)
def test_sequence_padding_against_reference(lists, length, value, mode):
    out = S.sequence_padding(lists, length=length, value=value, mode=mode)
    expected = _reference_padding(lists, length, value, mode)
    assert out.shape == expected.shape or (expected.size == 0 and out.size == 0)
    assert out.tolist() == expected.tolist()


def test_sequence_padding_2d_and_trailing_axes():
    a = np.ones((2, 3, 4))
    b = np.ones((1, 5, 4)) * 2
    out = S.sequence_padding([a, b], seq_dims=2, value=-1)
    assert out.shape == (2, 2, 5, 4)
    np.testing.assert_array_equal(out[0, :2, :3], a)
    assert (out[0, :, 3:] == -1).all() and (out[1, 1:] == -1).all()
    out = S.sequence_padding([a, b], length=4, seq_dims=2)  # an int applies to every axis
    assert out.shape == (2, 4, 4, 4)
    floats = S.sequence_padding([[0.5], [1, 2]])
    assert floats.dtype == np.float64 and floats.tolist() == [[0.5, 0.0], [1.0, 2.0]]


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match="trailing shape"):
        S.sequence_padding([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="seq_dims=2"):
        S.sequence_padding([np.zeros(3), np.zeros(2)], seq_dims=2)
    with pytest.raises(ValueError, match="mode"):
        S.sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="at least one"):
        S.sequence_padding([])
    with pytest.raises(ValueError, match="seq_dims"):
        S.sequence_padding([[1]], seq_dims=0)
    with pytest.raises(ValueError, match="length must give 2"):
        S.sequence_padding([np.zeros((2, 2))], length=[3], seq_dims=2)


# ---------------------------------------------------------------------------------------------
# truncate_sequences
# ---------------------------------------------------------------------------------------------


def test_truncate_sequences_matches_bert4keras():
    for case in GOLDEN["truncate_sequences"]:
        seqs = [list(s) for s in case["seqs"]]
        if case["out"] == "IndexError":
            with pytest.raises(ValueError, match="too small"):
                S.truncate_sequences(case["maxlen"], case["index"], *seqs)
        else:
            assert S.truncate_sequences(case["maxlen"], case["index"], *seqs) == case["out"]


def _reference_truncate(maxlen, indices, sequences):
    sequences = [list(s) for s in sequences if s]
    if not isinstance(indices, list):
        indices = [indices] * len(sequences)
    while sum(len(s) for s in sequences) > maxlen:
        lengths = [len(s) for s in sequences]
        i = lengths.index(max(lengths))
        sequences[i].pop(indices[i])
    return sequences


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    maxlen=st.integers(0, 80),
    index=st.sampled_from([-1, -2, -3, 0, 1]),
)
def test_truncate_sequences_against_reference(lengths, maxlen, index):
    seqs = [list(range(100 * k, 100 * k + n)) for k, n in enumerate(lengths)]
    try:
        expected = _reference_truncate(maxlen, index, seqs)
    except IndexError:
        with pytest.raises(ValueError):
            S.truncate_sequences(maxlen, index, *[list(s) for s in seqs])
        return
    args = [list(s) for s in seqs]
    out = S.truncate_sequences(maxlen, index, *args)
    assert out == expected
    # the caller's (non-empty) lists, cut in place, like bert4keras
    assert all(any(o is a for a in args) for o in out)


def test_truncate_sequences_in_place_and_per_sequence_indices():
    a, b = list(range(10)), list(range(10, 14))
    out = S.truncate_sequences(8, [-1, 0], a, None, b)
    assert out[0] is a and out[1] is b
    assert [a, b] == _reference_truncate(8, [-1, 0], [list(range(10)), list(range(10, 14))])
    assert a == [0, 1, 2, 3] and b == [10, 11, 12, 13]
    with pytest.raises(ValueError, match="maxlen"):
        S.truncate_sequences(-1, -1, [1])
    long = list(range(100000))
    S.truncate_sequences(512, -2, long)  # closed form: fast even for long inputs
    assert long == list(range(511)) + [99999]


# ---------------------------------------------------------------------------------------------
# parallel_apply
# ---------------------------------------------------------------------------------------------


def _square(x):
    return x * x


def _seeded_draw(_):
    return int(np.random.randint(1 << 30))


@pytest.mark.parametrize("dummy", [True, False])
def test_parallel_apply_ordered_and_unordered(dummy):
    data = list(range(50))
    expected = [x * x for x in data]
    ordered = S.parallel_apply(_square, data, workers=2, max_queue_size=4, dummy=dummy,
                               unordered=False)
    assert ordered == expected
    unordered = S.parallel_apply(_square, iter(data), workers=2, max_queue_size=4, dummy=dummy)
    assert sorted(unordered) == expected
    seen = []
    assert S.parallel_apply(_square, data, 2, 4, callback=seen.append, dummy=dummy) is None
    assert sorted(seen) == expected


def test_parallel_apply_generator_and_seeds():
    pairs = list(S.parallel_apply_generator(_square, range(10), 2, 3, dummy=True))
    assert sorted(pairs) == [(i, i * i) for i in range(10)]
    draws = S.parallel_apply(_seeded_draw, range(4), workers=1, max_queue_size=2,
                             random_seeds=[123], unordered=False)
    np.random.seed(123)
    assert draws == [int(np.random.randint(1 << 30)) for _ in range(4)]
    with pytest.raises(ValueError, match="workers"):
        S.parallel_apply(_square, [1], workers=0, max_queue_size=1)


def test_parallel_apply_threads_really_run_concurrently():
    barrier = threading.Barrier(2, timeout=10)

    def wait(x):
        barrier.wait()
        return x

    assert S.parallel_apply(wait, [1, 2], workers=2, max_queue_size=2, dummy=True,
                            unordered=False) == [1, 2]


# ---------------------------------------------------------------------------------------------
# open
# ---------------------------------------------------------------------------------------------


def test_open_iteration_index_and_jsonl(tmp_path):
    path = str(tmp_path / "data.jsonl")
    rows = [{"id": i, "text": "第%d行 line" % i} for i in range(20)]
    with S.open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write("\n")
    with S.open(path, encoding="utf-8") as f:
        assert [json.loads(l) for l in f if l.strip()] == rows
    with S.open(path, encoding="utf-8") as f:
        assert list(f.iter_jsonl()) == rows
    cache = str(tmp_path / "offsets.json")
    with S.open(path, encoding="utf-8", indexable=cache) as f:
        assert len(f) == 21
        assert json.loads(f[7]) == rows[7]
        assert json.loads(f[-2]) == rows[-1]
        assert [json.loads(l) for l in f[3:5]] == rows[3:5]
    assert os.path.exists(cache)
    with S.open(path, encoding="utf-8", indexable=cache) as f:  # offsets from the cache
        assert json.loads(f[19]) == rows[19]
    with S.open(path, encoding="utf-8") as f:
        with pytest.raises(TypeError, match="indexable"):
            f[0]
        assert json.loads(next(f)) == rows[0]
        assert json.loads(f.readline()) == rows[1]
    bad = str(tmp_path / "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"a": 1}\n{oops\n')
    with S.open(bad) as f, pytest.raises(ValueError, match="line 2"):
        list(f.iter_jsonl())


# ---------------------------------------------------------------------------------------------
# DataGenerator
# ---------------------------------------------------------------------------------------------


class _Batches(S.DataGenerator):
    """Batches of (token_ids, labels) padded with sequence_padding."""

    def __iter__(self, random=False):
        tokens, labels = [], []
        for is_end, (x, y) in self.sample(random):
            tokens.append(x)
            labels.append([y])
            if len(tokens) == self.batch_size or is_end:
                yield S.sequence_padding(tokens), np.array(labels)
                tokens, labels = [], []


class _Examples(S.DataGenerator):
    """Single examples, for to_dataset (bert4keras convention)."""

    def __iter__(self, random=False):
        for _, (x, y) in self.sample(random):
            yield np.array(x, dtype="int32"), np.array([y], dtype="int32")


def _data(n=10):
    rng = random.Random(0)
    return [([rng.randint(1, 9) for _ in range(rng.randint(1, 6))], i) for i in range(n)]


def test_data_generator_sampling():
    data = _data(10)
    gen = _Batches(data, batch_size=4)
    assert len(gen) == 3 and gen.buffer_size == 4000
    flags = [is_end for is_end, _ in gen.sample()]
    assert flags == [False] * 9 + [True]
    assert [d for _, d in gen.sample()] == data
    np.random.seed(0)
    shuffled = [d for _, d in gen.sample(random=True)]
    assert sorted(shuffled, key=lambda d: d[1]) == data and shuffled != data
    batches = list(gen)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert np.concatenate([b[1] for b in batches])[:, 0].tolist() == list(range(10))
    stream = gen.forfit()
    assert [next(stream)[0].shape[0] for _ in range(7)] == [4, 4, 2, 4, 4, 2, 4]
    assert len(next(gen.fortest(random=False))) == 4

    unsized = _Batches(iter(data), batch_size=3, buffer_size=4)
    assert unsized.steps is None
    with pytest.raises(TypeError, match="no length"):
        len(unsized)
    assert sorted((d for _, d in unsized.sample(random=True)), key=lambda d: d[1]) == data
    assert list(_Batches([], batch_size=2).sample()) == []
    with pytest.raises(ValueError, match="batch_size"):
        _Batches(data, batch_size=0)


def test_to_dataset_plain_names_and_padded():
    data = _data(6)
    gen = _Examples(data, batch_size=3)
    ds = gen.to_dataset(types=("int32", "int32"), shapes=([None], [1]), padded_batch=True)
    x, y = next(iter(ds))  # forfit() shuffles (random=True), as in bert4keras
    labels = y.numpy()[:, 0].tolist()
    assert len(set(labels)) == 3
    expected = S.sequence_padding([data[i][0] for i in labels])
    np.testing.assert_array_equal(x.numpy()[:, :expected.shape[1]], expected)
    assert (x.numpy()[:, expected.shape[1]:] == 0).all()

    class Nested(S.DataGenerator):
        def __iter__(self, random=False):
            for _, (x, y) in self.sample(random):
                yield [np.array(x, dtype="int32")], [np.array([y], dtype="int32")]

    ds = Nested(data, batch_size=3).to_dataset(
        types=(["int32"], ["int32"]), shapes=([[None]], [[1]]),
        names=(["Input-Token"], ["label"]), padded_batch=True)
    inputs, labels = next(iter(ds))
    # one-name target parts stay bare tensors: Keras 3 rejects {'label': y} for one output
    assert set(inputs) == {"Input-Token"} and labels.shape == (3, 1)
    assert inputs["Input-Token"].shape[0] == 3
    import keras

    token_in = keras.Input((None,), dtype="int32", name="Input-Token")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 3)(token_in))
    model = keras.Model(token_in, keras.layers.Dense(8, activation="softmax", name="label")(pooled))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.fit(ds, steps_per_epoch=2, verbose=0).history["loss"]).all()

    fixed = _Examples([([1, 2, 3], i) for i in range(4)], batch_size=2)
    ds = fixed.to_dataset(types=("int32", "int32"), shapes=([3], [1]), names=["tokens", "label"])
    batch = next(iter(ds))
    assert batch["tokens"].shape == (2, 3) and batch["tokens"].dtype.name == "int32"
    assert batch["label"].shape == (2, 1)


def test_to_pydataset_trains_a_model():
    import keras

    data = [([i % 5 + 1] * 3, i % 2) for i in range(12)]
    gen = _Batches(data, batch_size=4)
    pyds = gen.to_pydataset(random=False)
    assert isinstance(pyds, keras.utils.PyDataset) and len(pyds) == 3
    x0, y0 = pyds[0]
    np.testing.assert_array_equal(x0, S.sequence_padding([d[0] for d in data[:4]]))
    assert pyds[2][1][:, 0].tolist() == [d[1] for d in data[8:]]
    with pytest.raises(IndexError):
        pyds[3]

    model = keras.Sequential([
        keras.layers.Input((3,), dtype="int32"),
        keras.layers.Embedding(6, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    history = model.fit(gen.to_pydataset(), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_parallel_apply_closures_and_errors():
    import multiprocessing

    factor = 3
    if multiprocessing.get_start_method() == "fork":  # closures need fork (no pickling)
        assert S.parallel_apply(lambda x: x * factor, range(6), 2, 3, unordered=False) == [
            0, 3, 6, 9, 12, 15]

    def boom(x):
        raise RuntimeError("boom %d" % x)

    with pytest.raises(RuntimeError, match="boom"):
        S.parallel_apply(boom, range(3), 2, 2, dummy=True)


def test_decoders_are_importable_from_snippets_as_in_bert4keras():
    from bert4keras_ng import decoders, snippets

    assert snippets.ViterbiDecoder is decoders.ViterbiDecoder
    assert snippets.AutoRegressiveDecoder is decoders.AutoRegressiveDecoder
