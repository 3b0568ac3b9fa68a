"""The CLUE fine-tuning runner: read → build → train (best dev checkpoint kept) → predict.

``run(RunConfig(...))`` is the whole job; :func:`main` is the command line that
``examples/clue.py`` wraps. With no data folder and no checkpoint it runs the embedded demo:
the shipped sample data of the task and a tiny randomly initialised checkpoint written once
in the original TF1 layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Optional

import numpy as np

from . import data as D
from . import features as F
from . import metrics as M
from . import outputs as O
from . import writers as W
from .optim import OPTIMIZERS, make_optimizer
from .tasks import TASK_NAMES, get_task
from .tiny import SAMPLE_DIR, default_cache_dir, ensure_tiny_checkpoint, tiny_folder_name

__all__ = ["RunConfig", "run", "main", "build_parser", "DEFAULT_TASK", "DEMO_SETTINGS"]

DEFAULT_TASK = "tnews"
DEFAULT_MODEL = "roformer"

# Settings of the embedded demo (sample data + tiny random checkpoint): a model that starts
# from random weights needs a larger step than fine-tuning a pretrained one, and the sample
# files are small. Any flag given on the command line wins over these.
DEMO_SETTINGS = {
    "default": {"lr": 2e-2, "epochs": 12, "batch_size": 16, "maxlen": 64},
    "wsc": {"epochs": 16},
    "c3": {"maxlen": 64, "batch_size": 8, "epochs": 4},
    "chid": {"epochs": 4, "batch_size": 8},
    "cmrc2018": {"maxlen": 96, "stride": 48, "batch_size": 16, "epochs": 5},
    "cluener": {"maxlen": 48, "epochs": 12},
}


@dataclasses.dataclass
class RunConfig:
    task: str = DEFAULT_TASK
    data_dir: Optional[str] = None
    config: Optional[str] = None
    checkpoint: Optional[str] = None
    vocab: Optional[str] = None
    model: Optional[str] = None  # None: the Hugging Face folder's family, else DEFAULT_MODEL
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    maxlen: Optional[int] = None
    stride: Optional[int] = None
    lr: Optional[float] = None
    optimizer: str = "adafactor"
    grad_accum: Optional[int] = None
    pooling: str = "cls"
    mixed_precision: Optional[str] = None
    xla: bool = False
    bucket: bool = False                # batch similar lengths together (features.bucketed_order)
    rdrop: bool = False
    rdrop_alpha: float = 4.0
    adversarial: bool = False
    adversarial_epsilon: float = 1.0
    lst: bool = False
    output: Optional[str] = None
    seed: int = 42
    verbose: int = 1
    save_weights: bool = True
    argv: Optional[list] = None     # the command line, recorded in results.json


# Shortest --maxlen per task kind: the special tokens of one sample plus one text token.
MIN_MAXLEN = {
    "single": (3, "[CLS] text [SEP]"), "wsc": (3, "[CLS] text [SEP]"),
    "ner": (3, "[CLS] text [SEP]"), "pair": (4, "[CLS] a [SEP] b [SEP]"),
    "csl": (4, "[CLS] keywords [SEP] abstract [SEP]"),
    "c3": (5, "[CLS] passage [SEP] question [SEP] choice [SEP]"),
    "cmrc": (4, "[CLS] question [SEP] context [SEP]"),
    "chid": (9, "[CLS] idiom(4) [SEP] left [unused1] right [SEP]"),
}


def _check_settings(cfg, spec):
    """Numeric settings, checked where they enter (also for ``run(RunConfig(...))`` callers)."""
    for flag, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size),
                        ("--grad-accum", cfg.grad_accum), ("--stride", cfg.stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise D.ClueInputError(f"{flag} must be a positive integer; got {value!r}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise D.ClueInputError(f"--lr must be a finite number > 0; got {cfg.lr!r}")
    need, layout = MIN_MAXLEN[spec.kind]
    if isinstance(cfg.maxlen, bool) or not isinstance(cfg.maxlen, int) or cfg.maxlen < need:
        raise D.ClueInputError(
            f"--maxlen {cfg.maxlen!r} is too small for {spec.name}: a sample is {layout}, "
            f"{need - 1} fixed tokens plus at least one text token; give --maxlen >= {need}")


def _log(cfg, *args):
    if cfg.verbose:
        print(*args, flush=True)


def _resolve(cfg: RunConfig):
    """Fill defaults: recipe values, or demo values when running on the embedded sample."""
    spec = get_task(cfg.task)
    cfg = dataclasses.replace(cfg, task=spec.name)
    demo_data = cfg.data_dir is None
    _hf_folder_paths(cfg)
    given = [cfg.config, cfg.checkpoint, cfg.vocab]
    if any(given) and not all(given):
        missing = [n for n, v in zip(("--config", "--checkpoint", "--vocab"), given) if not v]
        raise D.ClueInputError(f"give all of --config, --checkpoint and --vocab (missing: "
                         f"{', '.join(missing)}), or none of them for the tiny demo checkpoint")
    tiny = not any(given)
    demo = demo_data and tiny
    if demo_data:
        cfg.data_dir = os.path.join(SAMPLE_DIR, spec.name)
    settings = {"epochs": spec.epochs, "batch_size": spec.batch_size, "maxlen": spec.maxlen,
                "stride": spec.stride, "lr": 5e-3 if cfg.lst else 5e-4,
                "grad_accum": spec.grad_accum}
    if demo:
        settings.update(DEMO_SETTINGS["default"])
        settings.update(DEMO_SETTINGS.get(spec.name, {}))
        settings["grad_accum"] = 1
    for key, value in settings.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.output is None:
        cfg.output = os.path.join("clue_output", spec.name)
    if cfg.optimizer not in OPTIMIZERS:
        raise D.ClueInputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got "
                         f"{cfg.optimizer!r}")
    if cfg.pooling not in ("cls", "mean", "max"):
        raise D.ClueInputError(f"--pooling must be cls, mean or max; got {cfg.pooling!r}")
    if cfg.mixed_precision not in (None, "float16", "bfloat16"):
        raise D.ClueInputError(f"--mixed-precision must be float16 or bfloat16; got "
                         f"{cfg.mixed_precision!r}")
    _check_settings(cfg, spec)
    O.check_output_folder(cfg.output)
    if cfg.lst and cfg.adversarial:
        raise D.ClueInputError("--adversarial perturbs the token embeddings, which --lst freezes; "
                         "use one of them")
    if spec.kind == "cmrc" and cfg.stride <= 0:
        raise D.ClueInputError("--stride must be positive")
    return spec, cfg, tiny, demo


def _hf_folder_paths(cfg):
    """A Hugging Face folder as --checkpoint: config, vocabulary and family found inside."""
    from ..huggingface import find_vocabulary, is_hf_folder, read_hf_config
    from ..models.huggingface import family_of

    if cfg.checkpoint and is_hf_folder(cfg.checkpoint):
        cfg.config = cfg.config or os.path.join(cfg.checkpoint, "config.json")
        if cfg.vocab is None:
            kind, cfg.vocab = find_vocabulary(cfg.checkpoint)
            if kind != "wordpiece":
                raise ValueError(f"--checkpoint {cfg.checkpoint!r}: the CLUE runner needs a "
                                 f"vocab.txt (found only {os.path.basename(cfg.vocab)})")
        if cfg.model is None:
            cfg.model = family_of(read_hf_config(cfg.checkpoint), cfg.checkpoint)[1]
    if cfg.model is None:
        cfg.model = DEFAULT_MODEL


def _tiny_paths(cfg):
    name = tiny_folder_name(cfg.model)
    try:
        return ensure_tiny_checkpoint(os.path.join(default_cache_dir(), name), cfg.model)
    except OSError:  # read-only home: keep it beside the results instead
        return ensure_tiny_checkpoint(os.path.join(cfg.output, name), cfg.model)


def _input_order(model):
    names = []
    for t in model.inputs:
        name = getattr(t, "name", "") or ""
        if "Segment" in name:
            names.append("Input-Segment")
        elif "Mask" in name:
            names.append("Input-Mask")
        else:
            names.append("Input-Token")
    return names


class _Trainer:
    """Custom TF training loop: one compiled step, optional XLA, FGM and loss scaling."""

    def __init__(self, model, loss_fn, optimizer, xla=False, adversarial_epsilon=0.0):
        import tensorflow as tf

        from bert4keras_ng.adversarial import embedding_matrix, fgm_perturbation

        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.order = _input_order(model)
        variables = model.trainable_variables
        optimizer.build(variables)
        emb_index = None
        if adversarial_epsilon:
            emb = embedding_matrix(model, "Embedding-Token", "--adversarial")
            emb_index = [v.path for v in variables].index(emb.path)
        eps = float(adversarial_epsilon)

        def forward_loss(x, y):
            pred = model(x, training=True)
            loss = loss_fn(y, pred)
            return loss, optimizer.scale_loss(loss)

        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss, scaled = forward_loss(x, y)
            grads = tape.gradient(scaled, variables)
            if emb_index is not None:
                # FGM (the library's step): perturb the embedding matrix along its gradient,
                # then update with the gradient of the loss at the perturbed point
                delta = tf.cast(fgm_perturbation(grads[emb_index], eps),
                                variables[emb_index].dtype)
                variables[emb_index].assign_add(delta)
                with tf.GradientTape() as tape:
                    loss, scaled = forward_loss(x, y)
                grads = tape.gradient(scaled, variables)
                variables[emb_index].assign_sub(delta)
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
            optimizer.apply(grads, variables)
            return loss

        def predict_step(x):
            return model(x, training=False)

        self._tf = tf
        self._train_step, self._predict_step, self._xla = train_step, predict_step, bool(xla)
        self._train = self._predict = None

    def _compile(self, fn, *examples):
        """One trace for all batch shapes: every dimension of the signature is None."""
        tf = self._tf
        spec = [tf.nest.map_structure(
            lambda a: tf.TensorSpec([None] * np.ndim(a), tf.as_dtype(np.asarray(a).dtype)), e)
            for e in examples]
        return tf.function(fn, input_signature=spec, jit_compile=self._xla)

    def inputs(self, x):
        return [x[name] for name in self.order]

    def train_on_batch(self, x, y):
        x = self.inputs(x)
        if self._train is None:
            self._train = self._compile(self._train_step, x, y)
        return float(self._train(x, y))

    def predict_on_batch(self, x):
        x = self.inputs(x)
        if self._predict is None:
            self._predict = self._compile(self._predict_step, x)
        return np.asarray(self._predict(x), dtype="float32")


def _duplicate(features):
    return [f for f in features for _ in range(2)]


# ------------------------------------------------------------------------------ prediction


def _predict(trainer, spec, feats, batch_size, pad_multiple, what="dev set"):
    """Run the model over ``feats`` in order; returns one array per feature.

    NaN outputs mean the weights diverged (possibly in the last steps, after the last loss
    was checked): TrainingDivergedError, rather than a submission of argmax(NaN) = label 0.
    """
    from ..training import TrainingDivergedError

    outs = []
    for x, _, _ in F.iter_batches(spec, feats, batch_size, pad_multiple=pad_multiple):
        p = trainer.predict_on_batch(x)
        if np.isnan(p).any():
            raise TrainingDivergedError(
                f"Training diverged: the model's outputs on the {what} are NaN (the weights "
                "became non-finite). Lower the learning rate or lengthen the warm-up.")
        if spec.kind in ("c3", "chid"):
            p = p.reshape(-1, spec.num_choices)
        outs.extend(list(p))
    return outs


def _choose_windows(feats, outs):
    """cmrc: best (start, end, score) per window, then the best window per question."""
    best = {}
    order = []
    for i, (f, logits) in enumerate(zip(feats, outs)):
        n = len(f.rows[0])
        s = np.array(logits[:n, :n], dtype="float64")
        s[0, :] = -np.inf
        s[:, 0] = -np.inf
        k = int(np.argmax(s))
        start, end, score = k // n, k % n, s.flat[k]
        if f.group not in best:
            order.append(f.group)
        if f.group not in best or score > best[f.group][2]:
            best[f.group] = (i, (start, end), score)
    return order, best


def _window_text(f, start, end):
    spans = f.key
    if start >= len(spans) or end >= len(spans) or spans[start] is None or spans[end] is None:
        return ""
    return f.extra["context"][spans[start][0]:spans[end][1] + 1]


def _ner_entities(spec, f, logits):
    cells = np.argwhere(logits > 0)
    out = []
    for t, s, e in cells:
        if s < len(f.key) and e < len(f.key) and f.key[s] is not None and f.key[e] is not None:
            out.append((spec.labels[t], int(f.key[s][0]), int(f.key[e][1])))
    return out


def evaluate(trainer, spec, examples, feats, batch_size, pad_multiple=1, what="dev set"):
    """Dev metrics for ``spec``; the key ``spec.metric`` selects the best checkpoint."""
    outs = _predict(trainer, spec, feats, batch_size, pad_multiple, what)
    kind = spec.kind
    if kind in ("single", "pair", "csl", "wsc", "c3"):
        pred = np.array([int(np.argmax(o)) for o in outs])
        gold = np.array([f.label for f in feats])
        return {"accuracy": M.accuracy(gold, pred)}
    if kind == "chid":
        pred = M.chid_assign(np.stack(outs), [f.group for f in feats])
        gold = np.array([f.label for f in feats])
        return {"accuracy": M.accuracy(gold, pred),
                "accuracy_without_assignment": M.accuracy(gold, np.argmax(np.stack(outs), 1))}
    if kind == "cmrc":
        order, best = _choose_windows(feats, outs)
        right = 0
        predictions = {}
        for qid in order:
            i, span, _ = best[qid]
            right += int(tuple(span) == tuple(feats[i].label))
            predictions[qid] = _window_text(feats[i], *span)
        references = {q.id: [D.normalize_text(a) for a, s in q.answers if s >= 0] or [""]
                      for q in examples}
        scores = M.cmrc_scores(predictions, references)
        return {"span_accuracy": right / max(len(order), 1), "em": scores["em"],
                "f1": scores["f1"]}
    if kind == "ner":
        m = M.EntityF1()
        for i, (f, logits) in enumerate(zip(feats, outs)):
            n = len(f.rows[0])
            pred = {(t, s, e) for t, s, e in np.argwhere(logits[:, :n, :n] > 0).tolist()}
            m.update(pred, set(f.label))
        return m.result()
    raise ValueError(kind)


def predict_test(trainer, spec, examples, feats, path, batch_size, pad_multiple=1):
    """Predict one read test file and write its submission file to ``path``; returns it."""
    outs = (_predict(trainer, spec, feats, batch_size, pad_multiple,
                     f"test file of {os.path.basename(path)}") if feats else [])
    kind = spec.kind
    if kind in ("single", "pair", "csl", "wsc"):
        labels = [spec.labels[int(np.argmax(o))] for o in outs]
        return W.write_label_lines(path, [e.id for e in examples], labels)
    if kind == "c3":
        return W.write_label_lines(path, [e.id for e in examples],
                                   [str(int(np.argmax(o))) for o in outs])
    if kind == "chid":
        pred = M.chid_assign(np.stack(outs), [f.group for f in feats]) if outs else []
        return W.write_json_object(path, {f.key: int(p) for f, p in zip(feats, pred)})
    if kind == "cmrc":
        order, best = _choose_windows(feats, outs)
        answers = {qid: _window_text(feats[best[qid][0]], *best[qid][1]) for qid in order}
        for q in examples:  # every question gets a line, even one with no window
            answers.setdefault(q.id, "")
        return W.write_json_object(path, answers)
    if kind == "ner":
        ents = [_ner_entities(spec, f, o[:, :len(f.rows[0]), :len(f.rows[0])])
                for f, o in zip(feats, outs)]
        return W.write_cluener(path, [e.record for e in examples], ents)
    raise ValueError(kind)


# ------------------------------------------------------------------------------ the run


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept."""


def _load_backbone(cfg):
    from ..models import build_transformer_model

    return build_transformer_model(cfg.config, cfg.checkpoint, model=cfg.model)


def _read_model_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise D.ClueInputError(f"--config {path}: cannot read the checkpoint's config ({e})") \
            from None
    if not isinstance(config, dict):
        raise D.ClueInputError(f"--config {path}: expected a JSON object")
    return config


def _check_vocab_size(cfg, tokenizer, model_config):
    """The vocabulary may not hold ids the checkpoint's embedding table does not have."""
    size = model_config.get("vocab_size")
    if isinstance(size, int) and not isinstance(size, bool) and tokenizer.vocab_size > size:
        raise D.ClueInputError(
            f"--vocab {cfg.vocab} has {tokenizer.vocab_size} tokens but the checkpoint's "
            f"vocabulary ({cfg.config}: vocab_size) has {size}: ids from {size} up have no "
            "embedding. Use the vocab.txt that came with the checkpoint.")


def _check_layout(cfg, spec):
    """Train, dev (and chid answer) files must exist, and at least one test file."""
    for name in list(spec.train_files) + list(spec.dev_files) + [a for _, a in spec.answer_files]:
        D.require_file(spec, cfg.data_dir, name)
    return D.find_test_files(spec, cfg.data_dir)


def _read_task(cfg, spec, tokenizer, present):
    """Read and check every file of the task (``present``: the test files found), and build
    all features, before any training."""
    train = D.read_split(spec, cfg.data_dir, "train")
    dev = D.read_split(spec, cfg.data_dir, "dev")
    tests = [(name, submission, D.read_test(spec, cfg.data_dir, name).examples)
             for name, submission in present]
    train_feats = F.build_features(spec, tokenizer, train.examples, cfg.maxlen, cfg.stride)
    dev_feats = F.build_features(spec, tokenizer, dev.examples, cfg.maxlen, cfg.stride)
    tests = [(name, submission, ex, F.build_features(spec, tokenizer, ex, cfg.maxlen, cfg.stride))
             for name, submission, ex in tests]
    return train, dev, train_feats, dev_feats, tests


def _epoch_batches(cfg, spec, feats, rng, pad_multiple):
    if cfg.rdrop:
        return _rdrop_batches(spec, feats, cfg.batch_size, rng, pad_multiple)
    return F.iter_batches(spec, feats, cfg.batch_size, shuffle=True, rng=rng,
                          pad_multiple=pad_multiple, bucket=cfg.bucket)


def _save_weights(model, path):
    """``model.save_weights`` through a temporary ``.weights.h5`` name and a rename."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name[:-len('.weights.h5')]}.tmp{os.getpid()}.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _train(cfg, spec, model, trainer, train_feats, dev, dev_feats, outputs, state):
    """The epochs: train, evaluate, keep the best; ``state`` is updated for the interrupt
    message. Raises TrainingDivergedError (naming epoch and step) on a non-finite loss."""
    import keras

    from ..training import check_finite_loss

    rng = np.random.default_rng(cfg.seed)
    pad_multiple = 16 if cfg.xla else 1
    steps = -(-len(train_feats) // cfg.batch_size)
    tty = bool(cfg.verbose) and sys.stdout.isatty()
    best_weights = None
    for epoch in range(1, cfg.epochs + 1):
        state["epoch"] = epoch
        t0 = time.time()
        bar = keras.utils.Progbar(steps, verbose=1 if tty else 0, stateful_metrics=["loss"])
        losses = []
        for step, (x, y, _) in enumerate(
                _epoch_batches(cfg, spec, train_feats, rng, pad_multiple), 1):
            loss = trainer.train_on_batch(x, y)
            state["step"] += 1
            check_finite_loss(loss, f"{state['step']} (epoch {epoch}/{cfg.epochs}, batch "
                                    f"{step}/{steps})")
            losses.append(loss)
            bar.update(step, [("loss", float(np.mean(losses)))])
        scores = evaluate(trainer, spec, dev.examples, dev_feats, cfg.batch_size, pad_multiple,
                          f"dev set after epoch {epoch} (step {state['step']})")
        value = scores[spec.metric]
        best = state["best"]
        improved = best is None or value > best or (spec.keep_on_equal and value >= best)
        if improved:
            state["best"], state["best_epoch"] = value, epoch
            best_weights = model.get_weights()
            if cfg.save_weights:
                _save_weights(model, outputs.path("best.weights.h5"))
                state["saved"] = True
        record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(time.time() - t0, 2), **scores}
        state["history"].append(record)
        shown = ", ".join(f"{k}: {v:.4f}" for k, v in scores.items())
        _log(cfg, f"epoch {epoch}/{cfg.epochs} loss {record['loss']:.4f} ({record['seconds']} s);"
                  f" dev {shown}; best {spec.metric}: {state['best']:.4f} "
                  f"(epoch {state['best_epoch']})")
    if best_weights is not None:
        model.set_weights(best_weights)


def _interrupted_message(cfg, spec, state, kept):
    where = (f"during epoch {state['epoch']} (step {state['step']})" if state["epoch"]
             else "before training")
    previous = f"the files of earlier runs in {cfg.output} are unchanged"
    if kept and state.get("saved"):
        return (f"interrupted {where}: kept best.weights.h5 of epoch {state['best_epoch']} (dev "
                f"{spec.metric} {state['best']:.4f}) in {kept}; {previous}")
    if kept:
        return f"interrupted {where}: kept the partial outputs in {kept}; {previous}"
    return f"interrupted {where}: nothing written; {previous}"


def run(cfg: RunConfig):
    """Fine-tune, keep the best dev checkpoint, predict the test files; returns the results.

    Every file of the task is read and checked before any model is built; the outputs appear
    in ``cfg.output`` only when the run completes (see :mod:`.outputs`).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "The CLUE runner's training loop needs the TensorFlow backend, but Keras is "
            f"configured for {keras.backend.backend()!r}: run with KERAS_BACKEND=tensorflow."
        )
    t_start = time.time()
    run_id = O.new_run_id()
    spec, cfg, tiny, demo = _resolve(cfg)
    present, skipped = _check_layout(cfg, spec)  # fail fast, before the tiny checkpoint
    if tiny:
        cfg.config, cfg.checkpoint, cfg.vocab = _tiny_paths(cfg)
    model_config = _read_model_config(cfg.config)

    from ..tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer(cfg.vocab, do_lower_case=True)
    except (OSError, ValueError) as e:
        raise D.ClueInputError(f"--vocab {cfg.vocab}: {e}") from None
    _check_vocab_size(cfg, tokenizer, model_config)
    _log(cfg, f"CLUE {spec.name} ({spec.description}); data: {cfg.data_dir}"
              + (" [embedded sample data]" if cfg.data_dir.startswith(SAMPLE_DIR) else ""))
    _log(cfg, f"checkpoint: {cfg.checkpoint} (model={cfg.model})"
              + (" [tiny random checkpoint]" if tiny else ""))
    train, dev, train_feats, dev_feats, tests = _read_task(cfg, spec, tokenizer, present)
    if train.skipped or dev.skipped:
        _log(cfg, f"skipped records with label '-': train {train.skipped}, dev {dev.skipped}")
    _log(cfg, f"train: {len(train.examples)} records → {len(train_feats)} samples; "
              f"dev: {len(dev.examples)} records → {len(dev_feats)} samples; test: "
              + ", ".join(f"{n} {len(ex)} records" for n, _, ex, _ in tests))
    for submission, reason in skipped.items():
        _log(cfg, f"will skip {submission}: {reason}")

    outputs = O.RunOutputs(cfg.output, run_id, [s for _, s in spec.test_files])
    previous_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(cfg.seed)
    pad_multiple = 16 if cfg.xla else 1
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "history": [],
             "saved": False}
    try:
        if cfg.mixed_precision:
            keras.config.set_dtype_policy(f"mixed_{cfg.mixed_precision}")
        backbone = _load_backbone(cfg)
        if cfg.lst:  # frozen backbone + trainable side network (post 9138)
            from ..lst import ladder_side_tuning

            backbone = ladder_side_tuning(backbone)
        from .model import build_task_model, task_loss

        model = build_task_model(spec, backbone, model_config, cfg.pooling)
        optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.grad_accum)
        if cfg.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss_fn = task_loss(spec, cfg.rdrop_alpha if cfg.rdrop else 0.0)
        trainer = _Trainer(model, loss_fn, optimizer, cfg.xla,
                           cfg.adversarial_epsilon if cfg.adversarial else 0.0)
        _train(cfg, spec, model, trainer, train_feats, dev, dev_feats, outputs, state)
        files = []
        for name, submission, examples, feats in tests:
            predict_test(trainer, spec, examples, feats, outputs.path(submission),
                         cfg.batch_size, pad_multiple)
            files.append(os.path.join(cfg.output, submission))
        results = {
            "task": spec.name, "metric": spec.metric, "best": state["best"],
            "best_epoch": state["best_epoch"], "history": state["history"],
            "submissions": files, "skipped_submissions": skipped,
            "skipped_records": {"train": train.skipped, "dev": dev.skipped},
            "records": {"train": len(train.examples), "dev": len(dev.examples),
                        **{name: len(ex) for name, _, ex, _ in tests}},
            "embedded_sample_data": cfg.data_dir.startswith(SAMPLE_DIR),
            "tiny_checkpoint": tiny, "seconds": round(time.time() - t_start, 1),
            "run_id": run_id, "arguments": cfg.argv,
            "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "argv"},
        }
        with O.atomic_open(outputs.path(O.RESULTS)) as f:
            json.dump(results, f, ensure_ascii=False, indent=2, allow_nan=False)
        written, removed = outputs.commit()
    except KeyboardInterrupt:
        kept = outputs.keep_interrupted()
        raise RunInterrupted(_interrupted_message(cfg, spec, state, kept)) from None
    except BaseException:
        outputs.discard()
        raise
    finally:
        keras.config.set_dtype_policy(previous_policy)

    for name in written:
        if name != O.RESULTS:
            _log(cfg, f"wrote {os.path.join(cfg.output, name)}")
    for name in removed:
        _log(cfg, f"removed {os.path.join(cfg.output, name)} (left by an earlier run)")
    for submission, reason in skipped.items():
        _log(cfg, f"skipped {submission}: {reason}")
    _log(cfg, f"best dev {spec.metric}: {state['best']:.4f} (epoch {state['best_epoch']}); "
              f"results in {os.path.join(cfg.output, O.RESULTS)} (run {run_id}, "
              f"{results['seconds']} s)")
    return results


def _rdrop_batches(spec, feats, batch_size, rng, pad_multiple):
    order = np.arange(len(feats))
    rng.shuffle(order)
    for lo in range(0, len(order), batch_size):
        chosen = _duplicate([feats[i] for i in order[lo:lo + batch_size]])
        x, y = F.collate(spec, chosen, pad_multiple)
        yield x, y, None


# ------------------------------------------------------------------------------ command line


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser():
    p = argparse.ArgumentParser(
        prog="clue.py",
        description="Fine-tune a BERT-family checkpoint on one CLUE task (CLUE-bert4keras "
                    "recipe). With no paths it runs the embedded demo: shipped sample data "
                    "and a tiny random checkpoint.")
    p.add_argument("--task", default=DEFAULT_TASK, choices=TASK_NAMES,
                   help=f"CLUE task (default {DEFAULT_TASK})")
    p.add_argument("--data-dir", help="folder of that one task's files as unzipped from the "
                                      "CLUE download (default: embedded sample data)")
    p.add_argument("--config", help="bert_config.json of the checkpoint")
    p.add_argument("--checkpoint", help="checkpoint prefix, e.g. .../bert_model.ckpt, or a "
                                        "Hugging Face folder (config, vocab and model found inside)")
    p.add_argument("--vocab", help="vocab.txt of the checkpoint")
    p.add_argument("--model", default=None,
                   help="backbone type: bert, roberta, albert, nezha, roformer, roformer_v2, "
                        f"electra, gau_alpha, ... (default {DEFAULT_MODEL})")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int,
                   help="samples per step (c3: questions, chid: blanks, cmrc2018: windows)")
    p.add_argument("--maxlen", type=int)
    p.add_argument("--stride", type=_positive_int, help="cmrc2018 window stride in characters "
                                              "(default 128)")
    p.add_argument("--lr", type=_positive_float, help="learning rate (default 5e-4)")
    p.add_argument("--optimizer", default="adafactor", choices=OPTIMIZERS)
    p.add_argument("--grad-accum", type=_positive_int, help="gradient accumulation steps")
    p.add_argument("--pooling", default="cls", choices=("cls", "mean", "max"))
    p.add_argument("--mixed-precision", choices=("float16", "bfloat16"))
    p.add_argument("--xla", action="store_true", help="compile the train/predict steps with XLA")
    p.add_argument("--bucket", action="store_true", help="random length buckets: batch training "
                                                          "samples of similar length together")
    p.add_argument("--rdrop", action="store_true", help="R-Drop consistency loss")
    p.add_argument("--rdrop-alpha", type=float, default=4.0)
    p.add_argument("--adversarial", action="store_true", help="FGM adversarial training on "
                                                              "the token embeddings")
    p.add_argument("--adversarial-epsilon", type=float, default=1.0)
    p.add_argument("--lst", action="store_true", help="Ladder Side-Tuning: frozen backbone, "
                                                      "train a small side network (lr 5e-3)")
    p.add_argument("--output", help="results folder (default clue_output/<task>)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None):
    """The command line: exit 0 on success, 2 for bad input (one ``error:`` line), 1 when
    training diverged, 130 on Ctrl-C (one line saying what was kept)."""
    from ..training import TrainingDivergedError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    cfg = RunConfig(
        task=args.task, data_dir=args.data_dir, config=args.config,
        checkpoint=args.checkpoint, vocab=args.vocab, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, maxlen=args.maxlen, stride=args.stride, lr=args.lr,
        optimizer=args.optimizer, grad_accum=args.grad_accum, pooling=args.pooling,
        mixed_precision=args.mixed_precision, xla=args.xla, bucket=args.bucket, rdrop=args.rdrop,
        rdrop_alpha=args.rdrop_alpha, adversarial=args.adversarial,
        adversarial_epsilon=args.adversarial_epsilon, lst=args.lst, output=args.output, seed=args.seed,
        verbose=0 if args.quiet else 1, argv=argv)
    try:
        _resolve(cfg)  # flag combinations and values: argparse-level errors (usage, exit 2)
    except D.ClueInputError as e:
        parser.error(str(e))
    try:
        run(cfg)
    except RunInterrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training: nothing written", file=sys.stderr)
        return 130
    except TrainingDivergedError as e:
        print(f"error: {e} Stopped; no submission or results.json was written.",
              file=sys.stderr)
        return 1
    except D.ClueInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk while writing the outputs
        print(f"error: {e}; this run wrote nothing to {cfg.output}, the files of earlier runs "
              "are unchanged", file=sys.stderr)
        return 1
    except ValueError as e:
        if type(e).__name__ != "CheckpointMismatchError":  # the loader's own message
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
