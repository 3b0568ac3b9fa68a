"""BERT and RoBERTa (Google layout): the base recipe with no changes.

Learned absolute positions, post-LayerNorm blocks (epsilon 1e-12 everywhere), biases everywhere,
pooler / NSP / tied MLM heads. RoBERTa checkpoints converted to the BERT layout load the same way.
"""

from bert4keras_ng.models import hf_mappings
from bert4keras_ng.models.transformer import Transformer


class BERT(Transformer):
    """Google BERT / RoBERTa."""

    hf_table = hf_mappings.BERT
    hf_model_type = "bert"
