"""A truncated or incomplete checkpoint download gives an error naming the file (and the
variable being read), not a bare IndexError or "bad magic number"."""

import os
import shutil

import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.models import build_transformer_model

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "models", "bert")
DATA = "bert_model.ckpt.data-00000-of-00001"


@pytest.fixture
def copy(tmp_path):
    for name in os.listdir(SOURCE):
        shutil.copy(os.path.join(SOURCE, name), tmp_path / name)
    return tmp_path


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_data_file_is_named_at_open(copy):
    _truncate(copy / DATA, 0.5)
    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        build_transformer_model(str(copy / "bert_config.json"), str(copy / "bert_model.ckpt"))
    message = str(error.value)
    assert DATA in message and "42892 bytes" in message and "85784 bytes" in message
    assert "download looks incomplete" in message


def test_data_file_truncated_after_opening_names_the_variable(copy):
    reader = checkpoints.open_checkpoint(str(copy / "bert_model.ckpt"))
    _truncate(copy / DATA, 0.1)
    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        for name in reader.names():
            reader.read(name)
    message = str(error.value)
    assert "Cannot read variable 'bert/" in message and DATA in message
    assert "download looks incomplete" in message


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_index_is_named(copy, keep):
    _truncate(copy / "bert_model.ckpt.index", keep)
    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        checkpoints.open_checkpoint(str(copy / "bert_model.ckpt"))
    message = str(error.value)
    assert "bert_model.ckpt.index" in message and "download looks incomplete" in message


def test_missing_data_file_is_named(copy):
    os.remove(copy / DATA)
    with pytest.raises(checkpoints.CorruptCheckpointError, match="no data file"):
        checkpoints.open_checkpoint(str(copy / "bert_model.ckpt"))
