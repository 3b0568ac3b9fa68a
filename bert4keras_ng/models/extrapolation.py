"""Length-extrapolation build options for RoPE models: (Leaky) ReRoPE and log-n query scaling.

``build_transformer_model(..., rerope_window=w, rerope_leaky=k, logn_train_length=L,
logn_clip=True)`` on RoFormer, RoFormerV2 or GAU-α switches every attention layer to
``p_bias='rerope'`` (posts 9708, 9728) and/or scales queries by log-n; the weights are the
RoPE model's, so a trained checkpoint extrapolates at inference without retraining.
"""

OPTION_KEYS = ("rerope_window", "rerope_leaky", "logn_train_length", "logn_clip")


def length_extrapolation_options(position, kwargs):
    """Pop the options from a builder's keyword arguments; the ``position_options`` or None."""
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
