"""``tf.distribute`` strategies that ``model.fit`` can use with Keras 3 (several devices or machines).

Keras 3.15's TensorFlow trainer and ``tf.distribute.MultiWorkerMirroredStrategy`` (TF 2.21) disagree
on ``Strategy.reduce`` in two places, so the TensorFlow tutorial's recipe fails at the first
``model.fit`` on every worker (keras-team/keras#20585, tensorflow/tensorflow#72388):

1. before the first step Keras reduces the first *nested* batch ``(x, y)`` with
   ``strategy.reduce("MEAN", batch, axis=None)`` to learn its shapes. ``MirroredStrategy`` maps the
   reduction over the structure; the collective (multi-worker) strategy does not, and fails with
   ``Attempt to convert a value (PerReplica:{...}) ... to a Tensor``;
2. after each step Keras averages the per-replica logs of a multi-worker run with
   ``strategy.reduce("MEAN", loss, axis=0)``, but the loss is a scalar:
   ``Invalid reduction dimension 0 for input with 0 dimensions``.

:class:`MultiWorkerMirroredStrategy` is the TensorFlow class with a ``reduce`` that does what both
calls mean (a structure is reduced element by element; ``axis`` is ignored for a scalar, whose mean
over that axis is itself), and nothing else changed. :func:`get_strategy` gives the strategy for a
command-line choice (``"mirrored"``, ``"multiworker"``, ``None``).

Usage, identical on every machine (``TF_CONFIG`` names the cluster and this worker's index)::

    from bert4keras_ng import distribute, training
    strategy = distribute.get_strategy("multiworker")   # before any other TensorFlow op
    with strategy.scope():
        model = ...                                      # build_transformer_model + head
        training.compile_model(model, optimizer, loss)   # XLA off with several replicas
    model.fit(dataset.batch(global_batch_size))          # the same global batches on every worker
"""

import tensorflow as tf

__all__ = ["MultiWorkerMirroredStrategy", "get_strategy", "STRATEGIES"]

STRATEGIES = ("default", "mirrored", "multiworker")


def _is_nested(value):
    return isinstance(value, (list, tuple, dict)) and not isinstance(
        value, tf.distribute.DistributedValues
    )


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``tf.distribute.MultiWorkerMirroredStrategy`` whose ``reduce`` works with Keras 3's trainer.

    Same constructor (``cluster_resolver=None, communication_options=None``); ``TF_CONFIG`` is read
    as usual. Only :meth:`reduce` differs (see the module docstring).
    """

    def reduce(self, reduce_op, value, axis=None):
        """``Strategy.reduce`` that also accepts a (nested) structure of values, like
        ``MirroredStrategy``'s, and treats ``axis`` of a scalar value as ``None``."""
        if _is_nested(value):
            return tf.nest.map_structure(
                lambda item: None if item is None else self.reduce(reduce_op, item, axis), value
            )
        if axis is not None:
            local = self.experimental_local_results(value)
            if local and all(getattr(v, "shape", None) is not None and v.shape.rank == 0 for v in local):
                axis = None
        return super().reduce(reduce_op, value, axis)


def get_strategy(kind=None, devices=None):
    """The strategy for ``kind``: ``None`` / ``"default"`` (TensorFlow's current, usually the
    no-op default strategy), ``"mirrored"`` (``tf.distribute.MirroredStrategy(devices)``, all local
    GPUs by default) or ``"multiworker"`` (:class:`MultiWorkerMirroredStrategy`, cluster from
    ``TF_CONFIG``; create it before any other TensorFlow op of the process)."""
    if kind is None or kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multiworker":
        if devices is not None:
            raise ValueError(
                "get_strategy('multiworker') takes its devices from TF_CONFIG and the local GPUs; "
                "devices=%r is not supported." % (devices,)
            )
        return MultiWorkerMirroredStrategy()
    raise ValueError("Unknown strategy %r; expected one of %s." % (kind, ", ".join(STRATEGIES)))
