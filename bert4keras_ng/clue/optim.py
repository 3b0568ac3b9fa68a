"""Optimisers for the CLUE runner.

``RecipeAdaFactor`` is the AdaFactor of the CLUE-bert4keras recipe, which Keras's built-in
``Adafactor`` does not cover (it has no first moment and always factors matrices):

* second moment v ← β₂ v + (1 − β₂)(g² + ε₁), β₂ = 1 − t^(−0.8); factored into row/column
  statistics only when both trailing dimensions reach ``min_dim_size_to_factor`` (the recipe
  uses 10⁶, i.e. never);
* u = g / √v, clipped to RMS ≤ ``clipping_threshold``;
* first moment m ← β₁ m + (1 − β₁) u (β₁ = 0.9 in the recipe), u ← m;
* relative step: θ ← θ − lr · max(RMS(θ), ε₂) · u.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["RecipeAdaFactor", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("adafactor", "adamw", "lion", "tiger")


@keras.saving.register_keras_serializable(package="bert4keras_ng")
class RecipeAdaFactor(keras.optimizers.Optimizer):
    def __init__(self, learning_rate=5e-4, beta1=0.9, beta2_decay=-0.8, epsilon1=1e-30,
                 epsilon2=1e-3, clipping_threshold=1.0, min_dim_size_to_factor=10**6,
                 multiply_by_parameter_scale=True, name="adafactor", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"`beta1` must be in [0, 1); got {beta1}")
        self.beta1 = float(beta1)
        self.beta2_decay = float(beta2_decay)
        self.epsilon1 = float(epsilon1)
        self.epsilon2 = float(epsilon2)
        self.clipping_threshold = clipping_threshold
        self.min_dim_size_to_factor = int(min_dim_size_to_factor)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)

    def _factored(self, shape):
        return (len(shape) >= 2 and shape[-1] >= self.min_dim_size_to_factor
                and shape[-2] >= self.min_dim_size_to_factor)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._vr, self._vc, self._v = [], [], [], []
        for var in var_list:
            shape = tuple(var.shape)
            if self.beta1 > 0:
                self._m.append(self.add_variable_from_reference(var, name="m"))
            if self._factored(shape):
                self._vr.append(self.add_variable(shape[:-1], dtype=var.dtype, name="vr"))
                self._vc.append(self.add_variable(shape[:-2] + shape[-1:], dtype=var.dtype,
                                                  name="vc"))
                self._v.append(None)
            else:
                self._vr.append(None)
                self._vc.append(None)
                self._v.append(self.add_variable_from_reference(var, name="v"))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(ops.convert_to_tensor(gradient), dtype)  # dense, also for embeddings
        i = self._get_variable_index(variable)
        t = ops.cast(self.iterations + 1, dtype)  # Keras counts updates, not micro-steps
        beta2 = 1.0 - ops.power(t, self.beta2_decay)
        g2 = ops.square(g) + self.epsilon1
        if self._v[i] is None:
            vr, vc = self._vr[i], self._vc[i]
            self.assign(vr, beta2 * vr + (1.0 - beta2) * ops.mean(g2, axis=-1))
            self.assign(vc, beta2 * vc + (1.0 - beta2) * ops.mean(g2, axis=-2))
            v = ops.expand_dims(vr, -1) * ops.expand_dims(vc, -2)
            v = v / ops.mean(vr, axis=-1, keepdims=True)[..., None]
        else:
            v = self._v[i]
            self.assign(v, beta2 * v + (1.0 - beta2) * g2)
        u = g / ops.sqrt(v)
        if self.clipping_threshold is not None:
            rms = ops.sqrt(ops.mean(ops.square(u)))
            u = u / ops.maximum(1.0, rms / self.clipping_threshold)
        if self.beta1 > 0:
            m = self._m[i]
            self.assign(m, self.beta1 * m + (1.0 - self.beta1) * u)
            u = m
        if self.multiply_by_parameter_scale:
            scale = ops.maximum(ops.sqrt(ops.mean(ops.square(variable))), self.epsilon2)
            lr = lr * scale
        self.assign_sub(variable, lr * u)

    def get_config(self):
        config = super().get_config()
        config.update(beta1=self.beta1, beta2_decay=self.beta2_decay, epsilon1=self.epsilon1,
                      epsilon2=self.epsilon2, clipping_threshold=self.clipping_threshold,
                      min_dim_size_to_factor=self.min_dim_size_to_factor,
                      multiply_by_parameter_scale=self.multiply_by_parameter_scale)
        return config


def make_optimizer(name, learning_rate, grad_accum=1, weight_decay=0.01):
    """``adafactor`` (the recipe), ``adamw``, ``lion`` (Keras) or ``tiger`` (bert4keras_ng)."""
    name = str(name).lower()
    accum = {"gradient_accumulation_steps": grad_accum} if grad_accum > 1 else {}
    if name == "adafactor":
        return RecipeAdaFactor(learning_rate, **accum)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **accum)
    if name == "lion":
        return keras.optimizers.Lion(learning_rate, weight_decay=weight_decay, **accum)
    if name == "tiger":
        try:
            from ..optimizers import Tiger
        except ImportError as e:  # pragma: no cover - depends on the optimizers module
            raise ValueError("--optimizer tiger needs bert4keras_ng.optimizers.Tiger") from e
        kwargs = {"grad_accum_steps": grad_accum} if grad_accum > 1 else {}
        return Tiger(learning_rate, **kwargs)
    raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
