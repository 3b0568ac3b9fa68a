"""How fast do our BERT and RoFormer fine-tune and run forward, next to keras-hub and bert4keras?

One run times, for each implementation and precision mode,
  * a fine-tuning step (``train_on_batch``: forward, loss, backward, AdamW update) and
  * a forward pass (``predict_on_batch``)
of a BERT-base shaped encoder (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 21128,
batch 8 x 128, dropout 0.1, a first-token float32 softmax classifier) for
  * bert4keras_ng BERT and RoFormer (this repository, Keras 3),
  * keras-hub ``BertBackbone`` (Keras 3; reference for the ratios),
  * bert4keras 0.11.5 BERT and RoFormer (tf_keras, with tf_keras's AdamW since bert4keras's
    optimizer wrappers need the legacy optimizer API; each in a worker process of the reference
    venv's python, ``--bert4keras-python``),
in float32, float32 + XLA (``jit_compile=True``) and mixed_bfloat16 by default (``--modes``
also offers mixed_bfloat16_xla, mixed_float16 and mixed_float16_xla).
It prints milliseconds per step, the ratio to keras-hub's time in the same mode, and achieved
GFLOP/s (analytic matmul FLOPs: forward 2*T*12*L*d^2 + 4*L*B*n^2*d, training 3x forward)
next to the machine's matmul peak: the fastest GEMM of a sweep over shapes (a large square one
and the model's own) and compilers (oneDNN and XLA), timed again in every round beside the
training steps, since a shared machine's speed drifts by tens of percent within minutes.

    python benchmarks/bench_training_speed.py --quick      # 2 small layers, checks the script
    python benchmarks/bench_training_speed.py              # BERT-base shape
    KERAS_BACKEND=jax python benchmarks/bench_training_speed.py --only ours_bert,keras_hub_bert \
        --modes float32_xla,mixed_bfloat16_xla --batch 32 --length 512 --peak-size 8192  # a GPU

On the JAX backend every mode is compiled by XLA (use the *_xla modes) and bert4keras, which
needs TensorFlow, is skipped.

Figures are medians over ``--steps`` timed calls after ``--warmup`` untimed ones. All
implementations of a mode are built side by side (bert4keras in worker processes) and timed in
alternating rounds, so a shared machine's drift affects them alike; compare ratios measured in
the same run only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODES = {
    "float32": {"policy": "float32", "jit": False},
    "float32_xla": {"policy": "float32", "jit": True},
    "mixed_bfloat16": {"policy": "mixed_bfloat16", "jit": False},
    "mixed_bfloat16_xla": {"policy": "mixed_bfloat16", "jit": True},
    "mixed_float16": {"policy": "mixed_float16", "jit": False},
    "mixed_float16_xla": {"policy": "mixed_float16", "jit": True},
}


def shape_config(args):
    if args.quick:
        cfg = dict(layers=2, hidden=256, heads=4, ffn=1024, vocab=21128, batch=2, length=64)
    else:
        cfg = dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=21128, batch=8, length=128)
    cfg["batch"] = getattr(args, "batch", None) or cfg["batch"]
    cfg["length"] = getattr(args, "length", None) or cfg["length"]
    return cfg


def flops(cfg):
    """Analytic matmul FLOPs of one forward pass (embeddings lookups and softmax ignored)."""
    tokens = cfg["batch"] * cfg["length"]
    d, layers = cfg["hidden"], cfg["layers"]
    dense = 2 * tokens * layers * (4 * d * d + 2 * d * cfg["ffn"])
    attention = 4 * layers * cfg["batch"] * cfg["length"] ** 2 * d
    return dense + attention


def inputs(cfg, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, cfg["vocab"], size=(cfg["batch"], cfg["length"])).astype("int32")
    segments = np.zeros_like(tokens)
    labels = rng.integers(0, 2, size=(cfg["batch"],)).astype("int32")
    return tokens, segments, labels


def cpu_flags():
    """The CPU's vector / bf16 features from /proc/cpuinfo (where it exists)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next(line for line in handle if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(w for w in wanted if w in flags) or "none of " + ", ".join(wanted)


def time_calls(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def precision_of(mode):
    """The GEMM precision a mode computes in."""
    return "bfloat16" if "bfloat16" in mode else "float16" if "float16" in mode else "float32"


def peak_text(peak):
    return ", ".join(f"{dtype} {value:.1f} GFLOP/s" for dtype, value in peak.items())


def gemm_shapes(cfg, size):
    """(m, k, n) GEMMs for the peak: one large square one and the encoder's own dense shapes."""
    tokens, d, ffn = cfg["batch"] * cfg["length"], cfg["hidden"], cfg["ffn"]
    return [(size, size, size), (tokens, d, d), (tokens, d, ffn), (tokens, ffn, d)]


def gemm_probes(cfg, size, repeats=5):
    """For each precision, the fastest GEMM this machine runs: a sweep over several shapes (a large
    square one and the model's own), each as a plain tf.function (oneDNN) and under XLA on
    TensorFlow, under jax.jit on JAX. Returns {dtype: (GFLOP/s in the sweep, probe)}; calling
    ``probe()`` runs that GEMM a few times and returns its GFLOP/s, so the ceiling can be measured
    again right beside each training step."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        compilers = [lambda f: jax.jit(f)]
        normal = lambda shape, dtype: jax.random.normal(jax.random.PRNGKey(0), shape).astype(dtype)
        fetch = lambda x: x.block_until_ready()
        matmul_of = lambda x, y: jnp.sum(jnp.matmul(x, y).astype("float32"))
    else:
        import tensorflow as tf

        compilers = [lambda f: tf.function(f), lambda f: tf.function(f, jit_compile=True)]
        normal = lambda shape, dtype: tf.cast(tf.random.normal(shape), dtype)
        fetch = lambda x: x.numpy()
        matmul_of = lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y), "float32"))

    def make_probe(m, k, n, matmul, a, b):
        def probe():
            return 2 * m * k * n / time_calls(lambda: fetch(matmul(a, b)), 0, repeats) / 1e9
        return probe

    result = {}
    for dtype in ["float32", "bfloat16", "float16"]:
        best = (0.0, None)
        for m, k, n in gemm_shapes(cfg, size):
            a, b = normal((m, k), dtype), normal((k, n), dtype)
            for compile_fn in compilers:
                probe = make_probe(m, k, n, compile_fn(matmul_of), a, b)
                probe()  # compile and warm up
                rate = probe()
                if rate > best[0]:
                    best = (rate, probe)
        result[dtype] = best
    return result


# ---------------------------------------------------------------------------------------------
# Keras 3 implementations (this process)
# ---------------------------------------------------------------------------------------------


def build_ours(family, cfg):
    import keras

    from bert4keras_ng.layers import FirstTokenPooling
    from bert4keras_ng.models import build_transformer_model

    encoder = build_transformer_model(
        model=family,
        vocab_size=cfg["vocab"],
        hidden_size=cfg["hidden"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        intermediate_size=cfg["ffn"],
        hidden_act="gelu",
        max_position_embeddings=512,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    pooled = FirstTokenPooling(name="Pooler")(encoder.output)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="Classifier")(pooled)
    model = keras.Model(encoder.inputs, probs)
    return model, lambda t, s: [t, s]


def build_keras_hub(cfg):
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg["vocab"],
        num_layers=cfg["layers"],
        num_heads=cfg["heads"],
        hidden_dim=cfg["hidden"],
        intermediate_dim=cfg["ffn"],
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
    )
    sequence = backbone.output["sequence_output"]
    pooled = keras.layers.Lambda(lambda x: x[:, 0], name="Pooler")(sequence)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="Classifier")(pooled)
    model = keras.Model(backbone.input, probs)

    def feed(tokens, segments):
        return {
            "token_ids": tokens,
            "segment_ids": segments,
            "padding_mask": (tokens != 0).astype("int32"),
        }

    return model, feed


def prepare_keras3(builder, cfg, mode):
    """Build and compile one Keras 3 implementation; returns its (train step, forward) callables."""
    import keras

    from bert4keras_ng import optimizers, training

    keras.utils.set_random_seed(0)
    setting = MODES[mode]
    with training.dtype_policy(setting["policy"]):
        model, feed = builder()
    optimizer = optimizers.extend_with_weight_decay(optimizers.AdamW)(
        learning_rate=2e-5, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"]
    )
    training.compile_model(
        model, optimizer, "sparse_categorical_crossentropy", jit_compile=setting["jit"]
    )
    tokens, segments, labels = inputs(cfg)
    x = feed(tokens, segments)
    return (lambda: model.train_on_batch(x, labels)), (lambda: model.predict_on_batch(x))


def time_interleaved(functions, warmup, steps):
    """Median seconds per call of each function, timed in alternating rounds (A B C A B C ...) so
    that a shared machine's slow and fast minutes fall on every implementation alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(steps):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run_modes(builders, bert4keras_families, cfg, modes, args, report, probes):
    """Every implementation of the given modes, built side by side (bert4keras in worker
    processes) and timed in alternating rounds, with the GEMM ceiling probe of each precision
    run in the same rounds; returns {mode: the probe's median GFLOP/s}.  One mode per call
    compares implementations; several (``--interleave-modes``) also compare the modes."""
    import keras

    keras.backend.clear_session()
    calls, workers = {}, []
    for mode in modes:
        for name, builder in builders.items():
            try:
                train, forward = prepare_keras3(builder, cfg, mode)
                calls[(name, mode)] = {"train": train, "forward": forward}
            except Exception as error:  # one failing implementation must not stop the run
                report(name, mode, None, error)
        for name, family in bert4keras_families.items():
            try:
                worker = Bert4kerasWorker(family, cfg, mode, args)
            except Exception as error:
                report(name, mode, None, error)
                continue
            workers.append(worker)
            calls[(name, mode)] = {kind: (lambda w=worker, k=kind: w.call(k))
                                   for kind in ("train", "forward")}
    try:
        rates = {precision_of(mode): [] for mode in modes}
        train_fns = {key: fns["train"] for key, fns in calls.items()}
        for precision, values in rates.items():
            train_fns[("gemm_peak", precision)] = (
                lambda p=probes[precision][1], v=values: v.append(p()))
        train = time_interleaved(train_fns, args.warmup, args.steps)
        forward = time_interleaved({k: fns["forward"] for k, fns in calls.items()}, args.warmup,
                                   args.steps)
    finally:
        for worker in workers:
            worker.close()
    for (name, mode) in calls:
        report(name, mode, {"train": train[(name, mode)], "forward": forward[(name, mode)]},
               None)
    return {mode: statistics.median(rates[precision_of(mode)][args.warmup:]) for mode in modes}


# ---------------------------------------------------------------------------------------------
# bert4keras 0.11.5 (subprocess, reference venv)
# ---------------------------------------------------------------------------------------------

BERT4KERAS_WORKER = textwrap.dedent(
    """
    import json, os, sys, tempfile
    os.environ["TF_KERAS"] = "1"
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    request = json.loads(sys.argv[1])
    cfg, family, mode = request["cfg"], request["family"], request["mode"]
    from bert4keras.backend import keras
    from bert4keras.models import build_transformer_model
    if mode.startswith("mixed_bfloat16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = dict(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
                  num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                  intermediate_size=cfg["ffn"], hidden_act="gelu",
                  max_position_embeddings=512, type_vocab_size=2,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    path = os.path.join(tempfile.mkdtemp(), "config.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    encoder = build_transformer_model(path, model=family)
    pooled = keras.layers.Lambda(lambda x: x[:, 0])(encoder.output)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32")(pooled)
    model = keras.models.Model(encoder.inputs, probs)
    # bert4keras's own optimizer wrappers need tf_keras's legacy optimizer API (_set_hyper),
    # which tf_keras 2.21's default optimizers no longer have: use tf_keras's AdamW.
    optimizer = keras.optimizers.AdamW(learning_rate=2e-5, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["Norm", "bias"])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer,
                  jit_compile=mode.endswith("xla"))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, cfg["vocab"], size=(cfg["batch"], cfg["length"])).astype("int32")
    x = [tokens, np.zeros_like(tokens)]
    y = rng.integers(0, 2, size=(cfg["batch"],)).astype("int32")
    calls = {"train": lambda: model.train_on_batch(x, y), "forward": lambda: model.predict_on_batch(x)}
    print("READY", flush=True)
    for line in sys.stdin:  # one command per line: train | forward | quit
        command = line.strip()
        if command == "quit":
            break
        calls[command]()
        print("DONE", flush=True)
    """
)


class Bert4kerasWorker:
    """bert4keras 0.11.5 in a process of the reference venv (tf_keras), kept alive so that its
    steps can be timed in the same alternating rounds as the Keras 3 implementations."""

    def __init__(self, family, cfg, mode, args):
        env = dict(os.environ)
        env.pop("KERAS_BACKEND", None)
        request = json.dumps({"cfg": cfg, "family": family, "mode": mode})
        # stderr goes to a file, not a pipe: TensorFlow's logging would fill an undrained pipe
        # and block the worker
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [args.bert4keras_python, "-c", BERT4KERAS_WORKER, request],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=tempfile.gettempdir())
        self._expect("READY")

    def _expect(self, word):
        line = self.process.stdout.readline()
        while line and not line.startswith(word):
            line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(tail[0][:200])

    def call(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        self._expect("DONE")

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 small layers, short batch")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8)")
    parser.add_argument("--length", type=int, default=None, help="sequence length (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed calls (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls (compilation)")
    parser.add_argument("--modes", default="float32,float32_xla,mixed_bfloat16",
                        help="comma list of " + ", ".join(MODES))
    parser.add_argument("--only", default="ours_bert,ours_roformer,keras_hub_bert,"
                        "bert4keras_bert,bert4keras_roformer", help="comma list of implementations")
    parser.add_argument("--bert4keras-python", default="/work/refvenv/bin/python")
    parser.add_argument("--peak-size", type=int, default=None, help="GEMM size for the peak")
    parser.add_argument("--interleave-modes", action="store_true",
                        help="build every mode's models at once and time all of them in the same "
                             "alternating rounds, so that modes can be compared too (memory: "
                             "one model per implementation and mode)")
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 2 if args.quick else 5
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    cfg = shape_config(args)

    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        versions, devices = f"jax {jax.__version__}", [d.device_kind for d in jax.devices()]
    else:
        import tensorflow as tf

        versions = f"tensorflow {tf.__version__}"
        devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"keras {keras.__version__} ({backend} backend), {versions}, {os.cpu_count()} CPUs "
          f"visible, devices {devices}, CPU flags: {cpu_flags()}; the machine may be shared with "
          "other jobs: compare the ratios of one run only")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the start: {load:.1f}")
    print(f"shape: {cfg}")
    peak_size = args.peak_size or (1024 if args.quick else 2048)
    probes = gemm_probes(cfg, peak_size)
    print("matmul peak sweep: " + peak_text({dtype: rate for dtype, (rate, _) in probes.items()}))
    forward_flops = flops(cfg)
    print(f"analytic FLOPs: forward {forward_flops / 1e9:.2f} G, train step "
          f"{3 * forward_flops / 1e9:.2f} G")

    keras3_builders = {
        "ours_bert": lambda: build_ours("bert", cfg),
        "ours_roformer": lambda: build_ours("roformer", cfg),
        "keras_hub_bert": lambda: build_keras_hub(cfg),
    }
    bert4keras_families = {"bert4keras_bert": "bert", "bert4keras_roformer": "roformer"}
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    for name in chosen:
        if name not in keras3_builders and name not in bert4keras_families:
            parser.error(f"unknown implementation {name!r}")
    results = {}
    peaks = {}

    def report(name, mode, value, error):
        results[(name, mode)] = value
        if value is None:
            status = f"failed: {type(error).__name__}: {str(error)[:160]}"
        else:
            status = f"train {value['train'] * 1e3:.1f} ms, forward {value['forward'] * 1e3:.1f} ms"
        print(f"  measured {name:20s} {mode:18s} {status}", flush=True)

    builders = {name: keras3_builders[name] for name in chosen if name in keras3_builders}
    families = {name: bert4keras_families[name] for name in chosen if name in bert4keras_families}
    if families and backend != "tensorflow":
        for mode in modes:
            for name in families:
                report(name, mode, None, RuntimeError("bert4keras needs the tensorflow backend"))
        families = {}
    for group in ([modes] if args.interleave_modes else [[mode] for mode in modes]):
        peaks.update(run_modes(builders, families, cfg, group, args, report, probes))
        for mode in group:
            print(f"  measured {'gemm_peak':20s} {mode:18s} {peaks[mode]:.1f} GFLOP/s "
                  f"({precision_of(mode)}, interleaved with the training steps)", flush=True)

    print()
    header = (f"{'implementation':20s} {'mode':18s} {'train ms':>9s} {'vs hub':>7s} "
              f"{'GFLOP/s':>8s} {'fwd ms':>8s} {'vs hub':>7s} {'GFLOP/s':>8s} {'% peak':>7s}")
    print(header)
    print("-" * len(header))
    for mode in modes:
        reference = results.get(("keras_hub_bert", mode))
        mode_peak = peaks.get(mode) or probes[precision_of(mode)][0]
        for name in chosen:
            value = results.get((name, mode))
            if value is None:
                print(f"{name:20s} {mode:18s} {'failed':>9s}")
                continue
            train_rate = 3 * forward_flops / value["train"] / 1e9
            forward_rate = forward_flops / value["forward"] / 1e9
            ratio_train = f"{value['train'] / reference['train']:.2f}" if reference else "-"
            ratio_fwd = f"{value['forward'] / reference['forward']:.2f}" if reference else "-"
            print(f"{name:20s} {mode:18s} {value['train'] * 1e3:9.1f} {ratio_train:>7s} "
                  f"{train_rate:8.1f} {value['forward'] * 1e3:8.1f} {ratio_fwd:>7s} "
                  f"{forward_rate:8.1f} {100 * train_rate / mode_peak:6.0f}%")
    print("\n'vs hub' = time / keras-hub BertBackbone time in the same mode (< 1: faster); "
          "'% peak' = training GFLOP/s / the GEMM ceiling of that precision measured in the same "
          "rounds as the training steps.")
    print_targets(results, modes, args.interleave_modes)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def print_targets(results, modes, interleaved):
    """Issue 15's ratios: our training step against the fastest peer of the same mode, and (when
    the modes were timed in the same rounds) each mode against our float32 step."""
    peers = ("keras_hub_bert", "bert4keras_bert")
    for mode in modes:
        ours = results.get(("ours_bert", mode))
        timed = [(results[(peer, mode)]["train"], peer) for peer in peers
                 if results.get((peer, mode))]
        if ours and timed:
            fastest, peer = min(timed)
            print(f"ours_bert {mode}: {fastest / ours['train']:.2f}x the fastest peer ({peer})")
    base = results.get(("ours_bert", "float32"))
    if interleaved and base:
        for mode in modes:
            value = results.get(("ours_bert", mode))
            if value and mode != "float32":
                print(f"ours_bert {mode}: {base['train'] / value['train']:.2f}x ours_bert float32 "
                      "(same rounds)")


if __name__ == "__main__":
    main()
