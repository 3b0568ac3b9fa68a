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


def tiny_model(model, application="encoder", seed=0, **kwargs):
    """A random tiny model; for T5 the builder (``.encoder``, ``.decoder``)."""
    keras.utils.set_random_seed(seed)
    t5 = "t5" in model
    if t5:
        kwargs["return_keras_model"] = False
        if model != "t5.1.0":
            kwargs["hidden_act"] = ["gelu", "linear"]
    else:
        kwargs["application"] = application
    options = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=32, hidden_act="gelu", max_position=64)
    options.update(kwargs)
    m = build_transformer_model(model=model, **options)
    rng = np.random.default_rng(seed)
    for w in (m.model if t5 else m).weights:
        if w.trainable and len(w.shape) >= 1:
            scale = w.path.endswith("gamma") or w.path.endswith("scale")
            w.assign(rng.normal(0.0, 0.2, w.shape).astype("float32") + (1.0 if scale else 0.0))
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
    """bert4keras-style decoder: the whole prefix through the model at every step (prompts
    [token_ids, segment_ids], [token_ids] for token-only models, [context] for T5 decoders)."""

    def __init__(self, model, segment, **kwargs):
        super().__init__(**kwargs)
        self.model, self.segment = model, segment

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        names = [t._keras_history[0].name for t in self.model.inputs]
        if names[0] == "Input-Context":
            feed = [inputs[0].astype("float32"), output_ids]
        else:
            token_ids = np.concatenate([inputs[0], output_ids], 1)
            feed = [token_ids]
            if len(names) == 2:
                segments = np.full_like(output_ids, self.segment)
                feed.append(np.concatenate([inputs[1], segments], 1))
        feed = [np.asarray(f) for f in feed]
        probs = self.model(feed if len(feed) > 1 else feed[0], training=False)
        return keras.ops.convert_to_numpy(probs)[:, -1]


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


GENERATIVE = ["gpt", "gpt2", "gpt2_ml"]


@pytest.mark.slow
@pytest.mark.parametrize("model", GENERATIVE)
def test_gpt_family_cached_greedy_and_beam_equal_uncached(model):
    m = tiny_model(model)
    token_only = len(m.inputs) == 1
    batch = [p[:1] if token_only else p for p in prompts(seed=2)]
    ref = Uncached(m, 0, start_id=None, end_id=END, maxlen=6)
    gen = Generator(m, end_id=END, maxlen=6)
    greedy, beams = gen.greedy(batch), gen.beam_search(batch, topk=3)
    for p, g, b in zip(batch, greedy, beams):
        assert list(g) == list(ref.beam_search(p, topk=1)), f"greedy, prompt {p[0]}"
        assert list(b) == list(ref.beam_search(p, topk=3)), f"beam 3, prompt {p[0]}"


def t5_contexts(t5, lengths, seed=5):
    """Encoder outputs (n_enc, H) of random prompts of the given lengths."""
    contexts = []
    for p in prompts(seed=seed, lengths=lengths):
        encoded = t5.encoder(p[0][None].astype("int32"), training=False)
        contexts.append([keras.ops.convert_to_numpy(encoded)[0]])
    return contexts


T5_CASES = [
    ("t5.1.0", True),
    ("t5.1.1", True),
    ("mt5.1.1", True),
    ("t5.1.0", False),
    ("t5.1.1", False),
]


@pytest.mark.slow
@pytest.mark.parametrize("version,cross_position_bias", T5_CASES)
def test_t5_cached_greedy_and_beam_equal_uncached(version, cross_position_bias):
    """Encoder outputs of different lengths (zero-padded when stacked, masked in the cached
    cross-attention), decoder starting from id 0 as in bert4keras' T5 examples; with the
    cross-attention position bias (bert4keras' default) and without."""
    t5 = tiny_model(version, seed=3, cross_position_bias=cross_position_bias)
    assert CachedModel(t5.decoder).cross_position == cross_position_bias
    contexts = t5_contexts(t5, (4, 8, 2))
    ref = Uncached(t5.decoder, 0, start_id=0, end_id=END, maxlen=6)
    gen = Generator(t5.decoder, end_id=END, maxlen=6, start_id=0)
    greedy, beams = gen.greedy(contexts), gen.beam_search(contexts, topk=2)
    for c, g, b in zip(contexts, greedy, beams):
        assert list(g) == list(ref.beam_search(c, topk=1))
        assert list(b) == list(ref.beam_search(c, topk=2))


@pytest.mark.parametrize("version", ["t5.1.0", pytest.param("mt5.1.1", marks=pytest.mark.slow)])
def test_t5_cross_position_bias_step_logits_match_full_recomputation(version):
    """T5 decoder with the cross-attention position bias, a batch of encoder outputs of mixed
    lengths (3, 9, 5; zero-padded to 9), a 3-token decoder prefix then one token per step: the
    cached logits at every step equal the uncached decoder's on the whole prefix, i.e. the
    bias rows of the new queries are taken at the cache offset over all encoder keys."""
    t5 = tiny_model(version, seed=4, cross_position_bias=True)
    cached = CachedModel(t5.decoder)
    contexts = [c[0] for c in t5_contexts(t5, (3, 9, 5), seed=6)]
    stacked = np.zeros((3, 9, contexts[0].shape[1]), "float32")
    for i, c in enumerate(contexts):
        stacked[i, : len(c)] = c
    prefix = np.array([[0, 7, 9]] * 3, "int32")
    steps = [[11, 4, 30], [5, 5, 6], [8, 3, 12]]
    logits, state = cached.prefill(prefix, np.zeros_like(prefix), np.zeros(3, "int32"),
                                   [stacked], 3 + len(steps))
    got = [keras.ops.convert_to_numpy(logits)]
    for t in steps:
        logits, state = cached.step(np.array(t, "int32")[:, None], state)
        got.append(keras.ops.convert_to_numpy(logits))
    ids = np.concatenate([prefix, np.array(steps, "int32").T], axis=1)
    for i, c in enumerate(contexts):  # each row alone, unpadded, whole prefix
        for j in range(len(steps) + 1):
            probs = t5.decoder([c[None].astype("float32"), ids[i: i + 1, : 3 + j]],
                               training=False)
            want = np.log(keras.ops.convert_to_numpy(probs)[0, -1].astype("float64"))
            g = got[j][i].astype("float64")
            g = g - np.log(np.exp(g).sum())
            np.testing.assert_allclose(g, want, atol=1e-4, err_msg=f"row {i}, step {j}")


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


def reference_length_penalty_beam(ref, prompt, k, maxlen, alpha):
    """NumPy beam search with a length penalty, on the uncached decoder's log-probabilities:
    finished beams leave the beam and compete by score / length^alpha; the search stops when no
    beam is live; after maxlen steps the best live beam competes too."""
    beams, scores = [np.zeros(0, int)], np.zeros(1)
    best, best_norm = None, -np.inf
    for t in range(maxlen):
        inputs = [np.repeat(np.array([x]), len(beams), 0) for x in prompt]
        logp, _ = ref.predict(inputs, np.array(beams), None, 1, "logits")
        cand = (scores[:, None] + logp).ravel()
        top = np.argsort(-cand, kind="stable")[:k]
        rows, tokens = np.divmod(top, logp.shape[1])
        new_beams, new_scores = [], []
        for r, tok, value in zip(rows, tokens, cand[top]):
            beam = np.append(beams[r], tok)
            if tok == END:
                norm = value / (t + 1) ** alpha
                if norm > best_norm:
                    best, best_norm = beam, norm
            else:
                new_beams.append(beam)
                new_scores.append(value)
        if not new_beams:
            return best
        beams, scores = new_beams, np.array(new_scores)
    live = scores[0] / maxlen ** alpha
    return beams[0] if live > best_norm else best


@pytest.mark.slow
def test_beam_length_penalty_matches_numpy_reference():
    m = tiny_model("gpt2", seed=7)
    batch = [p[:1] for p in prompts(seed=8, lengths=(3, 6))]
    ref = Uncached(m, 0, start_id=None, end_id=END, maxlen=6)
    gen = Generator(m, end_id=END, maxlen=6)
    for alpha in (0.7, 2.0):
        out = gen.beam_search(batch, topk=3, length_penalty=alpha)
        for p, o in zip(batch, out):
            want = reference_length_penalty_beam(ref, p, 3, 6, alpha)
            assert list(o) == list(want), f"alpha={alpha}, prompt {p[0]}"


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
        feed = [ids.astype("int32"), segs.astype("int32")][: len(model.inputs)]
        probs = model(feed if len(feed) > 1 else feed[0], training=False)
        want.append(np.log(keras.ops.convert_to_numpy(probs)[0, -1].astype("float64")))
    return np.array(got), np.array(want), state


@pytest.mark.parametrize("model,application", [
    ("bert", "unilm"),
    pytest.param("nezha", "lm", marks=pytest.mark.slow),
    pytest.param("gpt2", "lm", marks=pytest.mark.slow),
])
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


@pytest.mark.slow
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
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_compiled_generation_mixed_precision(policy):
    """The XLA-compiled loop under a mixed policy: half-precision caches, float32 scores; the
    first greedy token is the uncached mixed model's most probable one."""
    with dtype_policy(policy):
        m = tiny_model("gpt2", seed=9)
        gen = Generator(m, end_id=None, maxlen=4)
        batch = [p[:1] for p in prompts(seed=9, lengths=(3, 5))]
        out = gen.greedy(batch)
        beams = gen.beam_search(batch, topk=2)
        for p, o, b in zip(batch, out, beams):
            probs = keras.ops.convert_to_numpy(m(p[0][None].astype("int32"), training=False))
            probs = probs[0, -1].astype("float64")
            top2 = np.sort(probs)[-2:]
            assert len(o) == 4 and len(b) == 4
            if np.log(top2[1]) - np.log(top2[0]) > 0.1:  # no near-tie at half precision
                assert o[0] == int(np.argmax(probs))
    assert gen.cache_bytes(2, 5) == 2 * 2 * (8 + 4) * 2 * (8 + 8) * 2 + 2 * (8 + 4)


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
    # topp >= 1 truncates nothing (bert4keras): the same draws as topp=None
    plain = gen.random_sample([prompt], n=200, topk=5, seed=3)[0]
    for topp in (1, 1.5):
        wide = gen.random_sample([prompt], n=200, topk=5, topp=topp, seed=3)[0]
        assert [list(a) for a in wide] == [list(o) for o in plain], f"topp={topp}"
    with pytest.raises(ValueError, match="topp"):
        gen.random_sample([prompt], n=2, topp=0)


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


@pytest.mark.slow
def test_auto_regressive_decoder_fast_path():
    """AutoRegressiveDecoder(model=...) without a predict of its own: cached and compiled, the
    same beams as the bert4keras-style subclass; with a predict of its own it refuses model=."""
    m = tiny_model("bert", "unilm", seed=6)
    batch = prompts(seed=6, lengths=(4, 6))
    ref = Uncached(m, 1, start_id=None, end_id=END, maxlen=5)
    fast = AutoRegressiveDecoder(start_id=None, end_id=END, maxlen=5, model=m)
    for p in batch:
        assert list(fast.beam_search(p, topk=2)) == list(ref.beam_search(p, topk=2))
    a = fast.random_sample(batch[0], 3, topk=3, rng=np.random.default_rng(0))
    b = fast.random_sample(batch[0], 3, topk=3, rng=np.random.default_rng(0))
    assert len(a) == 3 and [list(x) for x in a] == [list(x) for x in b]

    class Own(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps()
        def predict(self, inputs, output_ids, states):
            return None

    with pytest.raises(ValueError, match="not both"):
        Own(start_id=None, end_id=END, maxlen=5, model=m)


def test_unsupported_models_fail_clearly():
    m = tiny_model("bert", "encoder", with_pool=True)
    with pytest.raises(ValueError, match="no self-attention|not known to be position-wise"):
        CachedModel(m)
    m = tiny_model("bert", "lm", custom_position_ids=True)
    with pytest.raises(ValueError, match="custom_position_ids"):
        CachedModel(m)
    m = tiny_model("bert", "lm")  # 64 learned positions
    with pytest.raises(ValueError, match="exceeds the model's 64 learned positions"):
        Generator(m, end_id=END, maxlen=60).greedy([[2, 5, 6, 7, 8]])
