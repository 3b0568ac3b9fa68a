"""Tokenizer speed: bert4keras_ng vs bert4keras 0.11.5 on the same 10,000 sentences.

    KERAS_BACKEND=tensorflow /work/venv/bin/python benchmarks/bench_tokenizer.py \
        [--ref-python /work/refvenv/bin/python] [-n 10000] [--lower]

bert4keras runs in a subprocess with the reference interpreter (it needs tf_keras); both sides
encode identical mixed Chinese/English sentences with a BERT-sized vocabulary (the test vocab
plus every CJK Unified Ideograph, about 23k tokens) and the outputs are compared for equality.
Times are CPU seconds of the timing process (``time.process_time``, best of several runs), so
other load on a shared machine disturbs them less. Prints the speed-up ratios (bert4keras time /
ours).
"""

import argparse
import json
import os
import random
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
tok = Tokenizer(vocab, do_lower_case=lower)
tok.encode(texts[0])
best = None
for _ in range(5):
    t = time.process_time()
    out = [tok.encode(s, maxlen=64) for s in texts]
    dt = time.process_time() - t
    best = dt if best is None else min(best, dt)
json.dump({'seconds': best, 'ids': [o[0] for o in out], 'segments': [o[1] for o in out]},
          open(out_path, 'w'))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default="/work/refvenv/bin/python")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--lower", action="store_true")
    args = parser.parse_args()

    from bert4keras_ng.tokenizers import Tokenizer

    texts = make_sentences(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab.txt")
        make_vocab(vocab)
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
            ref = json.load(f)

        # A fresh tokenizer (built outside the timing, like bert4keras's) for every timed run,
        # so its word cache starts empty each time.
        def fresh():
            return Tokenizer(vocab, do_lower_case=args.lower)

        def one_at_a_time(tok):
            return [tok.encode(s, maxlen=64) for s in texts]

        def batch(tok):
            return tok.encode_batch(texts, maxlen=64)

        def hf_rust():
            return [e.ids for e in rust.encode_batch_fast(texts)]

        t_one, out_one = best_of(one_at_a_time, setup=fresh)
        t_batch, out_batch = best_of(batch, setup=fresh)
        rust = None
        try:
            from tokenizers import Tokenizer as RustTokenizer, models, normalizers, pre_tokenizers

            vocab_dict = Tokenizer(vocab)._token_dict
            rust = RustTokenizer(models.WordPiece(vocab=vocab_dict, unk_token="[UNK]",
                                                  max_input_chars_per_word=200))
            rust.normalizer = normalizers.BertNormalizer(lowercase=args.lower,
                                                         strip_accents=args.lower)
            rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            t_rust, _ = best_of(hf_rust)
        except ImportError:
            t_rust = None

    ref_pairs = list(zip(ref["ids"], ref["segments"]))
    same_one = [list(map(list, o)) for o in out_one] == [list(p) for p in ref_pairs]
    same_batch = out_batch == (ref["ids"], ref["segments"]) or (
        list(out_batch[0]) == ref["ids"] and list(out_batch[1]) == ref["segments"]
    )
    n = len(texts)
    print("sentences: %d (mean %.1f chars), vocab: bert-sized, lower=%s" % (
        n, sum(map(len, texts)) / n, args.lower))
    print("%-44s %8.3f s  %7.1f us/sentence" % ("bert4keras 0.11.5 encode (one at a time)",
                                                 ref["seconds"], 1e6 * ref["seconds"] / n))
    rows = [
        ("bert4keras_ng encode (one at a time)", t_one, same_one),
        ("bert4keras_ng encode_batch", t_batch, same_batch),
    ]
    if t_rust is not None:
        rows.append(("HF tokenizers (Rust) encode_batch_fast, no truncation", t_rust, "n/a"))
    for name, t, same in rows:
        print("%-44s %8.3f s  %7.1f us/sentence  ratio %6.1fx  identical=%s" % (
            name, t, 1e6 * t / n, ref["seconds"] / t, same))
    if not (same_one and same_batch):
        sys.exit("outputs differ from bert4keras")


if __name__ == "__main__":
    main()
