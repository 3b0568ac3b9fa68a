"""Integrated gradients: which characters a fine-tuned classifier's decision rests on (the Keras 3
form of bert4keras's task_sentiment_integrated_gradients.py, which used K.gradients).

    python examples/integrated_gradients.py                       # tiny checkpoint, quick fit
    python examples/integrated_gradients.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --weights best_model.weights.h5

Baseline: the all-zero token embedding. The attribution of position i is
``x_i · mean_α ∇_{x_i} p(label | α·x)`` summed over the embedding dimension, with the
token embeddings scaled by α in (0, 1] (Riemann sum over ``--steps`` points). Gradients come
from ``tf.GradientTape`` on the token embedding matrix: the gradient of a lookup holds one row
per looked-up position (TensorFlow backend, float32).
"""

import argparse
import os
import sys


def integrated_gradients(model, token_ids, segment_ids, label, steps=20,
                         embedding_name="Embedding-Token"):
    """Per-position attributions (n,) of ``label``'s probability for one encoded text."""
    import numpy as np
    import tensorflow as tf

    embeddings = model.get_layer(embedding_name).embeddings
    values = embeddings.numpy()
    x = np.array([token_ids]), np.array([segment_ids])
    n, total = len(token_ids), np.zeros((len(token_ids), values.shape[1]))
    try:
        for alpha in np.linspace(1.0 / steps, 1.0, steps):
            embeddings.assign(alpha * values)
            with tf.GradientTape() as tape:
                score = model(list(x), training=False)[:, label]
            grad = tape.gradient(score, embeddings)
            if isinstance(grad, tf.IndexedSlices):  # one row per looked-up token
                rows = tf.reshape(grad.values, (-1, values.shape[1]))[-n:]
            else:  # a dense gradient merges repeated tokens: spread it back by id
                rows = tf.gather(grad, token_ids)
            total += rows.numpy()
    finally:
        embeddings.assign(values)
    return (values[token_ids] * total / steps).sum(axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config"), parser.add_argument("--checkpoint")
    parser.add_argument("--vocab"), parser.add_argument("--weights")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--text", default="这个电影太好看了，推荐大家去看")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from bert4keras_ng.clue.tiny import ensure_tiny_checkpoint
    from bert4keras_ng.models import build_transformer_model
    from bert4keras_ng.optimizers import Adam
    from bert4keras_ng.tokenizers import Tokenizer

    if not args.config:
        args.config, args.checkpoint, args.vocab = ensure_tiny_checkpoint(model="bert")
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    bert = build_transformer_model(args.config, args.checkpoint, with_pool=True,
                                   return_keras_model=False)
    output = keras.layers.Dense(2, activation="softmax")(bert.model.output)
    model = keras.Model(bert.model.inputs, output)
    if args.weights:
        model.load_weights(args.weights)
    else:  # a few steps on two made-up sentences, so that the demo has something to explain
        texts = [("这个电影太好看了", 1), ("这个电影太难看了", 0)]
        encoded = [tokenizer.encode(t, maxlen=32) for t, _ in texts]
        tokens = np.array([e[0] for e in encoded])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(1e-3))
        model.fit([tokens, np.zeros_like(tokens)], np.array([[1], [0]]), epochs=5, verbose=0)
    token_ids, segment_ids = tokenizer.encode(args.text)
    label = int(model.predict([np.array([token_ids]), np.array([segment_ids])],
                              verbose=0)[0].argmax())
    scores = integrated_gradients(model, token_ids, segment_ids, label, steps=args.steps)
    tokens = tokenizer.ids_to_tokens(token_ids)
    print("label %d; attribution per token:" % label)
    for token, score in zip(tokens, scores):
        print("  %s\t%+.5f" % (token, score))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
