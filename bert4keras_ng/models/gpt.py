"""The GPT family: causal language models with a tied LM head (``LM-Activation``, softmax or
``final_activation``). Each is a few declared differences over the shared recipes:

- GPT (CDial-GPT): BERT's post-LN blocks and token + segment + position embeddings without
  Embedding-Norm, variables under ``gpt/`` (``encoder`` → ``transformer``).
- GPT2 (CPM-LM): token + position input only, no embedding norm or dropout, pre-LN blocks
  (epsilon 1e-5) and a final ``Output-Norm``; block norms read ``.../input/LayerNorm``.
- GPT2_ML (imcaspar/gpt2-ml, ``newslm/``): token + position → Embedding-Norm (1e-5), then blocks
  of attention without norm and a feed-forward between ``-Norm-0`` and ``-Norm-1``.
"""

from bert4keras_ng.models import hf_mappings, mappings
from bert4keras_ng.models.bert import BERT


class GPT(BERT):
    """CDial-GPT style GPT."""

    scope = "gpt/"
    table = mappings.GPT
    hf_table = hf_model_type = None
    embedding_norm = False
    head = "gpt"
    signature = (("gpt/transformer/layer_0/attention/output/LayerNorm/gamma",), ())

    def __init__(self, final_activation="softmax", **kwargs):
        for option in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.get(option):
                raise ValueError(
                    "model=%r has no %s head: its output is the LM head (choose its activation "
                    "with final_activation=...)." % (type(self).__name__.lower(), option[5:])
                )
        if kwargs.get("application", "encoder") == "encoder":
            kwargs["application"] = "lm"  # always causal, as in bert4keras
        super().__init__(**kwargs)
        self.final_activation = final_activation
        self.with_mlm = False


class GPT2(GPT):
    """CPM-LM style GPT2: pre-LN."""

    table = mappings.GPT2
    hf_table = hf_mappings.GPT2
    hf_model_type = "gpt2"
    segment_input = False
    embedding_dropout = False
    block = "pre_norm"
    block_epsilon = 1e-5
    head = "gpt2"
    signature = (("gpt/transformer/layer_0/attention/input/LayerNorm/gamma",), ())


class GPT2_ML(GPT):
    """imcaspar/gpt2-ml layout."""

    table = mappings.GPT2_ML
    segment_input = False
    embedding_norm = True
    embedding_dropout = False
    embedding_epsilon = block_epsilon = 1e-5
    block = "gpt2_ml"
    signature = (("newslm/layer00/query_layer/kernel",), ())
