"""Training helpers: mixed precision, loss scaling, XLA compilation and a NaN guard.

The one documented way to train any model in mixed precision::

    import keras
    from bert4keras_ng import optimizers, training

    with training.dtype_policy("mixed_bfloat16"):          # or "mixed_float16"
        model = build_your_model()                         # variables stay float32
        # the head ends in float32: Dense(..., activation="softmax", dtype="float32")
    training.compile_model(
        model,
        optimizer=optimizers.AdamW(learning_rate=2e-5),    # any optimizer or extend_with_* class
        loss="sparse_categorical_crossentropy",            # losses are computed in float32
        metrics=["accuracy"],
        # jit_compile: XLA by default; off under multi-replica tf.distribute and for
        # float32 / bfloat16 on a CPU-only TensorFlow (oneDNN's kernels measured faster there)
    )
    model.fit(dataset, callbacks=[training.NaNGuard()])

``compile_model`` wraps the optimizer in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss
scaling) when some layer computes in float16, sets a constant ``loss_scale_factor`` when
``loss_scale`` is a number (float32 and bfloat16 included), warns when a model output is not
float32, and compiles with XLA by default (see :func:`default_jit_compile` for the exceptions).
Nothing here changes global state
except inside the :func:`dtype_policy` context, which always restores the previous policy.
"""

import contextlib
import math
import numbers
import warnings

import keras
import numpy as np

__all__ = [
    "dtype_policy",
    "uses_float16",
    "prepare_optimizer",
    "compile_model",
    "default_jit_compile",
    "NaNGuard",
    "TrainingDivergedError",
    "check_finite_loss",
]


@contextlib.contextmanager
def dtype_policy(policy):
    """Set Keras's global dtype policy inside a ``with`` block and always restore it.

    ``policy`` is a policy name (``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``) or a
    ``keras.DTypePolicy``.  Layers created inside the block keep the policy they were built with.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def uses_float16(model):
    """True when the model or any of its layers computes in float16."""
    if getattr(model, "compute_dtype", None) == "float16":
        return True
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    return any(getattr(layer, "compute_dtype", None) == "float16" for layer in layers)


def prepare_optimizer(optimizer, model=None, loss_scale="dynamic"):
    """Return the optimizer to compile ``model`` with.

    Args:
        optimizer: a Keras optimizer instance (any class from :mod:`bert4keras_ng.optimizers`).
        model: the model; used to detect float16 computation.  ``None`` means "no float16".
        loss_scale: ``"dynamic"`` (default) wraps the optimizer in
            ``keras.optimizers.LossScaleOptimizer`` when the model computes in float16 and does
            nothing otherwise; a positive number sets the constant ``loss_scale_factor`` (the loss
            is multiplied by it and the gradients divided by it, in any precision); ``None``
            disables loss scaling.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"`optimizer` must be a keras.optimizers.Optimizer instance, received {optimizer!r}."
        )
    if loss_scale is None:
        return optimizer
    if isinstance(loss_scale, str):
        if loss_scale != "dynamic":
            raise ValueError(
                "`loss_scale` must be 'dynamic', a positive number or None, "
                f"received {loss_scale!r}."
            )
        is_wrapped = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if model is not None and uses_float16(model) and not is_wrapped:
            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer
    if (
        isinstance(loss_scale, bool)
        or not isinstance(loss_scale, numbers.Real)
        or not math.isfinite(loss_scale)
        or loss_scale <= 0
    ):
        raise ValueError(
            "`loss_scale` must be 'dynamic', a positive number or None, "
            f"received {loss_scale!r}."
        )
    optimizer.loss_scale_factor = float(loss_scale)
    return optimizer


def compile_model(
    model,
    optimizer,
    loss=None,
    metrics=None,
    *,
    jit_compile=None,
    loss_scale="dynamic",
    **compile_kwargs,
):
    """``model.compile`` with mixed-precision-safe defaults (see the module docstring).

    ``jit_compile=None`` (default) picks :func:`default_jit_compile`: XLA, except under a
    multi-replica ``tf.distribute`` strategy and for float32 / bfloat16 models on a CPU-only
    TensorFlow.
    Pass ``True``/``False`` to force.  Extra keyword arguments go to ``model.compile``.
    Returns the model.
    """
    if jit_compile is None:
        jit_compile = default_jit_compile(model, optimizer)
    for output in getattr(model, "outputs", None) or []:
        dtype = getattr(output, "dtype", None)
        if dtype in ("float16", "bfloat16"):
            warnings.warn(
                f"Model output {getattr(output, 'name', output)!r} is {dtype}; give the head "
                "`dtype='float32'` so that probabilities and the loss are computed in float32.",
                stacklevel=2,
            )
    optimizer = prepare_optimizer(optimizer, model, loss_scale)
    compile_kwargs.setdefault("auto_scale_loss", False)
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **compile_kwargs
    )
    return model


def default_jit_compile(model, optimizer=None):
    """What ``compile_model(jit_compile=None)`` uses: the faster choice for backend and device.

    * JAX: ``True`` (Keras's JAX trainer always compiles; ``False`` would run op by op).
    * TensorFlow with several ``tf.distribute`` replicas: ``False`` (XLA cannot reach variables
      mirrored on other devices; Keras's ``"auto"`` does the same).
    * TensorFlow without a GPU/TPU, model computing in bfloat16 or float32: ``False``.  XLA's
      CPU compiler rewrites every bfloat16 dot into a float32 one (converts around an f32 GEMM),
      while TensorFlow's oneDNN kernels run it on the CPU's bf16 units (AVX512_BF16 / AMX): a
      BERT-base training step was 2.3x slower under XLA on such a CPU.  In float32 the oneDNN
      graph was as fast or faster: 1.23x under load and level at low load on that Xeon, 1.14x
      on an AVX2 CPU, with the Adam update as one fused kernel (README, Benchmarks).  float16 keeps XLA (not
      measured faster without it).
    * otherwise ``True``.
    """
    if keras.backend.backend() != "tensorflow":
        return True
    strategy = getattr(optimizer, "_distribution_strategy", None)
    if getattr(strategy, "num_replicas_in_sync", 1) > 1:
        return False
    if not uses_float16(model):
        import tensorflow as tf

        if not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")):
            return False
    return True


class TrainingDivergedError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


_ADVICE = (
    "Lower the learning rate or lengthen the warm-up, clip gradients (global_clipnorm=1.0), "
    "use loss scaling or mixed_bfloat16 in mixed precision, and check the inputs of that batch."
)


def check_finite_loss(loss, step, what="loss"):
    """Raise :class:`TrainingDivergedError` naming ``step`` if ``loss`` is NaN or infinite.

    For custom training loops; ``NaNGuard`` does the same inside ``model.fit``.
    """
    values = np.asarray(loss, dtype="float64")
    if not np.all(np.isfinite(values)):
        shown = float(values) if values.ndim == 0 else "non-finite"
        raise TrainingDivergedError(
            f"Training diverged: {what} is {shown} at step {step}. {_ADVICE}"
        )


class NaNGuard(keras.callbacks.Callback):
    """Stop ``fit`` with a clear error as soon as a monitored value becomes NaN or infinite.

    The error reads ``Training diverged: loss is nan at step 17 (epoch 2, batch 7) ...`` where
    ``step`` counts training batches from 1 across epochs (the number the optimizer has
    processed, including the failing one) and ``batch`` counts from 1 within the epoch.  With
    ``steps_per_execution=k`` Keras reports the logs once per k batches, so the error names the
    range instead (``within steps 5–8 (epoch 1, batches 5–8)``).  Keys that only exist at the
    end of an epoch (``val_loss``, ``val_accuracy``) are checked there (``at the end of epoch
    2``).  Keras's ``TerminateOnNaN`` only stops silently; this raises
    :class:`TrainingDivergedError`.

    Args:
        monitor: the log keys to check (default ``("loss",)``); missing keys are ignored.
    """

    def __init__(self, monitor=("loss",)):
        super().__init__()
        self.monitor = (monitor,) if isinstance(monitor, str) else tuple(monitor)
        if not self.monitor or not all(isinstance(k, str) for k in self.monitor):
            raise ValueError(
                f"`monitor` must be a log key or a list of them, received {monitor!r}."
            )
        self._steps_before_epoch = 0
        self._last_step = 0
        self._epoch = 0
        self._batch_begin = None

    def on_train_begin(self, logs=None):
        self._steps_before_epoch = 0
        self._last_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps_before_epoch = self._last_step

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch

    def _first_bad(self, logs):
        for key in self.monitor:
            if not logs or key not in logs:
                continue
            value = float(np.asarray(logs[key], dtype="float64").reshape(-1)[0])
            if not math.isfinite(value):
                return key, value
        return None

    def on_train_batch_end(self, batch, logs=None):
        # Keras passes the index of the last batch of the execution; with steps_per_execution
        # > 1 the batches since on_train_batch_begin ran in one call and share these logs.
        first = batch if self._batch_begin is None else min(self._batch_begin, batch)
        self._batch_begin = None
        step = self._steps_before_epoch + batch + 1
        self._last_step = step
        bad = self._first_bad(logs)
        if bad is None:
            return
        key, value = bad
        epoch = self._epoch + 1
        if first == batch:
            where = f"at step {step} (epoch {epoch}, batch {batch + 1})"
        else:
            low = self._steps_before_epoch + first + 1
            where = (f"within steps {low}\u2013{step} (epoch {epoch}, batches "
                     f"{first + 1}\u2013{batch + 1}; steps_per_execution runs them in one call)")
        raise TrainingDivergedError(f"Training diverged: {key} is {value} {where}. {_ADVICE}")

    def on_epoch_end(self, epoch, logs=None):
        bad = self._first_bad(logs)
        if bad is not None:
            key, value = bad
            raise TrainingDivergedError(
                f"Training diverged: {key} is {value} at the end of epoch {epoch + 1} "
                f"(after step {self._last_step}). {_ADVICE}"
            )
