"""GAU-alpha (ZhuiyiTechnology): RoFormerV2 with each Attention+FFN block replaced by one gated
attention unit (units = intermediate_size, key size = attention_key_size, activation hidden_act,
no biases, entropy-invariant softmax_plus, RoPE), post-norm parameter-free RMSNorm, and the
depth-scaled initializer of order 3."""

from bert4keras_ng.models import mappings
from bert4keras_ng.models.roformer import RoFormerV2


class GAU_alpha(RoFormerV2):
    block = "gau"
    table = mappings.GAU_ALPHA
    attention_normalization = "softmax_plus"
    initializer_order = 3
    signature = (("GAU_alpha/encoder/layer_0/gau/i_dense/kernel",), ())
