"""Decoders that run outside the graph, in NumPy: Viterbi and autoregressive generation.

- :class:`ViterbiDecoder` decodes the best label path of a linear-chain CRF from per-step
  node scores and the learned transition matrix
  (``ConditionalRandomField.transitions_numpy()``).
- :class:`AutoRegressiveDecoder` is a base class for seq2seq / LM generation: subclass it,
  implement ``predict(self, inputs, output_ids, states)`` decorated with
  :meth:`AutoRegressiveDecoder.wraps`, then call :meth:`~AutoRegressiveDecoder.beam_search`
  or :meth:`~AutoRegressiveDecoder.random_sample`. Semantics follow bert4keras 0.11.5.
"""

import numpy as np

__all__ = ["ViterbiDecoder", "AutoRegressiveDecoder", "softmax"]


def softmax(x, axis=-1):
    """NumPy softmax along ``axis`` (float64 arithmetic for float inputs)."""
    x = np.asarray(x)
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


class ViterbiDecoder:
    """Viterbi decoding of a linear-chain CRF.

    Args:
        trans: transition matrix (num_labels, num_labels); ``trans[i, j]`` scores label ``i``
            followed by label ``j``.
        starts: optional iterable of the labels allowed at the first step (others get -inf).
        ends: optional iterable of the labels allowed at the last step.
    """

    def __init__(self, trans, starts=None, ends=None):
        trans = np.asarray(trans, dtype="float64")
        if trans.ndim != 2 or trans.shape[0] != trans.shape[1]:
            raise ValueError(
                f"ViterbiDecoder: `trans` must be a square matrix (num_labels, num_labels); "
                f"got shape {trans.shape}."
            )
        self.trans = trans
        self.num_labels = trans.shape[0]
        self.non_starts = self._complement(starts, "starts")
        self.non_ends = self._complement(ends, "ends")

    def _complement(self, allowed, name):
        if allowed is None:
            return []
        allowed = set(int(i) for i in allowed)
        bad = [i for i in allowed if not 0 <= i < self.num_labels]
        if bad:
            raise ValueError(
                f"ViterbiDecoder: `{name}` must hold labels in [0, {self.num_labels}); got {bad}."
            )
        return [i for i in range(self.num_labels) if i not in allowed]

    def decode(self, nodes):
        """Best label sequence for node scores ``nodes`` (seq_len, num_labels).

        The input is not modified. Returns an int array (seq_len,).
        """
        nodes = np.array(nodes, dtype="float64")  # a copy: start/end restrictions are local
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(
                f"ViterbiDecoder.decode: `nodes` must have shape (seq_len, {self.num_labels}); "
                f"got {nodes.shape}."
            )
        n = nodes.shape[0]
        if n == 0:
            return np.zeros((0,), dtype=int)
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        score = nodes[0]  # best score of a path ending in each label
        backpointers = np.zeros((n, self.num_labels), dtype=int)
        for t in range(1, n):
            cand = score[:, None] + self.trans  # (prev, cur)
            backpointers[t] = np.argmax(cand, axis=0)
            score = cand[backpointers[t], np.arange(self.num_labels)] + nodes[t]
        path = np.zeros(n, dtype=int)
        path[-1] = int(np.argmax(score))
        for t in range(n - 1, 0, -1):
            path[t - 1] = backpointers[t, path[t]]
        return path


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders (beam search and random sampling).

    Args:
        start_id: id fed as the first output token, or None to start from an empty prefix.
        end_id: id that ends a sequence.
        maxlen: maximum number of generated tokens.
        minlen: minimum length (in output ids, including ``start_id``) before an end token can
            finish a sequence.

    Fast path: ``AutoRegressiveDecoder(start_id, end_id, maxlen, model=model)`` with a model
    built by bert4keras_ng (``application='lm'`` / ``'unilm'``, GPT, T5 decoder) and no
    ``predict`` of your own runs :class:`bert4keras_ng.generation.Generator` (key/value cache,
    compiled loop; generated tokens get segment 1 under a UniLM mask, else 0). Otherwise:

    Subclasses implement ``predict(self, inputs, output_ids, states)`` returning the scores
    of the next token, shape (batch, vocab), for the batch of prefixes ``output_ids``; decorate
    it with ``@AutoRegressiveDecoder.wraps(default_rtype=..., use_states=...)``:
    ``default_rtype='probas'`` when it returns probabilities, ``'logits'`` when it returns
    unnormalised logits; with ``use_states=True`` it returns ``(scores, states)`` and receives
    the previous ``states`` back (the decoder never reorders them).
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1, model=None):
        if int(maxlen) < 1:
            raise ValueError(f"AutoRegressiveDecoder: `maxlen` must be >= 1; got {maxlen}.")
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = int(maxlen)
        self.minlen = int(minlen)
        self.models = {}
        self.generator = None
        if model is not None:  # fast path: cached, compiled (bert4keras_ng.generation)
            if type(self).predict is not AutoRegressiveDecoder.predict:
                raise ValueError(
                    "AutoRegressiveDecoder: pass either model= (cached generation) or your own "
                    "predict(), not both.")
            from bert4keras_ng.generation import Generator

            self.generator = Generator(model, end_id=end_id, maxlen=maxlen, minlen=minlen,
                                       start_id=start_id)
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[start_id]], dtype=int)

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorator completing a user ``predict``.

        The decorated method takes ``(inputs, output_ids, states, temperature=1,
        rtype=default_rtype)`` and returns ``(scores, states)``. ``rtype='probas'`` gives
        probabilities, ``rtype='logits'`` gives log-probabilities (or, when the user function
        returns logits, temperature-scaled log-softmax). ``temperature`` divides logits, or
        raises probabilities to ``1 / temperature`` and renormalises.
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError(
                f"wraps: `default_rtype` must be 'probas' or 'logits'; got {default_rtype!r}."
            )

        def decorator(predict):
            def wrapped(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(
                        f"predict: `rtype` must be 'probas' or 'logits'; got {rtype!r}."
                    )
                result = predict(self, inputs, output_ids, states)
                scores, new_states = result if use_states else (result, None)
                scores = np.asarray(scores, dtype="float64")
                if default_rtype == "logits":
                    probas = softmax(scores / temperature, axis=-1)
                elif temperature != 1:
                    probas = np.power(scores, 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                else:
                    probas = scores
                if rtype == "probas":
                    return probas, new_states
                return np.log(probas + 1e-12), new_states

            wrapped.__name__ = getattr(predict, "__name__", "predict")
            wrapped.__doc__ = getattr(predict, "__doc__", None)
            return wrapped

        return decorator

    def last_token(self, model):
        """A cached Keras model with the same inputs returning only the last step's outputs."""
        if model not in self.models:
            import keras

            outputs = [
                keras.layers.Lambda(lambda x: x[:, -1], name=f"Last-Token-{i}")(out)
                for i, out in enumerate(model.outputs)
            ]
            self.models[model] = keras.Model(model.inputs, outputs)
        return self.models[model]

    def predict(self, inputs, output_ids, states=None, temperature=1, rtype="probas"):
        """Next-token scores; to be implemented by subclasses (decorated with ``wraps``)."""
        raise NotImplementedError("Subclasses must implement predict (decorated with wraps).")

    @staticmethod
    def _check_inputs(inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                "`inputs` must be a list/tuple of per-example arrays (one entry per model "
                f"input); got {type(inputs).__name__}."
            )
        return [np.array([i]) for i in inputs]

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        """Beam search with beam size ``topk``; returns the best id sequence (1-D array).

        A sequence is finished when it ends with ``end_id`` and contains at least
        ``min_ends`` of them; the search returns as soon as the best-scoring beam is finished
        (and at least ``minlen`` ids are out), otherwise finished beams are dropped and the
        beam shrinks. At ``maxlen`` steps the best beam is returned.
        """
        if int(topk) < 1:
            raise ValueError(f"beam_search: `topk` must be >= 1; got {topk}.")
        topk = int(topk)
        if self.generator is not None:
            self._check_inputs(inputs)
            return self.generator.beam_search([inputs], topk, temperature=temperature,
                                              min_ends=min_ends)[0]
        inputs = self._check_inputs(inputs)
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            scores = output_scores.reshape((-1, 1)) + scores
            k = min(topk, scores.size)
            flat = scores.ravel()
            indices = np.argpartition(flat, -k)[-k:]
            rows, cols = np.divmod(indices, scores.shape[1])
            output_ids = np.concatenate([output_ids[rows], cols.reshape((-1, 1))], axis=1)
            # every row holds the same example; following the parent rows keeps the counts
            # aligned even when fewer than `topk` candidates exist
            inputs = [i[rows] for i in inputs]
            output_scores = flat[indices]
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(axis=1)
            if output_ids.shape[1] >= self.minlen:
                best = int(output_scores.argmax())
                if is_end[best] and end_counts[best] >= min_ends:
                    return output_ids[best]
                unfinished = ~is_end | (end_counts < min_ends)
                if not unfinished.all():
                    inputs = [i[unfinished] for i in inputs]
                    output_ids = output_ids[unfinished]
                    output_scores = output_scores[unfinished]
                    topk = int(unfinished.sum())
        return output_ids[output_scores.argmax()]

    def random_sample(
        self, inputs, n, topk=None, topp=None, states=None, temperature=1, min_ends=1, rng=None
    ):
        """Sample ``n`` sequences; returns a list of 1-D id arrays.

        ``topk`` restricts each step to the ``topk`` most probable tokens, ``topp`` to the
        smallest most-probable set whose probability reaches ``topp`` (nucleus sampling; ``topp``
        >= 1 truncates nothing, as in bert4keras); both renormalise. Finished sequences (ending with ``end_id``, at least ``min_ends`` ends,
        at least ``minlen`` ids) are collected in the order they finish; unfinished ones are
        appended after ``maxlen`` steps. ``rng`` (a ``numpy.random.Generator`` or a seed)
        makes sampling reproducible; None uses NumPy's global random state like bert4keras.
        """
        if int(n) < 1:
            raise ValueError(f"random_sample: `n` must be >= 1; got {n}.")
        if topk is not None and int(topk) < 1:
            raise ValueError(f"random_sample: `topk` must be None or >= 1; got {topk}.")
        if topp is not None and not float(topp) > 0:
            raise ValueError(f"random_sample: `topp` must be None or > 0; got {topp}.")
        if topp is not None and float(topp) >= 1:  # bert4keras: topp >= 1 keeps every token
            topp = None
        if rng is not None and not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        n = int(n)
        if self.generator is not None:
            self._check_inputs(inputs)
            if rng is None:
                seed = int(np.random.randint(0, 2 ** 31 - 1))
            else:
                seed = int(rng.integers(0, 2 ** 31 - 1))
            return self.generator.random_sample([inputs], n, topk=topk, topp=topp,
                                                temperature=temperature, min_ends=min_ends,
                                                seed=seed)[0]
        inputs = self._check_inputs(inputs)
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            if topk is not None:
                k = min(int(topk), probas.shape[1])
                k_indices = np.argpartition(probas, -k, axis=1)[:, -k:]
                probas = np.take_along_axis(probas, k_indices, axis=1)
                probas = probas / probas.sum(axis=1, keepdims=True)
            if topp is not None:
                p_indices = np.argsort(-probas, axis=1, kind="stable")
                probas = np.take_along_axis(probas, p_indices, axis=1)
                cumulative = np.cumsum(probas, axis=1)
                # drop every token after the one at which the cumulative mass reaches topp
                drop = np.zeros_like(probas, dtype=bool)
                drop[:, 1:] = cumulative[:, :-1] >= topp
                probas = np.where(drop, 0.0, probas)
                probas = probas / probas.sum(axis=1, keepdims=True)
            if rng is None:
                sample_ids = np.array([np.random.choice(len(p), p=p) for p in probas])
            else:
                sample_ids = np.array([rng.choice(len(p), p=p) for p in probas])
            sample_ids = sample_ids.reshape((-1, 1))
            if topp is not None:
                sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
            if topk is not None:
                sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
            output_ids = np.concatenate([output_ids, sample_ids], axis=1)
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(axis=1)
            if output_ids.shape[1] >= self.minlen:
                finished = is_end & (end_counts >= min_ends)
                if finished.any():
                    results.extend(output_ids[finished])
                    keep = ~finished
                    inputs = [i[keep] for i in inputs]
                    output_ids = output_ids[keep]
                    if len(output_ids) == 0:
                        break
        results.extend(output_ids)
        return results
