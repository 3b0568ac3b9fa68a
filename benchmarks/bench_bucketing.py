"""Does length-bucketed batching speed up CLUE fine-tuning on realistic sentence lengths?

The CLUE runner's own training step (``clue.runner._Trainer``: one tf.function for all batch
shapes, AdaFactor as in the recipe) trains a BERT classifier on synthetic token ids whose lengths
follow the distributions below, once with today's batching (shuffle, pad each batch to its
longest row) and once with random length buckets (``iter_batches(bucket=True)``), in alternating
rounds; it prints training samples per second and the padded tokens per sample of each.

Length distributions (tokens including [CLS]/[SEP], clipped to [5, maxlen]):
  * tnews-like single titles: lognormal, median 22 tokens (titles of ~20 characters), sigma 0.35;
  * afqmc-like pairs: lognormal, median 33 tokens (two ~15-character questions), sigma 0.3;
  * iflytek-like long descriptions: lognormal, median 120 tokens, sigma 0.6 (maxlen 128).

    python benchmarks/bench_bucketing.py --quick   # checks the script
    python benchmarks/bench_bucketing.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DISTRIBUTIONS = {  # name: (median tokens, sigma, maxlen)
    "tnews": (22, 0.35, 64),
    "afqmc": (33, 0.3, 64),
    "iflytek": (120, 0.6, 128),
}


def lengths_of(name, n, rng):
    import numpy as np

    median, sigma, maxlen = DISTRIBUTIONS[name]
    return np.clip(rng.lognormal(np.log(median), sigma, size=n).astype(int), 5, maxlen)


def main():
    import keras
    import numpy as np

    from bert4keras_ng.clue import features as F
    from bert4keras_ng.clue.model import build_task_model, task_loss
    from bert4keras_ng.clue.optim import make_optimizer
    from bert4keras_ng.clue.runner import _Trainer
    from bert4keras_ng.clue.tasks import TASKS
    from bert4keras_ng.models import build_transformer_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--distributions", default="tnews,afqmc,iflytek")
    args = p.parse_args()
    if args.quick:
        args.samples, args.rounds, args.layers, args.hidden = 64, 1, 1, 64
    print(f"keras {keras.__version__}, {os.cpu_count()} CPUs (shared with other jobs: compare "
          f"the ratios of one run only); model: BERT {args.layers} layers x {args.hidden}, "
          f"{args.hidden // 64 or 1} heads, batch {args.batch_size}, {args.samples} samples")
    config = dict(vocab_size=8000, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=max(1, args.hidden // 64),
                  intermediate_size=4 * args.hidden, hidden_act="gelu",
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                  max_position_embeddings=512, type_vocab_size=2)
    spec = TASKS["tnews"]
    rng = np.random.default_rng(0)
    print(f"{'set':8s} {'batching':9s} {'samples/s':>10s} {'tokens/sample':>14s} "
          f"{'real tokens/sample':>19s} {'speed-up':>9s}")
    for name in args.distributions.split(","):
        lengths = lengths_of(name, args.samples, rng)
        feats = [F.Feature([[2] + list(rng.integers(100, 8000, n - 2)) + [3]],
                           label=int(rng.integers(spec.num_labels))) for n in lengths]
        backbone = build_transformer_model(None, model="bert", **config)
        model = build_task_model(spec, backbone, config)
        trainer = _Trainer(model, task_loss(spec), make_optimizer("adafactor", 5e-4))
        trainer.train_on_batch(*F.collate(spec, feats[:args.batch_size]))  # trace once
        times = {False: [], True: []}
        padded = {}
        for r in range(args.rounds):
            for bucket in (False, True):
                batch_rng = np.random.RandomState(r)
                tokens = 0
                t0 = time.perf_counter()
                for x, y, _ in F.iter_batches(spec, feats, args.batch_size, shuffle=True,
                                              rng=batch_rng, bucket=bucket):
                    tokens += x["Input-Token"].size
                    trainer.train_on_batch(x, y)
                times[bucket].append(time.perf_counter() - t0)
                padded[bucket] = tokens / len(feats)
        rate = {b: len(feats) / statistics.median(t) for b, t in times.items()}
        for bucket in (False, True):
            print(f"{name:8s} {'bucket' if bucket else 'plain':9s} {rate[bucket]:10.1f} "
                  f"{padded[bucket]:14.1f} {lengths.mean():19.1f} "
                  f"{rate[bucket] / rate[False]:8.2f}x")


if __name__ == "__main__":
    main()
