"""Why is mixed_bfloat16 + XLA slower than mixed_bfloat16 without XLA on a bf16 CPU?

Times the GEMMs of a BERT-base training step (8 x 128 tokens: the 768 -> 3072 feed-forward
matmul and the attention score batch matmul) in float32 and bfloat16, once through TensorFlow's
graph kernels (oneDNN, which uses AVX512_BF16 / AMX when the CPU has them) and once compiled by
XLA (``jit_compile=True``), in alternating rounds (medians), and prints whether XLA's optimised
HLO still holds a bfloat16 dot or converts the operands to float32 around an f32 one.

    python benchmarks/bench_bf16_xla.py
"""

import glob
import os
import statistics
import tempfile
import time

DUMP = tempfile.mkdtemp(prefix="bf16_xla_dump_")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_dump_to={DUMP} --xla_dump_hlo_as_text").strip()


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")
    return " ".join(w for w in wanted if w in flags) or "none of " + ", ".join(wanted)


def main(rounds=5):
    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, {os.cpu_count()} CPUs, CPU flags: {cpu_flags()}; the "
          "machine may be shared with other jobs: compare ratios within this run only")
    shapes = {"ffn 1024x768 @ 768x3072": ((1024, 768), (768, 3072), "ij,jk->ik"),
              "scores 96x128x64 @ 96x64x128": ((96, 128, 64), (96, 64, 128), "bij,bjk->bik")}
    fns, flops = {}, {}
    for name, (sa, sb, eq) in shapes.items():
        for dtype in ("float32", "bfloat16"):
            a = tf.cast(tf.random.normal(sa), dtype)
            b = tf.cast(tf.random.normal(sb), dtype)
            for xla in (False, True):
                f = tf.function(lambda a, b, eq=eq: tf.einsum(eq, a, b), jit_compile=xla)
                f(a, b)
                fns[(name, dtype, xla)] = (f, a, b)
            n = 1
            for d in sa:
                n *= d
            flops[name] = 2 * n * sb[-1]
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, (f, a, b) in fns.items():
            t = time.perf_counter()
            f(a, b).numpy()
            times[key].append(time.perf_counter() - t)
    print(f"{'GEMM':30s} {'dtype':9s} {'graph ms':>9s} {'XLA ms':>9s} {'XLA/graph':>10s} "
          f"{'graph GFLOP/s':>14s}")
    for name in shapes:
        for dtype in ("float32", "bfloat16"):
            g = statistics.median(times[(name, dtype, False)])
            x = statistics.median(times[(name, dtype, True)])
            print(f"{name:30s} {dtype:9s} {g * 1e3:9.2f} {x * 1e3:9.2f} {x / g:10.2f} "
                  f"{flops[name] / g / 1e9:14.1f}")
    upcast = native = 0
    for path in glob.glob(os.path.join(DUMP, "*after_optimizations.txt")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if " dot(" in line or "custom-call(" in line:
                    if "= bf16[" in line:
                        native += 1
                    elif "= f32[" in line:
                        upcast += 1
    print(f"optimised XLA HLO: {native} bfloat16 dot(s), {upcast} float32 dot(s) (the float32 "
          "programs' dots plus the bfloat16 programs' dots rewritten to float32)")


if __name__ == "__main__":
    main()
