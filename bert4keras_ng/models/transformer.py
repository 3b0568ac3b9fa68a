"""The base model builder: configuration, the ``apply`` primitive, inputs, embeddings, masks,
heads, and checkpoint load/save by walking the family's table.

A family (``bert.py``, ``roformer.py``, ...) is a subclass that only changes the *declared
differences* listed at the top of :class:`Transformer`; the blocks themselves are the shared
recipes of ``blocks.py``.
"""

import re
import warnings

import keras
import numpy as np

from bert4keras_ng import checkpoints
from bert4keras_ng.layers.dropout import Dropout
from bert4keras_ng.models import blocks, mappings
from bert4keras_ng.models.auxiliary import Add, AttentionMask, DepthScaledTruncatedNormal, TakeToken
from bert4keras_ng.models.extrapolation import hwfa_option, length_extrapolation_options

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
    position = "learned"  # 'learned' absolute | 'relative' (NEZHA) | 'rotary' (RoPE)
    norm = "layer"  # 'layer' (LayerNorm with gamma/beta) | 'rms' (parameter-free RMSNorm)
    embedding_epsilon = 1e-12
    block_epsilon = 1e-12
    mlm_epsilon = 1e-12
    dropout_before_embedding_norm = False  # RoFormerV2 / GAU-alpha: Dropout, then Norm
    use_bias = True  # biases of attention, FFN and embedding mapping
    block = "attention"  # 'attention' (MHA + FFN) | 'gau' (one GatedAttentionUnit)
    shared_blocks = False  # ALBERT: one set of block layers (names without index)
    head = "bert"  # 'bert' (pool/NSP/MLM) | 'tied' (RoFormerV2-style MLM) | 'electra'
    attention_normalization = "softmax"
    initializer_order = None  # None: TruncatedNormal(0.02); n: DepthScaledTruncatedNormal(order=n)
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
        **kwargs,
    ):
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens:
            vocab_size += len(compound_tokens)
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.attention_head_size = int(attention_head_size or self.hidden_size // self.num_attention_heads)
        self.attention_key_size = int(attention_key_size or self.attention_head_size)
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0
        self.attention_dropout_rate = attention_dropout_rate or 0
        self.embedding_size = int(embedding_size or self.hidden_size)
        self.sequence_length = sequence_length
        self.keep_tokens = None if keep_tokens is None else list(keep_tokens)
        self.compound_tokens = None if not compound_tokens else list(compound_tokens)
        self.residual_attention_scores = residual_attention_scores
        self.ignore_invalid_weights = ignore_invalid_weights
        self.ignore_unused_variables = ignore_unused_variables
        self.layers = {} if layers is None else layers
        self.prefix = prefix or ""
        self.name = name
        self.max_position = int(max_position)
        self.segment_vocab_size = int(segment_vocab_size or 0)
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
        if application in ("lm", "unilm"):
            self.with_mlm = self.with_mlm or True
        self.attention_bias = None
        self.position_bias = None
        self.attention_scores = None
        self.built = False
        self._check_options()

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
        layer_norm_cond=None,
        layer_norm_cond_hidden_size=None,
        layer_norm_cond_hidden_act=None,
        additional_input_layers=None,
        **kwargs,
    ):
        if self.built:
            return self.model
        inputs = self.get_inputs()
        self.inputs = list(inputs)
        if additional_input_layers is not None:
            if not isinstance(additional_input_layers, (list, tuple)):
                additional_input_layers = [additional_input_layers]
            self.inputs.extend(additional_input_layers)
        if layer_norm_cond is not None and self.norm != "layer":
            warnings.warn(
                "layer_norm_cond has no effect on %s: its norms have no scale or offset."
                % type(self).__name__
            )
            layer_norm_cond = None
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act or "linear"
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        outputs = self.apply_final_layers(x)
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.input = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs
        self.model = keras.Model(self.input, self.output, name=self.name)
        self._check_weight_coverage()
        self.built = True
        return self.model

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
                if not mappings.matches(layer.name + "/" + relative, mappings.NOT_FROM_CHECKPOINT):
                    uncovered.append("%s/%s %s" % (layer.name, relative, tuple(weight.shape)))
        if uncovered:
            raise ValueError(
                "%s cannot be built with these options: weight(s) %s have no entry in its "
                "checkpoint table, so loading a checkpoint would leave them random and "
                "save_weights_as_checkpoint would drop them. Change the options (e.g. "
                "embedding_size = hidden_size) or add the entries to the family's table."
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
        return self.apply(
            x if z is None else [x, z],
            LayerNormalization,
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
        dropout = dict(layer=Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.dropout_before_embedding_norm:
            x = self.apply(x, **dropout)
            x = self.apply_norm(x, "Embedding-Norm", self.embedding_epsilon)
        else:
            x = self.apply_norm(x, "Embedding-Norm", self.embedding_epsilon)
            x = self.apply(x, **dropout)
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.hidden_size,
                use_bias=self.use_bias,
                kernel_initializer=self.initializer,
                name="Embedding-Mapping",
            )
        return x

    def apply_main_layers(self, x, index):
        if self.block == "gau":
            return blocks.gau_block(self, x, index)
        return blocks.attention_block(self, x, index)

    def block_name(self, index, kind):
        if self.shared_blocks:
            return "Transformer-%s" % kind
        return "Transformer-%d-%s" % (index, kind)

    # ---- masks and position biases (computed once, shared by all blocks) ------------------
    def compute_attention_bias(self):
        if self.attention_bias is None and self.application != "encoder":
            if self.application == "lm":
                self.attention_bias = self.apply(
                    self.inputs[0], AttentionMask, kind="lm", name="Attention-LM-Mask"
                )
            else:
                self.attention_bias = self.apply(
                    self.inputs[1], AttentionMask, kind="unilm", name="Attention-UniLM-Mask"
                )
        return self.attention_bias

    def compute_position_bias(self, x, width):
        """NEZHA's relative table or the rotary sinusoid table; None for learned positions."""
        from bert4keras_ng.layers import RelativePositionEmbedding, SinusoidalPositionEmbedding

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
        return self.position_bias

    @property
    def position_bias_kind(self):
        if self.position_options and "window" in self.position_options:
            return "rerope"
        return {"learned": None, "relative": "typical_relative", "rotary": "rotary"}[self.position]

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

    # ---- checkpoints ---------------------------------------------------------------------
    def variable_mapping(self):
        """bert4keras-style mapping {Keras layer name: [checkpoint names]} of the built model."""
        mapping = {}
        for layer_name, _, variable, _, _ in self.checkpoint_entries():
            mapping.setdefault(layer_name, []).append(variable)
        return mapping

    def checkpoint_entries(self, mapping=None):
        """(layer name, Keras variable, checkpoint name, transposed, vocabulary) for every table
        entry whose layer was built and has that weight, in table order."""
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
        for key, weights in self.table.items():
            indices = range(self.num_hidden_layers) if "{i}" in key else [None]
            for i in indices:
                layer = self.layers.get(self.prefixed(_fill(key, i, self.scope)))
                if layer is None:
                    continue
                own = _weights_by_name(layer)
                for weight_name, spec in weights.items():
                    if weight_name not in own:
                        continue
                    name, transposed, vocabulary = mappings.parse(_fill(spec, i, self.scope))
                    entries.append((layer.name, own[weight_name], name, transposed, vocabulary))
        return entries

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Load every mapped weight from a TF1 checkpoint (prefix, directory or dict).

        Every name and shape is checked first (from the checkpoint's shape map, without reading
        values); nothing is assigned unless everything fits (missing or mismatched variables are
        skipped with a warning when ``ignore_invalid_weights``). Tensors are then read and
        assigned one at a time, so the extra memory is one tensor, not a checkpoint copy.
        """
        reader = checkpoints.open_checkpoint(checkpoint)
        plan = self._checkpoint_plan(reader, mapping)
        for weight, value in plan:
            weight.assign(value())
        return len(plan)

    def _checkpoint_plan(self, reader, mapping=None):
        """[(Keras variable, value thunk)] for every mapped weight, after checking them all.

        Raises CheckpointMismatchError (or warns with ignore_invalid_weights) before anything
        is read except the vocabulary tables that keep_tokens / compound_tokens transform.
        """
        plan, missing, mismatched, used = [], [], [], set()
        select = self.keep_tokens is not None or bool(self.compound_tokens)
        for layer_name, weight, name, transposed, vocabulary in self.checkpoint_entries(mapping):
            if name not in reader:
                missing.append((layer_name, name))
                continue
            used.add(name)
            want = tuple(weight.shape)
            if vocabulary and select:  # the transform defines the shape: apply it now
                array = reader.read(name)
                array = array.T if transposed else array
                array = checkpoints.select_vocabulary(array, self.keep_tokens, self.compound_tokens)
                got = tuple(array.shape)
                value = _ArrayThunk(array, weight.dtype)
            else:
                got = tuple(reader.shape(name))
                got = got[::-1] if transposed else got
                value = _ReadThunk(reader, name, transposed, weight.dtype)
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
        late = []
        with keras.StatelessScope():  # variables created here get their values on exit
            self.build(**build_options)
            for weight, value in self._checkpoint_plan(reader, mapping):
                # read everything before any variable is initialised: a truncated data file
                # fails here, and the scope's exit then gives every variable its initializer
                value = _ArrayThunk(value(), weight.dtype)
                if getattr(weight, "_value", True) is None and hasattr(weight, "_initializer"):
                    weight._initializer = _CheckpointInitializer(value, weight._initializer)
                late.append((weight, value))
        for weight, value in late:  # created before (user layers=) or not deferred after all
            if not value.used:
                weight.assign(value())
        return self.model
    def _missing_message(self, reader, missing):
        present = reader.names()
        lines = [
            "%s lacks %d variable(s) needed by %s:"
            % (reader.describe(), len(missing), _model_label(self))
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
        patterns = [p.replace("{scope}", self.scope) for p in mappings.IGNORABLE]
        patterns += list(getattr(reader, "ignorable", ()))  # a reader's own known families
        optional = set()
        for key in mappings.OPTIONAL_LAYERS:
            if key in self.table and self.prefixed(key) not in self.layers:
                for spec in self.table[key].values():
                    optional.add(mappings.parse(_fill(spec, None, self.scope))[0])
        return [
            name
            for name in reader.names()
            if name not in used and name not in optional and not mappings.matches(name, patterns)
        ]

    def _unused_message(self, reader, unused):
        lines = [
            "%s has %d variable(s) that %s does not use (loading would silently drop them):"
            % (reader.describe(), len(unused), _model_label(self))
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
        lines = ["%s has variables whose shape does not fit the model:" % reader.describe()]
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
    """Reads one checkpoint tensor when called (transposed, in the variable's dtype)."""

    def __init__(self, reader, name, transposed, dtype):
        self.reader, self.name, self.transposed, self.dtype = reader, name, transposed, dtype
        self.used = False

    def __call__(self):
        self.used = True
        array = self.reader.read(self.name)
        array = array.T if self.transposed else array
        return np.ascontiguousarray(array, dtype=keras.backend.standardize_dtype(self.dtype))


class _ArrayThunk:
    """An array already read (and transformed), handed over once, then released."""

    def __init__(self, array, dtype):
        self.array, self.dtype = array, dtype
        self.used = False

    def __call__(self):
        self.used = True
        array, self.array = self.array, None
        return np.ascontiguousarray(array, dtype=keras.backend.standardize_dtype(self.dtype))


class _CheckpointInitializer:
    """Stands in for a deferred variable's initializer: returns its checkpoint value once (the
    value is then released); any later request goes to the declared initializer."""

    def __init__(self, value, declared):
        self.value, self.declared = value, declared

    def __call__(self, shape, dtype=None):
        if self.value.used:
            return self.declared(shape, dtype=dtype)
        return self.value()


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


_LAYER_INDEX = re.compile(r"layer_(\d+)/")


def _registry():
    """The model registry {name: class} (imported late: the registry imports this module)."""
    from bert4keras_ng.models import MODELS

    return MODELS


def _fill(template, index, scope):
    text = template.replace("{scope}", scope)
    if index is not None:
        text = text.replace("{i}", str(index))
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
    from bert4keras_ng.models import MODELS

    found = []
    for model_name, cls in MODELS.items():
        present, absent = cls.signature
        if all(n in reader for n in present) and not any(n in reader for n in absent):
            if cls not in [MODELS[f] for f in found]:
                found.append(model_name)
    return found
