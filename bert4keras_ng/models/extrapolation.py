"""Length-extrapolation build options for RoPE models: (Leaky) ReRoPE and log-n query scaling.

``build_transformer_model(..., rerope_window=w, rerope_leaky=k, logn_train_length=L,
logn_clip=True)`` on RoFormer, RoFormerV2 or GAU-α switches every attention layer to
``p_bias='rerope'`` (posts 9708, 9728) and/or scales queries by log-n; the weights are the
RoPE model's, so a trained checkpoint extrapolates at inference without retraining.

``hwfa_window=w`` builds HWFA (post 9731): window attention (|i − j| < w) with RoPE in every
block but the last, and full attention without positions and with log-n query scaling
(``logn_train_length``, default ``max_position``) in the last block.
"""

import keras
from keras import ops

from bert4keras_ng.backend import relative_distances
from bert4keras_ng.layers.base import register

OPTION_KEYS = ("rerope_window", "rerope_leaky", "logn_train_length", "logn_clip", "hwfa_window")


def length_extrapolation_options(position, kwargs):
    """Pop the options from a builder's keyword arguments; the ``position_options`` or None.

    ``hwfa_window`` stays in ``kwargs`` for :func:`hwfa_option`.
    """
    if kwargs.get("hwfa_window") is not None:
        if kwargs.get("rerope_window") is not None:
            raise ValueError("hwfa_window and rerope_window cannot be combined.")
        return None  # HWFA's last block gets its log-n options from hwfa_option
    window = kwargs.pop("rerope_window", None)
    leaky = kwargs.pop("rerope_leaky", None)
    logn = kwargs.pop("logn_train_length", None)
    clip = kwargs.pop("logn_clip", True)
    if window is None and leaky is not None:
        raise ValueError("rerope_leaky needs rerope_window (the window w).")
    if window is None and logn is None:
        return None
    if position != "rotary":
        raise ValueError(
            "rerope_window / logn_train_length need a RoPE model (roformer, roformer_v2, "
            f"gau_alpha); this model's positions are {position!r}."
        )
    options = {}
    if window is not None:
        if not window > 0:
            raise ValueError(f"rerope_window must be positive, got {window!r}.")
        if leaky is not None and not leaky >= 1:
            raise ValueError(f"rerope_leaky (k, slope 1/k) must be >= 1, got {leaky!r}.")
        options.update(window=float(window), leaky=None if leaky is None else float(leaky))
    if logn is not None:
        if not logn >= 2:
            raise ValueError(f"logn_train_length must be >= 2, got {logn!r}.")
        options.update(logn=int(logn), logn_clip=bool(clip))
    return options


def hwfa_option(position, kwargs, max_position):
    """Pop ``hwfa_window``; return None or ``(window, last-block position_options)``."""
    window = kwargs.pop("hwfa_window", None)
    logn = kwargs.pop("logn_train_length", None)
    clip = kwargs.pop("logn_clip", True)
    kwargs.pop("rerope_leaky", None)
    if window is None:
        return None
    if position != "rotary":
        raise ValueError(f"hwfa_window needs a RoPE model; this model's positions are "
                         f"{position!r}.")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"hwfa_window must be a positive integer, got {window!r}.")
    return window, {"logn": int(logn or max_position), "logn_clip": bool(clip)}


@register
class WindowMask(keras.layers.Layer):
    """``x`` or ``[x, mask]`` → boolean (1|b, n, n) keep-mask |i − j| < window (AND ``mask``)."""

    def __init__(self, window, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)

    def call(self, inputs):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        n = ops.shape(inputs[0])[1]
        band = ops.abs(relative_distances(n, n)) < self.window
        band = band[None]
        if len(inputs) > 1:
            band = ops.logical_and(band, ops.cast(inputs[1], "bool"))
        return band

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        n = inputs[0].shape[1]
        batch = inputs[1].shape[0] if len(inputs) > 1 else 1
        return keras.KerasTensor((batch, n, n), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config["window"] = self.window
        return config
