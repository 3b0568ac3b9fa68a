"""FGM adversarial training of a sentence classifier (the Keras 3 form of bert4keras's
task_iflytek_adversarial_training.py, which patched TF1's train function).

    python examples/adversarial_training_fgm.py                 # tiny checkpoint, sample data
    python examples/adversarial_training_fgm.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --data-dir clue/iflytek --epochs 3

The whole change against a plain fine-tuning script is one call after ``compile``:
``adversarial_training(model, 'Embedding-Token', epsilon=0.5)`` (TensorFlow backend). Data:
CLUE iflytek JSON lines (``sentence``, ``label``); without ``--data-dir`` the package's
embedded sample.  The data, model and evaluation pieces here are shared with
gradient_penalty.py and virtual_adversarial_training.py.
"""

import argparse
import json
import os
import sys


def load_data(filename):
    """[(text, label id)] from CLUE iflytek JSON lines."""
    with open(filename, encoding="utf-8") as f:
        return [(d["sentence"], int(d["label"])) for d in map(json.loads, f) if d]


def make_parser(doc, epsilon):
    """The command line shared by the three regularised-training examples."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--config"), parser.add_argument("--checkpoint")
    parser.add_argument("--vocab"), parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--maxlen", type=int, default=64)
    parser.add_argument("--epsilon", type=float, default=epsilon)
    return parser


def compiled_classifier(args):
    """(compiled BERT + softmax classifier, train batches, valid batches) for ``args``."""
    import keras

    from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint
    from bert4keras_ng.models import build_transformer_model
    from bert4keras_ng.optimizers import Adam
    from bert4keras_ng.snippets import DataGenerator, sequence_padding
    from bert4keras_ng.tokenizers import Tokenizer

    if not args.config:
        args.config, args.checkpoint, args.vocab = ensure_tiny_checkpoint(model="bert")
    data_dir = args.data_dir or os.path.join(SAMPLE_DIR, "iflytek")
    train_data = load_data(os.path.join(data_dir, "train.json"))
    valid_data = load_data(os.path.join(data_dir, "dev.json"))
    num_classes = 1 + max(label for _, label in train_data + valid_data)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)

    class Batches(DataGenerator):
        def __iter__(self, random=False):
            tokens, segments, labels = [], [], []
            for is_end, (text, label) in self.sample(random):
                t, s = tokenizer.encode(text, maxlen=args.maxlen)
                tokens.append(t), segments.append(s), labels.append([label])
                if len(tokens) == self.batch_size or is_end:
                    yield [sequence_padding(tokens), sequence_padding(segments)], \
                        sequence_padding(labels)
                    tokens, segments, labels = [], [], []

    bert = build_transformer_model(args.config, args.checkpoint, with_pool=True,
                                   return_keras_model=False)
    output = keras.layers.Dropout(0.1)(bert.model.output)
    output = keras.layers.Dense(num_classes, activation="softmax",
                                kernel_initializer=bert.initializer)(output)
    model = keras.Model(bert.model.inputs, output)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(2e-5),
                  metrics=["sparse_categorical_accuracy"])
    return model, Batches(train_data, args.batch_size), Batches(valid_data, args.batch_size)


def train_and_report(model, train, valid, epochs):
    """Fit on ``train`` and print the accuracy on ``valid``."""
    model.fit(train.forfit(), steps_per_epoch=len(train), epochs=epochs)
    right = total = 0
    for x, y in valid:
        right += int((model.predict(x, verbose=0).argmax(1) == y[:, 0]).sum())
        total += len(y)
    print("valid accuracy: %.4f" % (right / total))


def main(argv=None):
    args = make_parser(__doc__, epsilon=0.5).parse_args(argv)
    from bert4keras_ng.losses import adversarial_training

    model, train, valid = compiled_classifier(args)
    adversarial_training(model, "Embedding-Token", epsilon=args.epsilon)  # the FGM step
    train_and_report(model, train, valid, args.epochs)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
