"""Reading and writing Hugging Face model folders (``config.json`` + weights + vocabulary).

A folder is recognised once, here, by a ``config.json`` holding a ``model_type``. Weights come
from ``model.safetensors`` (its header parsed and checked here, the tensors read as views of a
memory map: no torch, no copy until the loader's one copy into each variable), from a sharded
``*.safetensors.index.json``, or from ``pytorch_model.bin`` (sharded or not) through torch when
it is installed. Writing uses the ``safetensors`` package. :class:`HFReader` offers the same ``names`` / ``shape`` / ``read``
interface as :class:`bert4keras_ng.checkpoints.CheckpointReader`, so Hugging Face weights go
through the same loading plan as TF1 ones; the head model's base prefix (``bert.``,
``albert.``, ...) is removed from the names so that one table serves bare and head models.
"""

import json
import mmap
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


# safetensors dtype codes -> NumPy (BF16 is stored as uint16 and widened to float32 on read)
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class _SafetensorsFile:
    """One safetensors file, memory mapped. The header is parsed, and every tensor's dtype and
    extent checked against the file size, on opening; ``read`` returns a read-only view of the
    mapping (no copy: the loader copies once, into the variable's buffer)."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            header_size = int.from_bytes(head, "little") if len(head) == 8 else -1
            if header_size < 0 or 8 + header_size > size:
                raise ValueError(
                    "Cannot read safetensors file %r (%d bytes): its header is cut off; the "
                    "download may be incomplete." % (path, size)
                )
            try:
                header = json.loads(f.read(header_size))
            except ValueError as e:
                raise ValueError(
                    "Cannot read safetensors file %r: its header is not valid JSON (%s); the "
                    "download may be incomplete." % (path, e)
                ) from None
        if not isinstance(header, dict):
            raise ValueError("Safetensors file %r: the header is not a JSON object." % path)
        header.pop("__metadata__", None)
        self._data_start = 8 + header_size
        self._entries, self.shapes = {}, {}
        for name, info in header.items():
            self._entries[name] = self._check_entry(name, info, size)
            self.shapes[name] = self._entries[name][1]
        self._map = np.memmap(path, dtype=np.uint8, mode="r") if size > self._data_start else None

    def _check_entry(self, name, info, size):
        try:
            code, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                "Safetensors file %r: header entry %r is malformed (expected dtype, shape and "
                "data_offsets): %r." % (self.path, name, info)
            ) from None
        if code not in _SAFETENSORS_DTYPES:
            raise ValueError(
                "Safetensors file %r: tensor %r has dtype %s, which cannot be loaded (expected "
                "one of %s)." % (self.path, name, code, ", ".join(_SAFETENSORS_DTYPES))
            )
        dtype = np.dtype(_SAFETENSORS_DTYPES[code])
        if end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or start < 0:
            raise ValueError(
                "Safetensors file %r: tensor %r of shape %s (%s) has data_offsets %s, which do "
                "not match its size." % (self.path, name, shape, code, [start, end])
            )
        if self._data_start + end > size:
            raise ValueError(
                "Safetensors file %r is truncated: tensor %r ends at byte %d but the file has %d "
                "bytes; the download may be incomplete." % (self.path, name, self._data_start + end, size)
            )
        return code, shape, self._data_start + start, self._data_start + end

    def release(self, name):
        """Drop the pages of tensor ``name`` from this process's resident memory once it has
        been copied (they stay in the page cache; a later read faults them back in)."""
        handle = getattr(self._map, "_mmap", None)
        if handle is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        _, _, start, end = self._entries[name]
        low = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        high = end // mmap.PAGESIZE * mmap.PAGESIZE
        if high > low:
            handle.madvise(mmap.MADV_DONTNEED, low, high - low)

    def read(self, name):
        code, shape, start, end = self._entries[name]
        raw = self._map[start:end] if end > start else np.zeros(0, np.uint8)
        if code == "BF16":  # NumPy has no bfloat16: widen (the high half of a float32)
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return raw.view(_SAFETENSORS_DTYPES[code]).reshape(shape)


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

    @property
    def concurrent_reads(self):
        """Whether ``read`` may be called from several threads at once (memory-mapped
        safetensors: views of the mapping; torch's unpickled state is left to one thread)."""
        return self.kind == "safetensors"

    @property
    def ignorable(self):
        """fnmatch patterns of stored tensors no model of ours uses (tied copies, fixed tables,
        buffers): :data:`bert4keras_ng.models.hf_mappings.IGNORED`."""
        from bert4keras_ng.models.hf_mappings import IGNORED

        return IGNORED

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

    def release(self, name):
        """Tell the reader that ``name`` has been copied: a memory-mapped file drops its pages
        from resident memory (no effect for torch files)."""
        base = split_view(name)[0]
        handle, stored = self._owner[base]
        if hasattr(handle, "release"):
            handle.release(stored)

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
