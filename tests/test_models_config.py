"""Config validation where the config enters: each bad value is a ValueError naming the key, the
value and the config file (or the keyword arguments)."""

import json

import pytest

from bert4keras_ng.models import BERT, build_transformer_model

GOOD = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, hidden_act="gelu", max_position_embeddings=24)


def write(tmp_path, **changes):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(dict(GOOD, **changes)))
    return str(path)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"hidden_size": 30, "num_attention_heads": 4},
         r"'hidden_size' = 30 .*not a multiple of 'num_attention_heads' = 4.*only 28"),
        ({"num_attention_heads": 0}, r"'num_attention_heads' = 0 .*integer >= 1"),
        ({"hidden_size": 32.7}, r"'hidden_size' = 32.7 .*integer"),
        ({"intermediate_size": "48"}, r"'intermediate_size' = '48' .*integer"),
        ({"num_hidden_layers": -1}, r"'num_hidden_layers' = -1"),
        ({"max_position_embeddings": 0}, r"'max_position_embeddings' \(max_position\) = 0"),
        ({"hidden_dropout_prob": 1.5}, r"'hidden_dropout_prob' \(dropout_rate\) = 1.5 .*\[0, 1\)"),
        ({"hidden_act": 3}, r"'hidden_act' = 3"),
    ],
)
def test_bad_config_values_name_key_value_and_file(tmp_path, changes, pattern):
    path = write(tmp_path, **changes)
    with pytest.raises(ValueError, match=pattern) as error:
        build_transformer_model(path)
    assert "bert_config.json" in str(error.value)


@pytest.mark.parametrize("keep", [[], [1.0, 2.0], [1, -3], "abc"])
def test_bad_keep_tokens_are_refused(tmp_path, keep):
    with pytest.raises(ValueError, match=r"keep_tokens.*keyword arguments"):
        build_transformer_model(write(tmp_path), keep_tokens=keep)


def test_integral_values_are_accepted_and_overrides_are_attributed(tmp_path):
    builder = build_transformer_model(write(tmp_path, hidden_size=16.0), return_keras_model=False)
    assert builder.hidden_size == 16 and isinstance(builder.hidden_size, int)
    with pytest.raises(ValueError, match=r"'hidden_size' = 16 in the keyword arguments is not a multiple of 'num_attention_heads' = 3 in the keyword"):
        build_transformer_model(write(tmp_path), num_attention_heads=3, hidden_size=16)
    # an explicit head size lifts the divisibility rule
    build_transformer_model(write(tmp_path, hidden_size=30, num_attention_heads=4,
                                  attention_head_size=8))


def test_transformer_init_validates_too():
    with pytest.raises(ValueError, match=r"'hidden_size' = 32.7 in the keyword arguments"):
        BERT(**dict(GOOD, hidden_size=32.7))
