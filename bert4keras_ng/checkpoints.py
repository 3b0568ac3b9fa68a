"""Reading and writing TF1 name-based checkpoints (the format of every released BERT-family zip).

A checkpoint is addressed by its *prefix* (``.../bert_model.ckpt``); this module also accepts the
directory holding one, the name of its ``.index`` / ``.data-*`` file, or a plain ``{name: array}``
dict. Reading needs no graph (``tf.train.load_checkpoint``); writing uses the raw ``SaveV2`` op, so
no Session, no ``.meta`` file and no object-graph keys are involved.

The vocabulary transform shared by the model loaders lives here too:
:func:`select_vocabulary` applies ``keep_tokens`` (row selection) then ``compound_tokens``
(appended rows, each a plain or weighted mean of kept rows).
"""

import difflib
import glob
import os

import numpy as np

__all__ = [
    "CheckpointReader",
    "CorruptCheckpointError",
    "open_checkpoint",
    "resolve_checkpoint_prefix",
    "list_variables",
    "load_variables",
    "save_variables",
    "select_vocabulary",
    "closest_names",
    "transpose",
    "materialize",
]


def _tf():
    import tensorflow as tf  # imported lazily: only checkpoint IO needs TensorFlow

    return tf


def resolve_checkpoint_prefix(path):
    """Return the checkpoint prefix for ``path``.

    ``path`` may be the prefix itself, a ``.index`` or ``.data-xxxxx-of-xxxxx`` file, or a
    directory holding exactly one checkpoint (or a ``checkpoint`` state file naming one).
    Raises ``FileNotFoundError`` naming the path when nothing is there.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        tf = _tf()
        latest = tf.train.latest_checkpoint(path)
        if latest is not None and os.path.exists(latest + ".index"):
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
        if not indexes:
            raise FileNotFoundError(
                "No TF1 checkpoint in directory %r: expected a '<prefix>.index' file such as "
                "'bert_model.ckpt.index'." % path
            )
        raise FileNotFoundError(
            "Directory %r holds several checkpoints (%s); pass the prefix of the one to load, "
            "e.g. %r." % (path, ", ".join(os.path.basename(i) for i in indexes),
                          indexes[0][: -len(".index")])
        )
    base = path
    if base.endswith(".index"):
        base = base[: -len(".index")]
    elif ".data-" in os.path.basename(base):
        base = base[: base.rindex(".data-")]
    if os.path.exists(base + ".index"):
        return base
    hint = ""
    parent = os.path.dirname(base) or "."
    if os.path.isdir(parent):
        found = sorted(i[: -len(".index")] for i in glob.glob(os.path.join(parent, "*.index")))
        if found:
            hint = " Checkpoints found in %r: %s." % (parent, ", ".join(map(os.path.basename, found)))
    raise FileNotFoundError(
        "Checkpoint not found: %r (looked for %r).%s Pass the checkpoint prefix, e.g. "
        "'.../bert_model.ckpt', not the .index or .data file." % (path, base + ".index", hint)
    )


class CorruptCheckpointError(OSError):
    """A checkpoint file is truncated or damaged (typically an incomplete download)."""


_REDOWNLOAD = "the download looks incomplete or the file is damaged: download the checkpoint again"


def _data_files(prefix):
    return sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))


def _open_tf1_reader(prefix):
    """``tf.train.load_checkpoint`` with errors that name the file at fault."""
    tf = _tf()
    index = prefix + ".index"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except tf.errors.OpError as error:
        size = os.path.getsize(index) if os.path.exists(index) else 0
        raise CorruptCheckpointError(
            "Cannot read the checkpoint index %r (%d bytes): %s; %s."
            % (index, size, error.message.strip().split("\n")[0], _REDOWNLOAD)
        ) from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    files = _data_files(prefix)
    if not files:
        raise CorruptCheckpointError(
            "Checkpoint %r has its index but no data file (%s.data-00000-of-00001); %s."
            % (prefix, os.path.basename(prefix), _REDOWNLOAD)
        )
    shards = int(files[0].rsplit("-of-", 1)[1])
    if len(files) < shards:
        raise CorruptCheckpointError(
            "Checkpoint %r is stored in %d data files but only %d are present (%s); %s."
            % (prefix, shards, len(files), ", ".join(map(os.path.basename, files)), _REDOWNLOAD)
        )
    if all(dtypes[k] != tf.string for k in dtypes):  # fixed-size tensors: sizes add up exactly
        expected = sum(int(np.prod(shapes[k], dtype=np.int64)) * dtypes[k].size for k in shapes)
        present = sum(os.path.getsize(f) for f in files)
        if present < expected:
            raise CorruptCheckpointError(
                "Checkpoint data %s holds %d bytes but its index describes %d bytes of tensors; %s."
                % (", ".join(repr(f) for f in files), present, expected, _REDOWNLOAD)
            )
    return reader


class CheckpointReader:
    """Uniform read access to a TF1 checkpoint or to a ``{name: array}`` dict."""

    def __init__(self, source):
        if isinstance(source, CheckpointReader):
            self._dict, self._reader, self.prefix = source._dict, source._reader, source.prefix
            self._shapes = source._shapes
            return
        if isinstance(source, dict):
            self._dict = {str(k): np.asarray(v) for k, v in source.items()}
            self._reader = None
            self.prefix = None
            self._shapes = {k: tuple(v.shape) for k, v in self._dict.items()}
        else:
            self.prefix = resolve_checkpoint_prefix(source)
            self._dict = None
            self._reader = _open_tf1_reader(self.prefix)
            self._shapes = {
                k: tuple(int(d) for d in v)
                for k, v in self._reader.get_variable_to_shape_map().items()
            }

    @property
    def fresh_reads(self):
        """Whether ``read`` returns a new array each time (a file), not one the caller holds
        (a dict): the loader may then adopt it as a variable's buffer without copying."""
        return self._dict is None

    def names(self):
        """Sorted variable names held by the checkpoint."""
        return sorted(self._shapes)

    def __contains__(self, name):
        return name in self._shapes

    def __len__(self):
        return len(self._shapes)

    def shape(self, name):
        return self._shapes[name]

    def read(self, name):
        """The stored array for ``name`` (KeyError with close-name suggestions if absent)."""
        if name not in self._shapes:
            raise KeyError(
                "Variable %r not found in the checkpoint.%s" % (name, _suggest(name, self.names()))
            )
        if self._dict is not None:
            return np.asarray(self._dict[name])
        tf = _tf()
        try:
            return np.asarray(self._reader.get_tensor(name))
        except (IndexError, tf.errors.OpError) as error:
            message = getattr(error, "message", None) or str(error)
            raise CorruptCheckpointError(
                "Cannot read variable %r (shape %s) from %s: %s; %s."
                % (name, self._shapes[name], ", ".join(repr(f) for f in _data_files(self.prefix)),
                   message.strip().split("\n")[0], _REDOWNLOAD)
            ) from None

    def describe(self):
        return "checkpoint %r" % self.prefix if self.prefix else "checkpoint dict"


def open_checkpoint(source):
    """A reader for a prefix, directory, file name or dict: a :class:`CheckpointReader`, or a
    :class:`bert4keras_ng.huggingface.HFReader` for a Hugging Face folder (detected here, once).
    A reader (anything with ``names()``, ``shape(name)``, ``read(name)``, ``in`` and
    ``describe()``) is returned as it is; it may list fnmatch patterns of variables that models
    may leave unused in an ``ignorable`` attribute."""
    from bert4keras_ng import huggingface

    if all(hasattr(source, a) for a in ("names", "shape", "read", "describe", "__contains__")):
        return source
    if huggingface.is_hf_folder(source):
        return huggingface.HFReader(source)
    return CheckpointReader(source)


def list_variables(source):
    """``[(name, shape), ...]`` sorted by name, like ``tf.train.list_variables``."""
    reader = CheckpointReader(source)
    return [(n, reader.shape(n)) for n in reader.names()]


def load_variables(source, names=None):
    """Read ``names`` (default: all variables) into a ``{name: ndarray}`` dict."""
    reader = CheckpointReader(source)
    names = reader.names() if names is None else list(names)
    return {n: reader.read(n) for n in names}


def save_variables(prefix, variables, dtype="float32"):
    """Write ``{tf1_name: array}`` as a TF1 name-based checkpoint at ``prefix``.

    Files written: ``prefix.index``, ``prefix.data-00000-of-00001`` and a ``checkpoint`` state
    file in the same directory (so the directory alone can be passed to readers). Floating
    arrays are cast to ``dtype`` (float32 by default, what every release uses; ``None`` keeps
    them as they are); integer arrays are kept. Returns the prefix.
    """
    tf = _tf()
    prefix = os.fspath(prefix)
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    names = sorted(variables)
    if not names:
        raise ValueError("save_variables: nothing to write (variables is empty).")
    tensors = []
    for name in names:
        if not isinstance(name, str) or not name or name.endswith(":0"):
            raise ValueError(
                "save_variables: invalid TF1 variable name %r (use names like "
                "'bert/embeddings/word_embeddings', without ':0')." % (name,)
            )
        value = np.asarray(variables[name])
        if dtype is not None and np.issubdtype(value.dtype, np.floating):
            value = value.astype(dtype)
        tensors.append(tf.constant(value))
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    with open(os.path.join(directory, "checkpoint"), "w", encoding="utf-8") as f:
        rel = os.path.relpath(os.path.abspath(prefix), directory)
        f.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (rel, rel))
    return prefix


def select_vocabulary(array, keep_tokens=None, compound_tokens=None, axis=0):
    """Apply keep_tokens then compound_tokens along the vocabulary ``axis`` of ``array``.

    - ``keep_tokens``: original ids to keep, in the order of the new vocabulary.
    - ``compound_tokens``: extra rows appended after the kept ones; each item is a list of ids
      (plain mean of those rows) or a pair ``(ids, weights)`` (weighted mean). The ids index
      the vocabulary *after* keep_tokens.
    Works for 2-D embedding tables and for 1-D output biases. Computed in float64, returned in
    the input's floating dtype (float32 for integer input).
    """
    array = np.asarray(array)
    out_dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
    x = np.moveaxis(array.astype(np.float64), axis, 0)
    if keep_tokens is not None:
        keep = np.asarray(list(keep_tokens), dtype=np.int64)
        if keep.ndim != 1:
            raise ValueError("keep_tokens must be a flat list of token ids, got shape %s." % (keep.shape,))
        bad = keep[(keep < 0) | (keep >= x.shape[0])]
        if bad.size:
            raise ValueError(
                "keep_tokens holds ids outside the checkpoint vocabulary of %d rows: %s"
                % (x.shape[0], bad[:10].tolist())
            )
        x = x[keep]
    if compound_tokens:
        rows = []
        for n, item in enumerate(compound_tokens):
            if (
                isinstance(item, (tuple, list))
                and len(item) == 2
                and isinstance(item[0], (list, tuple, np.ndarray))
            ):
                ids, weights = item
            else:
                ids, weights = item, None
            ids = np.asarray(list(ids), dtype=np.int64)
            if ids.size == 0:
                raise ValueError("compound_tokens[%d] is empty." % n)
            if ids.min() < 0 or ids.max() >= x.shape[0]:
                raise ValueError(
                    "compound_tokens[%d] refers to ids outside the (kept) vocabulary of %d rows: %s"
                    % (n, x.shape[0], ids.tolist())
                )
            w = np.ones(len(ids)) if weights is None else np.asarray(weights, dtype=np.float64)
            if w.shape != ids.shape:
                raise ValueError(
                    "compound_tokens[%d]: %d ids but %d weights." % (n, len(ids), w.size)
                )
            rows.append(np.tensordot(w / w.sum(), x[ids], axes=1))
        x = np.concatenate([x, np.stack(rows, 0)], 0)
    return np.moveaxis(x, 0, axis).astype(out_dtype)


def transpose(array, rows=128, out=None):
    """A contiguous transposed copy of a 2-D array into ``out`` when given (casting to its dtype
    in the same pass), copied in strips of ``rows`` source rows: each strip (under 2 MB for
    BERT-sized kernels) stays in cache while its columns are written (1.66-1.89 GB/s per core
    on warm BERT-shaped kernels, about 1 GB/s streaming from a cold memory map, against 0.65
    warm for ``np.ascontiguousarray(array.T)``), with one NumPy call per strip, so worker
    threads doing it seldom need the GIL. Other arrays get their reversed-axes transpose."""
    array = np.asarray(array)
    if array.ndim != 2 or array.size < 1 << 16:
        if out is None:
            return np.ascontiguousarray(array.T)
        out[...] = array.T
        return out
    if out is None:
        out = np.empty(array.shape[::-1], dtype=array.dtype)
    for i in range(0, array.shape[0], rows):
        out[:, i : i + rows] = array[i : i + rows].T
    return out


# the byte alignment TensorFlow requires of a buffer it adopts without copying
ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on an :data:`ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = np.empty(count * dtype.itemsize + ALIGNMENT, dtype=np.uint8)
    offset = (-buffer.ctypes.data) % ALIGNMENT
    return buffer[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def is_adoptable(array, dtype):
    """Whether ``array`` can become a variable's buffer as it is: writeable, C-contiguous,
    aligned, of ``dtype``."""
    return (
        isinstance(array, np.ndarray)
        and array.dtype == np.dtype(dtype)
        and array.flags.c_contiguous
        and array.flags.writeable
        and array.ctypes.data % ALIGNMENT == 0
    )


def materialize(array, transposed=False, dtype=np.float32, fresh=False):
    """A stored tensor as a variable's value in one pass: a new aligned, C-contiguous array of
    ``dtype`` (transposed when asked, cast in the same copy). A ``fresh`` array (one nobody
    else holds) that already fits is returned as it is, without a copy."""
    array = np.asarray(array)
    if fresh and not transposed and is_adoptable(array, dtype):
        return array
    shape = array.shape[::-1] if transposed else array.shape
    out = aligned_empty(shape, dtype)
    if transposed:
        return transpose(array, out=out)
    out[...] = array
    return out


def closest_names(name, candidates, n=3):
    """Up to ``n`` names from ``candidates`` closest to ``name`` (difflib ratio)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def _suggest(name, candidates):
    close = closest_names(name, candidates)
    return (" Closest names present: %s." % ", ".join(close)) if close else ""


def describe(reader):
    """How error messages name ``reader``'s source (its ``describe()``, or its type)."""
    method = getattr(reader, "describe", None)
    return method() if callable(method) else "checkpoint reader %s" % type(reader).__name__
