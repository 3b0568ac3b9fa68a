"""Title generation with UniLM (bert4keras's task_seq2seq_autotitle, in bert4keras_ng).

With no arguments it runs on the embedded CSL sample (bert4keras_ng/clue/sample_data/csl: the
abstract is the source, its keywords joined by '、' stand in for a title) and the tiny random
RoFormer checkpoint of examples/clue.py, written locally: no downloads. It loads the checkpoint
with application='unilm', fine-tunes a few steps, then writes titles with the cached, compiled
beam search (all prompts of a batch at once).

    python examples/title_generation.py                  # the tiny demo (about a minute)
    python examples/title_generation.py --model roformer --config chinese_roformer/bert_config.json \
        --checkpoint chinese_roformer/bert_model.ckpt --vocab chinese_roformer/vocab.txt \
        --train csl_title_train.json --source title --target content --steps 20000 --lr 1e-5

Data files hold one JSON object per line; --source / --target name the fields (a list value is
joined by '、').
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint  # noqa: E402
from bert4keras_ng.generation import Generator  # noqa: E402
from bert4keras_ng.models import build_transformer_model  # noqa: E402
from bert4keras_ng.snippets import sequence_padding  # noqa: E402
from bert4keras_ng.tokenizers import Tokenizer  # noqa: E402


def load_data(filename, source, target, limit=None):
    """[(source text, target text)] from a JSON-lines file."""
    pairs = []
    with open(filename, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if source not in item or target not in item:
                raise ValueError(f"{filename}:{number}: expected fields {source!r} and "
                                 f"{target!r}, got {sorted(item)}")
            texts = [item[source], item[target]]
            pairs.append(tuple("、".join(t) if isinstance(t, list) else str(t) for t in texts))
    return pairs[:limit]


def seq2seq_loss(y_true, y_pred):
    """Cross-entropy of the target tokens only: y_true = (token ids, segment ids) stacked on the
    last axis; position i predicts token i + 1 where that token's segment is 1."""
    ids, mask = y_true[:, 1:, 0], ops.cast(y_true[:, 1:, 1], "float32")
    loss = keras.losses.sparse_categorical_crossentropy(ids, y_pred[:, :-1])
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


def batches(pairs, tokenizer, maxlen, batch_size, rng):
    while True:
        order = rng.permutation(len(pairs))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            tokens, segments = [], []
            for i in order[start:start + batch_size]:
                source, target = pairs[i]
                t, s = tokenizer.encode(source, target, maxlen=maxlen)
                tokens.append(t)
                segments.append(s)
            tokens, segments = sequence_padding(tokens), sequence_padding(segments)
            yield [tokens, segments], np.stack([tokens, segments], axis=-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="roformer")
    parser.add_argument("--config")
    parser.add_argument("--checkpoint")
    parser.add_argument("--vocab")
    parser.add_argument("--train", default=os.path.join(SAMPLE_DIR, "csl", "train.json"))
    parser.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "csl", "dev.json"))
    parser.add_argument("--source", default="abst")
    parser.add_argument("--target", default="keyword")
    parser.add_argument("--maxlen", type=int, default=96)
    parser.add_argument("--title-maxlen", type=int, default=24)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--show", type=int, default=4, help="dev examples to generate")
    args = parser.parse_args(argv)

    if not (args.config and args.checkpoint and args.vocab):
        args.config, args.checkpoint, args.vocab = ensure_tiny_checkpoint(model=args.model)
    keras.utils.set_random_seed(0)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    model = build_transformer_model(args.config, args.checkpoint, model=args.model,
                                    application="unilm")
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=seq2seq_loss)

    train = load_data(args.train, args.source, args.target)
    data = batches(train, tokenizer, args.maxlen, args.batch_size, np.random.default_rng(0))
    for step in range(1, args.steps + 1):
        x, y = next(data)
        loss = model.train_on_batch(x, y)
        if step == 1 or step % 10 == 0 or step == args.steps:
            print(f"step {step}: loss {float(np.ravel(loss)[0]):.4f}")

    # generation: the source as segment 0, then titles after it (segment 1) until [SEP]
    generator = Generator(model, end_id=tokenizer._token_end_id, maxlen=args.title_maxlen)
    dev = load_data(args.dev, args.source, args.target, limit=args.show)
    prompts = [tokenizer.encode(source, maxlen=args.maxlen - args.title_maxlen)
               for source, _ in dev]
    titles = generator.beam_search(prompts, topk=args.beam)
    for (source, target), ids in zip(dev, titles):
        print(f"source: {source[:40]}…\n  reference: {target}\n  generated: "
              f"{tokenizer.decode(ids)}")
    return titles


if __name__ == "__main__":
    main()
