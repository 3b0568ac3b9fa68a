"""Ladder Side-Tuning against full fine-tuning: one training step's time and peak memory.

Builds a BERT-base-shaped encoder (12 layers, 768 wide, 12 heads, FFN 3072, vocab 21128; random
weights, no checkpoint needed) with a [CLS] → Dense(2) head, and for each mode, in a fresh
Python process, compiles one XLA training step (Adam, both modes) and times ``--steps`` steps
after ``--warmup`` warm-up steps (median reported):

  full   every weight trainable (ordinary fine-tuning)
  lst    bert4keras_ng.lst.ladder_side_tuning: frozen backbone + side network (128 wide, 4 layers)

Peak memory is the accelerator's peak allocation during the training steps when a GPU is
visible (tf.config.experimental.get_memory_info), else the process's peak resident memory
(VmHWM: weights, optimizer state, XLA compilation and activations together; CPU).  The post
claims LST is about 2× faster with far less memory; results are printed and, with ``--json``,
written to a file.

    python benchmarks/bench_lst.py [--batch 8] [--seq 128] [--steps 5] [--layers 12]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, time, statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, sys.argv[2])
import numpy as np, tensorflow as tf, keras
from bert4keras_ng import training
from bert4keras_ng.lst import ladder_side_tuning
from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.layers.pooling import FirstTokenPooling
args = json.loads(sys.argv[1])
def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
gpus = tf.config.list_physical_devices("GPU")
keras.utils.set_random_seed(0)
bert = build_transformer_model(None, None, model="bert", vocab_size=21128,
    hidden_size=args["hidden"], num_hidden_layers=args["layers"],
    num_attention_heads=args["hidden"] // 64, intermediate_size=4 * args["hidden"],
    hidden_act="gelu", dropout_rate=0.1)
body = ladder_side_tuning(bert) if args["mode"] == "lst" else bert
out = keras.layers.Dense(2, dtype="float32")(FirstTokenPooling()(body.output))
model = keras.Model(body.inputs, out)
training.compile_model(model, keras.optimizers.Adam(1e-4),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = [rng.integers(1, 21128, (args["batch"], args["seq"])).astype("int32"),
     np.zeros((args["batch"], args["seq"]), "int32")]
y = rng.integers(0, 2, (args["batch"],))
t = time.perf_counter()
model.train_on_batch(x, y)
compile_s = time.perf_counter() - t
for _ in range(args["warmup"] - 1):
    model.train_on_batch(x, y)
if gpus:
    tf.config.experimental.reset_memory_stats("GPU:0")
times = []
for _ in range(args["steps"]):
    t = time.perf_counter()
    loss = model.train_on_batch(x, y)
    float(np.asarray(loss))  # wait for the device
    times.append(time.perf_counter() - t)
if gpus:
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    where = "GPU peak allocation"
else:
    peak = hwm()
    where = "CPU: peak resident memory of the whole process"
print(json.dumps({"mode": args["mode"], "step_s": statistics.median(times),
                  "first_step_s": compile_s, "peak_mib": peak, "memory": where,
                  "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                  "device": "GPU" if gpus else "CPU"}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    rows = []
    for mode in ("full", "lst"):
        spec = dict(vars(args), mode=mode)
        spec.pop("json")
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), ROOT],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"{mode} worker failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    full, lst = rows
    print(f"BERT-shaped encoder: {args.layers} layers x {args.hidden}, batch {args.batch} x "
          f"{args.seq} tokens, {args.steps} timed steps (median), device {full['device']}")
    print("NOTE: timings on a shared machine are indicative only.")
    print(f"{'mode':6s} {'trainable':>12s} {'step s':>9s} {'peak MiB':>10s}  ({full['memory']})")
    for r in rows:
        print(f"{r['mode']:6s} {r['trainable']:12,d} {r['step_s']:9.4f} {r['peak_mib']:10.1f}")
    print(f"LST / full: step time {lst['step_s'] / full['step_s']:.2f}x, "
          f"peak memory {lst['peak_mib'] / max(full['peak_mib'], 1e-9):.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(args), "results": rows, "shared_machine": True}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
