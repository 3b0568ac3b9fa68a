"""Mixed precision, XLA, loss scaling, NaN guard and tf.distribute with our optimizers."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from bert4keras_ng import optimizers as O
from bert4keras_ng import training as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# A learnable synthetic task: does token 7 occur in the sequence?
# ---------------------------------------------------------------------------------------------


def synthetic_task(n=256, length=12, vocab=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, length))
    x[x == 7] = 8
    y = rng.integers(0, 2, size=(n,))
    positions = rng.integers(0, length, size=(n,))
    x[np.arange(n), positions] = np.where(y == 1, 7, x[np.arange(n), positions])
    return x.astype("int32"), y.astype("int32")


def tiny_classifier(vocab=20, dim=32, seed=0):
    """Embedding, one self-attention block, pooling and a float32 softmax head."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((None,), dtype="int32", name="Input-Token")
    h = keras.layers.Embedding(vocab, dim, name="Embedding-Token")(tokens)
    a = keras.layers.MultiHeadAttention(2, dim // 2, name="Transformer-0-MultiHeadSelfAttention")(
        h, h
    )
    h = keras.layers.LayerNormalization(name="Transformer-0-MultiHeadSelfAttention-Norm")(h + a)
    f = keras.layers.Dense(2 * dim, activation="gelu", name="Transformer-0-FeedForward-i")(h)
    f = keras.layers.Dense(dim, name="Transformer-0-FeedForward-o")(f)
    h = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(h + f)
    h = keras.layers.GlobalMaxPooling1D(name="Pooler")(h)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="Classifier")(h)
    return keras.Model(tokens, probs)


# ---------------------------------------------------------------------------------------------
# dtype_policy / compile_model / prepare_optimizer
# ---------------------------------------------------------------------------------------------


def test_dtype_policy_context_restores_the_global_policy():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with T.dtype_policy("mixed_bfloat16") as policy:
            assert policy.name == "mixed_bfloat16"
            assert keras.layers.Dense(2).compute_dtype == "bfloat16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_compile_model_chooses_loss_scaling_by_precision():
    with T.dtype_policy("mixed_float16"):
        fp16 = tiny_classifier()
    with T.dtype_policy("mixed_bfloat16"):
        bf16 = tiny_classifier()
    T.compile_model(fp16, O.Tiger(), "sparse_categorical_crossentropy")
    assert isinstance(fp16.optimizer, keras.optimizers.LossScaleOptimizer)
    assert fp16.jit_compile is True  # float16: XLA by default on a single device, CPU included
    T.compile_model(bf16, O.Tiger(), "sparse_categorical_crossentropy")
    assert isinstance(bf16.optimizer, O.Tiger) and bf16.optimizer.loss_scale_factor is None
    fp32 = tiny_classifier()
    T.compile_model(fp32, O.AdamW(), "sparse_categorical_crossentropy", loss_scale=1024)
    assert fp32.optimizer.loss_scale_factor == 1024.0
    with pytest.raises(ValueError, match="loss_scale"):
        T.prepare_optimizer(O.AdamW(), fp32, loss_scale="static")
    with pytest.raises(ValueError, match="loss_scale"):
        T.prepare_optimizer(O.AdamW(), fp32, loss_scale=-1.0)


def test_compile_model_warns_about_low_precision_outputs():
    with T.dtype_policy("mixed_float16"):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="Head")(inputs))
    with pytest.warns(UserWarning, match="float32"):
        T.compile_model(model, O.AdamW(), "mse")


# ---------------------------------------------------------------------------------------------
# NaN guard
# ---------------------------------------------------------------------------------------------


def test_nan_guard_raises_naming_the_step():
    x, y = synthetic_task(64)
    x = x.astype("float32")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=O.Tiger(), loss="sparse_categorical_crossentropy")
    x_bad = x.copy()
    x_bad[8 * 5 + 3, 4] = np.nan  # batch 6 of every epoch (batch size 8, 8 batches per epoch)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[T.NaNGuard()])
    with pytest.raises(T.TrainingDivergedError,
                       match=r"Training diverged: loss is nan at step 6 \(epoch 1, batch 6\)"):
        model.fit(x_bad, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                  callbacks=[T.NaNGuard()])
    # The step keeps counting across epochs: poison a weight at the end of epoch 1.
    model.compile(optimizer=O.Tiger(), loss="sparse_categorical_crossentropy")

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernel = self.model.layers[-1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    with pytest.raises(T.TrainingDivergedError, match=r"at step 9 \(epoch 2, batch 1\)"):
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                  callbacks=[Poison(), T.NaNGuard()])


def test_nan_guard_names_the_range_under_steps_per_execution():
    x, y = synthetic_task(64)
    x = x.astype("float32")
    x[8 * 5 + 3, 4] = np.nan  # batch 6 (batch size 8)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=O.Tiger(), loss="sparse_categorical_crossentropy",
                  steps_per_execution=4)
    with pytest.raises(T.TrainingDivergedError,
                       match="loss is nan within steps 5\u20138 \\(epoch 1, batches 5\u20138"):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[T.NaNGuard()])


def test_nan_guard_checks_epoch_end_logs_for_validation_keys():
    x, y = synthetic_task(32)
    x = x.astype("float32")
    x_val = x[:8].copy()
    x_val[0, 0] = np.nan  # training stays finite, validation loss is NaN
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=O.Tiger(), loss="sparse_categorical_crossentropy")
    with pytest.raises(T.TrainingDivergedError,
                       match=r"val_loss is nan at the end of epoch 1 \(after step 4\)"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x_val, y[:8]),
                  callbacks=[T.NaNGuard(monitor="val_loss")])
    with pytest.raises(ValueError, match="monitor"):
        T.NaNGuard(monitor=[])


def test_check_finite_loss_for_custom_loops():
    T.check_finite_loss(np.float32(0.5), step=3)
    with pytest.raises(T.TrainingDivergedError, match="loss is inf at step 42"):
        T.check_finite_loss(np.float32(np.inf), step=42)


# ---------------------------------------------------------------------------------------------
# Every optimizer and wrapper under mixed precision + XLA
# ---------------------------------------------------------------------------------------------


def _all_optimizers():
    full = O.extend_with_parameter_wise_lr(O.extend_with_lazy_optimization(
        O.extend_with_lookahead(O.extend_with_exponential_moving_average(
            O.extend_with_layer_adaptation(O.extend_with_gradient_accumulation(
                O.extend_with_piecewise_linear_lr(O.extend_with_weight_decay(O.Adam))))))))
    return {
        "tiger": lambda: O.Tiger(learning_rate=3e-3, grad_accum_steps=2, lr_schedule={2: 1}),
        "adamw": lambda: O.AdamW(learning_rate=3e-3),
        "lamb": lambda: O.Lamb(learning_rate=3e-3),
        "lion": lambda: O.Lion(learning_rate=3e-4),
        "adafactor": lambda: O.Adafactor(learning_rate=3e-3),
        "all_wrappers": lambda: full(
            learning_rate=3e-3, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"],
            lr_schedule={4: 1}, grad_accum_steps=2, exclude_from_layer_adaptation=["Norm"],
            ema_momentum=0.9, steps_per_slow_update=3, include_in_lazy_optimization=["Embedding"],
            paramwise_lr_schedule={"Classifier": 2.0}),
    }


def _train_a_few_steps(policy, make_optimizer, name, n=64, batch_size=4, dim=16):
    # 16 steps: dynamic loss scaling skips the first few float16 steps while the scale drops.
    x, y = synthetic_task(n)
    with T.dtype_policy(policy):
        model = tiny_classifier(dim=dim)
    T.compile_model(model, make_optimizer(), "sparse_categorical_crossentropy", jit_compile=True)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
                        callbacks=[T.NaNGuard()])
    assert np.isfinite(history.history["loss"][-1]), name
    assert all(w.dtype == np.float32 for w in model.get_weights()), name
    assert any(np.abs(a - b).max() > 0 for a, b in zip(model.get_weights(), before)), name


@pytest.mark.parametrize("policy,name", [("mixed_float16", "all_wrappers"),
                                         ("mixed_bfloat16", "tiger")])
def test_wrappers_and_tiger_train_in_mixed_precision_with_xla(policy, name):
    _train_a_few_steps(policy, _all_optimizers()[name], name, dim=8)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(_all_optimizers()))
def test_every_optimizer_trains_in_mixed_precision_with_xla(policy, name):
    _train_a_few_steps(policy, _all_optimizers()[name], name)


def test_xla_and_eager_training_agree():
    x, y = synthetic_task(16)
    results = []
    for jit in [False, True]:
        model = tiny_classifier(dim=8)
        cls = O.extend_with_layer_adaptation(O.extend_with_weight_decay(O.Adam))
        T.compile_model(model, cls(learning_rate=1e-3), "sparse_categorical_crossentropy",
                        jit_compile=jit)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Same accuracy in float32 / mixed_float16 / mixed_bfloat16, with and without XLA
# ---------------------------------------------------------------------------------------------


def tiny_roformer_classifier(vocab=20, seed=0):
    """A 2-layer RoFormer from build_transformer_model, mask-aware max pooling, float32 head."""
    from bert4keras_ng.layers import GlobalMaxPooling1D
    from bert4keras_ng.models import build_transformer_model

    keras.utils.set_random_seed(seed)
    encoder = build_transformer_model(
        model="roformer", vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, hidden_act="gelu",
        max_position_embeddings=32,
    )
    pooled = GlobalMaxPooling1D(name="Pooler")(encoder.output)
    probs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="Classifier")(pooled)
    return keras.Model(encoder.inputs, probs)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit", [False, True])
def test_tiny_roformer_accuracy_is_precision_and_xla_independent(policy, jit):
    """Fine-tuning reaches the same (perfect) test accuracy in every precision, XLA or not."""
    x, y = synthetic_task(512, seed=0)
    x_test, y_test = synthetic_task(256, seed=1)
    with T.dtype_policy(policy):
        model = tiny_roformer_classifier()
    cls = O.extend_with_piecewise_linear_lr(O.extend_with_weight_decay(O.AdamW))
    T.compile_model(model, cls(learning_rate=3e-3, lr_schedule={20: 1},
                               exclude_from_weight_decay=["Norm", "bias"]),
                    "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
    model.fit([x, np.zeros_like(x)], y, batch_size=32, epochs=6, verbose=0,
              callbacks=[T.NaNGuard()])
    result = model.evaluate([x_test, np.zeros_like(x_test)], y_test, verbose=0, return_dict=True)
    assert result["accuracy"] >= 0.98, (policy, jit, result)


# ---------------------------------------------------------------------------------------------
# tf.distribute.MirroredStrategy on two logical CPUs (in a subprocess)
# ---------------------------------------------------------------------------------------------

_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from bert4keras_ng import optimizers as O
    from bert4keras_ng import training as T

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 3))).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6,))
        h = keras.layers.Dense(16, activation="tanh", name="Transformer-0-FeedForward")(inputs)
        h = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="Head")(h))

    def optimizer(kind):
        if kind == "tiger":
            return O.Tiger(learning_rate=1e-2, grad_accum_steps=2)
        if kind == "adamw":
            return O.AdamW(learning_rate=1e-2, weight_decay=0.01)
        cls = O.extend_with_lookahead(O.extend_with_exponential_moving_average(
            O.extend_with_layer_adaptation(O.extend_with_piecewise_linear_lr(
                O.extend_with_weight_decay(O.AdamW)))))
        return cls(learning_rate=1e-2, exclude_from_weight_decay=["Norm"], lr_schedule={3: 1},
                   steps_per_slow_update=3)

    def train(strategy, kind):
        with strategy.scope():
            model = build()
            # jit_compile=None: XLA on one replica, off under the multi-replica strategy
            T.compile_model(model, optimizer(kind), "mse",
                            jit_compile=None if strategy is mirrored else False)
            assert model.jit_compile is False
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    for kind in ["tiger", "adamw", "adamw_wrapped"]:
        single = train(tf.distribute.get_strategy(), kind)
        multi = train(mirrored, kind)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(single, multi))
        for a, b in zip(single, multi):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print("MAXDIFF", kind, worst)
    accumulating = O.extend_with_gradient_accumulation(O.Adam)
    with mirrored.scope():
        model = build()
        model.compile(optimizer=accumulating(learning_rate=1e-2), loss="mse")
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    except ValueError as error:
        assert "Tiger(grad_accum_steps=k)" in str(error), error
        print("CLEAR_ERROR")
    """
)


def test_mirrored_strategy_matches_single_device_training():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _DISTRIBUTED_SCRIPT], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "MAXDIFF" in result.stdout and "CLEAR_ERROR" in result.stdout
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("MAXDIFF")))


def test_default_jit_compile_skips_xla_for_float32_and_bfloat16_on_a_cpu_only_tensorflow():
    # XLA's CPU compiler turns bfloat16 dots into float32 ones; oneDNN runs them in bf16, and
    # its float32 graph measured faster than XLA too (README, Benchmarks). float16 keeps XLA.
    import tensorflow as tf

    cpu_only = not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    with T.dtype_policy("mixed_bfloat16"):
        bf16 = tiny_classifier()
    with T.dtype_policy("mixed_float16"):
        fp16 = tiny_classifier()
    T.compile_model(bf16, O.AdamW(), "sparse_categorical_crossentropy")
    assert bf16.jit_compile is (not cpu_only)
    assert T.default_jit_compile(tiny_classifier()) is (not cpu_only)  # float32
    assert T.default_jit_compile(fp16) is True
    T.compile_model(bf16, O.AdamW(), "sparse_categorical_crossentropy", jit_compile=True)
    assert bf16.jit_compile is True  # an explicit choice wins
