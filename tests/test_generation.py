"""Cached, compiled generation (bert4keras_ng.generation) against the uncached decoder.

The reference is bert4keras' way of generating: an ``AutoRegressiveDecoder`` subclass whose
``predict`` re-runs the whole prefix through ``model.predict`` one prompt at a time (no padding,
no cache). The cached path runs every prompt of a batch at once, left-padded, one position per
step; it must give the same tokens. The random tiny models get weights of std 0.2 (instead of
0.02) so that next-token logits are far from ties.
"""

import numpy as np
import pytest

import keras

from bert4keras_ng.decoders import AutoRegressiveDecoder
from bert4keras_ng.generation import CachedModel, Generator, left_pad
from bert4keras_ng.models import build_transformer_model
from tests.helpers import dtype_policy

VOCAB = 40
END = 3

# (model=, application=): every position scheme (learned, rotary, NEZHA relative), both masks
KINDS = [
    ("bert", "lm"),
    ("bert", "unilm"),
    ("roformer", "unilm"),
    ("nezha", "lm"),
    ("roformer_v2", "lm"),
]


def tiny_model(model, application, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    m = build_transformer_model(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, hidden_act="gelu", model=model, application=application,
        max_position=64, **kwargs)
    rng = np.random.default_rng(seed)
    for w in m.weights:
        if w.trainable and len(w.shape) >= 1:
            w.assign(rng.normal(0.0, 0.2, w.shape).astype("float32")
                     + (1.0 if w.path.endswith("gamma") else 0.0))
    return m


def prompts(seed=0, lengths=(3, 9, 5, 1)):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        t = rng.integers(4, VOCAB, n)
        t[0] = 2  # a [CLS]-like first token
        out.append([t, np.zeros(n, int)])
    return out


class Uncached(AutoRegressiveDecoder):
    """bert4keras-style decoder: the whole prefix through the model at every step."""

    def __init__(self, model, segment, **kwargs):
        super().__init__(**kwargs)
        self.model, self.segment = model, segment

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.full_like(output_ids, self.segment)], 1)
        return self.model.predict([token_ids, segment_ids], verbose=0)[:, -1]


def segment_of(application):
    return 1 if application == "unilm" else 0


@pytest.mark.slow
@pytest.mark.parametrize("model,application", KINDS)
def test_cached_greedy_and_beam_equal_uncached(model, application):
    m = tiny_model(model, application)
    batch = prompts()
    ref = Uncached(m, segment_of(application), start_id=None, end_id=END, maxlen=6, minlen=2)
    gen = Generator(m, end_id=END, maxlen=6, minlen=2)
    greedy = gen.greedy(batch)
    beams = gen.beam_search(batch, topk=3)
    for p, g, b in zip(batch, greedy, beams):
        assert list(g) == list(ref.beam_search(p, topk=1)), f"greedy, prompt {p[0]}"
        assert list(b) == list(ref.beam_search(p, topk=3)), f"beam 3, prompt {p[0]}"


@pytest.mark.slow
def test_beam_min_ends_start_id_and_right_padded_array():
    """start_id, min_ends=2 and a right-padded (b, n) array of token ids (segment ids 0)."""
    m = tiny_model("roformer", "unilm", seed=1)
    batch = prompts(seed=3, lengths=(4, 7))
    ref = Uncached(m, 1, start_id=5, end_id=END, maxlen=7, minlen=1)
    gen = Generator(m, end_id=END, maxlen=7, start_id=5)
    array, _ = left_pad([p[0][::-1] for p in batch])  # right padding after reversing back
    array = array[:, ::-1]
    out = gen.beam_search(array, topk=2, min_ends=2, padding_side="right")
    for p, o in zip(batch, out):
        assert o[0] == 5
        assert list(o) == list(ref.beam_search(p, topk=2, min_ends=2))


def teacher_forced_logits(model, cached, prompt, continuation):
    """Cached logits after the prompt and after each continuation token, and the uncached
    model's logits for the same prefixes."""
    tok, pads = left_pad([prompt], 8)
    seg = np.zeros_like(tok)
    length = 8 + len(continuation)
    got = []
    logits, state = cached.prefill(tok, seg, pads, [], length)
    got.append(keras.ops.convert_to_numpy(logits)[0])
    for t in continuation:
        logits, state = cached.step(np.array([[t]], "int32"), state)
        got.append(keras.ops.convert_to_numpy(logits)[0])
    want = []
    for i in range(len(continuation) + 1):
        ids = np.concatenate([prompt, continuation[:i]])[None]
        segs = np.concatenate([np.zeros(len(prompt)), np.full(i, cached.segment_id)])[None]
        probs = model.predict([ids, segs], verbose=0)[0, -1].astype("float64")
        want.append(np.log(probs))
    return np.array(got), np.array(want), state


@pytest.mark.parametrize("model,application", [("bert", "unilm"), ("nezha", "lm")])
def test_step_logits_match_full_recomputation(model, application):
    m = tiny_model(model, application)
    cached = CachedModel(m)
    got, want, state = teacher_forced_logits(m, cached, np.array([2, 7, 9]), [11, 4, 30])
    got = got - np.log(np.exp(got).sum(-1, keepdims=True))  # log-softmax of the logits
    np.testing.assert_allclose(got, want, atol=1e-4)
    # cache memory as documented: 2 layers · rows · slots · heads · (dk + dv) · 4 B + mask
    caches = state["caches"]
    actual = sum(keras.ops.convert_to_numpy(c).nbytes for kv in caches for c in kv)
    assert cached.cache_bytes(1, 11) == actual + 11
    assert actual == 2 * 1 * 11 * 2 * (8 + 8) * 4


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_step_logits_mixed_precision(policy):
    with dtype_policy(policy):
        m = tiny_model("roformer", "unilm")
        cached = CachedModel(m)
        got, want, state = teacher_forced_logits(m, cached, np.array([2, 7, 9, 12]), [11, 4])
    assert keras.backend.standardize_dtype(state["caches"][0][0].dtype) == policy.split("_")[1]
    got = got - np.log(np.exp(got).sum(-1, keepdims=True))
    tol = 0.05 if policy == "mixed_float16" else 0.2
    np.testing.assert_allclose(got, want, atol=tol)


@pytest.mark.slow
def test_sampling_reproducible_and_matches_topk_topp_distribution():
    """One sampled token per row, 4000 rows: the empirical frequencies must match the
    truncated, renormalised next-token distribution p: |f - p| <= 5·sqrt(p(1-p)/N) + 1e-3
    for every token (a false alarm has probability < 1e-5 per token), and tokens outside the
    top-k / top-p set are never drawn."""
    m = tiny_model("bert", "lm", seed=2)
    prompt = prompts(seed=4, lengths=(5,))[0]
    probs = m.predict([prompt[0][None], prompt[1][None]], verbose=0)[0, -1].astype("float64")
    order = np.argsort(-probs)
    gen = Generator(m, end_id=None, maxlen=1)
    n = 4000
    for topk, topp in [(5, None), (None, 0.6), (8, 0.8)]:
        keep = np.zeros(VOCAB, bool)
        k = VOCAB if topk is None else topk
        kept = order[:k]
        if topp is not None:
            mass = np.cumsum(probs[kept] / probs[kept].sum())
            kept = kept[: int(np.searchsorted(mass, topp)) + 1]
        keep[kept] = True
        expected = np.where(keep, probs, 0.0)
        expected /= expected.sum()
        out = gen.random_sample([prompt], n=n, topk=topk, topp=topp, seed=7)[0]
        drawn = np.array([o[0] for o in out])
        freq = np.bincount(drawn, minlength=VOCAB) / n
        bound = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-3
        assert (freq[~keep] == 0).all(), f"topk={topk} topp={topp}: drew a truncated token"
        assert (np.abs(freq - expected) <= bound).all(), (
            f"topk={topk} topp={topp}: frequencies {freq[kept]} vs {expected[kept]}")
        again = gen.random_sample([prompt], n=n, topk=topk, topp=topp, seed=7)[0]
        assert [list(a) for a in again] == [list(o) for o in out], "same seed, other result"
        other = gen.random_sample([prompt], n=n, topk=topk, topp=topp, seed=8)[0]
        assert [list(a) for a in other] != [list(o) for o in out], "the seed is ignored"


@pytest.mark.slow
def test_sampling_sequences_finish_like_bert4keras():
    """Multi-step sampling: every sample ends at its first end id (min_ends=1) or runs maxlen
    steps; finished samples come first."""
    m = tiny_model("bert", "lm", seed=5)
    gen = Generator(m, end_id=END, maxlen=10)
    out = gen.random_sample(prompts(lengths=(3, 6)), n=16, topk=4, seed=1)
    assert len(out) == 2 and all(len(o) == 16 for o in out)
    for samples in out:
        finished = [list(s).count(END) == 1 and s[-1] == END for s in samples]
        assert all(len(s) == 10 or f for s, f in zip(samples, finished))
        assert finished == sorted(finished, reverse=True)
        lengths = [len(s) for s, f in zip(samples, finished) if f]
        assert lengths == sorted(lengths)


def test_unsupported_models_fail_clearly():
    m = tiny_model("bert", "encoder", with_pool=True)
    with pytest.raises(ValueError, match="no self-attention|not known to be position-wise"):
        CachedModel(m)
    m = tiny_model("bert", "lm", custom_position_ids=True)
    with pytest.raises(ValueError, match="custom_position_ids"):
        CachedModel(m)
