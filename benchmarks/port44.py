"""How many real bert4keras scripts run on bert4keras_ng: imports renamed vs. after the porting tool.

Usage::

    python benchmarks/port44.py BERT4KERAS_REPO CLUE_BERT4KERAS_REPO --work /tmp/port44 \
        [--mode renamed ported] [--only NAME ...] [--timeout 900] [--python PYTHON]
    python benchmarks/port44.py - - --work - --report WORK/results.json [...]  # Markdown table

The two repositories (a checkout or a bare git mirror) give the 32 files of bert4keras 0.11.5's
``examples/`` and the 12 of CLUE-bert4keras's ``src/``. Nothing of them is kept in this
project: the scripts are read from the repositories into ``--work`` (outside the checkout),
where this harness writes tiny data in each script's own file format, tiny checkpoints
(2 layers, hidden size 64) and the scripts' copies. Before running, it points each script's
paths at the tiny files and shrinks its loop sizes (``epochs``, ``steps_per_epoch``,
``batch_size``, ``maxlen``, ``bert_layers``, Gibbs ``steps``); those edits are the harness's, not the porting
tool's. Then, per mode, it runs every script in a subprocess with this checkout first on the
path:

- ``renamed``: only ``bert4keras`` -> ``bert4keras_ng`` on import lines;
- ``ported``: ``python -m bert4keras_ng.port`` rules applied.

A script counts as running when it exits with status 0 (``basic_simple_web_serving_simbert``:
when its server is up). The scripts' own third-party packages (sympy, jieba, opencv, rouge,
nltk, scipy, cchess, ...) must be importable by ``--python``; the ImageNet weights
task_image_caption.py downloads are replaced by random ones under ``WORK/keras_home``. Results go to stdout and
``WORK/results.json``. The machine this runs on may be shared: the run takes tens of minutes.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bert4keras_ng.clue.tiny import SAMPLE_DIR, ensure_tiny_checkpoint, tiny_vocabulary  # noqa
from bert4keras_ng.port import port_source  # noqa: E402

SHRINK = [  # (pattern, new value) for module-level loop sizes
    (r"^(epochs\s*=\s*)\d+", r"\g<1>1"),
    (r"^(steps_per_epoch\s*=\s*)\d+", r"\g<1>2"),
    (r"^(batch_size\s*=\s*)\d+", r"\g<1>2"),
    (r"^(maxlen\s*=\s*)(\d{3,})", r"\g<1>64"),
    (r"^(bert_layers\s*=\s*)\d+", r"\g<1>2"),
    (r"^(steps\s*=\s*)\d+", r"\g<1>20"),
    (r"^(converged_steps\s*=\s*)\d+", r"\g<1>10"),
    (r"\b(num_hidden_layers\s*=\s*)\d+", r"\g<1>1"),  # a smaller model than the tiny one
]


# ----- the scripts -----------------------------------------------------------------------------
def read_repo_files(repo, folder):
    """{name: text} of the .py files in ``folder`` of a checkout or a (bare) git repository."""
    if os.path.isdir(os.path.join(repo, folder)):
        return {os.path.basename(p): open(p, encoding="utf-8").read()
                for p in sorted(glob.glob(os.path.join(repo, folder, "*.py")))}
    names = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", "HEAD", folder + "/"],
                           check=True, capture_output=True, text=True).stdout.split()
    return {os.path.basename(n): subprocess.run(["git", "-C", repo, "show", "HEAD:" + n],
                                                check=True, capture_output=True,
                                                text=True).stdout
            for n in names if n.endswith(".py")}


# ----- tiny data -------------------------------------------------------------------------------
def sample_texts():
    """Chinese sentences from the package's CLUE sample data (their characters are in the
    tiny vocabulary)."""
    texts = []
    for task, key in (("tnews", "sentence"), ("iflytek", "sentence"), ("afqmc", "sentence1")):
        with open(os.path.join(SAMPLE_DIR, task, "train.json"), encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)[key].strip()
                if 6 <= len(text) <= 60:
                    texts.append(text)
    return texts[:24]


def _write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding, errors="ignore") as f:
        f.write(text)


def write_data(data, texts):
    """Every data set the 44 scripts read, in its own format, under ``data``."""
    lines = lambda rows: "".join(r + "\n" for r in rows)  # noqa: E731
    jsonl = lambda rows: lines(json.dumps(r, ensure_ascii=False) for r in rows)  # noqa: E731
    n = len(texts)
    for part in ("train", "valid", "test"):
        _write(os.path.join(data, "datasets/sentiment/sentiment.%s.data" % part),
               lines("%s\t%d" % (t, i % 2) for i, t in enumerate(texts[:8])))
        _write(os.path.join(data, "datasets/lcqmc/lcqmc.%s.data" % part),
               lines("%s\t%s\t%d" % (texts[i], texts[(i + 1) % n], i % 2) for i in range(8)))
    for i in range(6):
        _write(os.path.join(data, "thuctc/news/%d.txt" % i),
               "%s\n%s\n%s" % (texts[i][:8], texts[i], texts[i + 6]))
        _write(os.path.join(data, "jinyong/book%d/1.txt" % (i % 2)),
               "  ".join(t.replace("。", "") + "。" for t in texts[i * 3:i * 3 + 3]), "gbk")
    for part in ("train", "val", "test"):
        _write(os.path.join(data, "csl/%s.tsv" % part),
               lines("%s\t%s" % (t[:6], t) for t in texts[:6]))
    qa = [{"question": texts[i][:5] + "？",
           "passages": [{"passage": texts[i], "answer": texts[i][2:4]},
                        {"passage": texts[i + 1], "answer": ""}]} for i in range(8)]
    _write(os.path.join(data, "qa/WebQA.json"), json.dumps(qa, ensure_ascii=False))
    _write(os.path.join(data, "qa/SogouQA.json"), json.dumps(qa, ensure_ascii=False))
    spo = [{"text": t, "spo_list": [{"subject": t[0:2], "predicate": "p%d" % (i % 2),
                                     "object": t[3:5]}]} for i, t in enumerate(texts[:8])]
    _write(os.path.join(data, "kg/train_data.json"), jsonl(spo))
    _write(os.path.join(data, "kg/dev_data.json"), jsonl(spo[:4]))
    _write(os.path.join(data, "kg/all_50_schemas"),
           jsonl({"object_type": "o", "predicate": "p%d" % i, "subject_type": "s"}
                 for i in range(2)))
    ape = [{"original_text": "%s有%d个，又来了%d个，一共有多少个？" % (texts[i][:2], i + 2, i + 1),
            "equation": "x=%d+%d" % (i + 2, i + 1), "ans": str(2 * i + 3)} for i in range(8)]
    for part in ("train", "valid", "test"):
        _write(os.path.join(data, "ape210k/%s.ape.json" % part), jsonl(ape))
    words = [" ".join(t[j:j + 2] for j in range(0, len(t), 2)) for t in texts[:8]]
    _write(os.path.join(data, "icwb2/training/pku_training.utf8"), lines(words))
    _write(os.path.join(data, "icwb2/testing/pku_test.utf8"), lines(texts[8:10]))
    ner = []
    for t in texts[:8]:
        tags = ["O"] * len(t)
        tags[1], tags[2] = "B-LOC", "I-LOC"
        ner.append("\n".join("%s %s" % (c, g) for c, g in zip(t, tags) if c.strip()))
    for part in ("train", "dev", "test"):
        _write(os.path.join(data, "ner/example.%s" % part), "\n\n".join(ner))
    opening = "h2e2h9g7b0c2b9c7"
    _write(os.path.join(data, "qipu.json"),
           jsonl({"fen": "", "items": {"棋局结果": str(r)}, "iccs": opening} for r in (2, 0, 1)))
    write_coco(os.path.join(data, "coco"), texts)
    write_clue_data(os.path.join(data, "clue"))
    write_cluener(os.path.join(data, "clue", "cluener"))
    write_chid_dev(os.path.join(data, "clue", "chid"))
    _write(os.path.join(data, "clue/iflytek/dev.json"),  # as iflytek2 below
           jsonl({"sentence": texts[0], "label": str(k)} for k in range(119)))
    # CLUE cmrc2018 also saves on exact-span accuracy above 0: one-character contexts leave a
    # single candidate span, the answer
    paragraphs = [{"context": t[0], "qas": [{"id": "q%d" % i, "question": t[1:6] + "？",
                                            "answers": [{"text": t[0], "answer_start": 0}]}]}
                  for i, t in enumerate(texts[:4])]
    _write(os.path.join(data, "clue/cmrc2018/dev.json"),
           json.dumps({"data": [{"paragraphs": paragraphs}]}, ensure_ascii=False))
    # the iflytek scripts save weights only when validation accuracy rises above 0, then load
    # them: a random tiny model predicts any of the 119 labels, so validation has one sentence
    # under each label, which makes any prediction right exactly once
    rows = jsonl({"id": i, "sentence": t, "label": str(i % 2)} for i, t in enumerate(texts[:8]))
    dev = jsonl({"id": k, "sentence": texts[0], "label": str(k)} for k in range(119))
    for part in ("train", "dev", "test"):
        _write(os.path.join(data, "iflytek2/%s.json" % part), dev if part == "dev" else rows)


def write_clue_data(folder, keep=12):
    """The package's CLUE sample data cut to ``keep`` examples per file (the scripts evaluate
    and predict one example at a time)."""
    for path in glob.glob(os.path.join(SAMPLE_DIR, "*", "*.json")):
        target = os.path.join(folder, os.path.relpath(path, SAMPLE_DIR))
        text = open(path, encoding="utf-8").read()
        try:
            document = json.loads(text)
        except ValueError:  # JSON lines
            rows = [line for line in text.splitlines() if line.strip()][:keep]
            _write(target, "".join(row + "\n" for row in rows))
            continue
        if isinstance(document, list):
            document = document[: keep // 2]
        elif isinstance(document, dict) and isinstance(document.get("data"), list):
            document = dict(document, data=document["data"][:2])
        _write(target, json.dumps(document, ensure_ascii=False))


CLUENER_REPEAT = 25  # x 320 records / batch 2 = 4000 training steps in the one shrunken epoch


def write_cluener(folder, repeat=CLUENER_REPEAT, dev_rows=20):
    """CLUENER training data the script can learn within its run: the package's 320 records
    (entities from a small lexicon) repeated ``repeat`` times, so that the single shrunken
    epoch has enough AdaFactor steps (lr 5e-4, scaled by the weights' RMS) to find entities.
    An untrained GlobalPointer scores spans on [CLS]/[SEP], whose ``rematch`` mapping is empty,
    and the script's ``mapping[start][0]`` then fails, with bert4keras too."""
    lines = {}
    for part in ("train", "dev"):
        with open(os.path.join(SAMPLE_DIR, "cluener", part + ".json"), encoding="utf-8") as f:
            lines[part] = [line for line in f if line.strip()]
    _write(os.path.join(folder, "train.json"), "".join(lines["train"] * repeat))
    _write(os.path.join(folder, "dev.json"), "".join(lines["dev"][:dev_rows]))


def write_chid_dev(folder):
    """CHID validation: one passage ten times, its blank's answer a different candidate each
    time, so any prediction of a random model is right exactly once and the script's
    ``val_acc > best_val_acc`` saves the weights it loads afterwards (as iflytek's sets)."""
    with open(os.path.join(SAMPLE_DIR, "chid", "dev.json"), encoding="utf-8") as f:
        record = json.loads(f.readline())
    text = record["content"][0]
    key = re.findall(r"#idiom\d{6}#", text)[0]
    rows, answers = [], {}
    for k in range(len(record["candidates"])):
        new_key = "#idiom%06d#" % (900000 + k)
        rows.append(json.dumps(dict(record, content=[text.replace(key, new_key)]),
                               ensure_ascii=False) + "\n")
        answers[new_key] = k
    _write(os.path.join(folder, "dev.json"), "".join(rows))
    _write(os.path.join(folder, "dev_answer.json"), json.dumps(answers))


def write_coco(folder, texts):
    """COCO caption annotations and 32x32 images (needs opencv; skipped without it)."""
    try:
        import cv2
        import numpy as np
    except ImportError:
        return
    for split in ("train2014", "val2014"):
        images, annotations = [], []
        for i in range(4):
            name = "%s_%d.jpg" % (split, i)
            os.makedirs(os.path.join(folder, split), exist_ok=True)
            cv2.imwrite(os.path.join(folder, split, name),
                        np.full((32, 32, 3), 40 * i, dtype="uint8"))
            images.append({"id": i, "file_name": name, "coco_url": name})
            annotations.append({"image_id": i, "caption": "a picture number %d" % i})
        _write(os.path.join(folder, "annotations/captions_%s.json" % split),
               json.dumps({"images": images, "annotations": annotations}))


def stand_in_imagenet_weights(keras_home):
    """Random MobileNetV2 weights where Keras looks for the ImageNet download (this machine
    has no internet; task_image_caption.py loads them)."""
    path = os.path.join(keras_home, "models",
                        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    if os.path.exists(path):
        return
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    os.makedirs(os.path.dirname(path), exist_ok=True)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def tiny_checkpoints(folder):
    """{family: (config, checkpoint, vocab)} for the families the scripts load."""
    out = {name: ensure_tiny_checkpoint(os.path.join(folder, name), model=name)
           for name in ("bert", "nezha")}
    albert = os.path.join(folder, "albert")
    prefix = os.path.join(albert, "albert_model.ckpt")
    if not os.path.exists(prefix + ".index"):
        from bert4keras_ng.models import build_transformer_model

        config_path, _, vocab_path = out["bert"]
        config = json.load(open(config_path))
        config.update(embedding_size=32)
        os.makedirs(albert, exist_ok=True)
        albert_config = os.path.join(albert, "albert_config.json")
        json.dump(config, open(albert_config, "w"))
        builder = build_transformer_model(albert_config, model="albert",
                                          return_keras_model=False)
        builder.save_weights_as_checkpoint(prefix)
    out["albert"] = (os.path.join(albert, "albert_config.json"), prefix, out["bert"][2])
    texts = sample_texts()
    spm_path = tiny_sentencepiece(os.path.join(folder, "spm"), texts)
    import sentencepiece

    spm_size = sentencepiece.SentencePieceProcessor(model_file=spm_path).get_piece_size()
    bert_config = json.load(open(out["bert"][0]))
    generative = {  # family -> (vocabulary, vocabulary size, config changes)
        "gpt2_ml": (out["bert"][2], bert_config["vocab_size"], {}),
        "gpt2": (spm_path, spm_size, dict(max_position_embeddings=1024)),  # CPM's n_ctx
        "mt5.1.1": (spm_path, spm_size, dict(attention_head_size=16,
                                            hidden_act=["gelu", "linear"])),
    }
    for family, (vocab, size, changes) in generative.items():
        out[family] = generative_checkpoint(os.path.join(folder, family), family,
                                            dict(bert_config, vocab_size=size, **changes), vocab)
    return out


def tiny_sentencepiece(folder, texts):
    """A SentencePiece model over the sample texts (the CPM and mT5 scripts read one), with the
    ``<cls>`` piece CPM's tokenizer translates newlines to."""
    prefix = os.path.join(folder, "tiny")
    if not os.path.exists(prefix + ".model"):
        import sentencepiece

        os.makedirs(folder, exist_ok=True)
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts * 4), model_prefix=prefix, vocab_size=200,
            character_coverage=1.0, model_type="unigram", user_defined_symbols=["<cls>"],
            hard_vocab_limit=False, minloglevel=2)
    return prefix + ".model"


def generative_checkpoint(folder, family, config, vocab):
    """(config, checkpoint, vocabulary) of a random ``family`` model, written by the project's
    own ``save_weights_as_checkpoint`` (bert4keras's variable names)."""
    from bert4keras_ng.models import build_transformer_model

    prefix = os.path.join(folder, "model.ckpt")
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(prefix + ".index"):
        os.makedirs(folder, exist_ok=True)
        json.dump(config, open(config_path, "w"))
        builder = build_transformer_model(config_path, model=family, return_keras_model=False)
        builder.save_weights_as_checkpoint(prefix)
        json.dump(list(range(config["vocab_size"])),
                  open(os.path.join(folder, "keep_tokens.json"), "w"))
    return config_path, prefix, vocab


# ----- per-script setup (the harness's edits, not the porting tool's) -------------------------
def data_paths(data):
    """Original path prefixes -> tiny data."""
    return [
        ("/root/CLUE-master/baselines/CLUEdataset/iflytek/", data + "/iflytek2/"),
        ("/root/clue/datasets/", data + "/clue/"),
        ("/root/qa_datasets/", data + "/qa/"),
        ("/root/kg/datasets/", data + "/kg/"),
        ("/root/thuctc/THUCNews/", data + "/thuctc/"),
        ("/root/金庸/", data + "/jinyong/"),
        ("/root/qipu.json", data + "/qipu.json"),
        ("/root/ape210k/", data + "/ape210k/"),
        ("/root/csl/", data + "/csl/"),
        ("/root/icwb2-data/", data + "/icwb2/"),
        ("/root/ner/china-people-daily-ner-corpus/", data + "/ner/"),
        ("/root/caption/coco/", data + "/coco/"),
    ]


def family_of(text):
    """The tiny checkpoint to use: by the model= the script builds (ALBERT or BERT layout)."""
    code = re.sub(r'"""[\s\S]*?"""', "", text)  # docstrings quote other set-ups
    models = re.findall(r"\bmodel\s*=\s*['\"]([\w.]+)['\"]", code)
    for family in ("gpt2_ml", "gpt2", "mt5.1.1"):
        if family in models:
            return family
    if "albert" in models:
        return "albert"
    if "nezha" in models:
        return "nezha"
    return "bert"


def prepare(text, data, checkpoints):
    """Point a script at the tiny files and shrink its loops."""
    config, checkpoint, vocab = checkpoints[family_of(text)]
    keep_tokens = os.path.join(os.path.dirname(checkpoint), "keep_tokens.json")
    for name, value in (("config_path", config), ("checkpoint_path", checkpoint),
                        ("dict_path", vocab), ("spm_path", vocab),
                        ("keep_tokens_path", keep_tokens)):
        text = re.sub(r"^(%s\s*=\s*).*$" % name, lambda m: m.group(1) + repr(value), text,
                      flags=re.M)
    for old, new in data_paths(data):
        text = text.replace(old, new)
    for pattern, value in SHRINK:
        text = re.sub(pattern, value, text, flags=re.M)
    return text


def rename_imports(text):
    """The 'renamed' mode: bert4keras -> bert4keras_ng on import lines only."""
    return re.sub(r"^(\s*(?:from|import)\s+)bert4keras\b", r"\1bert4keras_ng", text, flags=re.M)


MODES = {"renamed": rename_imports, "ported": lambda text: port_source(text)[0]}


# ----- running ---------------------------------------------------------------------------------
def run_script(python, folder, name, timeout, keras_home):
    stale = os.path.join(os.path.dirname(folder), "random_order.json")
    if os.path.exists(stale):  # written by a QA script over its own data, read by the others
        os.remove(stale)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", KERAS_HOME=keras_home)
    log_path = os.path.join(folder, name + ".log")
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, name], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        status = None
        while status is None and time.time() - start < timeout:
            time.sleep(1)
            status = proc.poll()
            if status is None and "WebServing: serving on" in open(log_path).read():
                status = "serving"
        if status is None or status == "serving":
            proc.kill()
            proc.wait()
    log_text = open(log_path, errors="replace").read()
    ok = status == 0 or status == "serving"
    reason = "" if ok else failure_reason(log_text, status)
    return {"ok": ok, "seconds": round(time.time() - start, 1), "reason": reason[:300]}


def failure_reason(log_text, status):
    """The last exception line of a failed run's log (``pkg.module.SomeError: ...`` too)."""
    errors = [line for line in log_text.splitlines()
              if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return errors[-1] if errors else ("timeout" if status is None else "exit %s" % status)


def markdown_report(results):
    """A Markdown table of ``{mode: {script: result}}``: one row per script, one column per
    mode (with its seconds), then the last error line of each failure."""
    modes = [m for m in MODES if m in results]
    scripts = sorted({key for entries in results.values() for key in entries})
    rows = ["| script | %s | last error |" % " | ".join(modes),
            "|---|%s---|" % ("---|" * len(modes))]
    for key in scripts:
        cells, errors = [], []
        for mode in modes:
            entry = results[mode].get(key)
            if entry is None:
                cells.append("not run")
                continue
            cells.append("%s (%.0f s)" % ("runs" if entry["ok"] else "fails", entry["seconds"]))
            if not entry["ok"]:
                errors.append("%s: %s" % (mode, entry["reason"].replace("|", "\\|")))
        rows.append("| `%s` | %s | %s |" % (key, " | ".join(cells), "; ".join(errors)))
    totals = ["%s: %d of %d run" % (m, sum(e["ok"] for e in results[m].values()),
                                    len(results[m])) for m in modes]
    return "\n".join(rows) + "\n\n" + "; ".join(totals) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bert4keras_repo")
    parser.add_argument("clue_repo")
    parser.add_argument("--work", required=True)
    parser.add_argument("--mode", nargs="+", default=["renamed", "ported"], choices=MODES)
    parser.add_argument("--only", nargs="*", help="script names to run (default: all 44)")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--reuse-identical", action="store_true",
                        help="a script whose text is the same in both modes is run once (the "
                             "result of the other mode is reused)")
    parser.add_argument("--report", nargs="+", metavar="RESULTS_JSON",
                        help="print a Markdown table of these results.json files (merged in "
                             "order, a later entry replacing an earlier one) and exit")
    args = parser.parse_args(argv)
    if args.report:
        merged = {}
        for path in args.report:
            for mode, entries in json.load(open(path)).items():
                merged.setdefault(mode, {}).update(entries)
        print(markdown_report(merged), end="")
        return
    work = os.path.abspath(args.work)
    if os.path.abspath(work).startswith(ROOT + os.sep):
        parser.error("--work must be outside the checkout (the scripts are not to be kept)")
    groups = {"examples": read_repo_files(args.bert4keras_repo, "examples"),
              "clue": read_repo_files(args.clue_repo, "src")}
    print("scripts: %d examples, %d CLUE" % (len(groups["examples"]), len(groups["clue"])))
    data = os.path.join(work, "data")
    write_data(data, sample_texts())
    checkpoints = tiny_checkpoints(os.path.join(work, "checkpoints"))
    keras_home = os.path.join(work, "keras_home")
    stand_in_imagenet_weights(keras_home)
    results_path = os.path.join(work, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for mode in args.mode:
        for group, scripts in groups.items():
            folder = os.path.join(work, mode, group)
            os.makedirs(folder, exist_ok=True)
            if group == "examples":  # relative 'datasets/...' paths
                target = os.path.join(folder, "datasets")
                if not os.path.exists(target):
                    os.symlink(os.path.join(data, "datasets"), target)
            texts = {name: MODES[mode](prepare(text, data, checkpoints))
                     for name, text in scripts.items()}
            for name, text in texts.items():
                with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                    f.write(text)
            for name in sorted(scripts):
                if args.only and name not in args.only and name[:-3] not in args.only:
                    continue
                key = "%s/%s" % (group, name)
                same = [m for m in MODES if m != mode and key in results.get(m, {})
                        and MODES[m](prepare(scripts[name], data, checkpoints)) == texts[name]]
                if args.reuse_identical and same:
                    result = dict(results[same[0]][key], same_text_as=same[0])
                else:
                    result = run_script(args.python, folder, name, args.timeout, keras_home)
                results.setdefault(mode, {})[key] = result
                print("%-8s %-52s %-4s %6.1fs %s" % (mode, group + "/" + name,
                                                     "ok" if result["ok"] else "FAIL",
                                                     result["seconds"], result["reason"]),
                      flush=True)
                json.dump(results, open(results_path, "w"), indent=1, ensure_ascii=False)
    for mode, entries in results.items():
        print("%s: %d of %d run" % (mode, sum(e["ok"] for e in entries.values()), len(entries)))
    print("(timings from a machine shared with other jobs)")


if __name__ == "__main__":
    main()
