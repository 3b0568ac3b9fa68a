"""Endless batch streams that Keras 3 ``fit``/``predict`` accept with variable-length batches.

Keras 3 turns a Python generator into a ``tf.data`` pipeline whose shapes come from the first
two batches: a dimension on which they agree is fixed, so a later batch padded to another
length fails, and list-structured batches ``([tokens, segments], labels)`` are rejected.
``BatchStream`` wraps a batch iterator as both a plain Python iterator (``next(stream)`` gives
the batches unchanged) and a Keras data adapter whose non-batch dimensions are dynamic (but
for axes of size 1 in the first batch, such as (b, 1) labels) and whose lists are tuples, so
it can be handed to ``fit``/``predict``/``evaluate`` directly.
"""

import numpy as np

_ADAPTER_CLASS = None


def _is_structure(x):
    """A dict, or a list/tuple holding arrays or structures (a list of numbers is a leaf)."""
    if isinstance(x, dict):
        return True
    if isinstance(x, (list, tuple)):
        return any(hasattr(e, "shape") or _is_structure(e) for e in x)
    return False


def _structure(batch, fn):
    if isinstance(batch, dict):
        return {k: _structure(v, fn) for k, v in batch.items()}
    if _is_structure(batch):
        return tuple(_structure(v, fn) for v in batch)
    return fn(batch)


def _as_array(x):
    try:
        array = np.asarray(x)
    except ValueError:  # NumPy refuses inhomogeneous nested lists
        array = np.empty(0, dtype=object)
    if array.dtype == np.float64:  # Keras 2 fed float32 placeholders; losses meet float32
        array = array.astype("float32")
    if array.dtype == object:
        raise TypeError(
            "a batch element could not be turned into a rectangular array (ragged lists?); "
            "pad it with sequence_padding: %r" % (x,)
        )
    return array


def normalize_batch(batch, inputs_only=False):
    """``(x, y[, w])`` with lists made tuples and leaves made arrays (float64 ones float32, as
    Keras 2's placeholders made them); a None target is dropped.

    ``inputs_only``: the batch is ``x`` alone (``fortest``), returned as ``(x,)``.
    """
    if inputs_only:
        return (_structure(batch, _as_array),)
    if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
        raise TypeError(
            "a training batch must be (inputs,), (inputs, targets) or (inputs, targets, "
            "sample_weights); got %s" % (type(batch).__name__,)
        )
    parts = list(batch)
    while len(parts) > 1 and parts[-1] is None:
        parts.pop()
    if any(p is None for p in parts):
        raise TypeError("a batch may only leave its trailing elements None, got %r" % (batch,))
    return tuple(_structure(p, _as_array) for p in parts)


def _adapter_class():
    """The stream class, a Keras DataAdapter (made on first use: Keras is imported only then)."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is not None:
        return _ADAPTER_CLASS
    try:  # Keras 3 accepts DataAdapter instances as `x` as they are
        from keras.src.trainers.data_adapters.data_adapter import DataAdapter
        from keras.src.trainers.data_adapters import data_adapter_utils
    except ImportError as exc:  # pragma: no cover - depends on the Keras release
        raise ImportError(
            "this Keras release moved its DataAdapter class; use DataGenerator.to_dataset(...) "
            "to feed fit with a tf.data.Dataset instead (%s)" % exc
        ) from exc

    class _BatchStreamAdapter(DataAdapter):
        def get_numpy_iterator(self):
            return self._normalized()

        def get_jax_iterator(self):
            return self._normalized()

        def get_tf_dataset(self):
            import tensorflow as tf

            first = self._peek()

            def spec(x):  # size-1 axes stay fixed: Keras squeezes (b, 1) sparse labels
                shape = (None,) + tuple(1 if d == 1 else None for d in x.shape[1:])
                return tf.TensorSpec(shape=shape[: x.ndim], dtype=tf.as_dtype(x.dtype))

            signature = _structure(first, spec)
            dataset = tf.data.Dataset.from_generator(self._normalized,
                                                     output_signature=signature)
            return dataset.prefetch(tf.data.AUTOTUNE)

        def get_torch_dataloader(self):
            return data_adapter_utils.get_torch_dataloader(self._normalized())

        @property
        def num_batches(self):
            return None

        @property
        def batch_size(self):
            return None

        @property
        def has_partial_batch(self):
            return None

        @property
        def partial_batch_size(self):
            return None

    _ADAPTER_CLASS = type("BatchStream", (_BatchStreamBase, _BatchStreamAdapter), {})
    return _ADAPTER_CLASS


class _BatchStreamBase:
    """Iterator side of ``BatchStream`` (no Keras import)."""

    def __init__(self, batches, inputs_only=False):
        self._batches = iter(batches)
        self._inputs_only = inputs_only
        self._buffer = []

    def __iter__(self):
        return self

    def __next__(self):
        if self._buffer:
            return self._buffer.pop(0)
        return next(self._batches)

    def _peek(self):
        if not self._buffer:
            try:
                self._buffer.append(next(self._batches))
            except StopIteration:
                raise ValueError("the batch stream is empty: no batch to feed") from None
        return normalize_batch(self._buffer[0], self._inputs_only)

    def _normalized(self):
        for batch in self:
            yield normalize_batch(batch, self._inputs_only)


def BatchStream(batches, inputs_only=False):
    """A ``BatchStream`` over the iterable ``batches`` (see the module docstring)."""
    return _adapter_class()(batches, inputs_only)
