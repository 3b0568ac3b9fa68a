"""Multi-worker training for real: two worker processes on 127.0.0.1, each with its TF_CONFIG,
train a tiny BERT classifier with ``model.fit``; both must end with the same weights as one
process training on the same global batches."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    from bert4keras_ng import distribute, optimizers, training
    from bert4keras_ng.models import build_transformer_model

    kind, out = sys.argv[1], sys.argv[2]
    strategy = distribute.get_strategy(kind)       # before any other TensorFlow op
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 30, size=(32, 10)).astype("int32")
    segments = np.zeros_like(tokens)
    labels = rng.integers(0, 3, size=(32,)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices(((tokens, segments), labels)).batch(8)  # global batch
    with strategy.scope():
        keras.utils.set_random_seed(1)
        encoder = build_transformer_model(
            vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=16, hidden_act="gelu", max_position_embeddings=16)
        pooled = keras.layers.Lambda(lambda x: x[:, 0])(encoder.output)
        probs = keras.layers.Dense(3, activation="softmax", dtype="float32")(pooled)
        model = keras.Model(encoder.inputs, probs)
        training.compile_model(model, optimizers.AdamW(learning_rate=1e-2, weight_decay=0.01),
                               "sparse_categorical_crossentropy", jit_compile=False)
    history = model.fit(data, epochs=2, verbose=0)
    loss = model.evaluate(data, verbose=0)
    np.savez(out, replicas=strategy.num_replicas_in_sync, loss=history.history["loss"],
             evaluated=loss, *model.get_weights())
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(tf_config=None):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _load(path):
    with np.load(path) as f:
        weights = [f["arr_%d" % i] for i in range(len(f.files) - 3)]
        return int(f["replicas"]), f["loss"], weights


@pytest.mark.slow
def test_two_workers_on_loopback_match_single_process_training(tmp_path):
    cluster = {"worker": ["127.0.0.1:%d" % p for p in _free_ports(2)]}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, "multiworker", str(tmp_path / ("worker%d.npz" % i))],
            env=_env({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=240)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for i, (w, log) in enumerate(zip(workers, logs)):
        assert w.returncode == 0, "worker %d failed:\n%s" % (i, log[-4000:])
    single = subprocess.run(
        [sys.executable, "-c", _WORKER, "default", str(tmp_path / "single.npz")],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-4000:]

    (r0, loss0, w0), (r1, loss1, w1) = _load(tmp_path / "worker0.npz"), _load(tmp_path / "worker1.npz")
    r, loss, w = _load(tmp_path / "single.npz")
    assert (r0, r1, r) == (2, 2, 1)
    for a, b in zip(w0, w1):  # the workers hold one model: bit-identical
        np.testing.assert_array_equal(a, b)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(w0, w))
    print("multi-worker vs single process, max weight difference (AdamW, 8 steps):", worst)
    for a, b in zip(w0, w):  # measured 1.3e-7 (float32 summation order of the all-reduce)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loss0, loss, rtol=1e-5)
