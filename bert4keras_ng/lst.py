"""Ladder Side-Tuning (post 9138; Sung et al. 2022): frozen backbone plus a small side Transformer.

``ladder_side_tuning(model)`` freezes every layer of a built encoder and returns a Keras model
with the same inputs whose output is the last hidden state of a side Transformer (hidden 128,
4 layers, 4 heads, FFN 512 by default).  The side network starts from ``Dense(128, no bias)`` of
the backbone's ``Embedding-Dropout`` output and, after its block ``i``, adds
``Dense(128, no bias)`` of the backbone's block ``(i + 1)·skip − 1`` output,
``skip = backbone_layers // ladder_layers``.  The backbone outputs pass a stop-gradient, so
backpropagation never enters the backbone (about 2× faster than full fine-tuning, far less
memory).  DeepNet-style initialisation (RoFormerV2's depth-scaled truncated normal); the post
trains it with AdaFactor, lr 5e-3, β₁ 0.9.
"""

import re

import keras
from keras import ops

from bert4keras_ng.layers.base import register
from bert4keras_ng.models.auxiliary import Add
from bert4keras_ng.models.bert import BERT

__all__ = ["StopGradient", "ladder_side_tuning", "backbone_taps"]


@register
class StopGradient(keras.layers.Layer):
    """Identity whose gradient is zero (the Keras mask passes through)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.stop_gradient(inputs)


def backbone_taps(model, ladder_layers):
    """``[embedding output, output of block (i+1)·skip − 1 for i < ladder_layers]``.

    The embedding output is that of the last of ``Embedding-Norm`` / ``Embedding-Dropout`` /
    ``Embedding-Mapping`` in the graph (``Embedding-Dropout`` for BERT; no dropout layer exists
    at rate 0; RoFormerV2 normalises after its dropout).

    A block's output is the output of the last layer named ``Transformer-<n>-…``.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"ladder_side_tuning: `model` must be a keras.Model; got {type(model)}.")
    names = [layer.name for layer in model.layers]
    # the embedding output: Embedding-Dropout, absent when the dropout rate is 0
    found = [n for n in names if n in ("Embedding-Mapping", "Embedding-Dropout", "Embedding-Norm")]
    if not found:
        raise ValueError(
            f"ladder_side_tuning: model {model.name!r} has no 'Embedding-Dropout' / "
            "'Embedding-Norm' layer (build it with bert4keras_ng.models.build_transformer_model)."
        )
    last = {}
    for layer in model.layers:
        match = re.match(r"Transformer-(\d+)-", layer.name)
        if match:
            last[int(match.group(1))] = layer
    depth = len(last)
    if depth == 0 or sorted(last) != list(range(depth)):
        raise ValueError(
            f"ladder_side_tuning: model {model.name!r} has no indexed blocks "
            "'Transformer-<n>-…' (ALBERT's shared blocks are not supported)."
        )
    if ladder_layers is None:
        ladder_layers = min(4, depth)
    if not 1 <= ladder_layers <= depth:
        raise ValueError(
            f"ladder_side_tuning: ladder_layers must be in [1, {depth}] (the backbone's "
            f"depth); got {ladder_layers}."
        )
    skip = depth // ladder_layers
    taps = [model.get_layer(found[-1]).output]  # the last of them in the graph
    taps += [last[(i + 1) * skip - 1].output for i in range(ladder_layers)]
    return taps


class _SideTransformer(BERT):
    """The side network: a BERT block stack fed by down-projected backbone activations."""

    initializer_order = 2
    # the ladder projections exist only in the side network: no checkpoint holds them
    not_from_checkpoint = BERT.not_from_checkpoint + ("*Ladder-*-Mapping/*",)

    def __init__(self, backbone, taps, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.taps = taps

    def get_inputs(self):
        return list(self.backbone.inputs)

    def _project(self, tensor, name):
        frozen = self.apply(tensor, StopGradient, name=name + "-Frozen")
        return self.apply(frozen, keras.layers.Dense, units=self.hidden_size, use_bias=False,
                          kernel_initializer=self.initializer, name=name + "-Mapping")

    def apply_embeddings(self, inputs):
        return self._project(self.taps[0], "Embedding")

    def apply_main_layers(self, x, index):
        x = super().apply_main_layers(x, index)
        y = self._project(self.taps[index + 1], f"Ladder-{index}")
        return self.apply([x, y], Add, name=f"Ladder-{index}-Add")


def ladder_side_tuning(model, ladder_layers=None, hidden_size=128, num_attention_heads=4,
                       intermediate_size=512, hidden_act="gelu", dropout_rate=0.1,
                       prefix="Side-", name="LST"):
    """Ladder Side-Tuning (post 9138): freeze ``model`` in place, return backbone + side network.

    ``ladder_layers=None`` means min(4, backbone depth).  Returns a ``keras.Model`` from
    ``model.inputs`` to the side network's last hidden states
    (b, n, hidden_size), carrying the padding mask; put the task head on it.  Only the side
    network is trainable (``model.trainable`` is set to False).
    """
    taps = backbone_taps(model, ladder_layers)
    ladder_layers = len(taps) - 1
    model.trainable = False
    side = _SideTransformer(
        model, taps, vocab_size=1, hidden_size=hidden_size, num_hidden_layers=int(ladder_layers),
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        hidden_act=hidden_act, dropout_rate=dropout_rate, attention_dropout_rate=dropout_rate,
        prefix=prefix, name=name)
    return side.build()
