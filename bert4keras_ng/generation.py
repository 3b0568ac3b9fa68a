"""Fast, exact generation: a key/value cache per attention layer and one compiled decode loop.

Two parts, one job each:

- :class:`CachedModel` runs a built bert4keras_ng model (``application='lm'`` / ``'unilm'`` on
  any encoder family, the GPT family, a T5 decoder) *incrementally*: it walks the model's own
  Keras graph and, at the few layers that mix positions (self-attention, the LM / UniLM masks,
  position embeddings), calls their cached form (``MultiHeadAttention.call_cached``,
  ``GatedAttentionUnit.call_cached``) with the
  positions of the new tokens. Every other layer is position-wise and is called as is. There
  is no second copy of the model: the same layers and weights, fed one new position per step.
  Its interface is the only thing the decode loop sees:
  ``logits, state = prefill(prompt, segments, pads, context, length)`` and
  ``logits, state = step(tokens, state)``.
- :class:`Generator` holds the decode loops (greedy, beam search, sampling), each compiled as a
  whole (``tf.function(jit_compile=True)`` on TensorFlow, ``jax.jit`` on JAX), batched over
  prompts of different lengths (rows are left-padded internally; the cached positions of each
  row start at its first real token, so a padded row computes what the unpadded prompt
  computes). The search semantics are bert4keras 0.11.5's ``AutoRegressiveDecoder``'s.

(Leaky) ReRoPE and log-n query scaling (``rerope_window`` / ``logn_train_length`` builds) run
cached too: a ReRoPE layer caches its keys before RoPE and scores each new query against them at
its slot (only relative positions matter, so left padding changes nothing); log-n scales each
query by its row's true position.

Cache memory: for each self-attention layer, batch · (prompt + maxlen) · heads · (key_size +
head_size) values in the layer's compute dtype (:meth:`CachedModel.cache_bytes`); beam search
multiplies the batch by the beam size.
"""

import math

import keras
import numpy as np
from keras import ops

from bert4keras_ng.layers.attention import GatedAttentionUnit, MultiHeadAttention
from bert4keras_ng.layers.embeddings import (
    PositionEmbedding,
    RelativePositionEmbedding,
    SinusoidalPositionEmbedding,
)
from bert4keras_ng.models.auxiliary import AttentionMask

__all__ = ["CachedModel", "Generator", "POSITION_WISE_LAYERS", "left_pad"]

# Layer types known to act on each position independently: the cached path calls them on the
# new positions only. A model holding any other layer between its token input and its output
# cannot be run incrementally (CachedModel says which layer).
POSITION_WISE_LAYERS = (
    keras.layers.Dense,
    keras.layers.Embedding,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.LayerNormalization,
    keras.layers.Masking,
)


def _position_wise_types():
    """Our own position-wise layers (imported lazily: the layer package imports this module's
    siblings)."""
    from bert4keras_ng import layers as L

    names = ("Embedding", "LayerNormalization", "FeedForward", "ScaleOffset", "Dropout", "Add")
    own = tuple(getattr(L, n) for n in names if hasattr(L, n))
    from bert4keras_ng.models.auxiliary import Add

    return POSITION_WISE_LAYERS + own + (Add,)


def _role(tensor):
    """'token', 'segment', 'position' or 'context' for a model input, from its layer name."""
    name = tensor._keras_history[0].name
    if name.endswith("Input-Token"):
        return "token"
    if name.endswith("Input-Segment"):
        return "segment"
    if name.endswith("Input-Position"):
        return "position"
    return "context"


class CachedModel:
    """Incremental runner of a built model through per-layer key/value caches.

    Args:
        model: a Keras functional model built by bert4keras_ng whose chosen output is the
            next-token distribution (the MLM / LM head of ``application='lm'`` or ``'unilm'``,
            a GPT family model, a T5 decoder).
        output: index of that output when the model has several (default: the last).
        segment_id: segment id of generated tokens (default 1 with a UniLM mask, else 0).

    Inputs named ``*Input-Token`` are the tokens, ``*Input-Segment`` their segments; other
    inputs (T5's encoder output, a conditional LayerNorm's condition) are context, fed whole.
    """

    def __init__(self, model, output=None, segment_id=None):
        outputs = model.outputs
        index = len(outputs) - 1 if output is None else int(output)
        if not 0 <= index < len(outputs):
            raise ValueError(f"CachedModel: output={output} but the model has {len(outputs)} "
                             "output(s).")
        self.model = model
        self.output_tensor = outputs[index]
        roles = [_role(t) for t in model.inputs]
        if "position" in roles:
            raise ValueError("CachedModel: models built with custom_position_ids take their "
                             "positions from an input; the cached path computes positions "
                             "itself and cannot run them. Use the uncached decoder.")
        if roles.count("token") != 1:
            raise ValueError("CachedModel: expected exactly one input named '...Input-Token', got "
                             f"inputs {[t._keras_history[0].name for t in model.inputs]}.")
        self.roles = roles
        self.nodes = _nodes_to(model, self.output_tensor)
        self._analyse(segment_id)

    # ---- graph analysis (Python, once) --------------------------------------------------
    def _analyse(self, segment_id):
        position_wise = _position_wise_types()
        dynamic = {id(t) for t, r in zip(self.model.inputs, self.roles) if r in ("token", "segment")}
        self.self_attention = []  # nodes whose cache this model keeps
        self.cross_attention = []
        self.mask_kind = None
        self.cross_position = False
        self.max_positions = float("inf")  # learned position table rows
        last_mixing = -1
        for i, node in enumerate(self.nodes):
            op = node.operation
            ins = node.input_tensors
            if not any(id(t) in dynamic for t in ins):
                continue  # context only: run on the whole context every call
            dynamic.update(id(t) for t in node.outputs)
            if isinstance(op, MultiHeadAttention):
                q, k, v = ins[:3]
                if q is k and k is v:
                    self.self_attention.append(node)
                elif id(k) in dynamic or id(v) in dynamic:
                    raise ValueError(f"CachedModel: attention layer {op.name!r} attends to keys "
                                     "computed from the tokens but not equal to its queries; "
                                     "only self-attention can be cached.")
                else:
                    self.cross_attention.append(node)
                if op.return_attention_scores:
                    raise ValueError(f"CachedModel: {op.name!r} returns attention scores "
                                     "(residual_attention_scores); not supported when cached.")
                last_mixing = i
            elif isinstance(op, GatedAttentionUnit):
                if not op.self_attention:
                    raise ValueError(f"CachedModel: {op.name!r} is a cross-attention GAU; only "
                                     "self-attention can be cached.")
                self.self_attention.append(node)
                last_mixing = i
            elif isinstance(op, AttentionMask):
                if self.mask_kind not in (None, op.kind):
                    raise ValueError("CachedModel: the model mixes LM and UniLM masks.")
                self.mask_kind = op.kind
                last_mixing = i
            elif isinstance(op, (PositionEmbedding, SinusoidalPositionEmbedding)):
                if op.custom_position_ids:
                    raise ValueError(f"CachedModel: {op.name!r} uses custom position ids.")
                if isinstance(op, PositionEmbedding) and not op.hierarchical:
                    self.max_positions = min(self.max_positions, op.input_dim)
                last_mixing = i
            elif isinstance(op, RelativePositionEmbedding):
                if id(ins[1]) not in dynamic:
                    self.cross_position = True
                last_mixing = i
            elif not isinstance(op, position_wise):
                raise ValueError(
                    f"CachedModel: layer {op.name!r} ({type(op).__name__}) lies between the "
                    "tokens and the output and is not known to be position-wise, so the model "
                    "cannot be run one position at a time. Use the uncached decoder (a "
                    "predict() of your own), or add the type to generation.POSITION_WISE_LAYERS "
                    "if it is position-wise.")
        if not self.self_attention:
            raise ValueError("CachedModel: no self-attention layer between the tokens and the "
                             "output; nothing to cache.")
        self.dynamic = dynamic
        self.last_mixing = last_mixing
        if segment_id is None:
            segment_id = 1 if self.mask_kind == "unilm" else 0
        self.segment_id = int(segment_id)
        # the output: logits when the head ends in a softmax (its input) or a linear activation
        head = self.output_tensor._keras_history[0]
        node = head._inbound_nodes[self.output_tensor._keras_history[1]]
        self.logits_node = None
        self.output_is_logits = False
        self.dense_head = isinstance(head, keras.layers.Dense) and getattr(
            head.activation, "__name__", "") == "softmax"  # T5 1.1's untied Decoder-Output-LM
        if self.dense_head:
            self.logits_node = node
            self.output_is_logits = True
        elif isinstance(head, keras.layers.Activation):
            act = getattr(head.activation, "__name__", "")
            if act == "softmax":
                self.logits_node = node
                self.output_is_logits = True
            elif act == "linear":
                self.output_is_logits = True

    def cache_bytes(self, batch_size, length):
        """Bytes of the key/value caches for ``batch_size`` rows of ``length`` positions."""
        total = 0
        for node in self.self_attention:
            layer = node.operation
            itemsize = np.dtype(keras.backend.standardize_dtype(layer.compute_dtype)).itemsize
            if isinstance(layer, GatedAttentionUnit):
                width = layer.key_size + layer.units
            else:
                width = layer.heads * (layer.dk + layer.dv)
            total += batch_size * length * width * itemsize
        return total + batch_size * length  # the boolean key mask

    # ---- the interface of the decode loop ------------------------------------------------
    def prefill(self, tokens, segments, pads, context, length):
        """Run left-padded prompts (b, n) with ``pads`` (b,) leading pad slots through fresh
        caches of ``length`` slots. Returns (logits of the last slot (b, V) float32, state)."""
        b = ops.shape(tokens)[0]
        state = {
            "index": ops.zeros((), "int32"),
            "pads": ops.cast(pads, "int32"),
            "key_mask": ops.zeros((b, length), "bool"),
            "count": ops.zeros((b, length), "int32"),
            "caches": [node.operation.init_cache(b, length) for node in self.self_attention],
            "context": list(context),
            "cross": [],  # [kw, vw, key mask] per cross-attention layer, filled by the walk
        }
        return self._run(tokens, segments, state, length)

    def step(self, tokens, state):
        """Feed the next tokens (b, n) of every row; returns (logits (b, V), new state)."""
        segments = ops.full(ops.shape(tokens), self.segment_id, "int32")
        return self._run(tokens, segments, state, ops.shape(state["key_mask"])[1])

    @staticmethod
    def reorder(state, rows, same_context=False):
        """State with its batch rows gathered by ``rows``; ``same_context``: the rows only move
        between copies of one prompt (beam search), whose context inputs are equal."""
        new = dict(state)
        for key in ("pads", "key_mask", "count"):
            new[key] = ops.take(state[key], rows, axis=0)
        new["caches"] = [[ops.take(c, rows, axis=0) for c in kv] for kv in state["caches"]]
        if not same_context:
            new["context"] = [ops.take(c, rows, axis=0) for c in state["context"]]
            new["cross"] = [[ops.take(c, rows, axis=0) for c in kv] for kv in state["cross"]]
        return new

    # ---- the graph walk ------------------------------------------------------------------
    def _run(self, tokens, segments, state, length):
        tokens = ops.cast(tokens, "int32")
        segments = ops.cast(segments, "int32")
        n = ops.shape(tokens)[1]
        index = state["index"]
        slots = index + ops.arange(n, dtype="int32")[None, :]  # (1, n)
        positions = slots - state["pads"][:, None]  # (b, n) true positions of the new tokens
        real = positions >= 0
        positions = ops.maximum(positions, 0)
        # key mask of the new tokens: bert4keras' rule (id != 0, except at position 0), pads off
        keep = ops.logical_and(real, ops.logical_or(tokens != 0, positions == 0))
        key_mask = ops.slice_update(state["key_mask"], (0, index), keep)
        count = state["count"]
        if self.mask_kind == "unilm":
            previous = ops.where(index > 0,
                                 ops.take(count, ops.maximum(index - 1, 0), axis=1), 0)
            new_count = previous[:, None] + ops.cumsum(ops.where(real, segments, 0), axis=1)
            count = ops.slice_update(count, (0, index), new_count)
        else:
            new_count = None
        env = {}
        context = iter(state["context"])
        for t, role in zip(self.model.inputs, self.roles):
            env[id(t)] = {"token": tokens, "segment": segments}.get(role) if role != "context" \
                else next(context)
        caches = list(state["caches"])
        cache_of = {id(node): i for i, node in enumerate(self.self_attention)}
        cross = list(state["cross"])
        fresh = not cross  # the first call (prefill) fills the cross-attention caches
        cross_of = {id(node): i for i, node in enumerate(self.cross_attention)}
        for i, node in enumerate(self.nodes):
            op = node.operation
            if node is self.logits_node:
                break
            args, kwargs = node.arguments.fill_in(env)
            if id(node) in cache_of:
                j = cache_of[id(node)]
                x = args[0]  # MHA: [q, k, v, (bias), (position)] with q = k = v; GAU: [x, ...]
                x = [x[0]] + list(x[3:]) if isinstance(op, MultiHeadAttention) else (
                    list(x) if isinstance(x, (list, tuple)) else [x])
                out, caches[j] = op.call_cached(x, caches[j], index, key_mask,
                                                a_bias=kwargs.get("a_bias"),
                                                p_bias=kwargs.get("p_bias"),
                                                position_options=kwargs.get("position_options"),
                                                positions=positions)
            elif id(node) in cross_of:
                x = args[0]  # [q, k, v, (bias), (position)] with k, v from the context
                if fresh:
                    mask = keras.src.backend.get_keras_mask(x[2])
                    if mask is None:  # rows of a stacked context are zero-padded
                        mask = ops.any(ops.not_equal(x[2], 0), axis=-1)
                    cross.append(op.cache_context(x[1], x[2]) + [ops.cast(mask, "bool")])
                kw, vw, mask = cross[cross_of[id(node)]]
                out = op.call_context_cached([x[0]] + list(x[3:]), [kw, vw], mask,
                                             a_bias=kwargs.get("a_bias"),
                                             p_bias=kwargs.get("p_bias"))
            elif not any(id(t) in self.dynamic for t in node.outputs):
                out = op(*args, **kwargs)  # context only
            elif isinstance(op, AttentionMask):
                if op.kind == "lm":  # slot j visible to the query in slot index + i
                    out = (ops.arange(length, dtype="int32")[None, None, :]
                           <= slots[:, :, None])
                else:
                    out = count[:, None, :] <= new_count[:, :, None]
            elif isinstance(op, (PositionEmbedding, SinusoidalPositionEmbedding)):
                out = op.call_at(args[0], positions)
            elif isinstance(op, RelativePositionEmbedding):  # rows of the new query slots
                keys = node.input_tensors[1]
                n_k = length if id(keys) in self.dynamic else ops.shape(args[0][1])[1]
                rows = ops.slice(op.position_ids(length, n_k), (index, 0), (n, n_k))
                out = ops.cast(ops.take(op.embeddings, rows, axis=0), op.compute_dtype)
            else:
                out = op(*args, **kwargs)
            for ref, value in zip(node.outputs, _flatten(out)):
                env[id(ref)] = value
            if i == self.last_mixing:  # only the last position is needed from here on
                for ref in list(env):
                    if ref in self.dynamic and len(env[ref].shape) == 3:
                        env[ref] = env[ref][:, -1:]
        if self.logits_node is not None:  # the input of the final softmax
            args, _ = self.logits_node.arguments.fill_in(env)
            out = args[0]
            if self.dense_head:
                head = self.logits_node.operation
                out = ops.matmul(ops.cast(out, head.compute_dtype),
                                 ops.cast(head.kernel, head.compute_dtype))
                if head.use_bias:
                    out = out + ops.cast(head.bias, head.compute_dtype)
        else:
            out = env[id(self.output_tensor)]
        out = ops.cast(out[:, -1], "float32")
        if not self.output_is_logits:  # probabilities
            out = ops.log(ops.maximum(out, 1e-12))
        new_state = dict(state, index=index + n, key_mask=key_mask, count=count, caches=caches,
                         cross=cross)
        return out, new_state


def _flatten(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _nodes_to(model, output):
    """The model's nodes that the output depends on, in an order that respects dependencies."""
    needed = set()
    stack = [output]
    while stack:
        t = stack.pop()
        op, node_index, _ = t._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input_tensors)
    ordered = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if id(node) in needed and not node.is_input:
                ordered.append(node)
    return ordered


# ---- batching -------------------------------------------------------------------------------
def left_pad(sequences, length=None, value=0):
    """Stack 1-D sequences into (b, length) with the padding on the left; returns (array, pads)."""
    lengths = [len(s) for s in sequences]
    length = max(lengths) if length is None else length
    out = np.full((len(sequences), length), value, dtype="int32")
    for row, s in enumerate(sequences):
        if len(s):
            out[row, length - len(s):] = s
    return out, np.array([length - n for n in lengths], dtype="int32")


def _bucket(n, multiple=8):
    return max(multiple, -(-n // multiple) * multiple)


def _compile(fn, jit_compile=True):
    """The whole function compiled for the active backend (a TF graph without XLA when
    jit_compile=False: quicker to build, slower to run)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=False,
                           autograph=False)  # the loop is an explicit while_loop
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _is_end(tokens, end_ids):
    hit = ops.zeros(ops.shape(tokens), "bool")
    for e in end_ids:
        hit = ops.logical_or(hit, tokens == e)
    return hit


class Generator:
    """Batched, cached, compiled generation with bert4keras' search semantics.

    Args:
        model: a built bert4keras_ng model (or a :class:`CachedModel`).
        end_id: id, or list of ids, that end a sequence (None: run ``maxlen`` steps).
        maxlen: number of tokens to generate at most.
        minlen: minimum length, counted like bert4keras (output ids including ``start_id``)
            before an end id can finish a sequence.
        start_id: id fed first as the output (None: generation continues the prompt).
        output: which model output is the next-token distribution (default: the last).
        jit_compile: compile each decode loop with XLA (TF) / jax.jit; False runs a plain
            TF graph (quicker to build, slower per token).

    Prompts are lists (one per example) of per-input sequences, e.g. ``[token_ids,
    segment_ids]`` as bert4keras' ``inputs``, or bare token-id sequences; context inputs (T5's
    encoder output) are arrays (n, d) in the model's input order. ``padding_side`` only
    describes how 2-D prompt arrays are padded (``'right'``: trailing zeros, ``'left'``:
    leading zeros); lists of sequences carry no padding.
    """

    def __init__(self, model, end_id=None, maxlen=32, minlen=1, start_id=None, output=None,
                 jit_compile=True):
        self.cached = model if isinstance(model, CachedModel) else CachedModel(model, output)
        self.end_ids = [] if end_id is None else [int(e) for e in np.atleast_1d(end_id)]
        if int(maxlen) < 1:
            raise ValueError(f"Generator: maxlen must be >= 1; got {maxlen}.")
        self.maxlen = int(maxlen)
        self.minlen = int(minlen)
        self.start_id = start_id
        self.jit_compile = jit_compile
        self._compiled = {}

    # ---- inputs ----------------------------------------------------------------------------
    def _prepare(self, prompts, padding_side="right"):
        roles = self.cached.roles
        n_seq = sum(r in ("token", "segment") for r in roles)
        if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
            prompts = [[_strip(row, padding_side)] for row in prompts]
        rows = []
        for p in prompts:
            p = [p] if np.ndim(p[0]) == 0 else list(p)
            if len(p) > len(roles):
                raise ValueError(
                    f"Generator: each prompt holds at most {len(roles)} arrays (the model "
                    f"inputs: {', '.join(roles)}); got {len(p)}.")
            rows.append(p)
        tokens, segments, contexts = [], [], []
        for p in rows:
            items = dict(zip(roles, p))  # missing tokens: empty; missing segments: zeros
            if roles.count("context") > len([r for r in roles[:len(p)] if r == "context"]):
                raise ValueError(f"Generator: the model takes context input(s) first "
                                 f"({', '.join(roles)}); each prompt must start with them.")
            t = np.asarray(items.get("token", []), dtype="int32").reshape(-1)
            s = np.asarray(items.get("segment", np.zeros_like(t)), dtype="int32").reshape(-1)
            if len(s) != len(t):
                raise ValueError(f"Generator: a prompt has {len(t)} token ids but {len(s)} "
                                 "segment ids.")
            if self.start_id is not None:
                t = np.append(t, self.start_id)
                s = np.append(s, self.cached.segment_id)
            if len(t) == 0:
                raise ValueError("Generator: an empty prompt needs start_id.")
            tokens.append(t)
            segments.append(s)
            contexts.append([np.asarray(c) for c, r in zip(p, roles) if r == "context"])
        length = max(len(t) for t in tokens)
        if length + self.maxlen > self.cached.max_positions:
            raise ValueError(
                f"Generator: a prompt of {length} tokens plus maxlen={self.maxlen} exceeds the "
                f"model's {self.cached.max_positions} learned positions; shorten the prompt or "
                "maxlen.")
        if self.cached.cross_position:  # decoder slots = positions: no padding at all
            if min(len(t) for t in tokens) != length:
                raise ValueError("Generator: this model's cross-attention position bias needs "
                                 "decoder prompts of one length; got lengths "
                                 f"{sorted(set(len(t) for t in tokens))}.")
        else:
            length = _bucket(length)  # fewer distinct shapes to compile
        tok, pads = left_pad(tokens, length)
        seg, _ = left_pad(segments, length)
        n_context = roles.count("context")
        if any(len(c) != n_context for c in contexts):
            raise ValueError(f"Generator: the model takes {n_context} context input(s); pass "
                             "each prompt as the full list of model inputs.")
        context = [_stack_context([c[i] for c in contexts]) for i in range(n_context)]
        return tok, seg, pads, context, n_seq

    def _function(self, key, builder):
        if key not in self._compiled:
            self._compiled[key] = _compile(builder(), self.jit_compile)
        return self._compiled[key]

    def cache_bytes(self, batch_size, prompt_length):
        """Key/value cache size for a batch (times the beam size for beam search)."""
        return self.cached.cache_bytes(batch_size, _bucket(prompt_length) + self.maxlen)

    # ---- greedy and sampling ---------------------------------------------------------------
    def greedy(self, prompts, padding_side="right"):
        """The most probable continuation of every prompt; a list of 1-D id arrays (ending with
        the end id when one was generated). Equals beam search with one beam."""
        return self._sample_loop(prompts, 1, None, None, 1.0, 1, None, padding_side, greedy=True)

    def random_sample(self, prompts, n=1, topk=None, topp=None, temperature=1.0, min_ends=1,
                      seed=None, padding_side="right"):
        """``n`` samples per prompt (a list of lists of 1-D id arrays), as bert4keras'
        ``random_sample``: ``topk`` keeps the k most probable tokens, ``topp`` the smallest
        most-probable set reaching mass ``topp`` (``topp >= 1``: no truncation), both
        renormalised; samples of a prompt are ordered by the step they finished at. A fixed
        ``seed`` gives a fixed result."""
        if topk is not None and int(topk) < 1:
            raise ValueError(f"random_sample: topk must be None or >= 1; got {topk}.")
        if topp is not None and not float(topp) > 0:
            raise ValueError(f"random_sample: topp must be None or > 0; got {topp}.")
        if topp is not None and float(topp) >= 1:
            topp = None
        if seed is None:
            seed = int(np.random.randint(0, 2 ** 31 - 1))
        return self._sample_loop(prompts, int(n), topk, topp, float(temperature), int(min_ends),
                                 int(seed), padding_side, greedy=False)

    def _sample_loop(self, prompts, n, topk, topp, temperature, min_ends, seed, padding_side,
                     greedy):
        tok, seg, pads, context, _ = self._prepare(prompts, padding_side)
        b = tok.shape[0]
        key = ("sample", tok.shape, tuple(c.shape for c in context), n, topk, topp, temperature,
               min_ends, greedy)
        fn = self._function(key, lambda: self._build_sample(n, topk, topp, temperature, min_ends,
                                                            greedy, tok.shape[1]))
        out, finish = fn(tok, seg, pads, context, np.int32(seed or 0))
        out, finish = ops.convert_to_numpy(out), ops.convert_to_numpy(finish)
        results = []
        for i in range(b):
            rows = list(range(i * n, (i + 1) * n))
            rows.sort(key=lambda r: finish[r])  # stable: by finishing step, then row
            results.append([_trim(out[r], finish[r], self.maxlen, self.start_id) for r in rows])
        return [r[0] for r in results] if greedy else results

    def _build_sample(self, n, topk, topp, temperature, min_ends, greedy, prompt_length):
        cached, maxlen, end_ids = self.cached, self.maxlen, self.end_ids
        length = prompt_length + maxlen
        n_start = 0 if self.start_id is None else 1
        minlen = self.minlen

        def run(tok, seg, pads, context, seed):
            logits, state = cached.prefill(tok, seg, pads, context, length)
            rows = ops.repeat(ops.arange(ops.shape(tok)[0], dtype="int32"), n)
            if n > 1:
                logits = ops.take(logits, rows, axis=0)
                state = cached.reorder(state, rows)
            b = ops.shape(logits)[0]
            if not greedy:
                uniforms = _uniforms(seed, (maxlen, b))
            out = ops.zeros((b, maxlen), "int32")
            ends = ops.zeros((b,), "int32")
            finish = ops.full((b,), maxlen, "int32")

            def cond(t, out, ends, finish, logits, state):
                return ops.logical_and(t < maxlen, ops.any(finish >= maxlen))

            def body(t, out, ends, finish, logits, state):
                if greedy:
                    token = ops.cast(ops.argmax(logits, axis=-1), "int32")
                else:
                    u = ops.take(uniforms, t, axis=0)
                    token = _sample(logits, temperature, topk, topp, u)
                out = ops.slice_update(out, (0, t), token[:, None])
                hit = _is_end(token, end_ids)
                ends = ends + ops.cast(hit, "int32")
                done = ops.logical_and(hit, ends >= min_ends)
                done = ops.logical_and(done, t + 1 + n_start >= minlen)
                finish = ops.where(ops.logical_and(done, finish >= maxlen), t, finish)
                logits, state = cached.step(token[:, None], state)
                return t + 1, out, ends, finish, logits, state

            loop = ops.while_loop(cond, body, (ops.zeros((), "int32"), out, ends, finish,
                                               logits, state))
            return loop[1], loop[3]

        return run

    # ---- beam search -----------------------------------------------------------------------
    def beam_search(self, prompts, topk, temperature=1.0, min_ends=1, length_penalty=0.0,
                    padding_side="right"):
        """Beam search with ``topk`` beams for every prompt; a list of 1-D id arrays.

        bert4keras semantics: at each step the ``topk`` best continuations are kept; when the
        best one is finished (ends with an end id, ``min_ends`` of them, ``minlen`` reached) it
        is the answer, otherwise finished beams are dropped and the beam shrinks; after
        ``maxlen`` steps the best live beam is the answer. ``length_penalty`` α > 0 instead
        keeps finished beams as candidates ranked by score / length^α and returns the best of
        them once no beam is live (or after ``maxlen`` steps).
        """
        topk = int(topk)
        if topk < 1:
            raise ValueError(f"beam_search: topk must be >= 1; got {topk}.")
        tok, seg, pads, context, _ = self._prepare(prompts, padding_side)
        key = ("beam", tok.shape, tuple(c.shape for c in context), topk, float(temperature),
               int(min_ends), float(length_penalty))
        fn = self._function(key, lambda: self._build_beam(topk, float(temperature),
                                                          int(min_ends), float(length_penalty),
                                                          tok.shape[1]))
        out, finish = fn(tok, seg, pads, context)
        out, finish = ops.convert_to_numpy(out), ops.convert_to_numpy(finish)
        return [_trim(out[i], finish[i], self.maxlen, self.start_id) for i in range(len(out))]

    def _build_beam(self, k, temperature, min_ends, length_penalty, prompt_length):
        cached, maxlen, end_ids = self.cached, self.maxlen, self.end_ids
        length = prompt_length + maxlen
        n_start = 0 if self.start_id is None else 1
        minlen = self.minlen
        neg_inf = float("-inf")

        def run(tok, seg, pads, context):
            logits, state = cached.prefill(tok, seg, pads, context, length)
            b = ops.shape(tok)[0]
            rows = ops.repeat(ops.arange(b, dtype="int32"), k)
            logits = ops.take(logits, rows, axis=0)
            state = cached.reorder(state, rows)
            scores = ops.where(ops.arange(k)[None, :] == 0, 0.0, neg_inf) * ops.ones((b, 1))
            beams = ops.zeros((b, k, maxlen), "int32")
            ends = ops.zeros((b, k), "int32")
            result = ops.zeros((b, maxlen), "int32")
            last = ops.full((b,), maxlen - 1, "int32")  # index of the result's last token
            done = ops.zeros((b,), "bool")
            best = ops.full((b,), neg_inf)  # length-penalised score of the kept finished beam
            vocab = ops.shape(logits)[-1]
            carry = (ops.zeros((), "int32"), beams, scores, ends, result, last, done, best,
                     logits, state)

            def cond(t, beams, scores, ends, result, last, done, best, logits, state):
                return ops.logical_and(t < maxlen, ops.logical_not(ops.all(done)))

            def body(t, beams, scores, ends, result, last, done, best, logits, state):
                logp = ops.log_softmax(logits / temperature, axis=-1)
                cand = ops.reshape(scores[:, :, None] + ops.reshape(logp, (b, k, -1)), (b, -1))
                values, flat = ops.top_k(cand, k)
                parent = flat // vocab
                token = ops.cast(flat % vocab, "int32")
                beams = ops.take_along_axis(beams, parent[:, :, None], axis=1)
                beams = ops.slice_update(beams, (0, 0, t), token[:, :, None])
                hit = _is_end(token, end_ids)
                ends = ops.take_along_axis(ends, parent, axis=1) + ops.cast(hit, "int32")
                live = values > neg_inf
                finished = ops.logical_and(ops.logical_and(hit, ends >= min_ends), live)
                finished = ops.logical_and(finished, t + 1 + n_start >= minlen)
                still = ops.logical_and(live, ops.logical_not(finished))
                open_ = ops.logical_not(done)
                if length_penalty:  # keep the best finished beam, stop when none is live
                    norm = ops.where(finished, values / ops.cast(t + 1 + n_start, "float32")
                                     ** length_penalty, neg_inf)
                    at = ops.argmax(norm, axis=1)
                    better = ops.logical_and(open_, ops.max(norm, axis=1) > best)
                    pick = ops.take_along_axis(beams, at[:, None, None], axis=1)[:, 0]
                    result = ops.where(better[:, None], pick, result)
                    last = ops.where(better, t, last)
                    best = ops.where(better, ops.max(norm, axis=1), best)
                    done = ops.logical_or(done, ops.logical_not(ops.any(still, axis=1)))
                else:  # bert4keras: the best beam finished -> that is the answer
                    now = ops.logical_and(open_, finished[:, 0])
                    result = ops.where(now[:, None], beams[:, 0], result)
                    last = ops.where(now, t, last)
                    done = ops.logical_or(done, now)
                # live unfinished beams first, in score order (unique sort keys)
                order = ops.argsort(ops.cast(ops.logical_not(still), "int32") * k
                                    + ops.arange(k, dtype="int32")[None, :], axis=1)
                beams = ops.take_along_axis(beams, order[:, :, None], axis=1)
                ends = ops.take_along_axis(ends, order, axis=1)
                values = ops.take_along_axis(ops.where(still, values, neg_inf), order, axis=1)
                parent = ops.take_along_axis(parent, order, axis=1)
                token = ops.take_along_axis(token, order, axis=1)
                rows = ops.reshape(parent + ops.arange(b, dtype=parent.dtype)[:, None] * k, (-1,))
                state = cached.reorder(state, ops.cast(rows, "int32"), same_context=True)
                logits, state = cached.step(ops.reshape(token, (-1, 1)), state)
                return t + 1, beams, values, ends, result, last, done, best, logits, state

            loop = ops.while_loop(cond, body, carry)
            _, beams, scores, _, result, last, done, best, _, _ = loop
            # examples still open after maxlen steps: the best live beam (with α: unless a
            # finished beam scores better)
            use_live = ops.logical_not(done)
            if length_penalty:
                live = scores[:, 0] / float(maxlen + n_start) ** length_penalty
                use_live = ops.logical_and(use_live, live > best)
            result = ops.where(use_live[:, None], beams[:, 0], result)
            last = ops.where(use_live, maxlen - 1, last)
            return result, last

        return run


def _uniforms(seed, shape):
    """Uniforms in [0, 1) drawn statelessly from an int32 seed tensor (same seed, same draws)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_uniform(shape, seed=tf.stack([seed, tf.zeros_like(seed)]))
    if backend == "jax":
        import jax

        return jax.random.uniform(jax.random.PRNGKey(seed), shape)
    return keras.random.uniform(shape, seed=int(seed))


def _sample(logits, temperature, topk, topp, u):
    """One token per row by inverse-CDF sampling of the truncated, renormalised distribution;
    u (b,) uniforms in [0, 1)."""
    probs = ops.softmax(logits / temperature, axis=-1)
    vocab = probs.shape[-1]
    k = vocab if topk is None else min(int(topk), vocab)
    probs, ids = ops.top_k(probs, k)  # sorted, most probable first
    probs = probs / ops.sum(probs, axis=-1, keepdims=True)  # top-k renormalised before top-p
    if topp is not None:
        cumulative = ops.cumsum(probs, axis=-1)
        drop = ops.concatenate([ops.zeros_like(cumulative[:, :1], "bool"),
                                cumulative[:, :-1] >= topp], axis=-1)
        probs = ops.where(drop, 0.0, probs)
    cdf = ops.cumsum(probs, axis=-1)
    target = u[:, None] * cdf[:, -1:]
    pick = ops.sum(ops.cast(cdf <= target, "int32"), axis=-1)
    pick = ops.minimum(pick, k - 1)
    return ops.cast(ops.take_along_axis(ids, pick[:, None], axis=1)[:, 0], "int32")


def _strip(row, padding_side):
    row = np.asarray(row).reshape(-1)
    nz = np.nonzero(row)[0]
    if not len(nz):
        return row[:0]
    return row[: nz[-1] + 1] if padding_side == "right" else row[nz[0]:]


def _stack_context(arrays):
    """Context inputs of the prompts stacked (b, n, ...), zero-padded on the right."""
    n = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), n) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def _trim(row, finish, maxlen, start_id):
    """Generated ids up to and including the finishing end id, with start_id first if set."""
    row = np.asarray(row[: min(int(finish) + 1, maxlen)], dtype=int)
    return row if start_id is None else np.concatenate([[start_id], row])
