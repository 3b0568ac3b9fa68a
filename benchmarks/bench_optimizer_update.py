"""How long does one AdamW update with decoupled weight decay take over BERT-base-sized weights?

Times, in alternating rounds, one ``apply`` of the same gradients to ``--params`` million float32
parameters (split over ``--variables`` equal variables, all decayed) for
  * ``keras``: ``keras.optimizers.AdamW`` (a dozen element-wise ops per variable),
  * ``two_kernels``: the decay as ``ResourceApplyGradientDescent`` fed the variable's own value,
    then ``ResourceApplyAdam`` (bert4keras_ng's update before it became one pass),
  * ``ours``: ``extend_with_weight_decay(AdamW)`` (one XLA-compiled pass per variable),
  * ``adam_only``: ``ResourceApplyAdam`` without any decay, the floor of a one-pass update,
each as a plain ``tf.function`` (no XLA around it), and prints milliseconds and ratios.

    python benchmarks/bench_optimizer_update.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=float, default=100.0, help="million parameters")
    parser.add_argument("--variables", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from bench_training_speed import cpu_flags
    from bert4keras_ng import optimizers

    size = int(args.params * 1e6 / args.variables)
    rng = np.random.default_rng(0)
    start = [rng.normal(size=size).astype("float32") for _ in range(args.variables)]
    grads = [tf.constant(rng.normal(size=size).astype("float32")) for _ in range(args.variables)]
    lr, rate = 2e-5, 0.01

    def keras_adamw():
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=rate)

    def ours():
        return optimizers.extend_with_weight_decay(optimizers.AdamW)(
            learning_rate=lr, weight_decay_rate=rate)

    def applier(make):
        variables = [keras.Variable(v) for v in start]
        opt = make()
        opt.build(variables)
        return tf.function(lambda: opt.apply(grads, variables)), variables

    def raw_kernels(decay):
        variables = [tf.Variable(v) for v in start]
        moments = [(tf.Variable(tf.zeros(size)), tf.Variable(tf.zeros(size))) for _ in start]

        @tf.function
        def update():
            for var, (m, v), g in zip(variables, moments, grads):
                if decay:
                    tf.raw_ops.ResourceApplyGradientDescent(
                        var=var.handle, alpha=tf.constant(lr * rate), delta=var.read_value())
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle, m=m.handle, v=v.handle, beta1_power=0.9, beta2_power=0.999,
                    lr=lr, beta1=0.9, beta2=0.999, epsilon=1e-7, grad=g)
        return update, variables

    updates = {"keras": applier(keras_adamw), "two_kernels": raw_kernels(True),
               "ours": applier(ours), "adam_only": raw_kernels(False)}
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"CPU flags: {cpu_flags()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.params:g} M float32 parameters in {args.variables} variables, all decayed")
    times = {name: [] for name in updates}
    for round_index in range(args.rounds + 2):  # two untimed rounds trace and compile
        for name, (update, variables) in updates.items():
            begin = time.perf_counter()
            update()
            keras.ops.convert_to_numpy(variables[-1][:1])  # wait for the update
            if round_index >= 2:
                times[name].append(time.perf_counter() - begin)
    median = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    for name, ms in median.items():
        print(f"{name:12s} {ms:8.1f} ms   {ms / median['ours']:5.2f}x ours")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
