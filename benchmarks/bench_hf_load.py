"""How much does loading a Hugging Face folder cost compared with just reading its safetensors?

Writes a random BERT-base folder (``config.json`` + ``model.safetensors`` under
``BertForPreTraining`` names: 12 layers, 768 wide, vocab 21128, 512 positions, pooler, NSP and
MLM heads; ~110M float32 values) to a temporary directory, then measures, each in a fresh
Python process (``--repeat`` times, interleaved; medians reported, since the machine may be
shared):

  read      safetensors.numpy.load_file of the file (the floor: every tensor in memory)
  two-step  build_transformer_model(heads only, from the folder's config) (build), then
            builder.load_weights_from_checkpoint(folder) (load)
  one-call  build_transformer_model(checkpoint_path=folder, heads): what a script runs

and prints wall time and peak resident memory (VmHWM) with their ratios to the plain read,
plus the transient memory above the imports (read, one call) or above the built model
(two-step load). Targets: load <= 1.5x the read's time, <= 1.2x its memory. Peers, when
installed: keras-hub's ``BertBackbone.from_preset(folder)`` (against our one call for the
same encoder + pooler) and transformers' ``BertForPreTraining.from_pretrained`` on PyTorch
(``--torch-python``: a Python that has torch and transformers).

    KERAS_BACKEND=tensorflow python benchmarks/bench_hf_load.py [--layers 12] [--repeat 3]
        [--torch-python /path/to/python]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STATUS = r"""
def status(key):  # MB; VmHWM (peak) is reset by exec, unlike ru_maxrss
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
"""

CHILD = STATUS + r"""
import json, os, sys, time, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.simplefilter("ignore")
import numpy as np, tensorflow as tf, keras
from safetensors.numpy import load_file
from bert4keras_ng.models import build_transformer_model
from bert4keras_ng.huggingface import read_hf_config
from bert4keras_ng.models.huggingface import from_hf_config
mode, folder = sys.argv[1:3]
heads = dict(with_pool=True, with_nsp=True, with_mlm=True, return_keras_model=False)
result = {"base_mb": status("VmRSS")}
t0 = time.perf_counter()
if mode == "read":
    arrays = load_file(os.path.join(folder, "model.safetensors"))
    result["values"] = int(sum(a.size for a in arrays.values()))
    result["seconds"] = time.perf_counter() - t0
elif mode == "two-step":
    kwargs, _ = from_hf_config(read_hf_config(folder), folder)
    builder = build_transformer_model(None, None, model="bert", **kwargs, **heads)
    result["build_seconds"] = time.perf_counter() - t0
    result["built_mb"] = status("VmRSS")
    t1 = time.perf_counter()
    builder.load_weights_from_checkpoint(folder)
    result["load_seconds"] = time.perf_counter() - t1
    result["seconds"] = time.perf_counter() - t0
    result["values"] = int(builder.model.count_params())
elif mode == "one-call":
    builder = build_transformer_model(checkpoint_path=folder, **heads)
    result["seconds"] = time.perf_counter() - t0
    result["values"] = int(builder.model.count_params())
elif mode == "backbone":  # what keras-hub's BertBackbone holds: encoder and pooler
    model = build_transformer_model(checkpoint_path=folder, with_pool=True,
                                    ignore_unused_variables=True)
    result["seconds"] = time.perf_counter() - t0
    result["values"] = int(model.count_params())
result["peak_mb"] = status("VmHWM")
print(json.dumps(result))
"""


# peers, each in its own fresh process: keras-hub's Hugging Face converter (BertBackbone) and
# transformers itself (PyTorch, when a Python with torch is given)
PEERS = {
    "keras-hub": r"""
import os, sys, time, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.simplefilter("ignore")
import json, tensorflow as tf, keras, keras_hub
""",
    "transformers": r"""
import os, sys, time, warnings, json
warnings.simplefilter("ignore")
import torch, transformers
torch.set_num_threads(os.cpu_count() or 1)
""",
}
PEER_LOAD = {
    "keras-hub": "model = keras_hub.models.BertBackbone.from_preset(folder); values = model.count_params()",
    "transformers": "model = transformers.BertForPreTraining.from_pretrained(folder); "
                    "values = sum(p.numel() for p in model.parameters())",
}
PEER_TAIL = STATUS + r"""
folder = sys.argv[2]
result = {"base_mb": status("VmRSS")}
t0 = time.perf_counter()
%s
result["seconds"] = time.perf_counter() - t0
result["values"] = int(values)
result["peak_mb"] = status("VmHWM")
print(json.dumps(result))
"""


def peer_script(peer):
    return PEERS[peer] + PEER_TAIL % PEER_LOAD[peer]


def write_folder(directory, layers):
    import numpy as np
    from safetensors.numpy import save_file

    H, I, V, P = 768, 3072, 21128, 512
    config = {
        "model_type": "bert", "architectures": ["BertForPreTraining"], "vocab_size": V,
        "hidden_size": H, "num_hidden_layers": layers, "num_attention_heads": 12,
        "intermediate_size": I, "hidden_act": "gelu", "max_position_embeddings": P,
        "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
    }
    rng = np.random.default_rng(0)

    def r(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    def linear(name, out, inp):
        arrays[name + ".weight"], arrays[name + ".bias"] = r(out, inp), r(out)

    def norm(name, width):
        arrays[name + ".weight"], arrays[name + ".bias"] = 1 + r(width), r(width)

    arrays = {
        "bert.embeddings.word_embeddings.weight": r(V, H),
        "bert.embeddings.token_type_embeddings.weight": r(2, H),
        "bert.embeddings.position_embeddings.weight": r(P, H),
        "cls.predictions.bias": r(V),
    }
    norm("bert.embeddings.LayerNorm", H)
    linear("bert.pooler.dense", H, H)
    linear("cls.seq_relationship", 2, H)
    linear("cls.predictions.transform.dense", H, H)
    norm("cls.predictions.transform.LayerNorm", H)
    for i in range(layers):
        p = "bert.encoder.layer.%d." % i
        for part in ("query", "key", "value"):
            linear(p + "attention.self." + part, H, H)
        linear(p + "attention.output.dense", H, H)
        norm(p + "attention.output.LayerNorm", H)
        linear(p + "intermediate.dense", I, H)
        linear(p + "output.dense", H, I)
        norm(p + "output.LayerNorm", H)
    save_file(arrays, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return sum(a.nbytes for a in arrays.values()) / 2**20


def measure(mode, folder, python=None):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # a local folder: no network look-ups
    script = peer_script(mode) if mode in PEERS else CHILD
    out = subprocess.run(
        [python or sys.executable, "-c", script, mode, folder],
        capture_output=True, text=True, env=env, check=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def importable(module, python=None):
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec(%r) is None)" % module
    return subprocess.run([python or sys.executable, "-c", code]).returncode == 0


def medians(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "%s, %d CPU(s) visible, Python %s" % (cpu, os.cpu_count() or 0, platform.python_version())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; medians are reported")
    parser.add_argument("--torch-python", default=None,
                        help="a Python with torch and transformers, for the transformers peer "
                             "(default: this one, when it has them)")
    args = parser.parse_args()
    pythons = {"keras-hub": None, "transformers": args.torch_python}
    peers = [p for p in PEERS if importable(p.replace("-", "_"), pythons[p])]
    print("machine: %s, load average %.1f at the start (possibly shared with other jobs: times "
          "are indicative, read the ratios)" % (machine(), os.getloadavg()[0]))
    with tempfile.TemporaryDirectory() as tmp:
        size = write_folder(tmp, args.layers)
        print("folder: %d layers, %.0f MB of float32 safetensors; %d run(s) per mode, medians"
              % (args.layers, size, args.repeat))
        runs = {m: [] for m in ["read", "two-step", "one-call", "backbone"] + peers}
        for _ in range(args.repeat):  # interleaved, so that load changes hit every mode alike
            for mode in runs:
                runs[mode].append(measure(mode, tmp, pythons.get(mode)))
        read, two, one, backbone = (medians(runs[m]) for m in ("read", "two-step", "one-call", "backbone"))
        peer_results = {p: medians(runs[p]) for p in peers}
    t, mb = read["seconds"], read["peak_mb"]
    read_extra = max(read["peak_mb"] - read["base_mb"], 1.0)
    print("%-50s %7s %7s %9s %9s" % ("", "seconds", "x read", "peak MB", "x read"))
    rows = [
        ("plain safetensors.numpy.load_file", t, mb),
        ("two-step: build (no weights)", two["build_seconds"], two["built_mb"]),
        ("two-step: load_weights_from_checkpoint(folder)", two["load_seconds"], two["peak_mb"]),
        ("one call: build_transformer_model(checkpoint_path=)", one["seconds"], one["peak_mb"]),
        ("one call, encoder + pooler only", backbone["seconds"], backbone["peak_mb"]),
    ]
    labels = {
        "keras-hub": "keras-hub BertBackbone.from_preset(folder)",
        "transformers": "transformers BertForPreTraining.from_pretrained",
    }
    rows += [(labels[p], r["seconds"], r["peak_mb"]) for p, r in peer_results.items()]
    for label, seconds, peak in rows:
        print("%-50s %7.2f %7.2f %9.0f %9.2f" % (label, seconds, seconds / t, peak, peak / mb))
    print("load average at the end: %.1f" % os.getloadavg()[0])
    if "keras-hub" in peer_results:
        print("keras-hub from_preset / our encoder + pooler one call: %.2fx the time"
              % (peer_results["keras-hub"]["seconds"] / backbone["seconds"]))
    if "transformers" in peer_results:
        print("transformers from_pretrained / our one call (same heads): %.2fx the time"
              % (peer_results["transformers"]["seconds"] / one["seconds"]))
    two_extra = two["peak_mb"] - two["built_mb"]
    print("transient memory: read %.0f MB above imports; two-step load %.0f MB above the built "
          "model (x%.2f of the read's); one call %.0f MB above imports (x%.2f)" % (
              read_extra, two_extra, two_extra / read_extra,
              one["peak_mb"] - one["base_mb"], (one["peak_mb"] - one["base_mb"]) / read_extra))


if __name__ == "__main__":
    main()
