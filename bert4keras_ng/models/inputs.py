"""Checks of the arrays given to a built model's ``predict`` / ``fit`` / ``evaluate``, before
Keras converts them (float ids would be truncated to int32 silently, an empty batch ends in a
Keras ``UnboundLocalError``, an out-of-range id cannot raise from inside an XLA step).

:class:`TransformerModel` is the Keras functional model ``build_transformer_model`` returns:
a ``keras.Model`` whose ``predict``, ``fit``, ``evaluate`` and ``__call__`` first run
:func:`check_arrays` on NumPy-like inputs (datasets and generators pass unchecked; their ids are
checked inside the layers where possible, see ``backend.check_ids``).
"""

import keras
import numpy as np

from bert4keras_ng.layers.base import register

# input name suffix -> (layer name suffix holding the table, what the ids are)
ID_INPUTS = {
    "Input-Token": ("Embedding-Token", "token ids"),
    "Input-Segment": ("Embedding-Segment", "segment ids"),
    "Input-Position": ("Embedding-Position", "position ids"),
}


def _limits(model):
    """{input name: (row limit or None, what)} and the learned position table's length."""
    names = {layer.name: layer for layer in model.layers}
    limits, max_length = {}, None
    for tensor in model.inputs:
        name = tensor.name
        for suffix, (table, what) in ID_INPUTS.items():
            if name.endswith(suffix):
                prefix = name[: -len(suffix)]
                layer = names.get(prefix + table)
                if suffix == "Input-Segment" and layer is None:  # shared_segment_embeddings
                    layer = names.get(prefix + "Embedding-Token")
                limit = getattr(layer, "input_dim", None)
                if suffix == "Input-Position" and getattr(layer, "hierarchical", False):
                    limit = limit * limit
                limits[name] = (limit, what)
                if suffix == "Input-Token":
                    position = names.get(prefix + "Embedding-Position")
                    if position is not None and not getattr(position, "hierarchical", True) \
                            and not getattr(position, "custom_position_ids", True):
                        max_length = position.input_dim
    return limits, max_length


def _as_named_arrays(model, x):
    """{input name: ndarray} for NumPy-like ``x`` (array, list/tuple, dict); None otherwise."""
    names = [t.name for t in model.inputs]
    if isinstance(x, dict):
        items = list(x.items())
    elif isinstance(x, (list, tuple)) and len(names) > 1:
        if len(x) != len(names):
            return None
        items = list(zip(names, x))
    else:
        items = [(names[0], x)]
    arrays = {}
    for name, value in items:
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            return None
        arrays[name] = value
    return arrays


def check_arrays(model, x, where="predict"):
    """Raise a clear error for NumPy inputs ``x`` of ``model`` that Keras would mishandle:
    an empty batch, float values for integer ids, ids outside their table, a sequence longer
    than the learned position table."""
    arrays = _as_named_arrays(model, x)
    if arrays is None:
        return
    dtypes = {t.name: keras.backend.standardize_dtype(t.dtype) for t in model.inputs}
    limits, max_length = _limits(model)
    for name, array in arrays.items():
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValueError(
                "%s: input %r is an empty batch (shape %s); pass at least one row."
                % (where, name, array.shape)
            )
        if "int" in dtypes.get(name, "") and not np.issubdtype(array.dtype, np.integer):
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
                raise TypeError("%s: input %r must hold integer ids, got dtype %s."
                                % (where, name, array.dtype))
            fractional = np.argwhere(~np.isfinite(array) | (array != np.round(array)))
            if fractional.size:
                first = tuple(int(i) for i in fractional[0])
                raise TypeError(
                    "%s: input %r must hold integer ids, got %s value %r at index %s (it would "
                    "be truncated to an integer silently)."
                    % (where, name, array.dtype, array[first].item(), list(first))
                )
        limit, what = limits.get(name, (None, None))
        if limit is not None:
            bad = np.argwhere((array < 0) | (array >= limit))
            if bad.size:
                first = tuple(int(i) for i in bad[0])
                raise ValueError(
                    "%s: input %r holds %s outside [0, %d): %r at index %s (%d such ids)."
                    % (where, name, what, limit, array[first].item(), list(first), len(bad))
                )
        if max_length is not None and limits.get(name, (0, ""))[1] == "token ids":
            if array.ndim >= 2 and array.shape[1] > max_length:
                raise ValueError(
                    "%s: input %r has sequence length %d, longer than the %d learned positions "
                    "(max_position_embeddings); truncate the inputs." % (where, name, array.shape[1], max_length)
                )


@register
class TransformerModel(keras.Model):
    """The functional model of ``build_transformer_model``: checks NumPy inputs first."""

    def predict(self, x, *args, **kwargs):
        check_arrays(self, x, "predict")
        return super().predict(x, *args, **kwargs)

    def fit(self, x=None, *args, **kwargs):
        check_arrays(self, x, "fit")
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        check_arrays(self, x, "evaluate")
        return super().evaluate(x, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        if args:
            check_arrays(self, args[0], "call")
        return super().__call__(*args, **kwargs)
