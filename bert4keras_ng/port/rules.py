"""The porting tool's rule table (data): what it rewrites and what it only reports.

``REWRITES`` are applied line by line, in order, to code lines (not to comment lines); each is
``(name, pattern, replacement, description)`` with a regular expression and a replacement
(a template or a function of the match). ``MANUAL`` rules mark lines the tool does not
understand: such a line is left exactly as it is (no rewrite applies to it) and reported with
the replacement to write by hand. ``NOTES`` are reported without being a problem.
The README's porting table is this table.
"""

import re
from collections import namedtuple

Rewrite = namedtuple("Rewrite", "name pattern replacement description")
Manual = namedtuple("Manual", "name pattern message")

FGM_EXAMPLE = "examples/adversarial_training_fgm.py"
GP_EXAMPLE = "examples/gradient_penalty.py"
VAT_EXAMPLE = "examples/virtual_adversarial_training.py"
IG_EXAMPLE = "examples/integrated_gradients.py"

_KERAS3_WEIGHTS = ".weights.h5"


def _weights_name(match):
    """'best_model.weights' -> 'best_model.weights.h5'; 'x.h5' -> 'x.weights.h5'; 'x' -> 'x.weights.h5'."""
    name = match.group("name")
    if name.endswith(".weights"):
        new = name + ".h5"
    elif name.endswith((".h5", ".hdf5")):
        new = name.rsplit(".", 1)[0] + _KERAS3_WEIGHTS
    else:
        new = name + _KERAS3_WEIGHTS
    return "%s(%s%s%s%s" % (match.group("call"), match.group("space"), match.group("q"), new,
                            match.group("q"))


def _model_name(match):
    """'x.model' (or no suffix) -> 'x.keras' in model.save / load_model."""
    name = match.group("name")
    stem = name[: -len(".model")] if name.endswith(".model") else name
    return "%s(%s%s%s.keras%s" % (match.group("call"), match.group("space"), match.group("q"),
                                  stem, match.group("q"))


_STRING_ARG = r"(?P<space>\s*)(?P<q>['\"])(?P<name>[^'\"\n]*?)(?P=q)"

REWRITES = [
    Rewrite(
        "import-from",
        re.compile(r"^(\s*)from\s+bert4keras(\.\w+)*\s+import\b"),
        lambda m: m.group(0).replace("bert4keras", "bert4keras_ng", 1),
        "`from bert4keras.X import ...` -> `from bert4keras_ng.X import ...`",
    ),
    Rewrite(
        "import-module",
        re.compile(r"^(\s*)import\s+bert4keras((\.\w+)+\s+as\s+\w+)\s*$"),
        r"\1import bert4keras_ng\2",
        "`import bert4keras.X as y` -> `import bert4keras_ng.X as y`",
    ),
    Rewrite(
        "import-package",
        re.compile(r"^(\s*)import\s+bert4keras\s*$"),
        r"\1import bert4keras_ng as bert4keras",
        "`import bert4keras` -> `import bert4keras_ng as bert4keras`",
    ),
    Rewrite(
        "fit_generator",
        re.compile(r"\.(fit|evaluate|predict)_generator\("),
        r".\1(",
        "`model.fit_generator(` / `evaluate_generator(` / `predict_generator(` -> "
        "`model.fit(` / `evaluate(` / `predict(` (Keras 3 takes generators there)",
    ),
    Rewrite(
        "weights-suffix",
        re.compile(r"(?P<call>\.(?:save_weights|load_weights))\(" + _STRING_ARG
                   + r"(?=\s*[,)])"),
        _weights_name,
        "weight files named `'x.weights'` (or `'x'`, `'x.h5'`) -> `'x.weights.h5'` in "
        "`save_weights` / `load_weights` (Keras 3 requires the suffix)",
    ),
    Rewrite(
        "weights-literal",
        re.compile(r"(?P<q>['\"])(?P<name>[^'\"\n]*\.weights)(?P=q)"),
        lambda m: "%s%s.h5%s" % (m.group("q"), m.group("name"), m.group("q")),
        "any other string literal ending in `.weights` (a weight file name kept in a variable) "
        "-> `.weights.h5`",
    ),
    Rewrite(
        "model-suffix",
        re.compile(r"(?P<call>(?:\bmodel\w*|\.models)\.(?:save|load_model)|\bload_model)\("
                   + _STRING_ARG + r"(?=\s*[,)])"),
        _model_name,
        "whole-model files `'x.model'` (or no suffix) -> `'x.keras'` in `model.save` / "
        "`load_model` (Keras 3's format)",
    ),
    Rewrite(
        "optimizer-lr",
        re.compile(r"\.optimizer\.lr\b"),
        ".optimizer.learning_rate",
        "`model.optimizer.lr` -> `model.optimizer.learning_rate`",
    ),
    Rewrite(
        "keras-optimizer-lr",
        re.compile(r"(\b(?:SGD|RMSprop|Adagrad|Adadelta|Adamax|Nadam|Adam|AdamW)\(\s*)lr\s*=\s*"),
        r"\1learning_rate=",
        "`Adam(lr=...)` (any Keras optimizer) -> `Adam(learning_rate=...)`",
    ),
    Rewrite(
        "get_output_at",
        re.compile(r"\.get_output_at\(\s*(?:-1|0)\s*\)"),
        ".output",
        "`layer.get_output_at(-1)` / `get_output_at(0)` -> `layer.output` (a layer called once)",
    ),
    Rewrite(
        "num_hidden_layers-subset",
        re.compile(r"^(\s+num_hidden_layers\s*=\s*[^,=\n]+),(\s*)$"),
        r"\1, ignore_unused_variables=True,\2",
        "a `num_hidden_layers=...,` keyword line (a model keeping the first blocks of its "
        "checkpoint, as bert4keras loaded silently) -> adds `ignore_unused_variables=True`",
    ),
]

_TRAIN_STEP = (
    "Keras 3 has no graph-mode train function to patch: use the library's train-step helpers "
    "(bert4keras_ng.losses.adversarial_training for FGM, bert4keras_ng.adversarial."
    "gradient_penalty / virtual_adversarial_training) or override train_step; see %s, %s, %s"
    % (FGM_EXAMPLE, GP_EXAMPLE, VAT_EXAMPLE)
)

MANUAL = [
    Manual("def-adversarial_training", re.compile(r"^\s*def\s+adversarial_training\("),
           "FGM adversarial training patches TF1 internals: delete this function and call "
           "bert4keras_ng.losses.adversarial_training(model, 'Embedding-Token', epsilon) after "
           "compile; see " + FGM_EXAMPLE),
    Manual("def-gradient_penalty", re.compile(r"^\s*def\s+\w*gradient_penalty\w*\("),
           "gradient penalty via K.gradients in a loss is TF1 graph mode: compile with the plain "
           "loss and call bert4keras_ng.adversarial.gradient_penalty(model, 'Embedding-Token', "
           "epsilon); see " + GP_EXAMPLE),
    Manual("def-virtual_adversarial_training",
           re.compile(r"^\s*def\s+virtual_adversarial_training\("),
           "VAT patches TF1 internals: call bert4keras_ng.adversarial."
           "virtual_adversarial_training(model, ...) instead; see " + VAT_EXAMPLE),
    Manual("make_train_function", re.compile(r"\._make_train_function\("), _TRAIN_STEP),
    Manual("train_function", re.compile(r"\.train_function\b"), _TRAIN_STEP),
    Manual("total_loss", re.compile(r"\.total_loss\b"),
           "model.total_loss is TF1 graph mode: compute the loss inside a train_step "
           "(tf.GradientTape); see " + FGM_EXAMPLE),
    Manual("K.gradients", re.compile(r"\bK\.gradients\("),
           "K.gradients is TF1 graph mode: take gradients with tf.GradientTape in a train_step "
           "or use the library helpers; see %s, %s, %s, %s"
           % (FGM_EXAMPLE, GP_EXAMPLE, VAT_EXAMPLE, IG_EXAMPLE)),
    Manual("K.function", re.compile(r"\bK\.function\("),
           "K.function is TF1 graph mode: build keras.Model(inputs, outputs) and call it on "
           "arrays (or model.predict)"),
    Manual("session", re.compile(r"\b(?:tf\.get_default_graph|K\.get_session|K\.set_session|"
                                 r"tf\.Session|tf\.compat\.v1\.Session)\b"),
           "Keras 3 has no TF1 graph or session: drop it (tensors are eager)"),
    Manual("learning_phase", re.compile(r"\bK\.(?:set_)?learning_phase\("),
           "pass training=True/False to the layer or model call instead"),
    Manual("multi_gpu_model", re.compile(r"\bmulti_gpu_model\b"),
           "use tf.distribute.MirroredStrategy().scope() around model building and compile"),
    Manual("get_output_at-node", re.compile(r"\.get_output_at\(\s*(?!(?:-1|0)\s*\))"),
           "Layer.get_output_at is gone in Keras 3: use layer.output for a layer called once, "
           "or keep the tensor returned by the call you mean"),
    Manual("predict-nested-list", re.compile(r"\.predict(?:_on_batch)?\(\s*\[\s*\["),
           "Keras 3's predict takes arrays, not nested Python lists (ValueError: Unrecognized "
           "data type): wrap each input in np.array, e.g. model.predict([np.array([token_ids]), "
           "np.array([segment_ids])])"),
    Manual("generator-workers", re.compile(r"\b(?:workers|use_multiprocessing|max_queue_size)\s*="),
           "Keras 3's fit/predict take no workers/use_multiprocessing/max_queue_size: pass them "
           "to a keras.utils.PyDataset (DataGenerator.to_pydataset(workers=...)) instead"),
]

NOTES = [
    Manual("set_gelu", re.compile(r"\bset_gelu\("),
           "kept: bert4keras_ng.backend.set_gelu has the same meaning (models built after the "
           "call); build_transformer_model(..., hidden_act='gelu_tanh') says it per model"),
    Manual("weights-variable", re.compile(r"\.(?:save_weights|load_weights)\(\s*(?!['\"])"),
           "check that the file name passed here ends in '.weights.h5' (Keras 3 requires it)"),
    Manual("tf_keras-env", re.compile(r"['\"]TF_KERAS['\"]"),
           "no effect: bert4keras_ng always runs on Keras 3"),
]
