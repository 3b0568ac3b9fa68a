"""Gradient-penalty training of a sentence classifier (the Keras 3 form of bert4keras's
task_iflytek_gradient_penalty.py, which rebuilt the loss with K.gradients in TF1 graph mode).

    python examples/gradient_penalty.py                          # tiny checkpoint, sample data
    python examples/gradient_penalty.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --data-dir clue/iflytek --epochs 3

The whole change against a plain fine-tuning script is one call after ``compile``:
``gradient_penalty(model, 'Embedding-Token', epsilon=1)``, which trains on
``L + ½·ε·‖∇_E L‖²`` (E: the token embedding matrix; TensorFlow backend).  Data, model and
evaluation as in adversarial_training_fgm.py.
"""

import os
import sys


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from adversarial_training_fgm import compiled_classifier, make_parser, train_and_report

    from bert4keras_ng.adversarial import gradient_penalty

    args = make_parser(__doc__, epsilon=1.0).parse_args(argv)
    model, train, valid = compiled_classifier(args)
    gradient_penalty(model, "Embedding-Token", epsilon=args.epsilon)  # the penalised step
    train_and_report(model, train, valid, args.epochs)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
