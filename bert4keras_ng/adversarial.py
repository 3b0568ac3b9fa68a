"""Embedding-matrix regularisers as one-call training helpers: FGM, gradient penalty and VAT.

Each helper takes a compiled ``keras.Model`` and replaces its ``train_step`` (TensorFlow
backend), so ``model.fit`` / ``train_on_batch`` then train with the regulariser; they work with
:func:`bert4keras_ng.training.compile_model` (XLA, loss-scale optimizers) because everything runs
inside the one compiled step.  All perturb or differentiate the token *embedding matrix* ``E``
(layer ``Embedding-Token`` by default), as in bert4keras's examples.

- :func:`adversarial_training` — FGM: train at ``E + ε·g/‖g‖`` (posts 7234, 7466; defined in
  :mod:`bert4keras_ng.losses`, re-exported here).
- :func:`gradient_penalty` — ``L + ½ε‖∇_E L‖²`` with second-order gradients (post 7234).
- :func:`virtual_adversarial_training` — VAT: ``KL(f(x), f(x + ε·û))`` with ``û`` found by
  ``iters`` power iterations from a random start of norm ``ξ`` (post 7466).
- :func:`fgm_perturbation` — the FGM step ``ε·g/‖g‖`` alone, for custom training loops.
"""

import keras

from bert4keras_ng.losses import _find_layer, adversarial_training

__all__ = [
    "adversarial_training",
    "fgm_perturbation",
    "gradient_penalty",
    "virtual_adversarial_training",
    "embedding_matrix",
]


def _tf():
    if keras.config.backend() != "tensorflow":
        raise NotImplementedError(
            "the adversarial training helpers are implemented for the TensorFlow backend only; "
            f"current backend is {keras.config.backend()!r}."
        )
    import tensorflow as tf

    return tf


def fgm_perturbation(gradient, epsilon):
    """FGM step ``ε·g/‖g‖`` (Frobenius norm of the whole tensor), in float32 (post 7234).

    ``gradient`` may be a ``tf.IndexedSlices`` (an embedding lookup's gradient); it is made
    dense.  A zero or non-finite norm (a skipped float16 step) gives a zero perturbation.
    """
    tf = _tf()
    g = tf.cast(tf.convert_to_tensor(gradient), "float32")
    return _normalized(tf, g, float(epsilon))


def _normalized(tf, g, scale):
    norm = tf.norm(g)
    ok = tf.math.is_finite(norm) & (norm > 0)
    return tf.where(ok, scale * g / tf.where(ok, norm, 1.0), tf.zeros_like(g))


def embedding_matrix(model, embedding_name="Embedding-Token", fn_name="embedding_matrix"):
    """The embedding variable of the layer ``embedding_name`` (searched in nested models)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"{fn_name}: `model` must be a keras.Model; got {type(model)}.")
    layer = _find_layer(model, embedding_name)
    if layer is None:
        raise ValueError(
            f"{fn_name}: no layer named {embedding_name!r} in model {model.name!r} "
            "(embedding_name must name the token Embedding layer)."
        )
    variable = getattr(layer, "embeddings", None)
    if variable is None:
        weights = list(layer.trainable_weights)
        if len(weights) != 1:
            raise ValueError(f"{fn_name}: layer {embedding_name!r} has no `embeddings` variable.")
        variable = weights[0]
    return variable


def _check_compiled(model, fn_name):
    if getattr(model, "optimizer", None) is None:
        raise ValueError(f"{fn_name}: compile the model first (it has no optimizer).")


def _unscale_for_distribution(loss):
    try:  # Keras divides the reported loss by the replica count under tf.distribute
        from keras.src.losses.loss import unscale_loss_for_distribution
    except ImportError:  # pragma: no cover - older / newer Keras layouts
        return loss
    return unscale_loss_for_distribution(loss)


def _install_train_step(model, objective, report_metrics=True):
    """Replace ``model.train_step`` by: loss = objective(...) under a tape, then the update.

    ``objective(x, y, sample_weight, scale)`` runs inside the outer gradient tape and returns
    ``(loss, y_pred, restore)``; ``scale`` is the optimizer's current loss scale (1 without
    loss scaling) for inner gradients; ``restore()`` runs after the gradients are taken and
    before they are applied (to undo a perturbation of the weights).
    """
    tf = _tf()

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = tf.stop_gradient(model.optimizer.scale_loss(tf.constant(1.0, "float32")))
        with tf.GradientTape() as tape:
            loss, y_pred, restore = objective(x, y, sample_weight, scale)
            first = next(i for i in tf.nest.flatten(x) if i is not None)
            model._loss_tracker.update_state(
                _unscale_for_distribution(loss), sample_weight=tf.shape(first)[0]
            )
            scaled = model.optimizer.scale_loss(loss)
        weights = model.trainable_weights
        gradients = tape.gradient(scaled, weights)
        restore()
        model.optimizer.apply_gradients(zip(gradients, weights))
        if report_metrics:
            return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return model.get_metrics_result()

    model.train_step = train_step
    model.train_function = None  # rebuilt by the next fit()
    return model


def _forward(model, x, training):
    if getattr(model, "_call_has_training_arg", True):
        return model(x, training=training)
    return model(x)


def _compiled_loss(model, x, y, y_pred, sample_weight):
    compute = getattr(model, "_compute_loss", None)
    if compute is not None:
        return compute(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)


def _dense(tf, gradient, like):
    if gradient is None:
        return tf.zeros_like(like, dtype="float32")
    return tf.cast(tf.convert_to_tensor(gradient), "float32")


def gradient_penalty(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Gradient penalty ``L' = L + ½·ε·‖∇_E L‖²`` on the embedding matrix (post 7234).

    Replaces ``model.train_step`` (call after ``compile``; returns the model): each step
    computes the compiled loss ``L``, its gradient with respect to the embedding matrix ``E`` of
    layer ``embedding_name`` (made dense: every token row), and minimises ``L'`` with
    second-order gradients.  ``ε = 1`` in bert4keras's example.  First-order FGM perturbs ``E``
    by ``ε∇L``; this is its Taylor expansion, at about 2.5× the cost of a normal step.

    The reported ``loss`` is ``L'``.  Under dynamic loss scaling the inner gradient is taken of
    the scaled loss and unscaled in float32, so it neither underflows nor changes ``L'``.
    Losses need a second derivative: Keras's ``sparse_categorical_crossentropy`` on the
    TensorFlow backend has one; bert4keras advised one-hot ``categorical_crossentropy``.
    """
    tf = _tf()
    _check_compiled(model, "gradient_penalty")
    if float(epsilon) < 0:
        raise ValueError(f"gradient_penalty: `epsilon` must be >= 0; got {epsilon}.")
    embeddings = embedding_matrix(model, embedding_name, "gradient_penalty")
    eps = float(epsilon)

    def objective(x, y, sample_weight, scale):
        with tf.GradientTape() as inner:
            inner.watch(embeddings.value)
            y_pred = _forward(model, x, True)
            loss = tf.cast(_compiled_loss(model, x, y, y_pred, sample_weight), "float32")
            scaled = loss * scale
        g = _dense(tf, inner.gradient(scaled, embeddings.value), embeddings.value) / scale
        penalty = 0.5 * eps * tf.reduce_sum(tf.square(g))
        return loss + penalty, y_pred, lambda: None

    return _install_train_step(model, objective)


def _kl_divergence(tf, p_out, q_out, from_logits):
    """Mean over samples (and positions) of KL(p‖q) along the last axis, float32."""
    p_out = tf.cast(p_out, "float32")
    q_out = tf.cast(q_out, "float32")
    if from_logits:
        log_p = tf.nn.log_softmax(p_out, axis=-1)
        log_q = tf.nn.log_softmax(q_out, axis=-1)
        p = tf.exp(log_p)
    else:
        tiny = keras.config.epsilon()
        p = p_out
        log_p = tf.math.log(tf.clip_by_value(p_out, tiny, 1.0))
        log_q = tf.math.log(tf.clip_by_value(q_out, tiny, 1.0))
    # where p == 0 the term is 0 (not 0 * log 0)
    terms = tf.where(p > 0, p * (log_p - log_q), tf.zeros_like(p))
    return tf.reduce_mean(tf.reduce_sum(terms, axis=-1))


def virtual_adversarial_training(
    model,
    embedding_name="Embedding-Token",
    epsilon=1.0,
    xi=10.0,
    iters=1,
    alpha=None,
    from_logits=False,
    seed=None,
):
    """Virtual adversarial training on the embedding matrix (post 7466; Miyato et al. 2017).

    Replaces ``model.train_step`` (call after ``compile``; returns the model).  Each step:

    1. ``p = f(x)`` with ``training=False`` (dropout off), held constant;
    2. ``d ~ N(0, I)`` of the shape of ``E``; ``iters`` times: ``d ← ξ·d/‖d‖``,
       ``d ← ∇_d KL(p ‖ f_{E+d}(x))`` (also without dropout);
    3. trains on ``KL(p ‖ f_{E+ε·d/‖d‖}(x))`` (with dropout), the perturbation removed again
       before the update.

    Norms are Frobenius norms of the whole matrix.  Defaults ``ε = 1``, ``ξ = 10``,
    ``iters = 1`` as in bert4keras's example; ``iters = 0`` trains against Gaussian noise of
    norm ``ε``.  ``alpha=None`` (bert4keras: a second model trained on unlabeled batches) makes
    the VAT divergence the whole loss, ignores ``y`` and reports only ``loss``; a number trains
    on ``compiled loss(y, f(x)) + alpha·KL`` (one more forward pass) and reports the compiled
    metrics.  Outputs are probabilities unless ``from_logits=True``; the KL is taken along the
    last axis and averaged over all other axes.  ``seed`` fixes the random starts.
    """
    tf = _tf()
    _check_compiled(model, "virtual_adversarial_training")
    for name, value in (("epsilon", epsilon), ("xi", xi)):
        if float(value) < 0:
            raise ValueError(f"virtual_adversarial_training: `{name}` must be >= 0; got {value}.")
    if isinstance(iters, bool) or int(iters) != iters or iters < 0:
        raise ValueError(
            f"virtual_adversarial_training: `iters` must be an integer >= 0; got {iters!r}."
        )
    if alpha is not None and float(alpha) < 0:
        raise ValueError(f"virtual_adversarial_training: `alpha` must be >= 0 or None; got {alpha}.")
    embeddings = embedding_matrix(model, embedding_name, "virtual_adversarial_training")
    eps, xi, iters = float(epsilon), float(xi), int(iters)
    seeds = keras.random.SeedGenerator(seed)

    def objective(x, y, sample_weight, scale):
        variable = embeddings.value
        p = tf.stop_gradient(_forward(model, x, False))
        d = tf.cast(keras.random.normal(tuple(variable.shape), seed=seeds), "float32")
        for _ in range(iters):
            d = _normalized(tf, d, xi)
            step = tf.cast(d, variable.dtype)
            variable.assign_add(step)
            with tf.GradientTape() as inner:
                inner.watch(variable)
                kl = _kl_divergence(tf, p, _forward(model, x, False), from_logits)
                kl = kl * scale  # direction only: keep float16 gradients from underflowing
            g = inner.gradient(kl, variable)
            variable.assign_sub(step)
            d = tf.stop_gradient(_dense(tf, g, variable))
        delta = tf.cast(_normalized(tf, d, eps), variable.dtype)
        loss = 0.0
        y_pred = None
        if alpha is not None:
            y_pred = _forward(model, x, True)
            loss = tf.cast(_compiled_loss(model, x, y, y_pred, sample_weight), "float32")
        variable.assign_add(delta)
        q = _forward(model, x, True)
        vat = _kl_divergence(tf, p, q, from_logits)
        loss = vat if alpha is None else loss + float(alpha) * vat
        return loss, (q if y_pred is None else y_pred), lambda: variable.assign_sub(delta)

    return _install_train_step(model, objective, report_metrics=alpha is not None)
