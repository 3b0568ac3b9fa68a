"""ELECTRA: BERT embeddings and blocks under the ``electra/`` scope, its own embedding
projection name, the optional discriminator head and the generator's MLM head (no pooler)."""

from bert4keras_ng.models import hf_mappings, mappings
from bert4keras_ng.models.bert import BERT


class ELECTRA(BERT):
    scope = "electra/"
    table = mappings.ELECTRA
    hf_table = hf_mappings.ELECTRA
    hf_model_type = "electra"
    head = "electra"
    signature = (("electra/encoder/layer_0/attention/self/query/kernel",), ())

    def _check_options(self):
        for option in ("with_pool", "with_nsp"):
            if getattr(self, option):
                raise ValueError(
                    "model='electra' has no %s head; use with_discriminator=True (or an "
                    "activation name) for the discriminator, with_mlm=True for the generator's "
                    "MLM head." % option[5:]
                )
        if self.application != "encoder":
            raise ValueError(
                "model='electra' cannot be used with application=%r (only 'encoder')." % self.application
            )
        super()._check_options()
