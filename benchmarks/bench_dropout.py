"""How much does a dropout mask cost: bert4keras_ng's hashed Dropout against keras.layers.Dropout?

Times ``reduce_sum(dropout(x, training=True))`` for the attention-probability shape of a BERT-base
step (8 x 12 x 128 x 128) and its hidden-state shape (8 x 128 x 768), as a plain tf.function and
under XLA, in alternating rounds, and prints milliseconds and the ratio keras / ours.

    python benchmarks/bench_dropout.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {"attention probs": (8, 12, 128, 128), "hidden states": (8, 128, 768)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from bert4keras_ng.layers import Dropout

    print(f"{'shape':16s} {'compiler':9s} {'keras ms':>9s} {'ours ms':>8s} {'keras/ours':>10s}")
    for label, shape in SHAPES.items():
        x = tf.random.normal(shape)
        for jit in (False, True):
            layers = {"keras": keras.layers.Dropout(0.1, seed=1), "ours": Dropout(0.1, seed=1)}
            fns = {name: tf.function(lambda t, layer=layer: tf.reduce_sum(layer(t, training=True)),
                                     jit_compile=jit) for name, layer in layers.items()}
            times = {name: [] for name in fns}
            for round_index in range(args.rounds + 2):  # two untimed rounds compile and warm up
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn(x).numpy()
                    if round_index >= 2:
                        times[name].append(time.perf_counter() - start)
            keras_ms, ours_ms = (1e3 * statistics.median(times[n]) for n in ("keras", "ours"))
            print(f"{label:16s} {'XLA' if jit else 'oneDNN':9s} {keras_ms:9.2f} {ours_ms:8.2f} "
                  f"{keras_ms / ours_ms:10.1f}")


if __name__ == "__main__":
    main()
