"""Validation of a model configuration where it enters (``Transformer.__init__``).

A bad value (a fraction, a string, zero heads, a width the heads do not divide) raises one
``ValueError`` naming the key, its value and where it came from (the config file or the keyword
arguments) before any layer is built, instead of a silent truncation or an error deep in Keras.
"""

import numbers

import numpy as np

# key -> (minimum, required); a missing optional key is None
INTEGER_KEYS = {
    "vocab_size": (1, True),
    "hidden_size": (1, True),
    "num_hidden_layers": (1, True),
    "num_attention_heads": (1, True),
    "intermediate_size": (1, True),
    "embedding_size": (1, False),
    "attention_head_size": (1, False),
    "attention_key_size": (1, False),
    "max_position": (1, False),
    "segment_vocab_size": (0, False),
    "sequence_length": (1, False),
}
RATE_KEYS = ("dropout_rate", "attention_dropout_rate")
# the names a config.json uses for the builder's short names
ALIASES = {
    "max_position": "max_position_embeddings",
    "segment_vocab_size": "type_vocab_size",
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
}


class ConfigSource:
    """Where each config value came from: a config file, or the keyword arguments."""

    def __init__(self, path=None, overrides=()):
        self.path, self.overrides = path, set(overrides)

    def describe(self, key):
        if self.path is None or key in self.overrides:
            return "the keyword arguments"
        return "config %r" % self.path

    def key(self, key):
        """The key as the user wrote it (``max_position_embeddings`` for ``max_position``)."""
        if self.path is not None and key not in self.overrides and key in ALIASES:
            return "%r (%s)" % (ALIASES[key], key)
        return repr(key)


def _integer(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    return int(value) if float(value).is_integer() else None


def validate(values, source=None):
    """Check the config ``values`` ({key: value}); return the integer-valued keys as ints.

    Raises ValueError naming key, value and ``source`` (a :class:`ConfigSource`) on the first
    problem found.
    """
    source = source or ConfigSource()

    def fail(key, value, expected):
        raise ValueError(
            "Config key %s = %r in %s: expected %s."
            % (source.key(key), value, source.describe(key), expected)
        )

    checked = {}
    for key, (minimum, required) in INTEGER_KEYS.items():
        value = values.get(key)
        if value is None:
            if required:
                fail(key, value, "an integer >= %d" % minimum)
            continue
        number = _integer(value)
        if number is None or number < minimum:
            fail(key, value, "an integer >= %d" % minimum)
        checked[key] = number
    for key in RATE_KEYS:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            fail(key, value, "a dropout rate in [0, 1)")
    heads = checked["num_attention_heads"]
    if values.get("attention_head_size") is None and checked["hidden_size"] % heads:
        raise ValueError(
            "Config key %s = %r in %s is not a multiple of %s = %d in %s: the heads would "
            "cover only %d of the width (set attention_head_size to allow it)."
            % (source.key("hidden_size"), values["hidden_size"], source.describe("hidden_size"),
               source.key("num_attention_heads"), heads, source.describe("num_attention_heads"),
               checked["hidden_size"] // heads * heads)
        )
    act = values.get("hidden_act")
    acts = act if isinstance(act, (list, tuple)) else [act]
    if not acts or not all(isinstance(a, str) and a for a in acts):
        fail("hidden_act", act, "an activation name such as 'gelu', or a list of names")
    keep = values.get("keep_tokens")
    if keep is not None:
        if isinstance(keep, (str, bytes)) or not hasattr(keep, "__len__") or len(keep) == 0:
            fail("keep_tokens", keep, "a non-empty list of token ids")
        ids = [_integer(i) if not isinstance(i, (float, np.floating)) else None for i in keep]
        bad = [k for k, i in zip(keep, ids) if i is None or i < 0]
        if bad:
            fail("keep_tokens", bad[:5], "non-negative integer token ids (first bad ones shown)")
    compound = values.get("compound_tokens")
    if compound is not None and (isinstance(compound, (str, bytes)) or not hasattr(compound, "__len__")):
        fail("compound_tokens", compound, "a list of token-id lists")
    return checked
