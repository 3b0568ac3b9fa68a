"""Google T5 / mT5 (and T5-PEGASUS): encoder, decoder and the encoder–decoder model.

Declared differences from the base recipe: pre-norm blocks with RMSNorm (scale only, epsilon
1e-6), no biases, no 1/√d attention scaling, T5 bucketed relative position biases (32 buckets,
max distance 128, one table per stack: bidirectional in the encoder, causal in the decoder, which
also biases the cross-attention unless ``cross_position_bias=False``), token-only inputs and
``Encoder-`` / ``Decoder-`` layer names. ``version``: 't5.1.0' (relu FFN, tied LM head),
't5.1.1' (gated FFN from hidden_act ``["gelu", "linear"]``, untied ``Decoder-Output-LM``),
'mt5.1.1' (as t5.1.1 with ``rms_norm`` variable names).
"""

import keras

from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.models import blocks, hf_mappings, mappings
from bert4keras_ng.models.auxiliary import AttentionMask
from bert4keras_ng.models.transformer import Transformer, _activation

VERSIONS = ("t5.1.0", "t5.1.1", "mt5.1.1")
_BLOCK0 = "encoder/block_000/layer_001/"


class T5_Base(Transformer):
    """What the T5 encoder, decoder and full model share."""

    norm = "rms_scale"
    block_epsilon = 1e-6
    use_bias = False
    attention_scale = False
    position = "t5_relative"
    segment_input = False
    embedding_norm = False
    block = "pre_norm"
    ignorable = ("*_slot_*",)  # Mesh-TensorFlow Adafactor slots (``.../q_slot_vc``, ...)
    signatures = {
        "t5.1.0": ((_BLOCK0 + "DenseReluDense/wi/kernel",), ()),
        "t5.1.1": ((_BLOCK0 + "DenseReluDense/wi_0/kernel", _BLOCK0 + "layer_norm/scale"), ()),
        "mt5.1.1": ((_BLOCK0 + "DenseReluDense/wi_0/kernel", _BLOCK0 + "rms_norm/scale"), ()),
    }
    signature = signatures["t5.1.0"]

    def __init__(self, version="t5.1.0", **kwargs):
        if version not in VERSIONS:
            raise ValueError("T5 version must be one of %s, got %r." % (", ".join(VERSIONS), version))
        application = kwargs.get("application", "encoder")
        if application != "encoder":
            raise ValueError(
                "T5 models cannot be used with application=%r (the decoder is already causal)."
                % (application,)
            )
        self.version = version
        self.table = mappings.t5(version)
        self.signature = self.signatures[version]
        super().__init__(**kwargs)
        gated = isinstance(self.hidden_act, (list, tuple))
        if gated != (version != "t5.1.0"):
            raise ValueError(
                "T5 version %r with hidden_act=%r: t5.1.0 has one feed-forward branch (wi, e.g. "
                "'relu'), t5.1.1 / mt5.1.1 the gated pair (wi_0, wi_1: a list such as "
                "['gelu', 'linear']); check the model= string and the config's hidden_act."
                % (version, self.hidden_act)
            )

    @property
    def hf_table(self):  # Hugging Face T5ForConditionalGeneration names
        return hf_mappings.t5(self.version)

    @property
    def hf_model_type(self):
        return "mt5" if self.version == "mt5.1.1" else "t5"

    def token_inputs(self, name):
        return self.apply(layer=keras.layers.Input, shape=(self.sequence_length,), dtype="int32", name=name)

    def apply_output_norm(self, x, stack):
        x = self.apply_norm(x, stack + "-Output-Norm", self.block_epsilon)
        return self.apply(x, Dropout, rate=self.dropout_rate, name=stack + "-Output-Dropout")


class T5_Encoder(T5_Base):
    """T5 encoder: Encoder-Input-Token → hidden states (b, n, H)."""

    block_prefix = "Encoder-"
    # a full T5 checkpoint or Hugging Face folder: the other stack
    ignorable = T5_Base.ignorable + ("decoder/*", "decoder.*", "lm_head.*")

    def get_inputs(self):
        return [self.token_inputs("Encoder-Input-Token")]

    def apply_final_layers(self, x):
        return self.apply_output_norm(x, "Encoder")


class T5_Decoder(T5_Base):
    """T5 decoder: [Input-Context (b, n_enc, H), Decoder-Input-Token] → token probabilities."""

    block_prefix = "Decoder-"
    causal_relative_position = True
    ignorable = T5_Base.ignorable + ("encoder/*", "encoder.*")

    def __init__(self, with_lm=True, cross_position_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.with_lm = with_lm
        self.cross_position_bias = cross_position_bias
        self.cross_bias = None

    def get_inputs(self):
        context = self.apply(
            layer=keras.layers.Input, shape=(self.sequence_length, self.hidden_size), name="Input-Context"
        )
        return [context, self.token_inputs("Decoder-Input-Token")]

    @property
    def token_input(self):
        return self.inputs[1]

    def compute_attention_bias(self):
        if self.attention_bias is None:
            self.attention_bias = self.apply(
                self.token_input, AttentionMask, kind="lm", name="Attention-LM-Mask"
            )
        return self.attention_bias

    def compute_cross_position_bias(self, x, context):
        """The decoder's (causal-bucket) table on (decoder position, encoder position)."""
        if self.cross_position_bias and self.cross_bias is None:
            self.cross_bias = self.apply([x, context], name="Decoder-Embedding-Relative-Position")
        return self.cross_bias if self.cross_position_bias else None

    def apply_embeddings(self, inputs):
        context, x = inputs
        return [context, super().apply_embeddings([x])]

    def apply_main_layers(self, inputs, index):
        context, x = inputs
        return [context, blocks.cross_attention_block(self, x, context, index)]

    def apply_final_layers(self, inputs):
        """Decoder-Output-Norm → Dropout → Decoder-Output-Scale (× H^-0.5) → LM head."""
        from bert4keras_ng.layers import ScaleOffset

        x = self.apply_output_norm(inputs[1], "Decoder")
        x = self.apply(x, ScaleOffset, scale=self.hidden_size ** -0.5, offset=False,
                       name="Decoder-Output-Scale")
        if not self.with_lm:
            return x
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.embedding_size,
                           kernel_initializer=self.initializer, name="Decoder-Output-Mapping")
        activation = _activation("softmax" if self.with_lm is True else self.with_lm)
        if self.version == "t5.1.0":  # tied to the token embedding
            x = self.apply(x, arguments={"mode": "dense"}, name="Embedding-Token")
            return self.apply(x, keras.layers.Activation, activation=activation, dtype="float32",
                              name="Decoder-Output-LM-Activation")
        return self.apply(x, keras.layers.Dense, units=self.vocab_size, activation=activation,
                          use_bias=False, kernel_initializer=self.initializer, dtype="float32",
                          name="Decoder-Output-LM")


class T5(T5_Base):
    """Encoder–decoder T5: inputs [Encoder-Input-Token, Decoder-Input-Token]. After ``build``,
    ``.encoder`` and ``.decoder`` are the two stacks as Keras models and ``.model`` the whole;
    all three share one ``layers`` dict (one set of weights)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        kwargs["layers"] = self.layers
        name = kwargs.pop("name", None)
        self._encoder = T5_Encoder(name=name + "_Encoder" if name else "Encoder", **kwargs)
        self._decoder = T5_Decoder(name=name + "_Decoder" if name else "Decoder", **kwargs)

    def build(self, **build_options):
        if self.built:
            return self.model
        self.encoder = self._encoder.build(**build_options)
        self.decoder = self._decoder.build(**build_options)
        self._decoder.position_bias = self._decoder.cross_bias = None  # recomputed below
        # encoder inputs, then the decoder's except its context (an extra input both stacks
        # take, such as a layer_norm_cond condition, appears once)
        self.inputs = []
        for tensor in self.encoder.inputs + self.decoder.inputs[1:]:
            if all(tensor is not seen for seen in self.inputs):
                self.inputs.append(tensor)
        outputs = self._decoder.call([self.encoder.outputs[0], self.decoder.inputs[1]])
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.input, self.output = self.inputs, self.outputs[0] if len(self.outputs) == 1 else self.outputs
        self.model = keras.Model(self.inputs, self.output, name=self.name)
        self.built = True
        return self.model
