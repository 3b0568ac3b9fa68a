"""ALBERT: BERT embeddings (usually narrower, so Embedding-Mapping is present) and one block
whose layers are shared by all L applications (layer names without an index)."""

from bert4keras_ng.models import hf_mappings, mappings
from bert4keras_ng.models.bert import BERT

_SHARED = "bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel"


class ALBERT(BERT):
    """ALBERT with shared blocks; block norms use epsilon 1e-7 (embedding and MLM norms 1e-12)."""

    table = mappings.ALBERT
    hf_table = hf_mappings.ALBERT
    hf_model_type = "albert"
    shared_blocks = True
    block_epsilon = 1e-7
    signature = ((_SHARED,), ())


class ALBERT_Unshared(BERT):
    """ALBERT checkpoint loaded into L independent BERT blocks (each starts from the shared
    weights); every norm uses epsilon 1e-12 as in BERT."""

    table = mappings.ALBERT_UNSHARED
    hf_table = hf_mappings.ALBERT_UNSHARED
    hf_model_type = "albert"
    hf_exportable = "its blocks are not shared, Hugging Face ALBERT's are (export model='albert')"
    signature = ((_SHARED,), ())
