"""Reading and writing Hugging Face model folders (``config.json`` + weights + vocabulary).

A folder is recognised once, here, by a ``config.json`` holding a ``model_type``. Weights come
from ``model.safetensors`` (the ``safetensors`` NumPy API: memory mapped, no torch), from a
sharded ``*.safetensors.index.json``, or from ``pytorch_model.bin`` (sharded or not) through
torch when it is installed. :class:`HFReader` offers the same ``names`` / ``shape`` / ``read``
interface as :class:`bert4keras_ng.checkpoints.CheckpointReader`, so Hugging Face weights go
through the same loading plan as TF1 ones; the head model's base prefix (``bert.``,
``albert.``, ...) is removed from the names so that one table serves bare and head models.
"""

import json
import os
import shutil
import tempfile

import numpy as np

__all__ = [
    "is_hf_folder",
    "read_hf_config",
    "HFReader",
    "write_hf_folder",
    "find_vocabulary",
    "load_hf_tokenizer",
]

CONFIG_NAME = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
# the base model's attribute name in head models, when it is not the model_type
BASE_PREFIX = {"gpt2": "transformer."}


def is_hf_folder(path):
    """Whether ``path`` is a directory whose ``config.json`` names a ``model_type``."""
    if path is None or not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    config = os.path.join(path, CONFIG_NAME)
    if not (os.path.isdir(path) and os.path.isfile(config)):
        return False
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model_type"), str)


def read_hf_config(folder):
    """The folder's ``config.json`` as a dict (ValueError naming the file when malformed)."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError("Hugging Face folder %r has no config.json." % os.fspath(folder)) from None
    except ValueError as e:
        raise ValueError("%r is not valid JSON: %s" % (path, e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError("%r must be a JSON object with a 'model_type' string." % path)
    return data


def _weight_files(folder):
    """(kind, [files]) of the weights in ``folder``: kind 'safetensors' or 'torch'."""
    join = lambda name: os.path.join(folder, name)  # noqa: E731
    if os.path.isfile(join(SAFETENSORS)):
        return "safetensors", [join(SAFETENSORS)]
    for kind, index in (("safetensors", SAFETENSORS_INDEX), ("torch", TORCH_BIN_INDEX)):
        if os.path.isfile(join(index)):
            try:
                with open(join(index), encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    "%r is not a valid shard index (expected {'weight_map': {name: file}}): %s"
                    % (join(index), e)
                ) from None
            files = sorted(set(weight_map.values()))
            absent = [f for f in files if not os.path.isfile(join(f))]
            if absent:
                raise FileNotFoundError(
                    "Shard index %r names file(s) missing from the folder: %s (incomplete "
                    "download?)." % (join(index), ", ".join(absent))
                )
            return kind, [join(f) for f in files]
    if os.path.isfile(join(TORCH_BIN)):
        return "torch", [join(TORCH_BIN)]
    raise FileNotFoundError(
        "Hugging Face folder %r holds no weights: expected %s, %s, %s or %s."
        % (folder, SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)
    )


class _SafetensorsFile:
    """One memory-mapped safetensors file: shapes from its header, tensors on demand."""

    def __init__(self, path):
        try:
            from safetensors import safe_open
        except ImportError:  # pragma: no cover - install_requires has it
            raise ImportError("Reading %r needs the 'safetensors' package (pip install safetensors)." % path)
        self.path = path
        try:
            self._file = safe_open(path, framework="np")
            self.shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in self._file.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(
                "Cannot read safetensors file %r (%s: %s); the download may be incomplete."
                % (path, type(e).__name__, e)
            ) from None

    def read(self, name):
        try:
            array = self._file.get_tensor(name)
        except TypeError as e:  # bfloat16, which NumPy lacks unless ml_dtypes is loaded
            return _read_raw_safetensor(self.path, name, e)
        return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def _read_raw_safetensor(path, name, error):
    """Read a bfloat16 tensor as float32 from the file's header offsets (NumPy has no bf16)."""
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    info = header[name]
    if info["dtype"] != "BF16":
        raise ValueError("Cannot read %r from %r: %s" % (name, path, error)) from None
    start, end = info["data_offsets"]
    raw = np.memmap(path, dtype=np.uint16, mode="r", offset=8 + header_size + start,
                    shape=((end - start) // 2,))
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


class _TorchFile:
    """A ``pytorch_model.bin`` read through torch (only when the folder has no safetensors)."""

    def __init__(self, path):
        try:
            import torch
        except ImportError:
            raise ImportError(
                "%r is a PyTorch pickle: reading it needs torch (pip install torch), or convert "
                "the folder to safetensors (transformers: model.save_pretrained(folder))." % path
            ) from None
        try:
            self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise ValueError(
                "Cannot read %r with torch.load (%s: %s); the download may be incomplete."
                % (path, type(e).__name__, e)
            ) from None
        self.path = path
        self.shapes = {k: tuple(v.shape) for k, v in self._state.items()}

    def read(self, name):
        tensor = self._state[name]
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()


class HFReader:
    """Read access to the weights of a Hugging Face folder, under names without the base prefix.

    ``names()`` / ``shape(name)`` / ``read(name)`` / ``in`` behave like
    :class:`~bert4keras_ng.checkpoints.CheckpointReader`; ``format`` is ``'huggingface'`` (the
    model builders pick their Hugging Face table by it) and ``config`` the folder's config.
    """

    format = "huggingface"
    # every tensor's extent was checked against the file size on opening (safetensors header,
    # torch.load), so reads cannot fail half way: the loader may read lazily
    validated = True

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.config = read_hf_config(self.folder)
        self.model_type = self.config["model_type"]
        self.kind, files = _weight_files(self.folder)
        opener = _SafetensorsFile if self.kind == "safetensors" else _TorchFile
        self._owner = {}  # name -> (file object, name in the file)
        base = BASE_PREFIX.get(self.model_type, self.model_type + ".")
        for path in files:
            handle = opener(path)
            for stored in handle.shapes:
                name = stored[len(base):] if stored.startswith(base) else stored
                if name in self._owner:
                    raise ValueError(
                        "%s holds %r twice (as %r and %r)."
                        % (self.describe(), name, self._owner[name][1], stored)
                    )
                self._owner[name] = (handle, stored)
        self.prefixed = any(s.startswith(base) for _, s in self._owner.values())

    @property
    def ignorable(self):
        """fnmatch patterns of stored tensors a model may leave unused: tied copies, constant
        tables and buffers (``hf_mappings.IGNORED``), pretraining heads not built (``HEADS``)."""
        from bert4keras_ng.models import hf_mappings

        return tuple(hf_mappings.IGNORED) + tuple(p + "*" for p in hf_mappings.HEADS)

    def variable_of(self, name):
        """The stored tensor a table name (possibly a view, ``'w|split=...'``) reads."""
        return split_view(name)[0]

    def names(self):
        return sorted(self._owner)

    def __contains__(self, name):
        return split_view(name)[0] in self._owner

    def __len__(self):
        return len(self._owner)

    def shape(self, name):
        base, view = split_view(name)
        handle, stored = self._owner[base]
        shape = handle.shapes[stored]
        if view and view[0] == "split":
            axis, _, count = view[1]
            shape = list(shape)
            shape[axis] //= count
            shape = tuple(shape)
        return shape

    def read(self, name):
        base, view = split_view(name)
        array = self._read(base)
        if not view:
            return array
        if view[0] == "split":
            axis, index, count = view[1]
            return np.split(array, count, axis=axis)[index]
        return array * self.view_factor(view[1])

    def view_factor(self, spec):
        """The factor of a ``scale=sqrt:<config key>`` view: sqrt of that config value."""
        return np.float32(np.sqrt(self.config[spec]))

    def _read(self, name):
        if name not in self._owner:
            from bert4keras_ng.checkpoints import closest_names

            close = closest_names(name, self.names())
            raise KeyError(
                "Variable %r not found in %s.%s"
                % (name, self.describe(), (" Closest names present: %s." % ", ".join(close)) if close else "")
            )
        handle, stored = self._owner[name]
        return np.asarray(handle.read(stored))

    def describe(self):
        return "Hugging Face folder %r (model_type %r)" % (self.folder, self.model_type)


def split_view(name):
    """``'w|split=1:0:3'`` -> ('w', ('split', (1, 0, 3))): the first of three equal parts along
    axis 1 (a fused q/k/v weight); ``'w|scale=sqrt:d_model'`` -> ('w', ('scale', 'd_model')): the
    tensor times sqrt(config['d_model']); a plain name -> (name, None). These views let a
    table address part of a stored tensor; the exporter inverts them."""
    base, _, view = name.partition("|")
    if not view:
        return name, None
    kind, _, arg = view.partition("=")
    if kind == "split":
        return base, ("split", tuple(int(v) for v in arg.split(":")))
    if kind == "scale" and arg.startswith("sqrt:"):
        return base, ("scale", arg[len("sqrt:"):])
    raise ValueError("Unknown view %r in checkpoint table name %r." % (view, name))


def find_vocabulary(folder):
    """``('wordpiece', path)`` for vocab.txt, ``('sentencepiece', path)`` for spiece.model /
    sentencepiece.bpe.model, else FileNotFoundError naming what was looked for."""
    folder = os.fspath(folder)
    for kind, name in (
        ("wordpiece", "vocab.txt"),
        ("sentencepiece", "spiece.model"),
        ("sentencepiece", "sentencepiece.bpe.model"),
    ):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return kind, path
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return "tokenizer.json", os.path.join(folder, "tokenizer.json")
    raise FileNotFoundError(
        "No vocabulary in %r: expected vocab.txt (WordPiece), spiece.model or "
        "tokenizer.json." % folder
    )


def _tokenizer_options(folder):
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError("%r is not valid JSON: %s" % (path, e)) from None
    return data if isinstance(data, dict) else {}


def _wordpiece_from_tokenizer_json(path):
    """(token dict, lower-case?) of a WordPiece ``tokenizer.json`` (read as JSON, no library)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ValueError(
            "%r holds a %s tokenizer; only WordPiece tokenizer.json files (or a vocab.txt / "
            "spiece.model beside it) can be used." % (path, model.get("type"))
        )
    normalizer = data.get("normalizer") or {}
    return dict(model["vocab"]), bool(normalizer.get("lowercase", True))


def load_hf_tokenizer(folder, do_lower_case=None, **kwargs):
    """Our :class:`~bert4keras_ng.tokenizers.Tokenizer` (vocab.txt or a WordPiece
    tokenizer.json) or :class:`~bert4keras_ng.tokenizers.SpTokenizer` (spiece.model) for a
    Hugging Face folder. ``do_lower_case`` defaults to the folder's tokenizer_config.json
    (True when absent, as BertTokenizer); T5/mT5 folders get ``token_start=None,
    token_end='</s>'``. Other keyword arguments go to the tokenizer."""
    from bert4keras_ng.tokenizers import SpTokenizer, Tokenizer

    folder = os.fspath(folder)
    kind, path = find_vocabulary(folder)
    if kind == "sentencepiece":
        model_type = read_hf_config(folder)["model_type"] if is_hf_folder(folder) else None
        if model_type in ("t5", "mt5"):
            kwargs.setdefault("token_start", None)
            kwargs.setdefault("token_end", "</s>")
        return SpTokenizer(path, **kwargs)
    if do_lower_case is None:
        do_lower_case = _tokenizer_options(folder).get("do_lower_case")
    if kind == "tokenizer.json":
        token_dict, lower = _wordpiece_from_tokenizer_json(path)
        return Tokenizer(token_dict, do_lower_case=lower if do_lower_case is None else do_lower_case, **kwargs)
    return Tokenizer(path, do_lower_case=True if do_lower_case is None else do_lower_case, **kwargs)


def write_hf_folder(folder, config, tensors, extra_files=None, overwrite=True):
    """Write ``config.json``, ``model.safetensors`` and ``extra_files`` ({name: bytes or a path to copy})
    into ``folder`` atomically: everything goes to a temporary sibling directory first, which
    then replaces ``folder`` (an existing folder is kept until the new one is complete)."""
    from safetensors.numpy import save_file

    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(folder) and not overwrite:
        raise FileExistsError("%r exists (pass overwrite=True to replace it)." % folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FileExistsError("%r exists and is not a directory." % folder)
    temp = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".", dir=parent)
    try:
        with open(os.path.join(temp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, os.path.join(temp, SAFETENSORS), metadata={"format": "pt"})
        for name, content in (extra_files or {}).items():
            target = os.path.join(temp, name)
            if isinstance(content, (bytes, bytearray)):
                with open(target, "wb") as f:
                    f.write(content)
            else:
                shutil.copyfile(content, target)
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".old.", dir=parent)
            os.rmdir(old)
            os.rename(folder, old)
        os.rename(temp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder
