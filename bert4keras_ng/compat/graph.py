"""bert4keras.backend helpers kept for ported scripts: search_layer, batch_gather, set_gelu.

``set_gelu`` is the one global switch of the package and acts only when called: it sets what
the activation name 'gelu' resolves to for layers and models built afterwards (a built model
keeps the function it was built with, also through save/load).
"""

import keras
from keras import ops

from bert4keras_ng import backend as _backend

GELU_VERSIONS = {"erf": _backend.gelu_erf, "tanh": _backend.gelu_tanh}


def set_gelu(version):
    """Make hidden_act='gelu' mean the erf form ('erf', the default) or the tanh approximation."""
    key = version.lower() if isinstance(version, str) else version
    if key not in GELU_VERSIONS:
        raise ValueError("set_gelu: version must be 'erf' or 'tanh', got %r" % (version,))
    _backend._ACTIVATIONS["gelu"] = GELU_VERSIONS[key]


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else None


def search_layer(inputs, name, exclude_from=None):
    """The layer called ``name`` upstream of ``inputs`` (a layer or a symbolic tensor), or None.

    Walks the functional graph backwards from the layer that produced ``inputs`` (inside a
    nested model, its layers are searched by name too), as bert4keras did.
    """
    start = inputs if isinstance(inputs, keras.layers.Layer) else _producer(inputs)
    if start is None:
        raise TypeError(
            "search_layer needs a layer or a symbolic Keras tensor (a model output), got %r"
            % (type(inputs).__name__,)
        )
    seen = set() if exclude_from is None else exclude_from
    pending = [start]
    while pending:
        layer = pending.pop(0)
        if layer.name == name:
            return layer
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                if inner.name == name:
                    return inner
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                parent = _producer(tensor)
                if parent is not None and id(parent) not in seen:
                    pending.append(parent)
    return None


def batch_gather(params, indices):
    """Per-sample gather: params (B..., n, ...) at integer indices (B..., k) -> (B..., k, ...).

    The leading axes of ``indices`` but its last are batch axes (tf.gather with
    batch_dims = indices.ndim - 1).
    """
    indices = ops.cast(indices, "int32")
    batch_axes = len(indices.shape) - 1
    extra = len(params.shape) - batch_axes - 1
    if extra < 0:
        raise ValueError(
            "batch_gather: params of rank %d cannot be indexed by indices of rank %d"
            % (len(params.shape), len(indices.shape))
        )
    index = indices
    for _ in range(extra):
        index = ops.expand_dims(index, -1)
    params_shape = ops.shape(params)
    target = tuple(ops.shape(indices)) + tuple(params_shape[batch_axes + 1:])
    index = ops.broadcast_to(index, target)
    return ops.take_along_axis(params, index, axis=batch_axes)
