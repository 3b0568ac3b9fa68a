"""Does every model family train under every precision on this backend and device?

For each model string (bert, albert, albert_unshared, nezha, electra, roformer, roformer_v2,
gau_alpha) and each application ('encoder' with a float32 softmax classifier; 'lm', the causal
language model on the tied-embedding MLM head, or for ELECTRA its discriminator head), it builds a small random model in float32, mixed_float16 and mixed_bfloat16, copies the
float32 weights into the mixed ones, and checks that

  * the inference outputs agree with float32 (max abs difference of probabilities below 2e-2 for
    float16 and 6e-2 for bfloat16),
  * three jit-compiled AdamW training steps (dynamic loss scaling under float16, padded inputs,
    dropout on) give finite losses that match float32's first loss within the same tolerance.

It runs on whatever backend Keras was started with (``KERAS_BACKEND=jax`` on a GPU machine
without TensorFlow, the default TensorFlow elsewhere), prints one line per case, and exits
with status 1 when any case fails.

    KERAS_BACKEND=jax python benchmarks/check_backends.py      # e.g. on a GPU with JAX
    python benchmarks/check_backends.py --models bert,roformer  # a subset
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAMILIES = ["bert", "albert", "albert_unshared", "nezha", "electra", "roformer", "roformer_v2",
            "gau_alpha"]
TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 6e-2}
VOCAB, BATCH, LENGTH = 120, 4, 16


def build(family, application, policy):
    import keras

    from bert4keras_ng import training
    from bert4keras_ng.models import build_transformer_model

    config = dict(model=family, vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=128, hidden_act="gelu",
                  max_position_embeddings=64, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    if family.startswith("albert"):
        config["embedding_size"] = 32
    with training.dtype_policy(policy):
        keras.utils.set_random_seed(0)
        if application == "lm" and family == "electra":
            # (b, n) replaced-token probabilities → (b, n, 1), so that the binary cross-entropy
            # is per token and lines up with the padding mask
            discriminator = build_transformer_model(with_discriminator=True, **config)
            flags = keras.layers.Reshape((-1, 1), dtype="float32")(discriminator.output)
            return keras.Model(discriminator.inputs, flags)
        if application == "lm":
            return build_transformer_model(application="lm", **config)
        encoder = build_transformer_model(**config)
        pooled = keras.layers.Lambda(lambda x: x[:, 0], name="Pooler")(encoder.output)
        probs = keras.layers.Dense(3, activation="softmax", dtype="float32",
                                   name="Classifier")(pooled)
        return keras.Model(encoder.inputs, probs)


def data(family, application):
    import numpy as np

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, size=(BATCH, LENGTH)).astype("int32")
    tokens[:, LENGTH - 4:] = 0  # padding
    tokens[0, LENGTH - 8:] = 0
    segments = np.zeros_like(tokens)
    if application == "lm" and family == "electra":
        labels = rng.integers(0, 2, size=(BATCH, LENGTH, 1)).astype("float32")  # replaced flags
    elif application == "lm":
        labels = np.roll(tokens, -1, axis=1)
    else:
        labels = rng.integers(0, 3, size=(BATCH,)).astype("int32")
    return [tokens, segments], labels


def check_case(family, application, reference_cache):
    import keras
    import numpy as np

    from bert4keras_ng import optimizers, training

    x, y = data(family, application)
    loss = ("binary_crossentropy" if application == "lm" and family == "electra"
            else "sparse_categorical_crossentropy")
    results = {}
    for policy in ["float32", "mixed_float16", "mixed_bfloat16"]:
        model = build(family, application, policy)
        if policy == "float32":
            reference_cache["weights"] = model.get_weights()
        else:
            model.set_weights(reference_cache["weights"])
        probs = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(x)), "float32")
        if not np.all(np.isfinite(probs)):
            return f"{policy}: non-finite inference output"
        training.compile_model(model, optimizers.AdamW(learning_rate=1e-3), loss,
                               jit_compile=True)
        losses = [float(np.asarray(model.train_on_batch(x, y))) for _ in range(3)]
        if not all(np.isfinite(losses)):
            return f"{policy}: non-finite training loss {losses}"
        results[policy] = (probs, losses)
    probs32, losses32 = results["float32"]
    notes = []
    for policy, tolerance in TOLERANCE.items():
        probs, losses = results[policy]
        diff = float(np.max(np.abs(probs - probs32)))
        loss_diff = abs(losses[0] - losses32[0])
        if diff > tolerance or loss_diff > tolerance * max(1.0, abs(losses32[0])):
            return (f"{policy}: output differs from float32 by {diff:.3g}, first loss by "
                    f"{loss_diff:.3g} (tolerance {tolerance})")
        notes.append(f"{policy} max|Δp| {diff:.1e}")
    return "ok (" + ", ".join(notes) + f", float32 losses {losses32[0]:.3f}→{losses32[-1]:.3f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(FAMILIES))
    parser.add_argument("--applications", default="encoder,lm")
    args = parser.parse_args()

    import keras

    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    if keras.backend.backend() == "jax":
        import jax

        print(f"jax {jax.__version__}, devices {[d.device_kind for d in jax.devices()]}")
    failures = 0
    for family in [m.strip() for m in args.models.split(",") if m.strip()]:
        for application in [a.strip() for a in args.applications.split(",") if a.strip()]:
            start = time.perf_counter()
            try:
                status = check_case(family, application, {})
            except Exception as error:  # report every case, then fail at the end
                status = f"error: {type(error).__name__}: {str(error)[:300]}"
            failures += not status.startswith("ok")
            print(f"{family:16s} {application:8s} {time.perf_counter() - start:6.1f}s  {status}",
                  flush=True)
    print(f"{failures} failing case(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
