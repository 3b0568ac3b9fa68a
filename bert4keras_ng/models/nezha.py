"""NEZHA: BERT without absolute positions; functional relative positions (a fixed sinusoid
table of 2·64+1 rows, clipped at distance 64) enter every attention twice (key and value terms).
Embedding and block norms use epsilon 1e-7, the MLM norm 1e-12."""

from bert4keras_ng.models.bert import BERT


class NEZHA(BERT):
    position = "relative"
    embedding_epsilon = 1e-7
    block_epsilon = 1e-7
    signature = (
        ("bert/encoder/layer_0/attention/self/query/bias",),
        ("bert/embeddings/position_embeddings",),
    )
