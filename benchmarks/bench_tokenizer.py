"""Tokenizer speed: bert4keras_ng vs bert4keras 0.11.5 on the same 10,000 texts.

    KERAS_BACKEND=tensorflow /work/venv/bin/python benchmarks/bench_tokenizer.py \
        [--ref-python /work/refvenv/bin/python] [-n 10000] [--lower] \
        [--corpus sentences|edge|both]

bert4keras runs in a subprocess with the reference interpreter (it needs tf_keras); both sides
encode identical texts with a BERT-sized vocabulary (the test vocab plus every CJK Unified
Ideograph, about 23k tokens) and the outputs are compared for equality. Two corpora:
``sentences`` (mixed Chinese/English sentences, ~40 characters) and ``edge`` (short lines of
0-20 characters mixing Chinese, ASCII punctuation, digits, accents, emoji, control characters,
full-width forms, whitespace runs, characters outside the vocabulary, plus a few very long
single words), where the fixed cost per text dominates.
Times are CPU seconds of the timing process (``time.process_time``, best of several runs), so
other load on a shared machine disturbs them less. Prints the speed-up ratios (bert4keras time /
ours).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FIXTURE_VOCAB = os.path.join(ROOT, "tests", "fixtures", "tokenizer_vocab.txt")

CHINESE = (
    "自然语言处理是人工智能领域的一个重要方向它研究能实现人与计算机之间用自然语言进行有效通信的各种"
    "理论和方法今天天气很好我们一起去公园散步吧北京是中国的首都上海是最大的城市机器学习模型需要大量的"
    "数据来训练深度学习在图像识别和语音识别上取得了巨大成功"
)
ENGLISH = (
    "the model uses a tokenizer to split text into word pieces and the training data comes from "
    "Beijing Shanghai and Hangzhou with BERT RoBERTa NEZHA transformers running on GPUs quickly"
).split()
PUNCT = "，。！？、：；（）“”,.!?"

REF_SCRIPT = r"""
import json, sys, time
from bert4keras.tokenizers import Tokenizer
vocab, lower, texts_path, out_path = sys.argv[1], sys.argv[2] == '1', sys.argv[3], sys.argv[4]
texts = json.load(open(texts_path, encoding='utf-8'))
t = time.process_time()
tok = Tokenizer(vocab, do_lower_case=lower)
build = time.process_time() - t
tok.encode(texts[0])
best = None
for _ in range(5):
    t = time.process_time()
    out = [tok.encode(s, maxlen=64) for s in texts]
    dt = time.process_time() - t
    best = dt if best is None else min(best, dt)
json.dump({'seconds': best, 'build': build, 'ids': [o[0] for o in out],
           'segments': [o[1] for o in out]}, open(out_path, 'w'))
"""


def make_sentences(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 7)):
            if rng.random() < 0.6:
                k = rng.randint(0, len(CHINESE) - 8)
                parts.append(CHINESE[k:k + rng.randint(3, 8)])
            else:
                parts.append(" ".join(rng.choice(ENGLISH) for _ in range(rng.randint(1, 4))))
            parts.append(rng.choice(PUNCT))
        out.append("".join(parts))
    return out


# Pieces of the edge-case lines, by kind (each line draws a few kinds).
EDGE_KINDS = {
    "chinese": list(CHINESE) + ["中文", "你好", "北京"],
    "english": ENGLISH + [" " + w for w in ENGLISH[:12]],
    "ascii_punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--", "?!", "()"],
    "digits": ["0", "7", "42", "2026", "3.14", "1,000", "12:30", "100%"],
    "accents": ["é", "café", "naïve", "Über", "São", "Ångström", "e\u0301", "ñ", "Çà", "ß", "ÆØ"],
    "emoji": ["\U0001F600", "\U0001F602", "\U0001F44D", "\u2764\ufe0f", "\U0001F1E8\U0001F1F3",
              "\U0001F468\u200d\U0001F469"],
    "control": ["\x00", "\x01", "\x07", "\x0b", "\x1b", "\x7f", "\x85", "\u200b", "\u200d",
                "\ufeff", "\ufffd", "\r\n"],
    "fullwidth": ["Ａ", "ｂｃ", "０１２", "！", "？", "（）", "，", "：", "ＢＥＲＴ", "\u3000"],
    "spaces": [" ", "  ", "\t", "   \t ", "\u3000\u3000", "\xa0", "\n", " \u2028 "],
    "unknown": ["\ue000", "\U00020000", "\u16a0\u16a2", "\ua66e", "\u0e01\u0e02", "\u05d0",
                "\u0628\u0627", "\u2603", "\u00bd"],
}


def make_edge_lines(n, seed=0):
    """Short lines (0-20 characters) of edge cases; about 1 in 40 is one very long word
    (21-260 characters, some beyond ``word_maxlen=200``)."""
    rng = random.Random(seed)
    kinds = sorted(EDGE_KINDS)
    letters = "abcdefghijklmnopqrstuvwxyzéü0123456789"
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append("")
            continue
        if r < 0.075:
            out.append("".join(rng.choice(letters) for _ in range(rng.randint(21, 260))))
            continue
        limit = rng.randint(1, 20)
        line = ""
        while len(line) < limit:
            line += rng.choice(EDGE_KINDS[rng.choice(kinds)])
        out.append(line[:limit])
    return out


def make_vocab(path):
    with open(FIXTURE_VOCAB, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f if line.strip()]
    seen = set(tokens)
    tokens += [chr(c) for c in range(0x4E00, 0xA000) if chr(c) not in seen]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")


def best_of(fn, repeats=5, setup=None):
    best, result = None, None
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t = time.process_time()
        result = fn(arg) if setup is not None else fn()
        dt = time.process_time() - t
        best = dt if best is None else min(best, dt)
    return best, result


def run_reference(texts, vocab, args):
    """bert4keras 0.11.5 in a subprocess: ``{'seconds', 'build', 'ids', 'segments'}``."""
    with tempfile.TemporaryDirectory() as tmp:
        texts_path = os.path.join(tmp, "texts.json")
        out_path = os.path.join(tmp, "ref.json")
        with open(texts_path, "w", encoding="utf-8") as f:
            json.dump(texts, f, ensure_ascii=False)
        env = dict(os.environ, TF_KERAS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run(
            [args.ref_python, "-c", REF_SCRIPT, vocab, "1" if args.lower else "0", texts_path,
             out_path],
            check=True, env=env,
        )
        with open(out_path) as f:
            return json.load(f)


def measure(texts, vocab, args, label):
    """Time bert4keras (subprocess), our encode and encode_batch (and HF's Rust pipeline when
    installed) on ``texts`` in ``args.rounds`` interleaved rounds; print every round and the
    median ratios; return whether every output was identical to bert4keras's."""
    from bert4keras_ng.tokenizers import Tokenizer

    # A fresh tokenizer (built outside the timing, like bert4keras's) for every timed run,
    # so its caches start empty each time.
    def fresh():
        return Tokenizer(vocab, do_lower_case=args.lower)

    def one_at_a_time(tok):
        return [tok.encode(s, maxlen=64) for s in texts]

    def batch(tok):
        return tok.encode_batch(texts, maxlen=64)

    rust = None
    try:
        from tokenizers import Tokenizer as RustTokenizer, models, normalizers, pre_tokenizers
    except ImportError:
        pass
    else:
        rust = RustTokenizer(models.WordPiece(vocab=fresh()._token_dict, unk_token="[UNK]",
                                              max_input_chars_per_word=200))
        rust.normalizer = normalizers.BertNormalizer(lowercase=args.lower,
                                                     strip_accents=args.lower)
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    n = len(texts)
    print("%s: %d texts (mean %.1f chars), vocab: bert-sized, lower=%s" % (
        label, n, sum(map(len, texts)) / n, args.lower))
    names = ["bert4keras 0.11.5 encode (one at a time)", "bert4keras_ng encode (one at a time)",
             "bert4keras_ng encode_batch"]
    if rust is not None:
        names.append("HF tokenizers (Rust) encode_batch_fast, no truncation")
    rounds, same = [], True
    for r in range(args.rounds):
        ref = run_reference(texts, vocab, args)
        ref_pairs = [list(p) for p in zip(ref["ids"], ref["segments"])]
        t_one, out_one = best_of(one_at_a_time, setup=fresh)
        t_batch, out_batch = best_of(batch, setup=fresh)
        times = [ref["seconds"], t_one, t_batch]
        if rust is not None:
            times.append(best_of(lambda: [e.ids for e in rust.encode_batch_fast(texts)])[0])
        same_one = [list(map(list, o)) for o in out_one] == ref_pairs
        same_batch = list(out_batch[0]) == ref["ids"] and list(out_batch[1]) == ref["segments"]
        same = same and same_one and same_batch
        t0 = time.process_time()
        fresh()
        build = time.process_time() - t0
        print("  round %d: %s; identical=%s; Tokenizer() %.1f ms (bert4keras %.1f ms)" % (
            r + 1, ", ".join("%.3f s" % t for t in times), same_one and same_batch,
            1e3 * build, 1e3 * ref["build"]))
        rounds.append(times)
    median = [statistics.median(col) for col in zip(*rounds)]
    for k, name in enumerate(names):
        ratios = [times[0] / times[k] for times in rounds]
        print("  %-52s %8.3f s  %7.1f us/text  ratio %6.1fx (rounds %s)" % (
            name, median[k], 1e6 * median[k] / n, statistics.median(ratios),
            " ".join("%.1f" % x for x in ratios)))
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default="/work/refvenv/bin/python")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--lower", action="store_true")
    parser.add_argument("--corpus", choices=("sentences", "edge", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (bert4keras, then ours) whose median is shown")
    args = parser.parse_args()

    print("CPU time (time.process_time), best of 5 per round, median of %d interleaved rounds; "
          "the machine may be shared with other jobs: compare the ratios of one run" % args.rounds)
    corpora = [("sentences", make_sentences), ("edge", make_edge_lines)]
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab.txt")
        make_vocab(vocab)
        for name, make in corpora:
            if args.corpus in (name, "both"):
                same = measure(make(args.n), vocab, args, name) and same
    if not same:
        sys.exit("outputs differ from bert4keras")


if __name__ == "__main__":
    main()
