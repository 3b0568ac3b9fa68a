"""Sentence embeddings on the embedded AFQMC sample pairs: CoSENT, SimCSE and BERT-whitening.

    python examples/sentence_embeddings.py                 # tiny random checkpoint, ~1-2 min on CPU
    python examples/sentence_embeddings.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --lr 2e-5 --epochs 5

Trains (1) CoSENT (post 8847) on the labelled training pairs and (2) unsupervised SimCSE on the
training sentences alone, then fits BERT-whitening (post 9079) on each encoder's training
vectors.  Reports Spearman's ρ between cos(u, v) and the labels on the held-out dev pairs, for
the untrained encoder too (with each method's pooling).  The sample pairs are synthetic
(bert4keras_ng/clue/sample_data), so the numbers show that the pieces work, not what a real STS
benchmark gives.

SimCSE follows the settings of Su's Chinese SimCSE experiments (bojone/SimCSE): batch 64,
dropout 0.3, τ = 0.05, the task's own sentences, one SimCSE loss without MLM; the learning rate
stays the example's 5e-4 (the post's 1e-5 is for a pre-trained BERT-base, not a random tiny
one).  It pools by the mean of the last layer ("last-avg"): on the random tiny checkpoint the
[CLS] vectors of different sentences hardly differ, so the two dropout views of a sentence are
no closer than other sentences and the loss stays at log(batch) (measured 3.56 → 3.43 in 4
epochs at batch 32, dev ρ falling 0.785 → 0.748), while mean pooling trains (3.0 → 0.5).
More epochs over these ~200 sentences overfit the instance discrimination (8 epochs: ρ 0.816).
"""

import argparse
import json
import os
import sys
import tempfile


def _pairs(path):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["sentence1"], r["sentence2"], int(r["label"])) for r in rows]


def _scores(encoder, pairs, whitening=None):
    """cos(u, v) of each pair, optionally after whitening."""
    import numpy as np

    from bert4keras_ng import sentence as S

    a = encoder.encode([p[0] for p in pairs])
    b = encoder.encode([p[1] for p in pairs])
    if whitening is not None:
        a, b = S.whiten(a, *whitening), S.whiten(b, *whitening)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _metrics(scores, labels):
    """Spearman ρ and, for 0/1 labels, the fraction of (positive, negative) pairs ranked right."""
    import numpy as np

    from bert4keras_ng import sentence as S

    labels = np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    auc = float((pos[:, None] > neg[None, :]).mean()) if len(pos) and len(neg) else float("nan")
    return {"spearman": S.spearman_correlation(scores, labels), "pair_accuracy": auc}


def _fit(encoder, x_rows, y_rows, loss, epochs, lr, batch_pairs, seed):
    """Adjacent rows stay together: pairs are shuffled as units, then fit without shuffling."""
    import keras
    import numpy as np

    from bert4keras_ng import training

    model = encoder.model
    training.compile_model(model, keras.optimizers.Adam(lr), loss=loss)
    rng = np.random.default_rng(seed)
    n = len(y_rows) // 2
    history = []
    for _ in range(epochs):
        order = rng.permutation(n)
        rows = np.stack([2 * order, 2 * order + 1], axis=1).ravel()
        h = model.fit([x[rows] for x in x_rows], y_rows[rows], batch_size=2 * batch_pairs,
                      shuffle=False, verbose=0)
        history += h.history["loss"]
    return history


def run(config=None, checkpoint=None, vocab=None, model="bert", pooling="cls", epochs=4,
        lr=5e-4, batch_pairs=32, maxlen=64, k=None, seed=0, data_dir=None,
        simcse_pooling="mean", simcse_dropout=0.3, simcse_batch=64, temperature=0.05):
    """Train both encoders; return ``{name: {"spearman", "pair_accuracy"}}`` on the dev pairs
    (plus the training-loss histories under ``"<name> loss"``). ``pooling`` is CoSENT's,
    ``simcse_*`` / ``temperature`` SimCSE's settings (module docstring)."""
    import keras
    import numpy as np

    from bert4keras_ng import losses as L
    from bert4keras_ng import sentence as S
    from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint
    from bert4keras_ng.models import build_transformer_model
    from bert4keras_ng.tokenizers import Tokenizer

    if config is None:
        folder = os.path.join(tempfile.gettempdir(), "bert4keras_ng-sentence-example")
        config, checkpoint, vocab = ensure_tiny_checkpoint(folder, model)
    data_dir = data_dir or os.path.join(SAMPLE_DIR, "afqmc")
    train, dev = _pairs(os.path.join(data_dir, "train.json")), _pairs(os.path.join(data_dir,
                                                                                  "dev.json"))
    tokenizer = Tokenizer(vocab, do_lower_case=True)

    def encoder(pooling=pooling, dropout=None):
        keras.utils.set_random_seed(seed)
        rates = {} if dropout is None else dict(dropout_rate=dropout,
                                                attention_dropout_rate=dropout)
        bert = build_transformer_model(config, checkpoint, model=model, **rates)
        return S.SentenceEncoder(bert, tokenizer, pooling=pooling, maxlen=maxlen)

    labels = [p[2] for p in dev]

    def evaluate(name, enc):
        results[name] = _metrics(_scores(enc, dev), labels)
        white = S.fit_whitening(enc.encode(train_texts), k=k)
        results[name + " + whitening"] = _metrics(_scores(enc, dev, white), labels)

    # with binary labels even a perfect ranking has Spearman < 1: show that ceiling (ties among
    # the scores, e.g. repeated dev pairs, can move a perfect ranking's value slightly)
    results = {"ceiling": _metrics(np.asarray(labels, "float64") + np.linspace(0, 0.1, len(dev)),
                                   labels)}
    train_texts = [t for p in train for t in p[:2]]

    base = encoder()
    evaluate("untrained", base)
    if simcse_pooling != pooling:
        evaluate(f"untrained ({simcse_pooling})", encoder(simcse_pooling))

    # CoSENT: rows 2m, 2m+1 are the two sentences of pair m, both rows carry its label
    cosent = encoder()
    x = cosent.inputs(train_texts)
    y = np.repeat([p[2] for p in train], 2).astype("float32")
    results["cosent loss"] = _fit(cosent, x, y, L.CoSENTLoss(), epochs, lr, batch_pairs, seed)
    evaluate("cosent", cosent)

    # SimCSE: every training sentence twice in a row, no labels; dropout makes the two views
    simcse = encoder(simcse_pooling, simcse_dropout)
    unique = sorted(set(train_texts))
    x = simcse.inputs([t for t in unique for _ in range(2)])
    y = np.zeros(2 * len(unique), "float32")
    results["simcse loss"] = _fit(simcse, x, y, L.SimCSELoss(temperature), epochs, lr,
                                  simcse_batch, seed)
    evaluate("simcse", simcse)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config")
    p.add_argument("--checkpoint")
    p.add_argument("--vocab")
    p.add_argument("--model", default="bert")
    p.add_argument("--pooling", default="cls", choices=["cls", "mean", "first-last-avg"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--k", type=int, default=None, help="whitening: dimensions kept")
    p.add_argument("--simcse-pooling", default="mean", choices=["cls", "mean", "first-last-avg"])
    p.add_argument("--simcse-dropout", type=float, default=0.3)
    p.add_argument("--simcse-batch", type=int, default=64, help="sentences per SimCSE batch")
    p.add_argument("--data-dir", help="folder with train.json / dev.json in AFQMC format")
    args = p.parse_args(argv)
    results = run(args.config, args.checkpoint, args.vocab, args.model, args.pooling,
                  args.epochs, args.lr, k=args.k, data_dir=args.data_dir,
                  simcse_pooling=args.simcse_pooling, simcse_dropout=args.simcse_dropout,
                  simcse_batch=args.simcse_batch)
    print("(one run; timings and float order vary on a shared machine)")
    print(f"{'dev pairs':30s} {'Spearman':>9s} {'pair acc.':>9s}")
    for name, value in results.items():
        if not name.endswith("loss"):
            print(f"{name:30s} {value['spearman']:+9.4f} {value['pair_accuracy']:9.4f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
