"""Fine-tune on one CLUE task. With no arguments: embedded sample data + a tiny checkpoint.

    python examples/clue.py                                   # the 3-minute demo
    python examples/clue.py --task afqmc --data-dir clue/afqmc \
        --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt --model roformer

Everything lives in :mod:`bert4keras_ng.clue`; this file is only the command line.
"""

import os
import re
import sys
import tempfile

# TensorFlow's C++ start-up notices (oneDNN, CPU features, "failed call to cuInit" on a
# machine without a GPU) read like failures. TF 2.21 prints them through absl before
# TF_CPP_MIN_LOG_LEVEL is honoured, so they are caught while TensorFlow loads; any other
# line printed then is passed on.
_TF_NOTICE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:. ]+\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions:)"
)


def _load_tensorflow_quietly():
    """Import Keras/TensorFlow with their C++ notices filtered, unless the user set
    TF_CPP_MIN_LOG_LEVEL (then everything is shown as TensorFlow prints it)."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # later C++ INFO/WARNING lines
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (loads TensorFlow)
            import tensorflow as tf

            tf.config.list_physical_devices()  # platform start-up (the cuInit notice)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines()
                    if line.strip() and not _TF_NOTICE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        _load_tensorflow_quietly()
        from bert4keras_ng.clue.runner import main
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads: one line, no traceback
        print("interrupted before training: nothing written", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
