"""How much do building a model and loading a TF1 checkpoint cost compared with just reading it?

Writes a random BERT-base checkpoint (12 layers, 768 wide, vocab 21128, 512 positions, pooler,
NSP and MLM heads; ~110M float32 values) to a temporary directory, then measures, each in a
fresh Python process (``--repeat`` times each; medians are reported, since the machine may be
shared):

  read     tf.train.load_checkpoint + get_tensor of every variable (the floor)
  two-step build_transformer_model(config) with all three heads (build), then
           builder.load_weights_from_checkpoint(checkpoint) (load)
  one-call build_transformer_model(config, checkpoint): what a script runs every time; the
           loaded weights skip their random initialisation

and prints wall time and peak resident memory (VmHWM) with their ratios to the plain read.
Transient memory is the peak above the imports (read), above the built model (two-step load)
or above the imports (one-call).

    KERAS_BACKEND=tensorflow python benchmarks/bench_checkpoint_load.py [--layers 12] [--repeat 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, keras
from bert4keras_ng.models import build_transformer_model
mode, config_path, prefix = sys.argv[1:4]
def status(key):  # MB; VmHWM (peak) is reset by exec, unlike ru_maxrss
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
heads = dict(with_pool=True, with_nsp=True, with_mlm=True, return_keras_model=False)
result = {"base_mb": status("VmRSS")}
t0 = time.perf_counter()
if mode == "read":
    reader = tf.train.load_checkpoint(prefix)
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    result["values"] = int(sum(a.size for a in arrays.values()))
    result["seconds"] = time.perf_counter() - t0
elif mode == "two-step":
    builder = build_transformer_model(config_path, None, **heads)
    result["build_seconds"] = time.perf_counter() - t0
    result["built_mb"] = status("VmRSS")
    t1 = time.perf_counter()
    builder.load_weights_from_checkpoint(prefix)
    result["load_seconds"] = time.perf_counter() - t1
    result["seconds"] = time.perf_counter() - t0
    result["values"] = int(builder.model.count_params())
else:
    builder = build_transformer_model(config_path, prefix, **heads)
    result["seconds"] = time.perf_counter() - t0
    result["values"] = int(builder.model.count_params())
result["peak_mb"] = status("VmHWM")
print(json.dumps(result))
"""


def write_checkpoint(directory, layers):
    sys.path.insert(0, ROOT)
    import numpy as np

    from bert4keras_ng.checkpoints import save_variables

    config = {
        "vocab_size": 21128,
        "hidden_size": 768,
        "num_hidden_layers": layers,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }
    rng = np.random.default_rng(0)
    H, I, V = 768, 3072, 21128

    def r(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    arrays = {
        "bert/embeddings/word_embeddings": r(V, H),
        "bert/embeddings/token_type_embeddings": r(2, H),
        "bert/embeddings/position_embeddings": r(512, H),
        "bert/embeddings/LayerNorm/beta": r(H),
        "bert/embeddings/LayerNorm/gamma": 1 + r(H),
        "bert/pooler/dense/kernel": r(H, H),
        "bert/pooler/dense/bias": r(H),
        "cls/seq_relationship/output_weights": r(2, H),
        "cls/seq_relationship/output_bias": r(2),
        "cls/predictions/transform/dense/kernel": r(H, H),
        "cls/predictions/transform/dense/bias": r(H),
        "cls/predictions/transform/LayerNorm/beta": r(H),
        "cls/predictions/transform/LayerNorm/gamma": 1 + r(H),
        "cls/predictions/output_bias": r(V),
    }
    for i in range(layers):
        p = "bert/encoder/layer_%d/" % i
        for part in ("query", "key", "value"):
            arrays[p + "attention/self/%s/kernel" % part] = r(H, H)
            arrays[p + "attention/self/%s/bias" % part] = r(H)
        arrays[p + "attention/output/dense/kernel"] = r(H, H)
        arrays[p + "attention/output/dense/bias"] = r(H)
        arrays[p + "attention/output/LayerNorm/beta"] = r(H)
        arrays[p + "attention/output/LayerNorm/gamma"] = 1 + r(H)
        arrays[p + "intermediate/dense/kernel"] = r(H, I)
        arrays[p + "intermediate/dense/bias"] = r(I)
        arrays[p + "output/dense/kernel"] = r(I, H)
        arrays[p + "output/dense/bias"] = r(H)
        arrays[p + "output/LayerNorm/beta"] = r(H)
        arrays[p + "output/LayerNorm/gamma"] = 1 + r(H)
    prefix = os.path.join(directory, "bert_model.ckpt")
    save_variables(prefix, arrays)
    config_path = os.path.join(directory, "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    size = sum(a.nbytes for a in arrays.values()) / 2**20
    return config_path, prefix, size


def measure(mode, config_path, prefix):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, config_path, prefix],
        capture_output=True, text=True, env=env, check=True, cwd=ROOT,  # this checkout's package
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; medians are reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path, prefix, size = write_checkpoint(tmp, args.layers)
        print("machine: %d CPU(s) visible, load average %.1f at the start (other jobs may share "
              "it: times are indicative, read the ratios)" % (os.cpu_count() or 0, os.getloadavg()[0]))
        print("checkpoint: %d layers, %.0f MB of float32; %d run(s) per mode, medians"
              % (args.layers, size, args.repeat))
        runs = {m: [] for m in ("read", "two-step", "one-call")}
        for _ in range(args.repeat):  # interleaved, so that load changes hit every mode alike
            for mode in runs:
                runs[mode].append(measure(mode, config_path, prefix))
        read, two, one = (medians(runs[m]) for m in ("read", "two-step", "one-call"))
    t, mb = read["seconds"], read["peak_mb"]
    read_extra = max(read["peak_mb"] - read["base_mb"], 1.0)
    print("%-44s %7s %7s %9s %9s" % ("", "seconds", "x read", "peak MB", "x read"))
    rows = [
        ("plain read of all tensors", t, mb),
        ("two-step: build (no checkpoint)", two["build_seconds"], two["built_mb"]),
        ("two-step: load_weights_from_checkpoint", two["load_seconds"], two["peak_mb"]),
        ("two-step: build + load", two["seconds"], two["peak_mb"]),
        ("one call: build_transformer_model(cfg, ckpt)", one["seconds"], one["peak_mb"]),
    ]
    for label, seconds, peak in rows:
        print("%-44s %7.2f %7.2f %9.0f %9.2f" % (label, seconds, seconds / t, peak, peak / mb))
    print("transient memory above imports: read %.0f MB; two-step load %.0f MB above the built "
          "model (x%.2f); one call %.0f MB (x%.2f)" % (
              read_extra, two["peak_mb"] - two["built_mb"],
              (two["peak_mb"] - two["built_mb"]) / read_extra,
              one["peak_mb"] - one["base_mb"], (one["peak_mb"] - one["base_mb"]) / read_extra))


if __name__ == "__main__":
    main()
