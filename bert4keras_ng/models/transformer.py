"""The base model builder: configuration, the ``apply`` primitive, inputs, embeddings, masks,
heads, and checkpoint load/save by walking the family's table.

A family (``bert.py``, ``roformer.py``, ...) is a subclass that only changes the *declared
differences* listed at the top of :class:`Transformer`; the blocks themselves are the shared
recipes of ``blocks.py``.
"""

import contextlib
import os
import re
import warnings

import keras
import numpy as np

from bert4keras_ng import checkpoints
from bert4keras_ng.backend import explicit_gelu
from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.models import attention_types as synthesis
from bert4keras_ng.models import blocks, mappings
from bert4keras_ng.models import config as model_config
from bert4keras_ng.models.auxiliary import Add, AttentionMask, DepthScaledTruncatedNormal, TakeToken
from bert4keras_ng.models.extrapolation import hwfa_option, length_extrapolation_options
from bert4keras_ng.models.inputs import TransformerModel

REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the built model (missing variables or wrong shapes)."""


class Transformer:
    """Base builder. Class attributes below are the declared differences between families."""

    # ---- declared differences (defaults = Google BERT) --------------------------------------
    scope = "bert/"  # checkpoint scope substituted for {scope} in the table
    table = mappings.BERT  # Keras layer -> {weight: checkpoint variable}
    hf_table = None  # the same for Hugging Face folders (None: no counterpart)
    hf_model_type = None  # config.json model_type of that counterpart
    position = "learned"  # 'learned' absolute | 'relative' (NEZHA) | 'rotary' (RoPE) | 't5_relative'
    # 'layer' (LayerNorm with gamma/beta) | 'rms' (parameter-free RMSNorm) | 'rms_scale' (T5)
    norm = "layer"
    embedding_epsilon = 1e-12
    block_epsilon = 1e-12
    mlm_epsilon = 1e-12
    dropout_before_embedding_norm = False  # RoFormerV2 / GAU-alpha: Dropout, then Norm
    embedding_norm = True  # GPT, GPT2, T5: no Embedding-Norm
    embedding_dropout = True  # GPT2, GPT2_ML: no Embedding-Dropout
    segment_input = True  # GPT2, GPT2_ML, T5: token ids only (segment_vocab_size forced to 0)
    use_bias = True  # biases of attention, FFN and embedding mapping
    attention_scale = True  # T5: logits not divided by sqrt(key size)
    # a recipe of blocks.BLOCKS: 'attention' (post-norm MHA + FFN) | 'gau' (one
    # GatedAttentionUnit) | 'pre_norm' (GPT2, T5) | 'gpt2_ml'
    block = "attention"
    causal_relative_position = False  # T5 decoder: unidirectional relative buckets
    block_prefix = ""  # T5: 'Encoder-' / 'Decoder-' in front of block and embedding names
    shared_blocks = False  # ALBERT: one set of block layers (names without index)
    # 'bert' (pool/NSP/MLM) | 'tied' (RoFormerV2-style MLM) | 'electra' | 'gpt' (tied LM head,
    # LM-Activation) | 'gpt2' (Output-Norm, then the 'gpt' head)
    head = "bert"
    attention_normalization = "softmax"
    initializer_order = None  # None: TruncatedNormal(0.02); n: DepthScaledTruncatedNormal(order=n)
    # '<layer>/<weight>' patterns of trainable weights no checkpoint holds (a subclass adding
    # layers of its own extends this); every other built weight needs a table entry
    not_from_checkpoint = mappings.NOT_FROM_CHECKPOINT
    # family-specific checkpoint variables a model may leave unused (fnmatch patterns)
    ignorable = ()
    # checkpoint variables that identify this family (present, absent); used in error hints
    signature = (
        ("bert/encoder/layer_0/attention/self/query/bias", "bert/embeddings/position_embeddings"),
        (),
    )

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act,
        dropout_rate=None,
        attention_dropout_rate=None,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        residual_attention_scores=False,
        ignore_invalid_weights=False,
        ignore_unused_variables=False,
        layers=None,
        prefix=None,
        name=None,
        max_position=512,
        segment_vocab_size=2,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        with_discriminator=False,
        hierarchical_position=None,
        custom_position_ids=False,
        shared_segment_embeddings=False,
        attention_normalization=None,
        softmax_plus_clamp=16,
        application="encoder",
        config_source=None,
        **kwargs,
    ):
        if not self.segment_input:
            segment_vocab_size = 0
        checked = model_config.validate(
            dict(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads,
                intermediate_size=intermediate_size,
                hidden_act=hidden_act,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                embedding_size=embedding_size,
                attention_head_size=attention_head_size,
                attention_key_size=attention_key_size,
                max_position=max_position,
                segment_vocab_size=segment_vocab_size,
                sequence_length=sequence_length,
                keep_tokens=keep_tokens,
                compound_tokens=compound_tokens,
            ),
            config_source,
        )
        vocab_size = checked["vocab_size"]
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens:
            vocab_size += len(compound_tokens)
        self.vocab_size = vocab_size
        self.hidden_size = checked["hidden_size"]
        self.num_hidden_layers = checked["num_hidden_layers"]
        self.num_attention_heads = checked["num_attention_heads"]
        self.attention_head_size = checked.get(
            "attention_head_size", self.hidden_size // self.num_attention_heads
        )
        self.attention_key_size = checked.get("attention_key_size", self.attention_head_size)
        self.intermediate_size = checked["intermediate_size"]
        self.hidden_act = explicit_gelu(hidden_act)  # set_gelu acts at build time
        self.dropout_rate = dropout_rate or 0
        self.attention_dropout_rate = attention_dropout_rate or 0
        self.embedding_size = checked.get("embedding_size", self.hidden_size)
        self.sequence_length = checked.get("sequence_length")
        self.keep_tokens = None if keep_tokens is None else [int(i) for i in keep_tokens]
        self.compound_tokens = None if not compound_tokens else list(compound_tokens)
        self.residual_attention_scores = residual_attention_scores
        self.ignore_invalid_weights = ignore_invalid_weights
        self.ignore_unused_variables = ignore_unused_variables
        self.layers = {} if layers is None else layers
        self.prefix = prefix or ""
        self.name = name
        self.max_position = checked.get("max_position", 512)
        self.segment_vocab_size = checked.get("segment_vocab_size", 0)
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm
        self.with_discriminator = with_discriminator
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids
        self.shared_segment_embeddings = shared_segment_embeddings
        self.application = application
        if attention_normalization is not None:
            self.attention_normalization = attention_normalization
        self.softmax_plus_clamp = softmax_plus_clamp
        self.position_options = length_extrapolation_options(self.position, kwargs)
        self.hwfa = hwfa_option(self.position, kwargs, self.max_position)
        self.attention_types = synthesis.attention_types(
            kwargs.pop("attention_type", None), self.num_hidden_layers)
        self.synthesizer_options = kwargs.pop("synthesizer_options", None)
        if application in ("lm", "unilm"):
            self.with_mlm = self.with_mlm or True
        self.attention_bias = None
        self.position_bias = None
        self.attention_scores = None
        self.attention_caches = {}
        self.built = False
        self._check_options()
        synthesis.check_builder(self)
        synthesis.declare_checkpoint_use(self)

    # ---- option checks -------------------------------------------------------------------
    def _check_options(self):
        if self.application not in ("encoder", "lm", "unilm"):
            raise ValueError(
                "application must be one of 'encoder', 'lm', 'unilm'; got %r." % (self.application,)
            )
        if self.application == "unilm" and self.segment_vocab_size == 0:
            raise ValueError(
                "application='unilm' derives its mask from segment ids, which requires "
                "segment_vocab_size > 0."
            )
        if self.residual_attention_scores and self.application != "encoder":
            raise ValueError(
                "residual_attention_scores=True cannot be combined with application=%r "
                "(RealFormer scores are additive, the LM/UniLM masks boolean)." % self.application
            )
        if self.block == "attention" and self.position == "relative":
            if self.attention_head_size != self.attention_key_size:
                raise ValueError(
                    "NEZHA's relative positions need attention_head_size == attention_key_size, "
                    "got %d and %d." % (self.attention_head_size, self.attention_key_size)
                )
        if self.position == "learned" and self.sequence_length and not self.hierarchical_position:
            if int(self.sequence_length) > self.max_position:
                raise ValueError(
                    "sequence_length=%d exceeds max_position_embeddings=%d of this model's "
                    "learned position table; truncate inputs or use hierarchical_position=True."
                    % (self.sequence_length, self.max_position)
                )

    # ---- the composition primitive -------------------------------------------------------
    def prefixed(self, name):
        return None if name is None else self.prefix + name

    def apply(self, inputs=None, layer=None, arguments=None, name=None, **kwargs):
        """Call the layer called ``name``; create it from ``layer(**kwargs)`` on first use.

        Reusing a name reuses the layer (and its weights): that gives the tied MLM output
        (``Embedding-Token`` called again in dense mode), ALBERT's shared blocks and any
        user-level sharing through ``layers=``. Dropout with rate 0 is skipped entirely.
        """
        if layer is Dropout and not kwargs.get("rate"):
            return inputs
        name = self.prefixed(name)
        if name not in self.layers:
            if layer is None:
                raise ValueError("No layer named %r has been created yet." % name)
            self.layers[name] = layer(name=name, **kwargs)
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    @property
    def initializer(self):
        """A fresh initializer instance (so that no two weights share one random draw)."""
        if self.initializer_order is None:
            return keras.initializers.TruncatedNormal(stddev=0.02)
        return DepthScaledTruncatedNormal(self.num_hidden_layers, order=self.initializer_order)

    # ---- build ---------------------------------------------------------------------------
    def build(
        self,
        attention_caches=None,
        layer_norm_cond=None,
        layer_norm_cond_hidden_size=None,
        layer_norm_cond_hidden_act=None,
        additional_input_layers=None,
        **kwargs,
    ):
        """Build the Keras model. ``attention_caches={attention layer name: [k_cache,
        v_cache]}`` concatenates those tensors in front of that attention's key / value inputs
        (bert4keras' option; the caches' Input layers go in ``additional_input_layers``)."""
        if self.built:
            return self.model
        self.attention_caches = _check_caches(attention_caches)
        inputs = self.get_inputs()
        self.inputs = list(inputs)
        if additional_input_layers is not None:
            if not isinstance(additional_input_layers, (list, tuple)):
                additional_input_layers = [additional_input_layers]
            self.inputs.extend(additional_input_layers)
        if layer_norm_cond is not None and self.norm == "rms":
            warnings.warn(
                "layer_norm_cond has no effect on %s: its norms have no scale or offset."
                % type(self).__name__
            )
            layer_norm_cond = None
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act or "linear"
        outputs = self.call(inputs)
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.input = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs
        self.model = TransformerModel(self.input, self.output, name=self.name)
        self._check_weight_coverage()
        self.built = True
        return self.model

    def call(self, inputs):
        """Embeddings → blocks → final layers on the given input tensors."""
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        return self.apply_final_layers(x)

    def _check_weight_coverage(self):
        """Refuse a build that creates a trainable weight which neither the checkpoint table
        covers nor ``mappings.NOT_FROM_CHECKPOINT`` declares: loading would leave it random and
        saving would drop it."""
        covered = {id(weight) for _, weight, _, _, _ in self.checkpoint_entries()}
        uncovered = []
        for layer in self.layers.values():
            if not isinstance(layer, keras.layers.Layer):  # the Input tensors
                continue
            for relative, weight in _weights_by_name(layer).items():
                if not weight.trainable or id(weight) in covered:
                    continue
                if not mappings.matches(layer.name + "/" + relative, self.not_from_checkpoint):
                    uncovered.append("%s/%s %s" % (layer.name, relative, tuple(weight.shape)))
        if uncovered:
            raise ValueError(
                "%s cannot be built with these options: weight(s) %s have no entry in its "
                "checkpoint table, so loading a checkpoint would leave them random and "
                "save_weights_as_checkpoint would drop them. Change the options (e.g. "
                "embedding_size = hidden_size), add the entries to the family's table, or "
                "declare them in its not_from_checkpoint patterns."
                % (_model_label(self), ", ".join(uncovered))
            )

    def get_inputs(self):
        shape = (self.sequence_length,)
        inputs = [self.apply(layer=keras.layers.Input, shape=shape, dtype="int32", name="Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(
                self.apply(layer=keras.layers.Input, shape=shape, dtype="int32", name="Input-Segment")
            )
        if self.custom_position_ids:
            inputs.append(
                self.apply(layer=keras.layers.Input, shape=shape, dtype="int32", name="Input-Position")
            )
        return inputs

    def apply_norm(self, x, name, epsilon):
        """The family's normalisation; conditional when the model has a condition."""
        from bert4keras_ng.layers import LayerNormalization

        if self.norm == "rms":
            return self.apply(
                x, LayerNormalization, zero_mean=False, scale=False, offset=False, name=name
            )
        z = self.layer_norm_cond
        rms = dict(zero_mean=False, offset=False) if self.norm == "rms_scale" else {}
        return self.apply(
            x if z is None else [x, z],
            LayerNormalization,
            **rms,
            epsilon=epsilon,
            conditional=z is not None,
            hidden_units=self.layer_norm_cond_hidden_size,
            hidden_activation=self.layer_norm_cond_hidden_act,
            hidden_initializer=self.initializer,
            name=name,
        )

    def apply_embeddings(self, inputs):
        from bert4keras_ng.layers import Embedding, PositionEmbedding

        inputs = list(inputs)
        x = inputs.pop(0)
        s = inputs.pop(0) if self.segment_vocab_size > 0 else None
        p = inputs.pop(0) if self.custom_position_ids else None
        x = self.apply(
            x,
            Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            mask_zero=True,
            name="Embedding-Token",
        )
        if s is not None:
            s = self.apply(
                s,
                Embedding,
                input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size,
                embeddings_initializer=self.initializer,
                name="Embedding-Token" if self.shared_segment_embeddings else "Embedding-Segment",
            )
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        if self.position == "learned":
            x = self.apply(
                x if p is None else [x, p],
                PositionEmbedding,
                input_dim=self.max_position,
                output_dim=self.embedding_size,
                merge_mode="add",
                hierarchical=self.hierarchical_position,
                embeddings_initializer=self.initializer,
                custom_position_ids=self.custom_position_ids,
                name="Embedding-Position",
            )
        return self.apply_embedding_tail(x)

    def apply_embedding_tail(self, x):
        """Embedding-Norm and Embedding-Dropout (each where the family has it), then the
        Embedding-Mapping projection when embedding_size != hidden_size."""
        def dropout(x):
            if not self.embedding_dropout:
                return x
            name = self.block_prefix + "Embedding-Dropout"
            return self.apply(x, Dropout, rate=self.dropout_rate, name=name)

        def norm(x):
            return self.apply_norm(x, "Embedding-Norm", self.embedding_epsilon) if self.embedding_norm else x

        x = norm(dropout(x)) if self.dropout_before_embedding_norm else dropout(norm(x))
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.hidden_size,
                use_bias=self.use_bias,
                kernel_initializer=self.initializer,
                name=self.block_prefix + "Embedding-Mapping",
            )
        return x

    def apply_main_layers(self, x, index):
        return blocks.BLOCKS[self.block](self, x, index)

    def block_name(self, index, kind):
        if self.shared_blocks:
            return "%sTransformer-%s" % (self.block_prefix, kind)
        return "%sTransformer-%d-%s" % (self.block_prefix, index, kind)

    # ---- masks and position biases (computed once, shared by all blocks) ------------------
    def compute_attention_bias(self):
        if self.attention_bias is None and self.application != "encoder":
            if self.application == "lm":
                self.attention_bias = self.apply(
                    self.token_input, AttentionMask, kind="lm", name="Attention-LM-Mask"
                )
            else:
                self.attention_bias = self.apply(
                    self.inputs[1], AttentionMask, kind="unilm", name="Attention-UniLM-Mask"
                )
        return self.attention_bias

    @property
    def token_input(self):
        """The token-id input the causal mask is computed from."""
        return self.inputs[0]

    def compute_position_bias(self, x, width):
        """NEZHA's relative table, the rotary sinusoid table or T5's bucketed bias table (one
        per stack); None for learned positions."""
        from bert4keras_ng.layers import (
            RelativePositionEmbedding,
            RelativePositionEmbeddingT5,
            SinusoidalPositionEmbedding,
        )

        if self.position_bias is None and self.position == "relative":
            self.position_bias = self.apply(
                [x, x],
                RelativePositionEmbedding,
                input_dim=2 * 64 + 1,
                output_dim=width,
                embeddings_initializer="sinusoidal",
                trainable=False,
                name="Embedding-Relative-Position",
            )
        elif self.position_bias is None and self.position == "rotary":
            p = self.inputs[2 if self.segment_vocab_size > 0 else 1] if self.custom_position_ids else None
            self.position_bias = self.apply(
                x if p is None else [x, p],
                SinusoidalPositionEmbedding,
                output_dim=width,
                merge_mode="zero",
                custom_position_ids=self.custom_position_ids,
                name="Embedding-Rotary-Position",
            )
        elif self.position_bias is None and self.position == "t5_relative":
            self.position_bias = self.apply(
                [x, x],
                RelativePositionEmbeddingT5,
                input_dim=32,
                output_dim=self.num_attention_heads,
                bidirectional=not self.causal_relative_position,
                embeddings_initializer=self.initializer,
                name=self.block_prefix + "Embedding-Relative-Position",
            )
        return self.position_bias

    @property
    def position_bias_kind(self):
        if self.position_options and "window" in self.position_options:
            return "rerope"
        return {
            "learned": None,
            "relative": "typical_relative",
            "rotary": "rotary",
            "t5_relative": "t5_relative",
        }[self.position]

    # ---- heads ---------------------------------------------------------------------------
    def apply_final_layers(self, x):
        outputs = [x]
        if self.head == "electra":
            if self.with_discriminator:
                y = self.apply(
                    x,
                    keras.layers.Dense,
                    units=self.hidden_size,
                    activation=_activation(self.hidden_act),
                    kernel_initializer=self.initializer,
                    name="Discriminator-Dense",
                )
                y = self.apply(
                    y,
                    keras.layers.Dense,
                    units=1,
                    activation="sigmoid" if self.with_discriminator is True else self.with_discriminator,
                    kernel_initializer=self.initializer,
                    dtype="float32",
                    name="Discriminator-Prediction",
                )
                outputs.append(y)
            if self.with_mlm:  # the generator's head (generator_predictions)
                outputs.append(self.apply_mlm_head(x))
        elif self.head in ("gpt", "gpt2"):
            return self.apply_gpt_lm_head(x)
        elif self.head == "tied":
            if self.with_pool or self.with_nsp:
                warnings.warn("%s has no pooler: with_pool / with_nsp are ignored." % type(self).__name__)
            if self.with_mlm:
                outputs.append(self.apply_tied_lm_head(x))
        else:
            if self.with_pool:
                outputs.append(self.apply_pooler(x))
            if self.with_mlm:
                outputs.append(self.apply_mlm_head(x))
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    def apply_pooler(self, x):
        x = self.apply(x, TakeToken, index=0, name="Pooler")
        x = self.apply(
            x,
            keras.layers.Dense,
            units=self.hidden_size,
            activation="tanh" if self.with_pool is True else _activation(self.with_pool),
            kernel_initializer=self.initializer,
            name="Pooler-Dense",
        )
        if self.with_nsp:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=2,
                activation="softmax",
                kernel_initializer=self.initializer,
                dtype="float32",
                name="NSP-Proba",
            )
        return x

    def apply_mlm_head(self, x):
        from bert4keras_ng.layers import ScaleOffset

        x = self.apply(
            x,
            keras.layers.Dense,
            units=self.embedding_size,
            activation=_activation(self.hidden_act),
            kernel_initializer=self.initializer,
            name="MLM-Dense",
        )
        x = self.apply_norm(x, "MLM-Norm", self.mlm_epsilon)
        x = self.apply(x, arguments={"mode": "dense"}, name="Embedding-Token")
        x = self.apply(x, ScaleOffset, scale=False, name="MLM-Bias")
        return self.apply(
            x,
            keras.layers.Activation,
            activation="softmax" if self.with_mlm is True else _activation(self.with_mlm),
            dtype="float32",
            name="MLM-Activation",
        )

    def apply_tied_lm_head(self, x):
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.embedding_size,
                use_bias=False,
                kernel_initializer=self.initializer,
                name="Output-Mapping",
            )
        x = self.apply(x, Dropout, rate=self.dropout_rate, name="Output-MLM-Dropout")
        x = self.apply(x, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x,
            keras.layers.Activation,
            activation="softmax" if self.with_mlm is True else _activation(self.with_mlm),
            dtype="float32",
            name="Output-MLM-Activation",
        )

    def apply_gpt_lm_head(self, x):
        """[Output-Norm → Output-Dropout (GPT2)] → tied embedding → LM-Activation."""
        if self.head == "gpt2":
            x = self.apply_norm(x, "Output-Norm", self.block_epsilon)
            x = self.apply(x, Dropout, rate=self.dropout_rate, name="Output-Dropout")
        x = self.apply(x, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x,
            keras.layers.Activation,
            activation=_activation(self.final_activation),
            dtype="float32",
            name="LM-Activation",
        )

    # ---- checkpoints ---------------------------------------------------------------------
    def variable_mapping(self):
        """bert4keras-style mapping {Keras layer name: [checkpoint names]} of the built model."""
        mapping = {}
        for layer_name, _, variable, _, _ in self.checkpoint_entries():
            mapping.setdefault(layer_name, []).append(variable)
        return mapping

    def checkpoint_entries(self, mapping=None, table=None):
        """(layer name, Keras variable, checkpoint name, transposed, vocabulary) for every table
        entry whose layer was built and has that weight, in table order. ``table`` defaults to
        the family's TF1 table (``self.hf_table`` is the Hugging Face one)."""
        entries = []
        if mapping is not None:  # bert4keras style {layer: [names]}, matched positionally
            for layer_name, names in mapping.items():
                layer = self.layers.get(self.prefixed(layer_name))
                if layer is None:
                    continue
                for weight, spec in zip(layer.trainable_weights, names):
                    name, transposed, vocabulary = mappings.parse(spec)
                    entries.append((layer.name, weight, name, transposed, vocabulary))
            return entries
        for layer_name, specs in self._table_rows(self.table if table is None else table):
            layer = self.layers.get(self.prefixed(layer_name))
            if layer is None:
                continue
            own = _weights_by_name(layer)
            for weight_name, (name, transposed, vocabulary) in specs.items():
                if weight_name in own:
                    entries.append((layer.name, own[weight_name], name, transposed, vocabulary))
        return entries

    def _table_rows(self, table):
        """(layer name, {weight name: (checkpoint name, transposed, vocabulary axis)}) for every
        row of ``table``, block rows once per block, with {scope} and {i} filled in."""
        for key, weights in table.items():
            for i in range(self.num_hidden_layers) if "{i}" in key else [None]:
                specs = {w: mappings.parse(_fill(spec, i, self.scope)) for w, spec in weights.items()}
                yield _fill(key, i, self.scope), specs

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Load every mapped weight from a TF1 checkpoint (prefix, directory or dict).

        Every name and shape is checked first (from the checkpoint's shape map, without reading
        values); nothing is assigned unless everything fits (missing or mismatched variables are
        skipped with a warning when ``ignore_invalid_weights``). Tensors are then read (on
        worker threads for memory-mapped safetensors) and assigned in plan order; on TensorFlow
        each array becomes its variable's buffer and frees the old one, elsewhere a few tensors
        are in flight at a time.
        """
        reader = checkpoints.open_checkpoint(checkpoint)
        plan = self._checkpoint_plan(reader, mapping)
        # TensorFlow: each array becomes its variable's buffer, replacing (and freeing) the old
        # one, so all may be in flight at once; elsewhere a few
        with _Prefetcher([value for _, value in plan], ahead=None if _adopts() else 4):
            for weight, value in plan:
                weight.assign(value())  # the variable takes the array's buffer (TensorFlow)
        return len(plan)

    def _speculative_reads(self, reader, mapping=None):
        """{(name, transposed, dtype): [read thunk]} for every table entry ``reader`` holds, made
        before the model exists (from the table and ``num_hidden_layers`` alone), so that reading
        and transposing can run on worker threads while the layers are built. Nothing checked
        yet: :meth:`_checkpoint_plan` takes the thunks it needs; the rest are dropped unread
        or read for nothing (a layer the options left out)."""
        if mapping is not None:
            return {}
        select = self.keep_tokens is not None or bool(self.compound_tokens)
        dtype = keras.config.dtype_policy().variable_dtype  # the layers' default variable dtype
        reads = {}
        for _, specs in self._table_rows(self.table_for(reader)):
            for name, transposed, vocabulary in specs.values():
                if name in reader and (vocabulary is None or not select):
                    thunk = _ReadThunk(reader, name, transposed, dtype)
                    reads.setdefault(thunk.key, []).append(thunk)
        return reads

    def _checkpoint_plan(self, reader, mapping=None, reads=None):
        """[(Keras variable, value thunk)] for every mapped weight, after checking them all.

        Raises CheckpointMismatchError (or warns with ignore_invalid_weights) before anything
        is read except the vocabulary tables that keep_tokens / compound_tokens transform.
        ``reads`` ({key: [read thunk]}, from :meth:`_speculative_reads`) supplies thunks made
        earlier, each used once.
        """
        reads = {} if reads is None else reads
        plan, missing, mismatched, used = [], [], [], set()
        select = self.keep_tokens is not None or bool(self.compound_tokens)
        entries = self.checkpoint_entries(mapping, table=self.table_for(reader))
        for layer_name, weight, name, transposed, vocabulary in entries:
            if name not in reader:
                missing.append((layer_name, name))
                continue
            used.add(name.split("|", 1)[0])  # a view ('w|split=...') uses the stored 'w'
            want = tuple(weight.shape)
            if vocabulary is not None and select:  # the transform defines the shape: apply it now
                array = reader.read(name)
                array = array.T if transposed else array
                array = checkpoints.select_vocabulary(
                    array, self.keep_tokens, self.compound_tokens, axis=vocabulary
                )
                got = tuple(array.shape)
                value = _ArrayThunk(array, weight.dtype)
            else:
                got = tuple(reader.shape(name))
                got = got[::-1] if transposed else got
                value = _ReadThunk(reader, name, transposed, weight.dtype)
                earlier = reads.get(value.key)
                value = earlier.pop() if earlier else value
            if got != want:
                mismatched.append((layer_name, name, got, want))
                continue
            plan.append((weight, value))
        invalid = []
        if missing:
            invalid.append(self._missing_message(reader, missing))
        if mismatched:
            invalid.append(self._mismatch_message(reader, mismatched))
        unused = self._unused_variables(reader, used)
        unused = [self._unused_message(reader, unused)] if unused else []
        skip_unused = self.ignore_unused_variables or self.ignore_invalid_weights
        if (invalid and not self.ignore_invalid_weights) or (unused and not skip_unused):
            hints = []
            if invalid:
                hints.append("ignore_invalid_weights=True to skip the missing or mis-shaped variables")
            if unused:
                hints.append("ignore_unused_variables=True to load anyway and drop the unused ones")
            raise CheckpointMismatchError(
                "\n".join(invalid + unused) + "\nNothing was loaded. Pass " + ", or ".join(hints) + "."
            )
        if invalid or unused:
            warnings.warn("Loading anyway, skipping:\n" + "\n".join(invalid + unused), stacklevel=3)
        return plan

    def build_from_checkpoint(self, checkpoint, mapping=None, **build_options):
        """``build(**build_options)`` then ``load_weights_from_checkpoint(checkpoint, mapping)``,
        without computing random initial values for the weights the checkpoint provides.

        The layers keep their declared initializers (configs are unchanged); Keras' deferred
        variable initialisation creates each loaded variable directly from its checkpoint value
        and every other variable (heads or condition layers the checkpoint lacks, anything
        skipped by ``ignore_invalid_weights``) from its own initializer. The checkpoint is
        opened and every name and shape checked before any variable holds a value; on a
        mismatch the error is the same as ``load_weights_from_checkpoint``'s. Returns the model.
        """
        reader = checkpoints.open_checkpoint(checkpoint)
        if self.built or not _can_defer_initialization():
            model = self.build(**build_options)
            self.load_weights_from_checkpoint(reader, mapping)
            return model
        late, errors = [], []
        ahead = None if _adopts() else 4  # TensorFlow: each array becomes its variable's buffer
        with contextlib.ExitStack() as stack:
            # tensors are read and transposed on worker threads while the layers are built;
            # no variable holds a value before the whole plan below is checked
            reads = self._speculative_reads(reader, mapping)
            early = _Prefetcher([t for ts in reads.values() for t in ts], ahead=ahead)
            stack.enter_context(early)
            with keras.StatelessScope():  # variables created here get their values on exit
                self.build(**build_options)
                plan = self._checkpoint_plan(reader, mapping, reads)
                early.keep([value for _, value in plan])  # the rest are never needed
                # reads the speculation missed (another dtype, a custom mapping) start now
                missed = [
                    value for _, value in plan
                    if isinstance(value, _ReadThunk) and value.prefetcher is None
                ]
                stack.enter_context(_Prefetcher(missed, ahead=ahead))
                if not getattr(reader, "validated", False):
                    # read everything before any variable is initialised: a truncated data file
                    # fails here, and the scope's exit then gives every variable its
                    # initializer. Readers whose files were size-checked on opening
                    # (safetensors) read lazily.
                    plan = [(weight, _ArrayThunk(value.array(), weight.dtype)) for weight, value in plan]
                for weight, value in plan:
                    if getattr(weight, "_value", True) is None and hasattr(weight, "_initializer"):
                        weight._initializer = _CheckpointInitializer(value, weight._initializer, errors)
                    late.append((weight, value))
            if errors:
                raise errors[0]
            for weight, value in late:  # created before (user layers=) or not deferred after all
                if not value.used:
                    weight.assign(value())
        return self.model
    def table_for(self, reader):
        """The checkpoint table matching ``reader``'s format (TF1 or Hugging Face)."""
        if getattr(reader, "format", None) != "huggingface":
            return self.table
        if self.hf_table is None:
            raise ValueError(
                "%s has no Hugging Face table; %s cannot be loaded into it."
                % (_model_label(self), reader.describe())
            )
        return self.hf_table

    def save_weights_as_huggingface(self, folder, vocab=None, dtype="float32"):
        """Write a Hugging Face folder (config.json, model.safetensors, vocab.txt when ``vocab``
        is given) that ``transformers.AutoModel.from_pretrained(folder)`` loads; atomic."""
        from bert4keras_ng.models.huggingface import save_weights_as_huggingface

        return save_weights_as_huggingface(self, folder, vocab=vocab, dtype=dtype)

    def _missing_message(self, reader, missing):
        present = reader.names()
        lines = [
            "%s lacks %d variable(s) needed by %s:"
            % (checkpoints.describe(reader), len(missing), _model_label(self))
        ]
        for layer_name, name in missing[:12]:
            close = checkpoints.closest_names(name, present)
            lines.append(
                "  %s (for layer %s)%s"
                % (name, layer_name, "; closest present: " + ", ".join(close) if close else "")
            )
        if len(missing) > 12:
            lines.append("  ... and %d more" % (len(missing) - 12))
        guesses = [m for m in guess_models(reader) if m != getattr(self, "model_name", None)]
        if guesses:
            lines.append(
                "The checkpoint looks like model=%s; check the model= argument."
                % " or ".join(repr(m) for m in guesses)
            )
        return "\n".join(lines)

    def _unused_variables(self, reader, used):
        """Checkpoint variables the model neither uses nor may ignore (optimizer slots, the
        pretraining heads, tables of layers an option left out; see ``mappings.IGNORABLE``)."""
        patterns = [p.replace("{scope}", self.scope) for p in mappings.IGNORABLE + self.ignorable]
        patterns += list(getattr(reader, "ignorable", ()))  # a reader's own known families
        table = self.table_for(reader)
        optional = set()
        for key in mappings.OPTIONAL_LAYERS:
            if key in table and self.prefixed(key) not in self.layers:
                for spec in table[key].values():
                    optional.add(mappings.parse(_fill(spec, None, self.scope))[0].split("|", 1)[0])
        unused = [
            name
            for name in reader.names()
            if name not in used and name not in optional and not mappings.matches(name, patterns)
        ]
        constants = self._architecture_constants() if unused else {}
        return [
            name
            for name in unused
            if name not in constants or not np.all(np.asarray(reader.read(name)) == constants[name])
        ]

    def _architecture_constants(self):
        """{checkpoint name: value} for table entries of built layers that lack the weight (no
        bias, no LayerNorm scale/offset): a checkpoint variable holding exactly that constant
        (zeros for a bias or offset, ones for a scale) loses nothing when left unused."""
        constants = {}
        for layer_name, specs in self._table_rows(self.table):
            layer = self.layers.get(self.prefixed(layer_name))
            if not isinstance(layer, keras.layers.Layer):
                continue
            own = _weights_by_name(layer)
            for weight_name, (name, _, _) in specs.items():
                if weight_name not in own:
                    constants[name] = 1.0 if weight_name.endswith("gamma") else 0.0
        return constants

    def _unused_message(self, reader, unused):
        lines = [
            "%s has %d variable(s) that %s does not use (loading would silently drop them):"
            % (checkpoints.describe(reader), len(unused), _model_label(self))
        ]
        for name in unused[:12]:
            lines.append("  %s %s" % (name, tuple(reader.shape(name))))
        if len(unused) > 12:
            lines.append("  ... and %d more" % (len(unused) - 12))
        depth = [int(m.group(1)) for m in map(_LAYER_INDEX.search, unused) if m]
        if depth and max(depth) >= self.num_hidden_layers:
            lines.append(
                "The checkpoint has blocks up to layer_%d but num_hidden_layers=%d: check the "
                "config." % (max(depth), self.num_hidden_layers)
            )
        guesses = [m for m in guess_models(reader) if _registry()[m] is not type(self)]
        if guesses:
            lines.append(
                "The checkpoint looks like model=%s; check the model= argument."
                % " or ".join(repr(m) for m in guesses)
            )
        return "\n".join(lines)

    def _mismatch_message(self, reader, mismatched):
        lines = ["%s has variables whose shape does not fit the model:" % checkpoints.describe(reader)]
        for layer_name, name, got, want in mismatched:
            lines.append(
                "  %s: checkpoint shape %s, layer %s expects %s" % (name, got, layer_name, want)
            )
        if any(want and got and got[0] != want[0] and "embeddings" in name for _, name, got, want in mismatched):
            lines.append(
                "  (a vocabulary or position-table size differs: check vocab_size / "
                "max_position_embeddings in the config and keep_tokens)"
            )
        return "\n".join(lines)

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None):
        """Write the mapped weights as a TF1 checkpoint under the family's variable names.

        A model built with keep_tokens writes its reduced vocabulary. When several layers map to
        one variable (albert_unshared), the first block's value is written.
        """
        arrays = {}
        for _, weight, name, transposed, _ in self.checkpoint_entries(mapping):
            value = keras.ops.convert_to_numpy(weight)
            arrays.setdefault(name, value.T if transposed else value)
        return checkpoints.save_variables(filename, arrays, dtype=dtype or "float32")


class _ReadThunk:
    """Reads one checkpoint tensor when called: one copy from the reader's buffer (a memory
    map for safetensors) into a new aligned array, transposed and cast in the same pass. A
    :class:`_Prefetcher` may have computed the array on a worker thread already."""

    def __init__(self, reader, name, transposed, dtype):
        self.reader, self.name, self.transposed, self.dtype = reader, name, transposed, dtype
        self.used = False
        self.prefetcher = None

    @property
    def key(self):
        """What the thunk computes: the same key, the same array."""
        return self.name, bool(self.transposed), _numpy_dtype(self.dtype).name

    def compute(self):
        fresh = getattr(self.reader, "fresh_reads", False)  # read() hands out a new array
        array = checkpoints.materialize(
            self.reader.read(self.name), self.transposed, _numpy_dtype(self.dtype), fresh=fresh
        )
        release = getattr(self.reader, "release", None)  # the stored copy is no longer needed
        if release is not None:
            release(self.name)
        return array

    def array(self):
        self.used = True
        if self.prefetcher is not None:
            return self.prefetcher.take(self)
        return self.compute()

    def __call__(self):
        return _adopt(self.array())


class _Prefetcher:
    """Computes the arrays of a plan's read thunks on worker threads (NumPy releases the GIL
    while it copies and transposes) when their reader allows reads from several threads
    (``concurrent_reads``: memory-mapped safetensors), in plan order, at most ``ahead`` thunks past the last
    one taken (None: all at once, when every array becomes a variable's own buffer). A thunk
    taken before a worker started on it is computed by the taking thread. Use as a context manager: leaving it cancels
    what was not taken and waits for the workers."""

    def __init__(self, thunks, ahead=None, workers=None):
        from concurrent.futures import ThreadPoolExecutor

        self.thunks = [
            t for t in thunks
            if isinstance(t, _ReadThunk) and getattr(t.reader, "concurrent_reads", False)
        ]
        self.position = {id(t): n for n, t in enumerate(self.thunks)}
        self.futures = {}
        self.ahead = len(self.thunks) if ahead is None else ahead
        self.submitted = 0
        self.pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) if self.thunks else None
        for thunk in self.thunks:
            thunk.prefetcher = self

    def __enter__(self):
        self._fill(0)
        return self

    def __exit__(self, *exc):
        for future in self.futures.values():
            future.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        for thunk in self.thunks:
            thunk.prefetcher = None
        self.futures = {}

    def keep(self, thunks):
        """Cancel the work for every thunk not in ``thunks`` (one that runs already finishes,
        and its array is dropped)."""
        wanted = {id(t) for t in thunks}
        for thunk in self.thunks:
            if id(thunk) not in wanted:
                future = self.futures.pop(id(thunk), None)
                if future is not None:
                    future.cancel()
                thunk.prefetcher = None

    def _fill(self, taken):
        while self.submitted < min(len(self.thunks), taken + self.ahead):
            thunk = self.thunks[self.submitted]
            if id(thunk) not in self.futures and thunk.prefetcher is self:  # not dropped by keep
                self.futures[id(thunk)] = self.pool.submit(thunk.compute)
            self.submitted += 1

    def take(self, thunk):
        future = self.futures.pop(id(thunk), None)
        self._fill(self.position.get(id(thunk), -1) + 1)
        if future is None or future.cancel():  # not started yet: this thread does it
            return thunk.compute()
        return future.result()


class _ArrayThunk:
    """An array already read (and transformed), handed over once, then released."""

    def __init__(self, array, dtype):
        self._array, self.dtype = array, dtype
        self.used = False

    def array(self):
        self.used = True
        array, self._array = self._array, None
        return checkpoints.materialize(array, False, _numpy_dtype(self.dtype), fresh=True)

    def __call__(self):
        return _adopt(self.array())


def _numpy_dtype(dtype):
    return np.dtype(keras.backend.standardize_dtype(dtype))


# below this many bytes a tensor is converted the ordinary way (the copy costs nothing)
_ADOPT_MIN_BYTES = 1 << 16


def _adopts():
    """Whether :func:`_adopt` hands arrays to variables without copying (TensorFlow)."""
    return keras.backend.backend() == "tensorflow"


def _adopt(array):
    """``array`` as the value a variable is created from or assigned. On TensorFlow, a large
    aligned array becomes a tensor sharing its buffer (DLPack), which the variable then takes
    over without the copy ``tf.constant`` would make; elsewhere the array itself."""
    if (
        array.nbytes < _ADOPT_MIN_BYTES
        or not _adopts()
        or not checkpoints.is_adoptable(array, array.dtype)
        or not hasattr(array, "__dlpack__")
    ):
        return array
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


class _CheckpointInitializer:
    """Stands in for a deferred variable's initializer: returns its checkpoint value once (the
    value is then released); any later request goes to the declared initializer. A value that
    fails to read (an I/O error after the plan was checked) is recorded in ``errors`` and the
    declared initializer used instead, so that Keras finishes initialising every variable of
    the scope; the caller raises the error afterwards."""

    def __init__(self, value, declared, errors):
        self.value, self.declared, self.errors = value, declared, errors

    def __call__(self, shape, dtype=None):
        if self.value.used or self.errors:
            return self.declared(shape, dtype=dtype)
        try:
            return self.value()
        except Exception as error:  # re-raised by build_from_checkpoint once Keras is done
            self.errors.append(error)
            return self.declared(shape, dtype=dtype)


def _can_defer_initialization():
    """Whether Keras' deferred variable initialisation can be used here: keras.StatelessScope
    exists and no stateless scope is active already (whose exit would not initialise)."""
    if not hasattr(keras, "StatelessScope"):
        return False
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:  # pragma: no cover - Keras internals moved
        return False
    return not in_stateless_scope()


_INDEX = re.compile(r"\{i(?::(\w+))?\}")


def _check_caches(caches):
    """attention_caches as {layer name: (k_cache, v_cache)}, with a clear error otherwise."""
    if not caches:
        return {}
    if not isinstance(caches, dict):
        raise ValueError(
            "attention_caches must be a dict {attention layer name: [k_cache, v_cache]}, got %r."
            % (type(caches).__name__,)
        )
    for name, pair in caches.items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(
                "attention_caches[%r] must be a pair [k_cache, v_cache] of (batch, length, width) "
                "tensors, got %r." % (name, pair)
            )
    return {name: tuple(pair) for name, pair in caches.items()}


# a block index in a TF1 name (layer_3/) or a Hugging Face one (layer.3. / block.3. / h.3.)
_LAYER_INDEX = re.compile(r"(?:layer_|layer\.|block\.|\bh\.)(\d+)[/.]")


def _registry():
    """The model registry {name: class} (imported late: the registry imports this module)."""
    from bert4keras_ng.models import MODELS

    return MODELS


def _fill(template, index, scope):
    """Substitute {scope} and the block index ({i}, or zero-padded {i:02d} / {i:03d})."""
    text = template.replace("{scope}", scope)
    if index is not None:
        text = _INDEX.sub(lambda m: format(index, m.group(1) or ""), text)
    return text


def _weights_by_name(layer):
    """{weight path relative to the layer: variable}, e.g. 'q_dense/kernel', 'gamma'."""
    result = {}
    for weight in layer.weights:
        path = getattr(weight, "path", weight.name)
        marker = layer.name + "/"
        relative = path[path.index(marker) + len(marker):] if marker in path else weight.name
        result[relative] = weight
    return result


def _activation(identifier):
    from bert4keras_ng.backend import get_activation

    if isinstance(identifier, (list, tuple)):
        return [get_activation(i) for i in identifier]
    return get_activation(identifier)


def _model_label(builder):
    name = getattr(builder, "model_name", None)
    return "model=%r" % name if name else type(builder).__name__


def guess_models(reader):
    """Registered model names whose checkpoint signature matches ``reader``."""
    from bert4keras_ng.models import MODELS, t5_version

    found, seen = [], []
    for model_name, cls in MODELS.items():
        version = t5_version(model_name)
        signature = cls.signatures[version] if version else cls.signature
        present, absent = signature
        if all(n in reader for n in present) and not any(n in reader for n in absent):
            if (cls, signature) not in seen and signature not in [s for _, s in seen if version]:
                seen.append((cls, signature))
                found.append(model_name)
    return found
