"""Data utilities shared by bert4keras-style training scripts.

Everything here is plain Python / NumPy; TensorFlow and Keras are imported only inside the
functions that need them (``DataGenerator.to_dataset`` and ``DataGenerator.to_pydataset``), so
importing this module is cheap and has no side effects.
"""

import builtins
import json
import os
import unicodedata

import numpy as np

__all__ = [
    "is_py2",
    "is_string",
    "to_array",
    "strQ2B",
    "convert_to_unicode",
    "convert_to_str",
    "lowercase_and_normalize",
    "open",
    "parallel_apply_generator",
    "parallel_apply",
    "sequence_padding",
    "truncate_sequences",
    "text_segmentate",
    "is_one_of",
    "softmax",
    "DataGenerator",
]

#: Kept for scripts written for bert4keras; this package runs on Python 3 only.
is_py2 = False

_builtin_open = builtins.open


def is_string(s):
    """True for ``str`` objects (the only text type on Python 3)."""
    return isinstance(s, str)


def to_array(*args):
    """``np.array`` of every argument; one argument gives one array, several give a list."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(arrays) == 1 else arrays


def strQ2B(ustring):
    """Map full-width ASCII variants (U+FF01..U+FF5E) and the ideographic space to half width."""
    out = []
    for ch in ustring:
        code = ord(ch)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        out.append(chr(code))
    return "".join(out)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """Decode ``bytes`` to ``str``; strings pass through."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding="utf-8", errors="ignore"):
    """Same as :func:`convert_to_unicode` on Python 3 (kept for bert4keras scripts)."""
    return convert_to_unicode(text, encoding, errors)


def lowercase_and_normalize(text):
    """Lower-case, decompose (NFD) and drop non-spacing marks (category ``Mn``).

    This is the exact order bert4keras uses: ``str.lower`` on the whole text first (so the
    Greek final sigma rule applies), then NFD, then accent removal.
    """
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


class open:  # noqa: A001 - deliberately shadows the builtin, like bert4keras
    """File object for large text files: iteration, optional line index and JSON lines.

    ``open(name, mode='r', encoding=None, errors='strict', indexable=False)`` behaves like the
    builtin ``open`` for reading and writing. With ``indexable=True`` (or a path to a cache file
    for the offsets) the file is opened in binary mode internally and ``f[i]`` returns line ``i``
    and ``len(f)`` the number of lines, without loading the file into memory.
    ``iter_jsonl()`` yields one decoded JSON object per non-blank line.
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        self.mode = mode
        self.encoding = encoding
        self.errors = errors
        self.offsets = None
        if indexable:
            if "w" in mode or "a" in mode or "+" in mode:
                raise ValueError("indexable=True needs a read-only mode, got mode=%r" % (mode,))
            # Byte offsets need a binary file; lines are decoded on the way out.
            self.file = _builtin_open(name, "rb")
            self._binary = True
            if self.encoding is None:
                self.encoding = "utf-8"
            if isinstance(indexable, str) and os.path.exists(indexable):
                with _builtin_open(indexable, encoding="utf-8") as f:
                    self.offsets = json.load(f)
            else:
                self.create_indexes()
                if isinstance(indexable, str):
                    with _builtin_open(indexable, "w", encoding="utf-8") as f:
                        json.dump(self.offsets, f)
        else:
            self._binary = "b" in mode
            if self._binary:
                self.file = _builtin_open(name, mode)
            else:
                self.file = _builtin_open(name, mode, encoding=encoding, errors=errors)
        self._iterator = None

    def _decode(self, line):
        if self._binary and self.encoding:
            return line.decode(self.encoding, self.errors)
        return line

    def create_indexes(self):
        """Record the byte offset of every line start (one pass over the file)."""
        offsets, offset = [], 0
        self.file.seek(0)
        for line in self.file:
            offsets.append(offset)
            offset += len(line)
        self.file.seek(0)
        self.offsets = offsets

    def __getitem__(self, key):
        if self.offsets is None:
            raise TypeError("open(...) was not created with indexable=True")
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self.offsets)))]
        self.file.seek(self.offsets[key])
        return self._decode(self.file.readline())

    def __len__(self):
        if self.offsets is None:
            raise TypeError("open(...) was not created with indexable=True")
        return len(self.offsets)

    def __iter__(self):
        for line in self.file:
            yield self._decode(line)

    def __next__(self):
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator)

    next = __next__

    def iter_jsonl(self):
        """Yield ``json.loads`` of every non-blank line (JSON lines files)."""
        for number, line in enumerate(self, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError("%s, line %d: invalid JSON (%s)" % (self.name, number, exc))

    def read(self):
        return self._decode(self.file.read())

    def readline(self):
        return self._decode(self.file.readline())

    def readlines(self):
        return [self._decode(line) for line in self.file.readlines()]

    def write(self, text):
        if self._binary and isinstance(text, str):
            text = text.encode(self.encoding or "utf-8", self.errors)
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0):
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()


class _Worker:
    """Picklable per-worker callable: seeds NumPy from ``seed_queue`` on first use."""

    def __init__(self, func, seed_queue):
        self.func = func
        self.seed_queue = seed_queue
        self.seeded = False

    def __call__(self, item):
        if not self.seeded:
            self.seeded = True
            seed = None
            if self.seed_queue is not None:
                try:
                    seed = self.seed_queue.get(timeout=5)
                except Exception:  # queue.Empty: more workers than seeds
                    seed = None
            if seed is not None:
                np.random.seed(seed)
        index, value = item
        return index, self.func(value)


_process_worker = {}


def _process_init(func, seed_queue):
    _process_worker["run"] = _Worker(func, seed_queue)


def _process_call(item):
    return _process_worker["run"](item)


def parallel_apply_generator(
    func, iterable, workers, max_queue_size, dummy=False, random_seeds=True
):
    """Apply ``func`` to every element of ``iterable`` with ``workers`` processes (or threads
    when ``dummy=True``) and yield ``(index, result)`` pairs as they complete (unordered).

    At most ``max_queue_size`` inputs are in flight at a time. ``random_seeds``: ``True`` (or
    None/False) leaves NumPy's seed alone; a list seeds process ``k`` with ``random_seeds[k]``
    (threads share NumPy's global state, so with ``dummy=True`` only the first seed is used).
    With processes and the 'fork' start method (the Linux default before Python 3.14) any
    callable works, closures included; with 'spawn'/'forkserver' it must be picklable (a
    module-level function). Exceptions raised by ``func`` propagate to the caller.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    if workers < 1:
        raise ValueError("workers must be >= 1, got %r" % (workers,))
    if max_queue_size < 1:
        raise ValueError("max_queue_size must be >= 1, got %r" % (max_queue_size,))
    if random_seeds is True or random_seeds is None or random_seeds is False:
        seeds = []
    else:
        seeds = list(random_seeds)

    if dummy:
        from concurrent.futures import ThreadPoolExecutor

        if seeds and seeds[0] is not None:
            np.random.seed(seeds[0])
        executor = ThreadPoolExecutor(workers)
        submit = lambda item: executor.submit(lambda: (item[0], func(item[1])))  # noqa: E731
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context()
        seed_queue = None
        if seeds:
            seed_queue = ctx.Queue()
            # one entry per worker, so no worker waits for a seed that never comes
            for s in seeds[:workers] + [None] * max(0, workers - len(seeds)):
                seed_queue.put(s)
        executor = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_process_init, initargs=(func, seed_queue)
        )
        submit = lambda item: executor.submit(_process_call, item)  # noqa: E731

    pending = set()
    try:
        for item in enumerate(iterable):
            pending.add(submit(item))
            if len(pending) >= max_queue_size:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Apply ``func`` to every element with processes (``dummy=False``) or threads.

    Without ``callback`` the results are returned as a list: in completion order when
    ``unordered=True`` (the bert4keras default), in input order when ``unordered=False``.
    With ``callback`` each result is passed to it (in completion order) and None is returned.
    """
    generator = parallel_apply_generator(
        func, iterable, workers, max_queue_size, dummy, random_seeds
    )
    if callback is not None:
        for _, result in generator:
            callback(result)
        return None
    if unordered:
        return [result for _, result in generator]
    return [result for _, result in sorted(generator, key=lambda pair: pair[0])]


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pad (or cut) a list of arrays to a common length along their first ``seq_dims`` axes.

    ``length``: None (the maximum in the batch), an int (``seq_dims == 1``) or a sequence of
    ``seq_dims`` ints. ``mode``: 'post' pads/cuts at the end, 'pre' pads at the start (cutting
    still keeps the first elements, as in bert4keras). Trailing axes beyond ``seq_dims`` must
    agree across inputs. Returns one ``np.ndarray`` of shape ``(len(inputs), *length, *rest)``.
    """
    if mode not in ("post", "pre"):
        raise ValueError("mode must be 'post' or 'pre', got %r" % (mode,))
    if not isinstance(seq_dims, (int, np.integer)) or seq_dims < 1:
        raise ValueError("seq_dims must be a positive int, got %r" % (seq_dims,))
    arrays = [np.asarray(x) for x in inputs]
    if not arrays:
        raise ValueError("sequence_padding needs at least one input sequence")
    for k, x in enumerate(arrays):
        if x.ndim < seq_dims:
            raise ValueError(
                "input %d has %d dimension(s) but seq_dims=%d" % (k, x.ndim, seq_dims)
            )
    rest = arrays[0].shape[seq_dims:]
    for k, x in enumerate(arrays):
        if x.shape[seq_dims:] != rest:
            raise ValueError(
                "inputs must agree beyond the first %d axis/axes: input 0 has trailing shape %s, "
                "input %d has %s" % (seq_dims, rest, k, x.shape[seq_dims:])
            )
    if length is None:
        length = tuple(max(x.shape[d] for x in arrays) for d in range(seq_dims))
    elif np.ndim(length) == 0:
        length = (int(length),) * seq_dims
    else:
        length = tuple(int(n) for n in length)
    if len(length) < seq_dims:
        raise ValueError(
            "length must give %d value(s) (seq_dims=%d), got %r" % (seq_dims, seq_dims, length)
        )
    length = length[:seq_dims]
    if any(n < 0 for n in length):
        raise ValueError("length must be non-negative, got %r" % (length,))

    first = arrays[0]
    dtype = np.result_type(*[x.dtype for x in arrays]) if len(arrays) > 1 else first.dtype
    out = np.full((len(arrays),) + tuple(length) + tuple(rest), value, dtype=dtype)
    for k, x in enumerate(arrays):
        cut = x[tuple(slice(0, n) for n in length)]
        if mode == "post":
            target = tuple(slice(0, s) for s in cut.shape[:seq_dims])
        else:
            target = tuple(slice(n - s, n) for n, s in zip(length, cut.shape[:seq_dims]))
        out[k][target] = cut
    return out


def truncate_sequences(maxlen, indices, *sequences):
    """Cut lists in place until their total length is at most ``maxlen``.

    bert4keras semantics: empty/None sequences are dropped from the result, and each step
    removes the element at ``indices[i]`` (one index for all, or one per remaining sequence) of
    the currently longest sequence (the first one on ties). Returns the remaining sequences.
    Computed in closed form, so long inputs cost O(total length), not O(excess x sequences).
    """
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    if len(indices) < len(sequences):
        raise ValueError(
            "truncate_sequences got %d indices for %d non-empty sequences"
            % (len(indices), len(sequences))
        )
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0, got %r" % (maxlen,))
    lengths = [len(s) for s in sequences]
    excess = sum(lengths) - maxlen
    if excess <= 0:
        return sequences

    # Repeatedly decrementing the longest (first on ties) levels the tallest sequences; do it
    # in bulk: lower all current maxima to the next level, or spread the rest round-robin.
    final = list(lengths)
    while excess > 0:
        top = max(final)
        at_top = [i for i, n in enumerate(final) if n == top]
        below = [n for n in final if n < top]
        step = top - (max(below) if below else 0)
        if step * len(at_top) <= excess:
            for i in at_top:
                final[i] -= step
            excess -= step * len(at_top)
        else:
            rounds, extra = divmod(excess, len(at_top))
            for rank, i in enumerate(at_top):
                final[i] -= rounds + (1 if rank < extra else 0)
            excess = 0

    for seq, index, old, new in zip(sequences, indices, lengths, final):
        removed = old - new
        if removed == 0:
            continue
        index = int(index)
        if index < 0:
            tail = -index - 1  # elements after the popped position that always survive
            if new < tail:
                raise ValueError(
                    "maxlen=%d is too small: popping index %d would need at least %d element(s) "
                    "left in a sequence" % (maxlen, index, tail)
                )
            start = old - tail - removed
        else:
            if new < index:
                raise ValueError(
                    "maxlen=%d is too small: popping index %d would need at least %d element(s) "
                    "left in a sequence" % (maxlen, index, index)
                )
            start = index
        del seq[start:start + removed]
    return sequences


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` into pieces of at most about ``maxlen`` characters.

    The text is split on ``seps[0]`` first (the separator stays at the end of its piece);
    neighbouring pieces are merged while they fit; pieces still too long are split again with
    ``seps[1:]``. ``strips`` are characters stripped from both ends of every piece.
    """
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep = seps[0]
    parts = text.split(sep)
    results, buffer = [], ""
    for k, part in enumerate(parts):
        if buffer and part and len(buffer) + len(part) > maxlen - 1:
            results.extend(text_segmentate(buffer, maxlen, seps[1:], strips))
            buffer = ""
        buffer += part if k == len(parts) - 1 else part + sep
    if buffer:
        results.extend(text_segmentate(buffer, maxlen, seps[1:], strips))
    return results


def is_one_of(x, ys):
    """``x in ys`` by identity (safe for arrays and tensors)."""
    return any(x is y for y in ys)


def softmax(x, axis=-1):
    """NumPy softmax."""
    x = np.asarray(x)
    x = np.exp(x - x.max(axis=axis, keepdims=True))
    return x / x.sum(axis=axis, keepdims=True)


def _map_over_types(fn, types, shapes):
    """Apply ``fn(type, shape)`` over the (tuple/list/dict) structure of ``types``; ``shapes``
    has the same structure, with a list of dimensions (or TensorShape) at each leaf."""
    if isinstance(types, dict):
        return {k: _map_over_types(fn, types[k], shapes[k]) for k in types}
    if isinstance(types, (list, tuple)):
        if len(types) != len(shapes):
            raise ValueError(
                "types and shapes must have the same structure: %r vs %r" % (types, shapes)
            )
        return tuple(_map_over_types(fn, t, s) for t, s in zip(types, shapes))
    return fn(types, shapes)


class DataGenerator:
    """Batch generator template (subclass it and implement ``__iter__(self, random=False)``).

    ``data``: a sequence (shuffled by permutation) or any iterable (shuffled through a buffer
    of ``buffer_size`` items, default ``batch_size * 1000``). ``len()`` is the number of batches
    per epoch when ``data`` has a length. ``sample(random)`` yields ``(is_end, item)``.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError("batch_size must be a positive int, got %r" % (batch_size,))
        self.data = data
        self.batch_size = int(batch_size)
        if hasattr(self.data, "__len__"):
            self.steps = -(-len(self.data) // self.batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or self.batch_size * 1000

    def __len__(self):
        if self.steps is None:
            raise TypeError("the data of this DataGenerator has no length")
        return self.steps

    def sample(self, random=False):
        """Yield ``(is_end, item)`` over one epoch; ``is_end`` marks the last item."""
        if random:
            if self.steps is None:
                items = self._buffer_shuffle()
            else:
                items = (self.data[i] for i in np.random.permutation(len(self.data)))
        else:
            items = iter(self.data)
        try:
            current = next(items)
        except StopIteration:
            return
        for following in items:
            yield False, current
            current = following
        yield True, current

    def _buffer_shuffle(self):
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                yield buffer.pop(np.random.randint(len(buffer)))
        while buffer:
            yield buffer.pop(np.random.randint(len(buffer)))

    def __iter__(self, random=False):
        raise NotImplementedError("subclasses implement __iter__(self, random=False)")

    def _epochs(self, random):
        while True:
            produced = False
            for batch in self.__iter__(random):
                produced = True
                yield batch
            if not produced:
                raise ValueError("DataGenerator.__iter__ produced no batch for a whole epoch")

    def forfit(self, random=True):
        """Endless stream of batches (for ``model.fit(..., steps_per_epoch=len(gen))``).

        A plain iterator (``next()`` gives the batches as ``__iter__`` makes them) that Keras 3
        also accepts as data: list-structured batches and batches of different lengths work
        (see ``bert4keras_ng.data_feed``).
        """
        from bert4keras_ng.data_feed import BatchStream

        return BatchStream(self._epochs(random))

    def fortest(self, random=False):
        """Endless stream of the inputs (first element) of every batch (for ``predict``)."""
        from bert4keras_ng.data_feed import BatchStream

        return BatchStream((batch[0] for batch in self._epochs(random)), inputs_only=True)

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """``tf.data.Dataset`` over ``forfit()``.

        The generator's ``__iter__`` yields single examples here (bert4keras convention); the
        dataset batches them by ``batch_size`` (``padded_batch=True`` pads to ``shapes``).
        ``names`` (a string, a list of strings, or a list of lists) wraps the structure into
        dicts, e.g. ``names=(['Input-Token', 'Input-Segment'], ['label'])``; a target part
        with a single name stays a bare tensor (Keras 3 refuses a one-key dict target).
        """
        import tensorflow as tf

        if names is None:
            def generator():
                return self._epochs(True)
        else:
            if isinstance(names, str):
                wrap = lambda k, v: {k: v}  # noqa: E731
            elif isinstance(names[0], str):
                wrap = lambda k, v: dict(zip(k, v))  # noqa: E731
            else:
                # a target part with one name stays a bare tensor: Keras 3 matches a model's
                # single output positionally and rejects a one-key dict for it
                wrap = lambda k, v: tuple(  # noqa: E731
                    j[0] if n and len(i) == 1 else dict(zip(i, j))
                    for n, (i, j) in enumerate(zip(k, v)))

            def generator():
                for d in self._epochs(True):
                    yield wrap(names, d)

            types = wrap(names, types)
            shapes = wrap(names, shapes)

        # Shapes are leaves here (lists of dims), so map over the structure of ``types``.
        shapes = _map_over_types(lambda t, s: tf.TensorShape(s), types, shapes)
        if padded_batch:
            loose = _map_over_types(
                lambda t, s: tf.TensorSpec(shape=[None] * s.rank, dtype=t), types, shapes
            )
            dataset = tf.data.Dataset.from_generator(generator, output_signature=loose)
            return dataset.padded_batch(self.batch_size, shapes)
        signature = _map_over_types(lambda t, s: tf.TensorSpec(shape=s, dtype=t), types, shapes)
        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return dataset.batch(self.batch_size)

    def to_pydataset(self, random=True, **kwargs):
        """A ``keras.utils.PyDataset`` yielding this generator's batches (for ``model.fit``).

        Batches come from ``__iter__(random)``; ``len()`` is ``len(self)``. Each epoch restarts
        the iteration. ``kwargs`` go to ``PyDataset`` (``workers``, ``max_queue_size``); thread
        workers are safe (batches are still produced in order), ``use_multiprocessing=True`` is
        not supported.
        """
        import threading

        import keras

        generator = self

        class _Batches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__(**kwargs)
                self._cache = {}
                self._next_index = 0
                self._iterator = None
                self._lock = threading.Lock()

            def __len__(self):
                return len(generator)

            def __getitem__(self, index):
                # Batches are produced in order by the generator; requests may come in any
                # order (and from several threads), so earlier ones are kept until asked for.
                with self._lock:
                    if self._iterator is None or (index == 0 and 0 not in self._cache
                                                  and self._next_index > 0):
                        self._iterator = generator.__iter__(random)
                        self._cache, self._next_index = {}, 0
                    while index not in self._cache:
                        if index < self._next_index:
                            raise IndexError("batch %d was already consumed" % index)
                        try:
                            batch = next(self._iterator)
                        except StopIteration:
                            raise IndexError(
                                "batch %d requested but the generator produced only %d"
                                % (index, self._next_index)
                            ) from None
                        self._cache[self._next_index] = batch
                        self._next_index += 1
                    return self._cache.pop(index)

            def on_epoch_end(self):
                with self._lock:
                    self._iterator = None

        return _Batches()


# bert4keras scripts import the decoders from `snippets`; they live in `decoders`.
from bert4keras_ng.decoders import AutoRegressiveDecoder, ViterbiDecoder  # noqa: E402

__all__ += ["AutoRegressiveDecoder", "ViterbiDecoder"]

# bert4keras compatibility: `from bert4keras.snippets import uniout` / `WebServing`.
from bert4keras_ng.compat import uniout  # noqa: E402,F401
from bert4keras_ng.compat.web_serving import WebServing  # noqa: E402

__all__ += ["WebServing"]
