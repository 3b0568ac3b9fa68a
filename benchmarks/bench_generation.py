"""How fast does our cached, compiled generation run, next to bert4keras and keras-hub?

One run measures new tokens per second for greedy generation of ``--tokens`` new tokens (128 by
default) after a ``--prompt``-token prompt (32), at batch 1 and 16, for
  * a GPT2-base-shaped decoder (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 50257):
    bert4keras_ng ``model='gpt2'`` (``application='lm'`` BERT of the same shape where the GPT2
    family is not available) through :class:`bert4keras_ng.generation.Generator`;
    keras-hub ``GPT2CausalLM.generate`` (cached, XLA-compiled; greedy sampler);
    bert4keras 0.11.5 ``AutoRegressiveDecoder`` (tf_keras, uncached: the whole prefix through
    ``predict`` each step; batch 16 = ``random_sample(n=16, topk=1)``, its batched path), in a
    worker process of the reference venv (``--bert4keras-python``);
  * a T5-base-shaped encoder-decoder (12 + 12 layers, hidden 768, 12 heads, GEGLU FFN 2048,
    vocabulary 32128, t5.1.1): ours and bert4keras's (keras-hub's T5 has no cached generate),
    when this checkout has the T5 family.
Random weights, no end id (every row generates exactly ``--tokens`` tokens). Figures are the
median of ``--repeats`` timed calls after one untimed call (which compiles; its time is printed
as "first call"), the implementations timed in alternating rounds so that a shared machine's
drift falls on all alike. Ratios are ours / theirs in tokens per second, of the same run.

    python benchmarks/bench_generation.py --tokens 32          # a short run
    python benchmarks/bench_generation.py --quick              # 2 small layers, checks the script
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def shapes(args):
    if args.quick:
        gpt = dict(layers=2, hidden=128, heads=4, ffn=512, vocab=5000)
        t5 = dict(layers=2, hidden=128, heads=4, ffn=256, vocab=5000)
    else:
        gpt = dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257)
        t5 = dict(layers=12, hidden=768, heads=12, ffn=2048, vocab=32128)
    return {"gpt2": gpt, "t5": t5}


def prompts(batch, length, vocab, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(5, vocab, size=(batch, length)).astype("int32")


def seconds_of(name, fn):
    """Wall seconds of one call (the bert4keras worker reports its own)."""
    if name.startswith("bert4keras "):
        return fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def config(cfg, t5=False):
    out = dict(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], num_hidden_layers=cfg["layers"],
               num_attention_heads=cfg["heads"], intermediate_size=cfg["ffn"],
               hidden_act=["gelu", "linear"] if t5 else "gelu", max_position_embeddings=1024,
               type_vocab_size=0)
    if t5:
        out.update(relative_attention_num_buckets=32, attention_head_size=cfg["hidden"] // cfg["heads"])
    return out


# ---- ours -------------------------------------------------------------------------------------
def ours_gpt(cfg, args):
    from bert4keras_ng.generation import Generator
    from bert4keras_ng.models import MODELS, build_transformer_model

    family = "gpt2" if "gpt2" in MODELS else "bert"
    kwargs = {} if family == "gpt2" else dict(application="lm", segment_vocab_size=0)
    model = build_transformer_model(**config(cfg), model=family, max_position=1024, **kwargs)
    gen = Generator(model, end_id=None, maxlen=args.tokens)

    def run(batch):
        tokens = prompts(batch, args.prompt, cfg["vocab"])
        return lambda: gen.greedy([[t] for t in tokens])

    return family, run


def ours_t5(cfg, args):
    import numpy as np

    from bert4keras_ng.generation import Generator
    from bert4keras_ng.models import build_transformer_model

    t5 = build_transformer_model(**config(cfg, t5=True), model="t5.1.1",
                                 return_keras_model=False)
    gen = Generator(t5.decoder, end_id=None, maxlen=args.tokens, start_id=0)

    def run(batch):
        tokens = prompts(batch, args.prompt, cfg["vocab"])

        def call():
            context = np.asarray(t5.encoder.predict(tokens, verbose=0))
            return gen.greedy([[c] for c in context])

        return call

    return "t5.1.1", run


# ---- keras-hub ----------------------------------------------------------------------------------
def keras_hub_gpt(cfg, args):
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=cfg["vocab"], num_layers=cfg["layers"], num_heads=cfg["heads"],
        hidden_dim=cfg["hidden"], intermediate_dim=cfg["ffn"], dropout=0.0,
        max_sequence_length=1024)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    total = args.prompt + args.tokens

    def run(batch):
        tokens = np.zeros((batch, total), "int32")
        tokens[:, : args.prompt] = prompts(batch, args.prompt, cfg["vocab"])
        mask = np.zeros((batch, total), bool)
        mask[:, : args.prompt] = True
        inputs = {"token_ids": tokens, "padding_mask": mask}
        return lambda: lm.generate(inputs, max_length=total, stop_token_ids=None)

    return run


# ---- bert4keras 0.11.5 (worker process of the reference venv) ----------------------------------
BERT4KERAS_WORKER = textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    os.environ["TF_KERAS"] = "1"
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    request = json.loads(sys.argv[1])
    cfg, kind, args = request["config"], request["kind"], request["args"]
    from bert4keras.models import build_transformer_model
    from bert4keras.snippets import AutoRegressiveDecoder
    path = os.path.join(tempfile.mkdtemp(), "config.json")
    with open(path, "w") as handle:
        json.dump(cfg, handle)
    if kind == "gpt2":
        model = build_transformer_model(path, model="gpt2")

        class Decoder(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype="probas")
            def predict(self, inputs, output_ids, states):
                token_ids = np.concatenate([inputs[0], output_ids], 1)
                return self.last_token(model).predict(token_ids, verbose=0)

        encode = lambda tokens: [tokens]
        start = None
    else:
        t5 = build_transformer_model(path, model="mt5.1.1", return_keras_model=False)

        class Decoder(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype="probas")
            def predict(self, inputs, output_ids, states):
                return self.last_token(t5.decoder).predict([inputs[0], output_ids], verbose=0)

        encode = lambda tokens: [t5.encoder.predict(tokens[None], verbose=0)[0]]
        start = 0
    decoder = Decoder(start_id=start, end_id=-1, maxlen=args["tokens"])
    rng = np.random.default_rng(0)
    prompt = rng.integers(5, cfg["vocab_size"], size=args["prompt"]).astype("int32")
    print("READY", flush=True)
    for line in sys.stdin:  # one command per line: the batch size, or quit
        command = line.strip()
        if command == "quit":
            break
        batch = int(command)
        t0 = time.perf_counter()
        if batch == 1:
            decoder.beam_search(encode(prompt), topk=1)
        else:
            decoder.random_sample(encode(prompt), batch, topk=1)
        print("DONE %.6f" % (time.perf_counter() - t0), flush=True)
    """
)


class Bert4kerasWorker:
    """bert4keras 0.11.5 in a process of the reference venv; returns the seconds of each call."""

    def __init__(self, kind, cfg, args):
        env = dict(os.environ)
        env.pop("KERAS_BACKEND", None)
        request = json.dumps({"kind": kind, "config": config(cfg, kind == "t5"),
                              "args": {"tokens": args.bert4keras_tokens or args.tokens,
                                       "prompt": args.prompt}})
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [args.bert4keras_python, "-c", BERT4KERAS_WORKER, request],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            cwd=tempfile.gettempdir())
        self._expect("READY")

    def _expect(self, word):
        line = self.process.stdout.readline()
        while line and not line.startswith(word):
            line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(tail[0][:300])
        return line

    def run(self, batch):
        def call():
            self.process.stdin.write("%d\n" % batch)
            self.process.stdin.flush()
            return float(self._expect("DONE").split()[1])

        return call

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per row")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="gpt2,t5")
    parser.add_argument("--only", default="ours,keras_hub,bert4keras")
    parser.add_argument("--bert4keras-python", default="/work/refvenv/bin/python")
    parser.add_argument("--bert4keras-tokens", type=int, default=None,
                        help="fewer new tokens for the (slow, uncached) bert4keras runs; its "
                             "tokens/s is then that of a shorter generation (an upper bound)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import keras

    batches = [int(b) for b in args.batches.split(",")]
    only = set(args.only.split(","))
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or '?'}), "
          f"backend {keras.backend.backend()}, keras {keras.__version__}; a shared machine: "
          "compare the ratios of one run, not absolute figures across runs")
    print(f"greedy, prompt {args.prompt}, {args.tokens} new tokens per row"
          + (f" (bert4keras: {args.bert4keras_tokens})" if args.bert4keras_tokens else ""))
    from bert4keras_ng.models import MODELS

    cases = shapes(args)
    for kind in args.models.split(","):
        cfg = cases[kind]
        if kind == "t5" and "t5.1.1" not in MODELS:
            print("t5: skipped (this checkout has no T5 family)")
            continue
        runners = {}
        if "ours" in only:
            name, run = (ours_gpt if kind == "gpt2" else ours_t5)(cfg, args)
            runners[f"bert4keras_ng {name}"] = (run, args.tokens)
        if "keras_hub" in only and kind == "gpt2":
            runners["keras-hub GPT2CausalLM"] = (keras_hub_gpt(cfg, args), args.tokens)
        worker = None
        if "bert4keras" in only:
            try:
                worker = Bert4kerasWorker(kind, cfg, args)
                runners["bert4keras 0.11.5 (uncached)"] = (worker.run,
                                                           args.bert4keras_tokens or args.tokens)
            except (OSError, RuntimeError) as e:
                print(f"bert4keras: skipped ({e})")
        print(f"\n{kind}: {cfg}")
        for batch in batches:
            calls = {name: make(batch) for name, (make, _) in runners.items()}
            first = {name: seconds_of(name, fn) for name, fn in calls.items()}  # compiles
            times = {name: [] for name in calls}
            for _ in range(args.repeats):  # alternating rounds: drift falls on all alike
                for name, fn in calls.items():
                    times[name].append(seconds_of(name, fn))
            speeds = {}
            for name, (_, tokens) in runners.items():
                seconds = statistics.median(times[name])
                speeds[name] = batch * tokens / seconds
                print(f"  batch {batch:2d}  {name:34s} {speeds[name]:9.1f} tokens/s  "
                      f"({seconds:.2f} s; first call {first[name]:.1f} s)", flush=True)
            ours = [v for k, v in speeds.items() if k.startswith("bert4keras_ng")]
            for name, value in speeds.items():
                if ours and not name.startswith("bert4keras_ng"):
                    print(f"  batch {batch:2d}  ours / {name}: {ours[0] / value:.2f}x")
        if worker is not None:
            worker.close()


if __name__ == "__main__":
    main()
