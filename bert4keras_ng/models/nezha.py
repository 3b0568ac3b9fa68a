"""NEZHA: BERT without absolute positions; functional relative positions (a fixed sinusoid
table of 2·64+1 rows, clipped at distance 64) enter every attention twice (key and value terms).
Embedding and block norms use epsilon 1e-7, the MLM norm 1e-12."""

from bert4keras_ng.models import hf_mappings
from bert4keras_ng.models.bert import BERT


class NEZHA(BERT):
    position = "relative"
    hf_table = hf_mappings.NEZHA
    hf_model_type = "nezha"
    embedding_epsilon = 1e-7
    block_epsilon = 1e-7
    signature = (
        ("bert/encoder/layer_0/attention/self/query/bias",),
        ("bert/embeddings/position_embeddings",),
    )
