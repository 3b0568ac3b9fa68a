"""Optimisers for bert4keras_ng: Keras 3 built-ins, AdaFactor, Tiger and the bert4keras wrapper API.

Everything here is a native ``keras.optimizers.Optimizer`` written with ``keras.ops``:

* Keras 3 built-ins re-exported unchanged: :class:`Adam`, :class:`AdamW`, :class:`Lamb`,
  :class:`Lion`, :class:`Adafactor` (lower-case f: Keras's own, with Keras's arguments).  Their
  defaults are the Keras ones (e.g. Adam's epsilon is 1e-7, not bert4keras's 1e-6); pass the
  bert4keras values explicitly when a recipe depends on them.
* :class:`AdaFactor` (capital F): bert4keras's AdaFactor, with its constructor
  (``learning_rate=1e-3`` or ``None`` for the relative step, ``beta1``, ``beta2``, ``epsilon1``,
  ``epsilon2``, ``multiply_by_parameter_scale``, ``clipping_threshold``,
  ``min_dim_size_to_factor``, ``exclude_from_parameter_scale``) and update rule, so
  ``AdaFactor(learning_rate=5e-4, beta1=0.9, min_dim_size_to_factor=10**6)`` works as in
  bert4keras scripts.
* :class:`Tiger` (post 9512): sign-of-momentum updates with per-parameter learning rates, a
  piecewise-linear schedule, gradient accumulation without an extra buffer and NaN rescue.
* :class:`PiecewiseLinear`: a registered ``LearningRateSchedule`` (bert4keras's
  ``{1000: 1, 2000: 0.1}`` dictionaries).
* :func:`extend_with_child_tuning`: ChildTuning-F gradient dropout (post 8764).
* :class:`AmosDecay` / :func:`amos_weight_decay`: the Amos-derived decay laws (post 9344).
* ``extend_with_*`` functions: each takes an optimizer class and returns a subclass with extra
  constructor arguments, and they compose (``extend_with_ema(extend_with_layer_adaptation(
  AdamW))``).  Where Keras 3 already has the mechanism (gradient accumulation, EMA, weight decay
  and its exclusion list, learning-rate schedules) the wrapper configures it instead of
  re-implementing it.

Variable names.  Keras 3 gives variables short names (``kernel``, ``gamma``); every name rule in
this module (weight-decay exclusions, layer-adaptation exclusions, lazy optimisation, parameter-
wise learning rates, Tiger's ``bias|beta|gamma`` / ``embeddings`` rules) is matched against
``variable.path`` instead, e.g. ``Transformer-0-FeedForward/i_dense/kernel`` or
``Embedding-Token/embeddings``, which carries the layer name as bert4keras's names did.

Step counting.  Learning-rate multipliers (``lr_schedule``) are evaluated at the number of
``apply()`` calls made so far (Keras's "real" iteration count, i.e. micro-batches when gradients
are accumulated), as Keras schedules and bert4keras did.  Layer-adaptation, lookahead and EMA
count optimiser updates.

Argument checks.  The classes built here (AdaFactor, Tiger and every ``extend_with_*`` class)
reject at construction, naming the argument, a negative or non-finite ``learning_rate`` /
``weight_decay`` / ``weight_decay_rate``, an invalid regular expression in a pattern list and a
``gradient_accumulation_steps`` that is not an integer >= 2; the re-exported Keras built-ins
keep Keras's own checks.

Constant loss scaling.  Every Keras 3 optimizer (including all classes built here) accepts
``loss_scale_factor=1024.0``: ``model.fit`` multiplies the loss by it and the optimizer divides
the gradients by it before updating, in float32 as well as in mixed precision.  For dynamic
loss scaling under ``mixed_float16`` see :mod:`bert4keras_ng.training`.
"""

import math
import re
import warnings

import keras
import numpy as np
from keras import ops

from bert4keras_ng import backend, optimizer_kernels

__all__ = [
    "Adam",
    "AdamW",
    "Lamb",
    "Lion",
    "Adafactor",
    "AdaFactor",
    "Tiger",
    "PiecewiseLinear",
    "extend_with_weight_decay",
    "extend_with_layer_adaptation",
    "extend_with_piecewise_linear_lr",
    "extend_with_gradient_accumulation",
    "extend_with_exponential_moving_average",
    "extend_with_lookahead",
    "extend_with_lazy_optimization",
    "extend_with_parameter_wise_lr",
    "extend_with_child_tuning",
    "AmosDecay",
    "amos_weight_decay",
]

# Keras 3 built-ins, re-exported unchanged.
Adam = keras.optimizers.Adam
AdamW = keras.optimizers.AdamW
Lamb = keras.optimizers.Lamb
Lion = keras.optimizers.Lion
Adafactor = keras.optimizers.Adafactor  # Keras's; AdaFactor (below) is bert4keras's

_PACKAGE = "bert4keras_ng"


# ---------------------------------------------------------------------------------------------
# Piecewise-linear schedules
# ---------------------------------------------------------------------------------------------


def _normalize_schedule(schedule, argument="schedule"):
    """Validate a ``{step: value}`` schedule; return sorted ``[(int step, float value)]``.

    String keys are accepted (a JSON round trip turns integer keys into strings).  A first key
    other than 0 gets ``(0, 0.0)`` prepended (linear warm-up from zero).
    """
    if isinstance(schedule, dict):
        items = list(schedule.items())
    else:
        raise ValueError(
            f"Unknown `{argument}` format: expected a dict {{step: value}} such as "
            f"{{1000: 1, 2000: 0.1}}, received {schedule!r} (type {type(schedule).__name__})."
        )
    if not items:
        raise ValueError(f"`{argument}` must not be empty; received {schedule!r}.")
    points = {}
    for key, value in items:
        try:
            step = int(key)
            if isinstance(key, float) and key != step:
                raise ValueError
            if isinstance(key, str) and str(step) != key.strip():
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                f"Unknown `{argument}` format: keys must be non-negative integer steps, "
                f"received key {key!r} in {schedule!r}."
            ) from None
        if step < 0:
            raise ValueError(
                f"`{argument}` keys must be non-negative steps, received {key!r} in {schedule!r}."
            )
        if step in points:
            raise ValueError(f"`{argument}` has the step {step} twice: {schedule!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Unknown `{argument}` format: values must be numbers, received {value!r} "
                f"for step {key!r}."
            ) from None
        if not math.isfinite(number):
            raise ValueError(f"`{argument}` values must be finite, received {value!r}.")
        points[step] = number
    pairs = sorted(points.items())
    if pairs[0][0] != 0:
        pairs = [(0, 0.0)] + pairs
    return pairs


def _piecewise_linear(step, schedule):
    """Validated ``schedule`` evaluated at ``step`` with :func:`bert4keras_ng.backend.piecewise_linear`
    (float32, branch-free, XLA friendly)."""
    return backend.piecewise_linear(step, dict(_normalize_schedule(schedule)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-linear learning-rate schedule, e.g. ``PiecewiseLinear({1000: 2e-5, 2000: 2e-6})``.

    Keys are optimiser steps, values the learning rate (or a multiplier, when used through
    ``extend_with_piecewise_linear_lr`` or Tiger's ``lr_schedule``).  If the first key is not 0,
    ``(0, 0)`` is prepended (linear warm-up from zero); values are linearly interpolated between
    keys and constant after the last key.  Non-dict schedules, negative or non-integer keys and
    non-numeric values raise ``ValueError``.
    """

    def __init__(self, schedule):
        self._pairs = _normalize_schedule(schedule)
        self.schedule = {int(k): float(v) for k, v in schedule.items()}

    def __call__(self, step):
        return _piecewise_linear(step, self.schedule)

    def get_config(self):
        # String keys: configs go through JSON, whose object keys are strings.
        return {"schedule": {str(k): v for k, v in sorted(self.schedule.items())}}


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _variable_path(variable):
    """``variable.path`` for Keras variables; the TF name without ``:0`` otherwise."""
    path = getattr(variable, "path", None)
    if path is None:
        path = str(getattr(variable, "name", variable)).split(":")[0]
    return path


def _snapshot(variable):
    """The variable's current value as a tensor that later assignments cannot change.

    (On TensorFlow, ``ops.convert_to_tensor`` of a variable can alias its buffer in eager mode.)
    """
    read_value = getattr(variable, "read_value", None)
    if read_value is not None:
        return read_value()
    value = getattr(variable, "value", variable)
    read_value = getattr(value, "read_value", None)
    if read_value is not None:
        return read_value()
    return ops.copy(ops.convert_to_tensor(value))


def _as_pattern_list(value, argument):
    """A list of regular expressions, each compiled once here so a bad one fails now."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    try:
        patterns = list(value)
    except TypeError:
        raise ValueError(
            f"`{argument}` must be a list of strings, received {value!r}."
        ) from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"`{argument}` must be a list of strings, received {value!r}.")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"`{argument}` entry {pattern!r} is not a valid regular expression ({exc}); "
                "escape literal characters with re.escape()."
            ) from None
    return patterns


def _check_rate(value, argument):
    """A learning rate or decay given as a number: finite and >= 0 (schedules pass)."""
    if value is None or callable(value) or isinstance(
        value, keras.optimizers.schedules.LearningRateSchedule
    ):
        return
    try:
        number = float(np.asarray(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(
            f"`{argument}` must be a finite number >= 0, received {argument}={value!r}."
        )


def _check_base_arguments(args, kwargs):
    """Validate the Keras base arguments every optimizer of this module takes, by name.

    Keras accepts a negative or NaN learning rate or weight decay, and a non-integer or zero
    ``gradient_accumulation_steps`` (0 silently turns accumulation off, 2.5 fails inside the
    train step).
    """
    learning_rate = kwargs.get("learning_rate", args[0] if args else None)
    _check_rate(learning_rate, "learning_rate")
    _check_rate(kwargs.get("weight_decay"), "weight_decay")
    steps = kwargs.get("gradient_accumulation_steps")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2
    ):
        raise ValueError(
            "`gradient_accumulation_steps` must be None (no accumulation) or an integer >= 2, "
            f"received gradient_accumulation_steps={steps!r}."
        )


def _warn_unmatched(patterns, paths, argument, regex=True):
    for pattern in patterns:
        if regex:
            hit = any(re.search(pattern, path) for path in paths)
        else:
            hit = any(pattern in path for path in paths)
        if not hit:
            warnings.warn(
                f"`{argument}` entry {pattern!r} matches no trainable variable "
                f"(names are matched against `variable.path`, e.g. {paths[0]!r}).",
                stacklevel=3,
            )


class _PathAwareMixin:
    """Weight-decay exclusions matched on ``variable.path`` (Keras 3 matches the short name)."""

    def _b4k_path(self, variable):
        try:
            index = self._get_variable_index(variable)
        except KeyError:
            return _variable_path(variable)
        return _variable_path(self._trainable_variables[index])

    def _use_weight_decay(self, variable):
        if not self.weight_decay:
            return False
        if self._var_key(variable) in getattr(self, "_exclude_from_weight_decay", set()):
            return False
        pattern = getattr(self, "_exclude_from_weight_decay_pattern", None)
        if pattern is not None and re.search(pattern, self._b4k_path(variable)):
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Tiger
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Tiger(_PathAwareMixin, keras.optimizers.Optimizer):
    """Tiger, "a tight-fisted optimizer" (kexue.fm post 9512): Lion with beta1 = beta2.

    Per step ``t`` (0-based count of ``apply()`` calls) and variable ``theta`` with gradient g::

        m     <- b1 * m + b2 * g        b1 = beta, b2 = 1 - beta  (see accumulation below)
        theta <- theta - eta * (sign(m) + lambda * theta)

    with ``alpha_t = learning_rate * piecewise_linear(t, lr_schedule)`` and per-parameter
    ``eta``/``lambda`` chosen from ``variable.path``:

    * matches the regex ``bias|beta|gamma``: ``eta = 0.5 * alpha_t``, ``lambda = 0``;
    * contains ``embeddings``: ``eta = alpha_t * RMS`` of each row (last axis);
    * otherwise: ``eta = alpha_t * RMS(theta)`` over the whole tensor;
    * ``lambda = weight_decay`` except for the first group and for paths matching
      ``optimizer.exclude_from_weight_decay(var_names=[...])`` patterns.

    Gradient accumulation without an extra buffer (``grad_accum_steps = k``): ``b1 = beta`` when
    ``t % k == 0`` else 1, ``b2 = (1 - beta) / k``, and ``eta = 0`` unless ``(t + 1) % k == 0``;
    this equals one step with the averaged gradient of the k micro-batches.

    NaN rescue: if a variable's gradient contains a NaN (or an infinity) at any micro-step, its
    momentum is left unchanged, its regular update is skipped and the variable is shrunk towards
    its centre, ``theta <- (theta - c) * shrink_ratio + c`` with ``c = 1`` for paths containing
    ``gamma`` and 0 otherwise.

    Tiger applies its own weight decay inside the update (scaled by ``eta``), so it is never
    combined with Keras's pre-update decay.  ``extend_with_weight_decay``,
    ``extend_with_piecewise_linear_lr`` and ``extend_with_gradient_accumulation`` applied to
    Tiger set these built-in arguments instead of stacking a second mechanism.
    """

    _b4k_native = ("lr_schedule", "grad_accum_steps")
    _b4k_self_decaying = True  # weight decay lives in update_step (scaled by eta)

    def __init__(
        self,
        learning_rate=1e-3,
        beta=0.965,
        weight_decay=0.01,
        grad_accum_steps=1,
        lr_schedule=None,
        shrink_ratio=0.99,
        name="tiger",
        **kwargs,
    ):
        _check_base_arguments((), dict(kwargs, learning_rate=learning_rate,
                                       weight_decay=weight_decay))
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs
        )
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"`beta` must be in [0, 1], received beta={beta!r}.")
        if not 0.0 <= float(shrink_ratio) <= 1.0:
            raise ValueError(
                f"`shrink_ratio` must be in [0, 1], received shrink_ratio={shrink_ratio!r}."
            )
        self.beta = float(beta)
        self.grad_accum_steps = _check_accum_steps(grad_accum_steps)
        if lr_schedule is None:
            lr_schedule = {0: 1.0}
        _normalize_schedule(lr_schedule, "lr_schedule")
        self.lr_schedule = {int(k): float(v) for k, v in lr_schedule.items()}
        self.shrink_ratio = float(shrink_ratio)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        kinds, centres = [], []
        for variable in var_list:
            path = _variable_path(variable)
            if re.search("bias|beta|gamma", path):
                kinds.append("half")
            elif "embeddings" in path:
                kinds.append("rows")
            else:
                kinds.append("tensor")
            centres.append(1.0 if "gamma" in path else 0.0)
        self._b4k_tiger_kinds = kinds
        self._b4k_tiger_centres = centres

    def _apply_weight_decay(self, variables):
        # Decay happens inside update_step, multiplied by the per-parameter learning rate.
        return

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        kind = self._b4k_tiger_kinds[index]
        dtype = variable.dtype
        theta = _snapshot(variable)
        g = ops.cast(ops.convert_to_tensor(gradient), dtype)
        m = self._momentums[index]
        k = self.grad_accum_steps
        step = self._iterations

        bad = ops.logical_not(ops.all(ops.isfinite(g)))
        if k > 1:
            beta_1 = ops.where(ops.equal(step % k, 0), self.beta, 1.0)
            is_update = ops.cast(ops.equal((step + 1) % k, 0), "float32")
        else:
            beta_1 = ops.convert_to_tensor(self.beta, "float32")
            is_update = ops.convert_to_tensor(1.0, "float32")
        beta_1 = ops.cast(ops.where(bad, 1.0, beta_1), dtype)
        beta_2 = ops.cast((1.0 - self.beta) / k, dtype)
        g = ops.where(bad, ops.zeros_like(g), g)
        m_new = beta_1 * _snapshot(m) + beta_2 * g
        self.assign(m, m_new)

        alpha = ops.cast(learning_rate, "float32") * _piecewise_linear(step, self.lr_schedule)
        alpha = ops.cast(alpha * is_update, dtype)
        if kind == "half":
            eta = 0.5 * alpha
            decay = 0.0
        else:
            if kind == "rows":
                rms = ops.sqrt(ops.mean(ops.square(theta), axis=-1, keepdims=True))
            else:
                rms = ops.sqrt(ops.mean(ops.square(theta)))
            eta = alpha * rms
            decay = float(self.weight_decay) if self._use_weight_decay(variable) else 0.0
        update = ops.sign(m_new)
        if decay:
            update = update + ops.cast(decay, dtype) * theta
        centre = ops.cast(self._b4k_tiger_centres[index], dtype)
        shrunk = (theta - centre) * ops.cast(self.shrink_ratio, dtype) + centre
        self.assign(variable, ops.where(bad, shrunk, theta - eta * update))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta": self.beta,
                "grad_accum_steps": self.grad_accum_steps,
                "lr_schedule": {str(k): v for k, v in sorted(self.lr_schedule.items())},
                "shrink_ratio": self.shrink_ratio,
            }
        )
        return config


# ---------------------------------------------------------------------------------------------
# AdaFactor (bert4keras flavour)
# ---------------------------------------------------------------------------------------------


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdaFactor(_PathAwareMixin, keras.optimizers.Optimizer):
    """AdaFactor (arXiv 1804.04235) with bert4keras 0.11.5's arguments and update rule.

    Unlike Keras's :class:`Adafactor` it has an optional first moment (``beta1``), factors only
    large tensors (``min_dim_size_to_factor``) and follows bert4keras's relative step.  Per
    update, with ``t = iterations + 1`` (optimizer updates, so micro-batches of Keras's
    ``gradient_accumulation_steps`` count once) and gradient ``g`` of variable ``theta``::

        beta2_t = 1 - t ** -0.8                       (when beta2 is None; else beta2)
        g2      = g ** 2 + epsilon1
        v       = beta2_t * v + (1 - beta2_t) * g2    (unfactored)
        u       = g / sqrt(v + epsilon1)
        u       = u / max(1, RMS(u) / clipping_threshold)   (unless clipping_threshold is None)
        m       = beta1 * m + (1 - beta1) * u; u = m        (only when beta1 > 0)
        u       = u * max(RMS(theta), epsilon2)             (multiply_by_parameter_scale)
        theta   = theta - lr * u

    Factoring: a tensor with at least two axes whose second-largest dimension is at least
    ``min_dim_size_to_factor`` keeps, instead of ``v``, the means of ``g2`` over its largest
    axis (``vr``) and over its second-largest axis (``vc``), both moving averages with
    ``beta2_t``, and uses ``v = vr * vc / mean(vr over the second-largest axis)`` (which of two
    equal dimensions counts as the larger does not change ``v``).  Factored slots are named
    ``<path>_vr`` / ``<path>_vc``, the others ``<path>_v`` and ``<path>_m``.

    ``learning_rate=None`` selects the relative step ``min(1 / sqrt(t), 1e-2)``, times 0.05 when
    ``multiply_by_parameter_scale`` is False; setting ``optimizer.learning_rate`` to a number
    later switches to that fixed rate, and setting it to ``None`` switches back.
    ``exclude_from_parameter_scale`` lists regexes searched in ``variable.path``: matching
    variables skip the RMS(theta) factor.

    Typical bert4keras recipe: ``AdaFactor(learning_rate=5e-4, beta1=0.9,
    min_dim_size_to_factor=10**6)`` (never factored).  The class composes with the
    ``extend_with_*`` wrappers of this module and accepts Keras's optimizer arguments
    (``gradient_accumulation_steps``, ``weight_decay``, ``use_ema``, ``clipnorm``, ...).
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta1=0.0,
        beta2=None,
        epsilon1=1e-30,
        epsilon2=1e-3,
        multiply_by_parameter_scale=True,
        clipping_threshold=1.0,
        min_dim_size_to_factor=128,
        exclude_from_parameter_scale=None,
        name="adafactor",
        **kwargs,
    ):
        _check_base_arguments((), dict(kwargs, learning_rate=learning_rate))
        relative_step = learning_rate is None
        if relative_step:
            learning_rate = 1.0  # placeholder variable, unused while the relative step is on
        elif isinstance(learning_rate, (int, np.integer)) and not isinstance(learning_rate, bool):
            learning_rate = float(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._b4k_relative_step = relative_step
        if not 0.0 <= float(beta1) < 1.0:
            raise ValueError(f"`beta1` must be in [0, 1), received beta1={beta1!r}.")
        if beta2 is not None and not 0.0 <= float(beta2) <= 1.0:
            raise ValueError(f"`beta2` must be None or in [0, 1], received beta2={beta2!r}.")
        for argument, value in (("epsilon1", epsilon1), ("epsilon2", epsilon2)):
            if not float(value) >= 0.0:
                raise ValueError(f"`{argument}` must be >= 0, received {argument}={value!r}.")
        if clipping_threshold is not None and not float(clipping_threshold) > 0.0:
            raise ValueError(
                "`clipping_threshold` must be None or > 0, received "
                f"clipping_threshold={clipping_threshold!r}."
            )
        if (
            isinstance(min_dim_size_to_factor, bool)
            or not isinstance(min_dim_size_to_factor, (int, np.integer, float))
            or min_dim_size_to_factor != int(min_dim_size_to_factor)
            or min_dim_size_to_factor < 1
        ):
            raise ValueError(
                "`min_dim_size_to_factor` must be a positive integer, received "
                f"min_dim_size_to_factor={min_dim_size_to_factor!r}."
            )
        self.beta1 = float(beta1)
        self.beta2 = None if beta2 is None else float(beta2)
        self.epsilon1 = float(epsilon1)
        self.epsilon2 = float(epsilon2)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)
        self.clipping_threshold = None if clipping_threshold is None else float(clipping_threshold)
        self.min_dim_size_to_factor = int(min_dim_size_to_factor)
        self._b4k_ps_patterns = _as_pattern_list(
            exclude_from_parameter_scale, "exclude_from_parameter_scale"
        )

    @property
    def exclude_from_parameter_scale(self):
        return list(self._b4k_ps_patterns)

    @property
    def relative_step(self):
        """True while the learning rate is bert4keras's ``min(1/sqrt(t), 1e-2)`` schedule."""
        return self._b4k_relative_step

    # Learning rate -------------------------------------------------------------------------

    @property
    def learning_rate(self):
        return self._get_current_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value):
        if value is None:
            self._b4k_relative_step = True
            return
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = float(value)
        keras.optimizers.Optimizer.learning_rate.fset(self, value)
        self._b4k_relative_step = False

    def _get_current_learning_rate(self):
        if not getattr(self, "_b4k_relative_step", False):
            return super()._get_current_learning_rate()
        t = ops.cast(self.iterations + 1, "float32")
        rate = ops.minimum(1.0 / ops.sqrt(t), 0.01)
        if not self.multiply_by_parameter_scale:
            rate = rate * 0.05
        return rate

    # Slots ---------------------------------------------------------------------------------

    def _factor_axes(self, shape):
        """``(largest axis, second-largest axis)`` when the shape is factored, else None."""
        if len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda axis: (shape[axis], axis))
        largest, second = order[-1], order[-2]
        if shape[second] < self.min_dim_size_to_factor:
            return None
        return largest, second

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._b4k_af_m, self._b4k_af_v, self._b4k_af_vr, self._b4k_af_vc = [], [], [], []
        self._b4k_af_axes, self._b4k_af_scaled = [], []
        paths = [_variable_path(v) for v in var_list]
        if paths:
            _warn_unmatched(self._b4k_ps_patterns, paths, "exclude_from_parameter_scale")
        for variable, path in zip(var_list, paths):
            self._b4k_af_scaled.append(
                self.multiply_by_parameter_scale
                and not any(re.search(p, path) for p in self._b4k_ps_patterns)
            )
            shape = tuple(int(d) for d in variable.shape)
            axes = self._factor_axes(shape)
            skip = getattr(variable, "overwrite_with_gradient", False)
            self._b4k_af_axes.append(axes)
            prefix = path.replace("/", "_")
            m = v = vr = vc = None
            if not skip:
                if self.beta1 > 0.0:
                    m = self.add_variable_from_reference(variable, name="m")
                if axes is None:
                    v = self.add_variable_from_reference(variable, name="v")
                else:
                    row_shape, col_shape = list(shape), list(shape)
                    row_shape[axes[0]] = 1
                    col_shape[axes[1]] = 1
                    vr = self.add_variable(
                        tuple(row_shape), dtype=variable.dtype, name=f"{prefix}_vr"
                    )
                    vc = self.add_variable(
                        tuple(col_shape), dtype=variable.dtype, name=f"{prefix}_vc"
                    )
            self._b4k_af_m.append(m)
            self._b4k_af_v.append(v)
            self._b4k_af_vr.append(vr)
            self._b4k_af_vc.append(vc)

    # Update --------------------------------------------------------------------------------

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        theta = _snapshot(variable)
        g = ops.cast(ops.convert_to_tensor(gradient), dtype)  # dense (embeddings included)
        lr = ops.cast(learning_rate, dtype)
        if self.beta2 is None:
            t = ops.cast(self.iterations + 1, "float32")
            beta2 = ops.cast(1.0 - ops.power(t, -0.8), dtype)
        else:
            beta2 = ops.cast(self.beta2, dtype)
        epsilon1 = ops.cast(self.epsilon1, dtype)
        g2 = ops.square(g) + epsilon1

        axes = self._b4k_af_axes[index]
        if axes is None:
            v = self._b4k_af_v[index]
            v_new = beta2 * _snapshot(v) + (1.0 - beta2) * g2
            self.assign(v, v_new)
        else:
            largest, second = axes
            vr, vc = self._b4k_af_vr[index], self._b4k_af_vc[index]
            vr_new = beta2 * _snapshot(vr) + (1.0 - beta2) * ops.mean(
                g2, axis=largest, keepdims=True
            )
            vc_new = beta2 * _snapshot(vc) + (1.0 - beta2) * ops.mean(
                g2, axis=second, keepdims=True
            )
            self.assign(vr, vr_new)
            self.assign(vc, vc_new)
            v_new = vr_new * vc_new / ops.mean(vr_new, axis=second, keepdims=True)

        u = g / ops.sqrt(v_new + epsilon1)
        if self.clipping_threshold is not None:
            threshold = ops.cast(self.clipping_threshold, dtype)
            u = u / ops.maximum(ops.cast(1.0, dtype), _rms(u) / threshold)
        if self.beta1 > 0.0:
            m = self._b4k_af_m[index]
            beta1 = ops.cast(self.beta1, dtype)
            u = beta1 * _snapshot(m) + (1.0 - beta1) * u
            self.assign(m, u)
        if self._b4k_af_scaled[index]:
            u = u * ops.maximum(_rms(theta), ops.cast(self.epsilon2, dtype))
        self.assign(variable, theta - lr * u)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate": None if self._b4k_relative_step else config["learning_rate"],
                "beta1": self.beta1,
                "beta2": self.beta2,
                "epsilon1": self.epsilon1,
                "epsilon2": self.epsilon2,
                "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
                "clipping_threshold": self.clipping_threshold,
                "min_dim_size_to_factor": self.min_dim_size_to_factor,
                "exclude_from_parameter_scale": list(self._b4k_ps_patterns),
            }
        )
        return config


def _check_accum_steps(value, argument="grad_accum_steps"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"`{argument}` must be a positive integer (1 = no accumulation), "
            f"received {argument}={value!r}."
        )
    return int(value)


# ---------------------------------------------------------------------------------------------
# The bert4keras wrapper API
# ---------------------------------------------------------------------------------------------


class _ExtendedOptimizer(_PathAwareMixin):
    """Mixin inserted (once) by the ``extend_with_*`` functions.

    It turns ``update_step`` into "base update, then a chain of transforms of the new value":
    every wrapper contributes ``_b4k_transform(index, old, new, gradient, lr)`` and calls
    ``super()`` first, so wrappers applied earlier (inner) act first, as in bert4keras.
    Weight decay, when configured, is decoupled and applied with the base update
    (``theta_new - lr * rate * theta_old``), so it is part of the update that layer adaptation,
    parameter-wise learning rates and lazy optimisation see, whatever the wrapping order.
    """

    _b4k_extended = True

    def __init__(self, *args, **kwargs):
        _check_base_arguments(args, kwargs)
        super().__init__(*args, **kwargs)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._b4k_paths = [_variable_path(v) for v in var_list]
        self._b4k_setup(var_list)

    def _b4k_setup(self, var_list):
        """Hook: per-variable configuration computed once at build time."""

    def _b4k_active(self, index):
        """Hook: whether the transform chain must run for this variable."""
        return bool(self.weight_decay) and self._b4k_decays(index)

    def _b4k_decays(self, index):
        if getattr(self, "_b4k_self_decaying", False):
            return False
        return self._use_weight_decay(self._trainable_variables[index])

    def _b4k_transform(self, index, old, new, gradient, learning_rate):
        if self.weight_decay and self._b4k_decays(index):
            rate = ops.cast(learning_rate, new.dtype) * ops.cast(self.weight_decay, new.dtype)
            new = new - rate * old
        return new

    def _apply_weight_decay(self, variables):
        if getattr(self, "_b4k_self_decaying", False):
            return super()._apply_weight_decay(variables)
        # Applied inside update_step (see class docstring).
        return

    def _b4k_base_class(self):
        """The class whose ``update_step`` runs under the wrappers (e.g. Keras's Adam)."""
        mro = type(self).__mro__
        below = mro[mro.index(_ExtendedOptimizer) + 1:]
        return next((k for k in below if "update_step" in vars(k)), None)

    def _b4k_fused(self):
        """Whether the base update is Keras's Adam run as TensorFlow's fused kernel (see
        :mod:`bert4keras_ng.optimizer_kernels`), cached per instance."""
        fused = getattr(self, "_b4k_fused_adam", None)
        if fused is None:
            fused = self._b4k_fused_adam = optimizer_kernels.fusable_adam(
                self, self._b4k_base_class())
        return fused

    def _b4k_decay_only(self):
        """True when weight decay is the only transform of the chain (no wrapper overrides it)."""
        return (type(self)._b4k_transform is _ExtendedOptimizer._b4k_transform
                and type(self)._b4k_active is _ExtendedOptimizer._b4k_active)

    def _b4k_base_update(self, gradient, variable, learning_rate, decay_rate=None):
        """The base optimizer's update, fused where it can be; False if nothing ran because
        ``decay_rate`` was given and the update is not fused."""
        if self._b4k_fused() and optimizer_kernels.fused_adam_update(
                self, gradient, variable, learning_rate, decay_rate):
            return True
        if decay_rate is not None:
            return False
        super().update_step(gradient, variable, learning_rate)
        return True

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if not self._b4k_active(index):
            self._b4k_base_update(gradient, variable, learning_rate)
            return
        if self._b4k_decay_only() and self._b4k_base_update(
                gradient, variable, learning_rate, decay_rate=self.weight_decay):
            return  # decay then Adam, fused: equal to the chain below for an update not using theta
        old = _snapshot(variable)
        self._b4k_base_update(gradient, variable, learning_rate)
        new = _snapshot(variable)
        new = self._b4k_transform(index, old, new, gradient, learning_rate)
        self.assign(variable, new)


def _extend(base, name, default_suffix, body):
    """Create ``class <name>(body, [_ExtendedOptimizer,] base)`` and register it with Keras."""
    if not (isinstance(base, type) and issubclass(base, keras.optimizers.Optimizer)):
        raise ValueError(
            f"Expected a keras.optimizers.Optimizer subclass, received {base!r}."
        )
    if name is None:
        name = f"{base.__name__}{default_suffix}"
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name` must be a Python identifier, received {name!r}.")
    bases = (body, base) if issubclass(base, _ExtendedOptimizer) else (
        body,
        _ExtendedOptimizer,
        base,
    )
    cls = type(name, bases, {"__doc__": body.__doc__, "__module__": __name__})
    cls.__qualname__ = name
    return keras.saving.register_keras_serializable(package=_PACKAGE, name=name)(cls)


def _native(base, argument):
    return argument in getattr(base, "_b4k_native", ())


class _WeightDecay:
    """Decoupled weight decay (``weight_decay_rate``) with regex exclusions.

    Configures Keras's ``weight_decay`` and ``exclude_from_weight_decay(var_names=...)``;
    patterns are searched in ``variable.path`` and one matching no variable triggers a warning
    at build time.  Decay: ``theta <- theta_new - lr * weight_decay_rate * theta_old``.
    """

    def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None, **kwargs):
        kwargs.pop("weight_decay", None)
        _check_rate(weight_decay_rate, "weight_decay_rate")
        patterns = _as_pattern_list(exclude_from_weight_decay, "exclude_from_weight_decay")
        super().__init__(*args, weight_decay=float(weight_decay_rate), **kwargs)
        self._b4k_wd_patterns = patterns
        if patterns:
            keras.optimizers.Optimizer.exclude_from_weight_decay(self, var_names=patterns)

    @property
    def weight_decay_rate(self):
        return self.weight_decay

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        if var_list:
            _warn_unmatched(
                self._b4k_wd_patterns,
                [_variable_path(v) for v in var_list],
                "exclude_from_weight_decay",
            )

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config["weight_decay_rate"] = self.weight_decay
        config["exclude_from_weight_decay"] = list(self._b4k_wd_patterns)
        return config


def extend_with_weight_decay(BaseOptimizer, name=None):
    """Add ``weight_decay_rate=0.01`` and ``exclude_from_weight_decay=[]`` (regexes on paths).

    For Tiger, which decays inside its own update, this sets Tiger's ``weight_decay`` and
    exclusions instead of adding a second decay.
    """
    return _extend(BaseOptimizer, name, "WithWeightDecay", _WeightDecay)


class _LayerAdaptation:
    """LAMB-style layer adaptation: ``delta <- delta * ||theta|| / ||delta / lr||``.

    ``delta = theta_new - theta_old`` is the whole update (weight decay included); the ratio is
    1 when either norm is 0.  ``exclude_from_layer_adaptation`` regexes are searched in
    ``variable.path`` (one matching nothing triggers a warning at build time).
    """

    def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._b4k_la_patterns = _as_pattern_list(
            exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
        )

    @property
    def exclude_from_layer_adaptation(self):
        return list(self._b4k_la_patterns)

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        paths = [_variable_path(v) for v in var_list]
        if paths:
            _warn_unmatched(self._b4k_la_patterns, paths, "exclude_from_layer_adaptation")
        self._b4k_la_flags = [
            not any(re.search(p, path) for p in self._b4k_la_patterns) for path in paths
        ]

    def _b4k_active(self, index):
        return self._b4k_la_flags[index] or super()._b4k_active(index)

    def _b4k_transform(self, index, old, new, gradient, learning_rate):
        new = super()._b4k_transform(index, old, new, gradient, learning_rate)
        if not self._b4k_la_flags[index]:
            return new
        dtype = new.dtype
        delta = new - old
        lr = ops.maximum(ops.cast(learning_rate, dtype), ops.cast(keras.config.epsilon(), dtype))
        theta_norm = ops.sqrt(ops.sum(ops.square(old)))
        delta_norm = ops.sqrt(ops.sum(ops.square(delta / lr)))
        safe = ops.logical_and(theta_norm > 0, delta_norm > 0)
        ratio = ops.where(safe, theta_norm / ops.where(safe, delta_norm, 1.0), 1.0)
        return old + delta * ratio

    def get_config(self):
        config = super().get_config()
        config["exclude_from_layer_adaptation"] = list(self._b4k_la_patterns)
        return config


def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """Add LAMB's trust ratio (``exclude_from_layer_adaptation=[]``, regexes on paths)."""
    return _extend(BaseOptimizer, name, "WithLayerAdaptation", _LayerAdaptation)


class _PiecewiseLinearLR:
    """Learning rate ``lr * piecewise_linear(step, lr_schedule)``, e.g. ``{1000: 1, 2000: 0.1}``.

    The multiplier is a :class:`PiecewiseLinear` schedule evaluated at the number of ``apply()``
    calls; ``optimizer.learning_rate`` returns the scheduled value and setting it changes the base
    rate.  Keras's weight decay uses the scheduled rate too.
    """

    def __init__(self, *args, lr_schedule=None, **kwargs):
        super().__init__(*args, **kwargs)
        if lr_schedule is None:
            lr_schedule = {0: 1.0}
        self._b4k_lr_multiplier = PiecewiseLinear(_checked_schedule(lr_schedule))

    @property
    def lr_schedule(self):
        return dict(self._b4k_lr_multiplier.schedule)

    def _get_current_learning_rate(self):
        base = super()._get_current_learning_rate()
        multiplier = self._b4k_lr_multiplier(self._iterations)
        return ops.cast(base, "float32") * multiplier

    def get_config(self):
        config = super().get_config()
        config["lr_schedule"] = self._b4k_lr_multiplier.get_config()["schedule"]
        return config


def _checked_schedule(schedule):
    _normalize_schedule(schedule, "lr_schedule")
    return {int(k): float(v) for k, v in schedule.items()}


def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """Add ``lr_schedule={0: 1}``: a piecewise-linear learning-rate multiplier."""
    if _native(BaseOptimizer, "lr_schedule"):
        body = _NativeArguments
    else:
        body = _PiecewiseLinearLR
    return _extend(BaseOptimizer, name, "WithPiecewiseLinearLR", body)


class _NativeArguments:
    """The base optimizer implements this feature itself (Tiger); nothing to add."""


class _GradientAccumulation:
    """Gradient accumulation over ``grad_accum_steps`` micro-batches (default 2).

    Configures Keras's ``gradient_accumulation_steps``: gradients are summed, and every k-th
    call applies one update with their average, so k micro-batches equal one step on the
    k-times larger batch (for a mean-reduced loss).  ``grad_accum_steps=1`` disables it.
    Keras's accumulation cannot run under ``tf.distribute`` with several replicas
    (keras-team/keras#20582); building such an optimizer there raises a ``ValueError`` that
    points to Tiger's buffer-free accumulation.
    """

    def __init__(self, *args, grad_accum_steps=2, **kwargs):
        steps = _check_accum_steps(grad_accum_steps)
        kwargs.pop("gradient_accumulation_steps", None)
        super().__init__(*args, gradient_accumulation_steps=steps if steps > 1 else None, **kwargs)
        self.grad_accum_steps = steps

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        strategy = getattr(self, "_distribution_strategy", None)
        replicas = getattr(strategy, "num_replicas_in_sync", 1)
        if self.gradient_accumulation_steps and replicas > 1:
            raise ValueError(
                f"grad_accum_steps={self.grad_accum_steps} uses Keras's gradient accumulation, "
                f"which does not run under tf.distribute with {replicas} replicas (its "
                "conditional update contains the gradient all-reduce; keras-team/keras#20582). "
                "Use Tiger(grad_accum_steps=k), whose accumulation needs no conditional, or a "
                "larger global batch."
            )

    def get_config(self):
        config = super().get_config()
        config.pop("gradient_accumulation_steps", None)
        config["grad_accum_steps"] = self.grad_accum_steps
        return config


def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """Add ``grad_accum_steps=2`` (Keras's built-in accumulation; Tiger's buffer-free one)."""
    if _native(BaseOptimizer, "grad_accum_steps"):
        body = _NativeGradientAccumulation
    else:
        body = _GradientAccumulation
    return _extend(BaseOptimizer, name, "WithGradientAccumulation", body)


class _NativeGradientAccumulation:
    """Tiger accumulates in its momentum; default ``grad_accum_steps=2`` as for other bases."""

    def __init__(self, *args, grad_accum_steps=2, **kwargs):
        super().__init__(*args, grad_accum_steps=grad_accum_steps, **kwargs)


class _ExponentialMovingAverage:
    """Exponential moving average of the weights (``ema_momentum=0.999``).

    Configures Keras's ``use_ema=True``: after every update
    ``average <- momentum * average + (1 - momentum) * theta``, the first update copying the
    weights (so no bias correction is needed).  ``apply_ema_weights()`` backs up the current
    weights and loads the averages; ``reset_old_weights()`` restores the backup.  As with any
    Keras optimizer built with ``use_ema=True``, ``model.fit`` ends by writing the averages into
    the model (``finalize_variable_values``).
    """

    def __init__(self, *args, ema_momentum=0.999, **kwargs):
        kwargs.pop("use_ema", None)
        super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)
        self._b4k_old_weights = None

    def apply_ema_weights(self, bias_correction=True):
        """Back up the model weights and replace them by their moving averages.

        ``bias_correction`` is accepted for bert4keras compatibility; Keras's averages start from
        the first update's weights, so they need no correction.
        """
        del bias_correction
        if not self.built:
            raise ValueError("apply_ema_weights() needs a built optimizer (train first).")
        variables = self._trainable_variables
        self._b4k_old_weights = [np.array(v.numpy()) for v in variables]
        for variable, average in zip(variables, self._model_variables_moving_average):
            if average is not None:
                variable.assign(average)

    def reset_old_weights(self):
        """Restore the weights backed up by the last ``apply_ema_weights()``."""
        if self._b4k_old_weights is None:
            raise ValueError("reset_old_weights() called before apply_ema_weights().")
        for variable, value in zip(self._trainable_variables, self._b4k_old_weights):
            variable.assign(value)
        self._b4k_old_weights = None

    def get_config(self):
        config = super().get_config()
        config.pop("use_ema", None)
        return config


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """Add ``ema_momentum=0.999`` and ``apply_ema_weights()`` / ``reset_old_weights()``."""
    return _extend(BaseOptimizer, name, "WithEMA", _ExponentialMovingAverage)


class _Lookahead:
    """Lookahead (arXiv 1907.08610): ``steps_per_slow_update=5`` (k), ``slow_step_size=0.5``.

    Slow weights start as the weights before the first update; after every k-th update
    ``slow <- slow + alpha * (theta - slow)`` and ``theta <- slow``.
    """

    def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if (
            isinstance(steps_per_slow_update, bool)
            or not isinstance(steps_per_slow_update, (int, np.integer))
            or steps_per_slow_update < 1
        ):
            raise ValueError(
                "`steps_per_slow_update` must be a positive integer, received "
                f"{steps_per_slow_update!r}."
            )
        if not 0.0 <= float(slow_step_size) <= 1.0:
            raise ValueError(f"`slow_step_size` must be in [0, 1], received {slow_step_size!r}.")
        self.steps_per_slow_update = int(steps_per_slow_update)
        self.slow_step_size = float(slow_step_size)

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        self._b4k_slow = self.add_optimizer_variables(var_list, "slow")

    def _b4k_active(self, index):
        return True

    def _b4k_transform(self, index, old, new, gradient, learning_rate):
        new = super()._b4k_transform(index, old, new, gradient, learning_rate)
        slow = self._b4k_slow[index]
        sync = ops.equal((self.iterations + 1) % self.steps_per_slow_update, 0)
        # The slow weights start as the weights before the first update (so weights loaded
        # after compile() count), without a value-dependent initializer (XLA-safe).
        first = ops.equal(self.iterations, 0)
        slow_value = ops.where(first, old, _snapshot(slow))
        moved = slow_value + ops.cast(self.slow_step_size, new.dtype) * (new - slow_value)
        slow_next = ops.where(sync, moved, slow_value)
        self.assign(slow, slow_next)
        return ops.where(sync, slow_next, new)

    def get_config(self):
        config = super().get_config()
        config["steps_per_slow_update"] = self.steps_per_slow_update
        config["slow_step_size"] = self.slow_step_size
        return config


def extend_with_lookahead(BaseOptimizer, name=None):
    """Add Lookahead (``steps_per_slow_update=5``, ``slow_step_size=0.5``)."""
    return _extend(BaseOptimizer, name, "WithLookahead", _Lookahead)


class _LazyOptimization:
    """Lazy updates: variables whose path matches ``include_in_lazy_optimization`` (regexes)
    change only in rows (last axis) where the gradient is non-zero — tokens absent from the
    batch keep their embeddings (and their decay) untouched."""

    def __init__(self, *args, include_in_lazy_optimization=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._b4k_lazy_patterns = _as_pattern_list(
            include_in_lazy_optimization, "include_in_lazy_optimization"
        )

    @property
    def include_in_lazy_optimization(self):
        return list(self._b4k_lazy_patterns)

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        paths = [_variable_path(v) for v in var_list]
        if paths:
            _warn_unmatched(self._b4k_lazy_patterns, paths, "include_in_lazy_optimization")
        self._b4k_lazy_flags = [
            any(re.search(p, path) for p in self._b4k_lazy_patterns) for path in paths
        ]

    def _b4k_active(self, index):
        return self._b4k_lazy_flags[index] or super()._b4k_active(index)

    def _b4k_transform(self, index, old, new, gradient, learning_rate):
        new = super()._b4k_transform(index, old, new, gradient, learning_rate)
        if not self._b4k_lazy_flags[index]:
            return new
        g = ops.convert_to_tensor(gradient)
        rows = ops.any(ops.not_equal(g, 0), axis=-1, keepdims=True)
        return ops.where(rows, new, old)

    def get_config(self):
        config = super().get_config()
        config["include_in_lazy_optimization"] = list(self._b4k_lazy_patterns)
        return config


def extend_with_lazy_optimization(BaseOptimizer, name=None):
    """Add ``include_in_lazy_optimization=[]`` (regexes on paths, e.g. ``['embeddings']``)."""
    return _extend(BaseOptimizer, name, "WithLazyOptimization", _LazyOptimization)


class _ParameterWiseLR:
    """Per-parameter learning-rate multipliers, ``paramwise_lr_schedule={substring: factor}``.

    The update of a variable is multiplied by every factor whose key is a plain substring of
    ``variable.path`` (layer-wise decay: ``{'Transformer-11-': 1.0, 'Transformer-0-': 0.3}``).
    """

    def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
        super().__init__(*args, **kwargs)
        schedule = {} if paramwise_lr_schedule is None else paramwise_lr_schedule
        if not isinstance(schedule, dict):
            raise ValueError(
                "Unknown `paramwise_lr_schedule` format: expected a dict {substring: multiplier},"
                f" received {schedule!r}."
            )
        checked = {}
        for key, value in schedule.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"`paramwise_lr_schedule` keys must be strings, received {key!r}."
                )
            try:
                checked[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"`paramwise_lr_schedule` values must be numbers, received {value!r}."
                ) from None
        self.paramwise_lr_schedule = checked

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        paths = [_variable_path(v) for v in var_list]
        if paths:
            _warn_unmatched(
                list(self.paramwise_lr_schedule), paths, "paramwise_lr_schedule", regex=False
            )
        factors = []
        for path in paths:
            factor = 1.0
            for key, value in self.paramwise_lr_schedule.items():
                if key in path:
                    factor *= value
            factors.append(factor)
        self._b4k_lr_factors = factors

    def _b4k_active(self, index):
        return self._b4k_lr_factors[index] != 1.0 or super()._b4k_active(index)

    def _b4k_transform(self, index, old, new, gradient, learning_rate):
        new = super()._b4k_transform(index, old, new, gradient, learning_rate)
        factor = self._b4k_lr_factors[index]
        if factor == 1.0:
            return new
        return old + (new - old) * ops.cast(factor, new.dtype)

    def get_config(self):
        config = super().get_config()
        config["paramwise_lr_schedule"] = dict(self.paramwise_lr_schedule)
        return config


def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """Add ``paramwise_lr_schedule={}`` ({substring of variable.path: lr multiplier})."""
    return _extend(BaseOptimizer, name, "WithParameterWiseLR", _ParameterWiseLR)


class _ChildTuning:
    """ChildTuning-F: ``g <- g * M / p`` with ``M ~ Bernoulli(p)`` drawn per element and step.

    Post 8764 (Xu et al. 2021): the base update sees the masked, rescaled gradient, so its
    expectation is unchanged; for Adam it mainly rescales the effective step by about sqrt(p).
    ``child_tuning_rate`` is the keep probability ``p`` (default 0.3; 1 disables it) and
    ``child_tuning_seed`` fixes the masks.  Sparse (embedding) gradients are made dense.
    """

    def __init__(self, *args, child_tuning_rate=0.3, child_tuning_seed=None, **kwargs):
        super().__init__(*args, **kwargs)
        rate = float(child_tuning_rate)
        if not 0.0 < rate <= 1.0:
            raise ValueError(
                f"`child_tuning_rate` (keep probability) must be in (0, 1], received "
                f"{child_tuning_rate!r}."
            )
        self.child_tuning_rate = rate
        self.child_tuning_seed = child_tuning_seed

    def _b4k_setup(self, var_list):
        super()._b4k_setup(var_list)
        self._b4k_ct_seeds = keras.random.SeedGenerator(self.child_tuning_seed)

    def update_step(self, gradient, variable, learning_rate):
        if self.child_tuning_rate < 1.0:
            g = ops.convert_to_tensor(gradient)
            draw = keras.random.uniform(ops.shape(g), seed=self._b4k_ct_seeds)
            keep = ops.less(draw, self.child_tuning_rate)
            scaled = g * ops.cast(1.0 / self.child_tuning_rate, g.dtype)
            gradient = ops.where(keep, scaled, ops.zeros_like(g))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["child_tuning_rate"] = self.child_tuning_rate
        config["child_tuning_seed"] = self.child_tuning_seed
        return config


def extend_with_child_tuning(BaseOptimizer, name=None):
    """Add ChildTuning-F ``g ← g·M/p`` (post 8764): ``child_tuning_rate=0.3``, ``..._seed``."""
    return _extend(BaseOptimizer, name, "WithChildTuning", _ChildTuning)


_SQRT2_MINUS_1 = math.sqrt(2.0) - 1.0
AMOS_KINDS = ("inverse_time", "inverse_square")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AmosDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Amos-derived decay ``lr_t = lr_0 · D_t`` with ``D_T = 1/2`` at ``T = half_life`` (post 9344).

    ``kind='inverse_time'`` (decaying p, the post's preference): ``D_t = 1/(t/T + 1)``, i.e.
    ``1/(2α₀p₀t + 1)``.  ``kind='inverse_square'`` (constant p): ``D_t = 1/((√2 − 1)t/T + 1)²``,
    i.e. ``1/(α₀pt + 1)²``.  :meth:`from_amos` takes α₀ and p instead of T.  Usable as the
    ``learning_rate`` of every optimizer here (Lion's Amos setting is ``lr_0 = α₀σ``).
    """

    def __init__(self, initial_learning_rate, half_life, kind="inverse_time"):
        if kind not in AMOS_KINDS:
            raise ValueError(f"`kind` must be one of {AMOS_KINDS}, received {kind!r}.")
        if not float(half_life) > 0:
            raise ValueError(f"`half_life` must be a positive number of steps, received "
                             f"{half_life!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.half_life = float(half_life)
        self.kind = kind

    @classmethod
    def from_amos(cls, initial_learning_rate, alpha0, p, kind="inverse_time"):
        """T from Amos's constants: 1/(2α₀p₀) (inverse time) or (√2 − 1)/(α₀p) (square)."""
        rate = float(alpha0) * float(p)
        if not rate > 0:
            raise ValueError(f"alpha0 * p must be positive, received {alpha0!r} * {p!r}.")
        half_life = 1.0 / (2.0 * rate) if kind == "inverse_time" else _SQRT2_MINUS_1 / rate
        return cls(initial_learning_rate, half_life, kind)

    def decay(self, step):
        """``D_t`` (float32) at ``step``."""
        t = ops.cast(step, "float32") / self.half_life
        if self.kind == "inverse_time":
            return 1.0 / (t + 1.0)
        return 1.0 / ops.square(_SQRT2_MINUS_1 * t + 1.0)

    def __call__(self, step):
        return self.initial_learning_rate * self.decay(step)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "half_life": self.half_life, "kind": self.kind}


def amos_weight_decay(alpha0, decay=1.0, q=1.0):
    """Amos's decay rate ``ρ_t = α₀² D_t / (2q)`` (post 9344; ``decay`` = D_t, q ≈ 1)."""
    return float(alpha0) ** 2 * float(decay) / (2.0 * float(q))
