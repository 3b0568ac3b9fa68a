"""Fine-tune on one CLUE task. With no arguments: embedded sample data + a tiny checkpoint.

    python examples/clue.py                                   # the 3-minute demo
    python examples/clue.py --task afqmc --data-dir clue/afqmc \
        --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt --model roformer

Everything lives in :mod:`bert4keras_ng.clue`; this file is only the command line.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bert4keras_ng.clue.runner import main

    sys.exit(main())
