"""Optimisers for the CLUE runner.

``adafactor`` is the recipe's optimiser, :class:`bert4keras_ng.optimizers.AdaFactor` (bert4keras's
AdaFactor) with ``beta1=0.9`` and ``min_dim_size_to_factor=10**6`` (never factored); ``adamw``
is Keras's AdamW through :func:`bert4keras_ng.optimizers.extend_with_weight_decay` (the same
update, decay on every variable, but run as TensorFlow's fused Adam kernels), ``lion`` is
Keras's, ``tiger`` is :class:`bert4keras_ng.optimizers.Tiger`.
"""

from __future__ import annotations

import keras

from .. import optimizers

__all__ = ["make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("adafactor", "adamw", "lion", "tiger")


def make_optimizer(name, learning_rate, grad_accum=1, weight_decay=0.01):
    """``adafactor`` (the recipe), ``adamw``, ``lion`` (Keras) or ``tiger`` (bert4keras_ng)."""
    name = str(name).lower()
    accum = {"gradient_accumulation_steps": grad_accum} if grad_accum > 1 else {}
    if name == "adafactor":
        return optimizers.AdaFactor(
            learning_rate, beta1=0.9, min_dim_size_to_factor=10**6, **accum
        )
    if name == "adamw":
        # keras.optimizers.AdamW's algorithm (decay of every variable, then Adam), but each
        # variable's update is one fused kernel on TensorFlow instead of a dozen element-wise ops
        adamw = optimizers.extend_with_weight_decay(keras.optimizers.AdamW)
        return adamw(learning_rate, weight_decay_rate=weight_decay, **accum)
    if name == "lion":
        return keras.optimizers.Lion(learning_rate, weight_decay=weight_decay, **accum)
    if name == "tiger":
        kwargs = {"grad_accum_steps": grad_accum} if grad_accum > 1 else {}
        return optimizers.Tiger(learning_rate, **kwargs)
    raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
