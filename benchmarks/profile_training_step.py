"""Where does a training step's time go?  An op-level breakdown from TensorFlow's profiler.

Builds one implementation of ``bench_training_speed.py`` (same shape, head and AdamW), runs a few
warm-up steps, then records ``--steps`` steps with ``tf.profiler.experimental`` and sums the
host-thread op events of the trace (``*.xplane.pb``) by op type and by a coarse category
(GEMM, softmax, layer norm, GELU, dropout, optimizer update, ...).  Summed op time exceeds the
wall time when ops run in parallel on several cores (TensorFlow's inter-op pool), so the table
gives each category's share of the summed op time next to the wall time per step.

    python benchmarks/profile_training_step.py --mode float32            # our BERT, BERT-base
    python benchmarks/profile_training_step.py --impl keras_hub_bert --mode mixed_bfloat16
    python benchmarks/profile_training_step.py --quick --mode float32   # 2 small layers
    python benchmarks/profile_training_step.py --impl ours_bert,keras_hub_bert --steps 3

With several ``--impl`` they are built in one process and profiled in alternating steps
(A B A B ...), so that a shared machine's load falls on each alike, and a side-by-side table of
the categories follows the per-implementation reports.

Under XLA (``*_xla`` modes) a step is one compiled cluster and the trace holds no per-op
events; profile the graph modes, or dump XLA's HLO (``XLA_FLAGS=--xla_dump_to=DIR``).
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_training_speed as bench  # noqa: E402  (the builders and shapes of the benchmark)

# (category, regular expression on "op name:op type"), first match wins (GEMMs first: some of
# keras-hub's attention GEMMs have scope names that the optimizer pattern matches).
CATEGORIES = [
    ("GEMM", r":(_Mkl|_MklNative|_MklFused)?(MatMul|BatchMatMul\w*|Einsum|FusedMatMul|"
             r"_FusedMatMul\w*|Conv2D\w*)$"),
    ("optimizer update", r"(?i)(adam|/update|assign|weight_decay|optimizer|iteration)"),
    ("dropout", r"(?i)dropout"),
    ("softmax + mask", r"(?i)(softmax|attention_normalize|:Select\w*$|:Max$|:Any$)"),
    ("layer norm", r"(?i)norm"),
    # keras-hub's GELU has "Gelu" in its scope; ours is the element-wise tail of a FeedForward's
    # inner Dense (i0_dense/mul, .../truediv, .../Exp, ...), after its MatMul and BiasAdd
    ("GELU / activation", r"(?i)(gelu|:Erf$|:Erfc$|:Tanh$|"
                          r"/i\d_dense[^/]*/(mul|truediv|add|erf|exp|square|pow|neg)[^/:]*(/[^:]*)?:)"),
    ("transpose / reshape", r":(Transpose|_MklTranspose|Reshape|ConjugateTranspose)$"),
    ("embedding", r"(?i)embedding"),
    ("cast", r":Cast$"),
]


def category_of(name):
    for category, pattern in CATEGORIES:
        if re.search(pattern, name):
            return category
    return "other element-wise"


def op_events(logdir):
    """(name:type, duration ns) of every TensorFlow op event on the host's threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        raise RuntimeError(f"no *.xplane.pb written under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as handle:
        space.ParseFromString(handle.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # op events are "scope/name:Type"; executor bookkeeping events have no ':'
                # (and the enclosing function-call events, "__inference_...", are skipped)
                if ":" in name and "::" not in name and "__inference" not in name:
                    events.append((name, event.duration_ps // 1000))
    return events


IMPLS = ("ours_bert", "ours_roformer", "keras_hub_bert")


def profile_step(train, logdir):
    """Trace one call of ``train``; returns (wall seconds, op events)."""
    import tensorflow as tf

    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    train()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return wall, op_events(logdir)


def report(impl, mode, cfg, walls, events, steps, top, names_of):
    """Print one implementation's breakdown; returns its {category: ns summed over the steps}."""
    by_type, by_category = collections.Counter(), collections.Counter()
    for name, duration in events:
        op_type = name.rsplit(":", 1)[1]
        by_type[(category_of(name), op_type)] += duration
        by_category[category_of(name)] += duration
    total = sum(by_category.values()) or 1
    print(f"{impl}, {mode}, shape {cfg}; {os.cpu_count()} CPUs (the machine may be "
          "shared with other jobs: read the shares, not the absolute times)")
    print(f"wall time per step (profiled, median) {sorted(walls)[len(walls) // 2] * 1e3:.0f} ms; "
          f"summed op time per step {total / 1e6 / steps:.0f} ms over {len(events) // steps} "
          "op events")
    print(f"\n{'category':22s} {'ms/step':>9s} {'share':>7s}")
    for category, duration in by_category.most_common():
        print(f"{category:22s} {duration / 1e6 / steps:9.1f} {100 * duration / total:6.1f}%")
    print(f"\n{'category':22s} {'op type':28s} {'ms/step':>9s} {'share':>7s}")
    for (category, op_type), duration in by_type.most_common(top):
        print(f"{category:22s} {op_type:28s} {duration / 1e6 / steps:9.1f} "
              f"{100 * duration / total:6.1f}%")
    for op_type in filter(None, names_of.split(",")):
        by_name = collections.Counter()
        for name, duration in events:
            if name.rsplit(":", 1)[1] == op_type:
                # layer indices and op counters removed, so the 12 blocks' ops add up
                by_name[re.sub(r"_\d+|-\d+-", "#", name.rsplit(":", 1)[0])] += duration
        print(f"\nmost expensive {op_type} ops (block numbers replaced by #):")
        for name, duration in by_name.most_common(12):
            print(f"  {duration / 1e6 / steps:9.1f} ms  {name[-100:]}")
    return by_category


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 small layers, short batch")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--impl", default="ours_bert",
                        help="one of, or a comma list of, " + ", ".join(IMPLS))
    parser.add_argument("--mode", default="float32", choices=list(bench.MODES))
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (per implementation)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="op types listed")
    parser.add_argument("--names-of", default="", help="comma list of op types whose most "
                        "expensive op names (layer scopes) are listed too")
    args = parser.parse_args()
    impls = [name.strip() for name in args.impl.split(",") if name.strip()]
    for name in impls:
        if name not in IMPLS:
            parser.error(f"unknown --impl {name!r}; choose from {', '.join(IMPLS)}")
    cfg = bench.shape_config(args)

    builders = {
        "ours_bert": lambda: bench.build_ours("bert", cfg),
        "ours_roformer": lambda: bench.build_ours("roformer", cfg),
        "keras_hub_bert": lambda: bench.build_keras_hub(cfg),
    }
    trains = {name: bench.prepare_keras3(builders[name], cfg, args.mode)[0] for name in impls}
    for train in trains.values():  # after every build: building re-seeds, which retraces
        for _ in range(args.warmup):
            train()
    if hasattr(os, "getloadavg"):
        print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    walls = {name: [] for name in impls}
    events = {name: [] for name in impls}
    for _ in range(args.steps):
        for name, train in trains.items():
            wall, step_events = profile_step(train, tempfile.mkdtemp(prefix="profile_step_"))
            walls[name].append(wall)
            events[name].extend(step_events)
    categories = {}
    for name in impls:
        categories[name] = report(name, args.mode, cfg, walls[name], events[name], args.steps,
                                  args.top, args.names_of)
        print()
    if len(impls) > 1:
        print("side by side, summed op ms per step (steps profiled alternately):")
        print(f"{'category':22s} " + " ".join(f"{name:>15s}" for name in impls))
        order = sorted({c for counts in categories.values() for c in counts},
                       key=lambda c: -categories[impls[0]][c])
        for category in order + ["total"]:
            values = [sum(categories[n].values()) if category == "total" else
                      categories[n][category] for n in impls]
            print(f"{category:22s} " + " ".join(f"{v / 1e6 / args.steps:15.1f}" for v in values))
        print(f"{'wall (median)':22s} " + " ".join(
            f"{sorted(walls[n])[len(walls[n]) // 2] * 1e3:15.1f}" for n in impls))
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
