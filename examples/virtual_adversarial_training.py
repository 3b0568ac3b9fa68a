"""Virtual adversarial training of a sentence classifier (the Keras 3 form of bert4keras's
task_sentiment_virtual_adversarial_training.py, which built the perturbation with K.gradients
and a second TF1 train function).

    python examples/virtual_adversarial_training.py              # tiny checkpoint, sample data
    python examples/virtual_adversarial_training.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --data-dir clue/iflytek --epochs 3

The whole change against a plain fine-tuning script is one call after ``compile``:
``virtual_adversarial_training(model, 'Embedding-Token', epsilon=1, xi=10, iters=1,
alpha=1)``, which trains on ``loss(y, f(x)) + α·KL(f(x) ‖ f(x + ε·û))`` with û found by power
iteration on the token embedding matrix (TensorFlow backend).  bert4keras trained the KL term
on unlabeled text with a second model; ``alpha=None`` gives that unsupervised objective.  Data,
model and evaluation as in adversarial_training_fgm.py.
"""

import os
import sys


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from adversarial_training_fgm import compiled_classifier, make_parser, train_and_report

    from bert4keras_ng.adversarial import virtual_adversarial_training

    parser = make_parser(__doc__, epsilon=1.0)
    parser.add_argument("--xi", type=float, default=10.0)
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args(argv)
    model, train, valid = compiled_classifier(args)
    virtual_adversarial_training(model, "Embedding-Token", epsilon=args.epsilon, xi=args.xi,
                                 iters=args.iters, alpha=args.alpha, seed=0)
    train_and_report(model, train, valid, args.epochs)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
