"""RoFormer and RoFormerV2: rotary position embeddings (interleaved pairs) on queries and keys.

RoFormerV2 differs from RoFormer in four declared ways: no biases anywhere, parameter-free
RMSNorm instead of LayerNorm (Dropout before the embedding norm), the tied MLM head without
transform/bias, and a depth-scaled initializer.
"""

from bert4keras_ng.models import hf_mappings
from bert4keras_ng.models.nezha import NEZHA


class RoFormer(NEZHA):
    """RoFormer: NEZHA's embeddings and norms (1e-7) with RoPE instead of relative positions."""

    position = "rotary"
    hf_table = hf_mappings.ROFORMER
    hf_model_type = "roformer"


class RoFormerV2(RoFormer):
    """RoFormerV2."""

    hf_table = hf_model_type = None  # no Hugging Face counterpart
    use_bias = False
    norm = "rms"
    dropout_before_embedding_norm = True
    head = "tied"
    initializer_order = 2
    embedding_epsilon = block_epsilon = 1e-7
    signature = (
        ("bert/encoder/layer_0/attention/self/query/kernel",),
        ("bert/encoder/layer_0/attention/self/query/bias", "bert/embeddings/position_embeddings"),
    )
