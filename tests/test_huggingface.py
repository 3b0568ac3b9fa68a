"""Hugging Face folders in and out.

Goldens: tests/fixtures/make_hf_folders.py (random-init tiny ``transformers`` models saved with
``save_pretrained`` plus a legacy ``pytorch_model.bin`` copy, and their outputs on padded
inputs). The safetensors cases need no torch; the ``.bin`` cases and the ``from_pretrained``
check skip (with the reason) where torch / transformers are not installed.
"""

import importlib.util
import json
import os
import shutil
import sys
import warnings

import keras
import numpy as np
import pytest

from bert4keras_ng.huggingface import HFReader, is_hf_folder, load_hf_tokenizer
from bert4keras_ng.models import CheckpointMismatchError, build_transformer_model
from tests.model_cases import build_case

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = os.path.join(HERE, "fixtures", "hf_folders")
TOL = 1e-5
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TRANSFORMERS = HAS_TORCH and importlib.util.find_spec("transformers") is not None

# case -> [(build options, output names in model order)]
HEADS = {
    "bert": [
        ({}, ["sequence"]),
        (dict(with_pool=True), ["pooled"]),
        (dict(with_pool=True, with_nsp=True, with_mlm="linear"), ["nsp", "mlm"]),
    ],
    "albert": [({}, ["sequence"]), (dict(with_pool=True, with_nsp=True, with_mlm="linear"), ["nsp", "mlm"])],
    "electra": [({}, ["sequence"]), (dict(with_discriminator="linear"), ["discriminator"])],
    "electra_generator": [({}, ["sequence"]), (dict(with_mlm="linear"), ["mlm"])],
    "roformer": [({}, ["sequence"]), (dict(with_mlm="linear"), ["mlm"])],
    # made with transformers 4.46 (5.x dropped Nezha): tests/fixtures/make_hf_nezha.py
    "nezha": [
        ({}, ["sequence"]),
        (dict(with_pool=True), ["pooled"]),
        (dict(with_pool=True, with_nsp=True, with_mlm="linear"), ["nsp", "mlm"]),
    ],
}
PARAMS = [(case, i) for case, variants in HEADS.items() for i in range(len(variants))]


def golden(case):
    data = np.load(os.path.join(FOLDERS, case + ".npz"))
    return [data["input/token_ids"], data["input/segment_ids"]], data


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def compare(name, ours, theirs, token_ids):
    """Max error on real tokens; our NSP is softmax(logits), the HF golden is logits."""
    ours = keras.ops.convert_to_numpy(ours).astype(np.float64)
    theirs = theirs.astype(np.float64)
    if name == "discriminator":
        ours = ours[..., 0]
    if name == "nsp":
        theirs = np.exp(theirs - theirs.max(-1, keepdims=True))
        theirs /= theirs.sum(-1, keepdims=True)
    if ours.shape[:2] == token_ids.shape:
        ours, theirs = ours[token_ids > 0], theirs[token_ids > 0]
    # float32 logits of a few units: 1e-5 relative to the output scale
    return np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())


def check_outputs(model, case, names):
    feed, data = golden(case)
    outputs = as_list(model(feed, training=False))
    assert len(outputs) == len(names)
    for name, out in zip(names, outputs):
        err = compare(name, out, data["output/" + name], feed[0])
        assert err <= TOL, "%s %s: error %.3g vs transformers" % (case, name, err)


@pytest.mark.parametrize("case,variant", PARAMS)
def test_safetensors_folder_matches_transformers(case, variant):
    options, names = HEADS[case][variant]
    folder = os.path.join(FOLDERS, case)
    assert is_hf_folder(folder)
    model = build_transformer_model(checkpoint_path=folder, **options)  # no config, no model=
    check_outputs(model, case, names)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed: pytorch_model.bin needs it")
@pytest.mark.parametrize("case", sorted(HEADS))
def test_pytorch_bin_folder_matches_transformers(case):
    options, names = HEADS[case][-1]
    model = build_transformer_model(checkpoint_path=os.path.join(FOLDERS, case + "_bin"), **options)
    check_outputs(model, case, names)


def test_pytorch_bin_without_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match="pytorch_model.bin.*needs torch.*safetensors"):
        build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert_bin"))


def test_sharded_safetensors_folder():
    folder = os.path.join(FOLDERS, "bert_sharded")
    reader = HFReader(folder)
    assert reader.kind == "safetensors" and len({id(h) for h, _ in reader._owner.values()}) == 2
    model = build_transformer_model(checkpoint_path=folder, with_pool=True, with_nsp=True, with_mlm="linear")
    check_outputs(model, "bert", ["nsp", "mlm"])


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed: pytorch_model-*.bin shards need it")
def test_sharded_pytorch_bin_folder():
    """pytorch_model-0000x-of-0000y.bin shards with their index (transformers 4 save_pretrained)."""
    folder = os.path.join(FOLDERS, "bert_sharded_bin")
    reader = HFReader(folder)
    assert reader.kind == "torch" and len({id(h) for h, _ in reader._owner.values()}) == 2
    model = build_transformer_model(checkpoint_path=folder, with_pool=True, with_nsp=True, with_mlm="linear")
    check_outputs(model, "bert", ["nsp", "mlm"])


def test_sharded_pytorch_bin_without_torch_names_the_shard(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pytorch_model-00001-of-00002.bin.*needs torch"):
        build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert_sharded_bin"))


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_a_shard_index_naming_a_missing_file_is_a_clear_error(tmp_path, kind):
    source = "bert_sharded" if kind == "safetensors" else "bert_sharded_bin"
    folder = tmp_path / source
    shutil.copytree(os.path.join(FOLDERS, source), folder)
    shard = sorted(p for p in os.listdir(folder) if "-00002-of-" in p)[0]
    os.remove(folder / shard)
    with pytest.raises(FileNotFoundError, match="missing from the folder: %s" % shard):
        HFReader(str(folder))


def test_nezha_relative_positions_follow_transformers_convention():
    """transformers' NEZHA table, indexed [query i, key j], is row clip(j - i, -64, 64) + 64 of a
    sinusoid over the row number (sin on even, cos on odd columns): our relative embedding
    gives the same array for the same lengths, so its convention is theirs, checked by value."""
    from bert4keras_ng.layers import RelativePositionEmbedding

    data = np.load(os.path.join(FOLDERS, "nezha.npz"))
    table = data["relative_table"]  # (length, length, head size)
    layer = RelativePositionEmbedding(input_dim=2 * 64 + 1, output_dim=table.shape[-1],
                                      embeddings_initializer="sinusoidal")
    x = np.zeros((1, table.shape[0], 4), np.float32)
    ours = keras.ops.convert_to_numpy(layer([x, x]))
    np.testing.assert_allclose(ours, table, atol=1e-6)
    # the distance sign matters: the table is not symmetric in i, j
    assert np.abs(table - table.transpose(1, 0, 2)).max() > 0.1


def test_nezha_export_is_what_transformers_4_loaded(tmp_path):
    """Our export of the NEZHA folder is, tensor for tensor, the folder that make_hf_nezha.py
    loaded with transformers 4.46's NezhaForPreTraining.from_pretrained, whose outputs (stored
    as export/*) equal those of the original model."""
    from safetensors.numpy import load_file

    builder = build_transformer_model(
        checkpoint_path=os.path.join(FOLDERS, "nezha"), with_pool=True, with_nsp=True,
        with_mlm="linear", return_keras_model=False,
    )
    out = builder.save_weights_as_huggingface(tmp_path / "out")
    reference = os.path.join(FOLDERS, "nezha_export")
    ours, theirs = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(reference, "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    with open(os.path.join(out, "config.json")) as a, open(os.path.join(reference, "config.json")) as b:
        assert json.load(a) == json.load(b)
    data = np.load(os.path.join(FOLDERS, "nezha.npz"))
    ids = data["input/token_ids"]
    for key in ("sequence", "pooled", "mlm", "nsp"):  # logits on both sides
        theirs, original = data["export/" + key], data["output/" + key]
        if original.shape[:2] == ids.shape:
            theirs, original = theirs[ids > 0], original[ids > 0]
        assert np.abs(theirs - original).max() <= TOL * max(1.0, np.abs(original).max()), key


def test_reader_strips_the_base_prefix_and_reads_float32():
    reader = HFReader(os.path.join(FOLDERS, "bert"))
    assert reader.format == "huggingface" and reader.prefixed
    assert "embeddings.word_embeddings.weight" in reader and "cls.predictions.bias" in reader
    assert reader.shape("encoder.layer.1.intermediate.dense.weight") == (24, 16)
    assert reader.read("embeddings.LayerNorm.weight").dtype == np.float32
    with pytest.raises(KeyError, match="embeddings.LayerNorm.weight"):
        reader.read("embeddings.LayerNorm.weights")


def test_keep_tokens_apply_to_hf_folders():
    keep = [0, 2, 3, 7, 11, 5]
    model = build_transformer_model(
        checkpoint_path=os.path.join(FOLDERS, "bert"), with_mlm="linear", keep_tokens=keep
    )
    feed, data = golden("bert")
    ids = np.where(feed[0] > 0, 1 + feed[0] % 5, 0)  # ids into the kept vocabulary
    full = build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert"), with_mlm="linear")
    ours = keras.ops.convert_to_numpy(model([ids, feed[1]]))
    reference = keras.ops.convert_to_numpy(full([np.asarray(keep)[ids], feed[1]]))[..., keep]
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("case", ["gpt2", "t5", "t5.1.1", "mt5"])
def test_generative_folders_match_transformers(case):
    """GPT2LMHeadModel logits; T5 / T5.1.1 / mT5 encoder states and decoder logits (causal, so
    padded decoder positions are left out with the encoder's)."""
    data = np.load(os.path.join(FOLDERS, case + ".npz"))
    ids = data["input/token_ids"]
    real = ids > 0
    if case == "gpt2":
        model = build_transformer_model(checkpoint_path=os.path.join(FOLDERS, case), final_activation="linear")
        assert compare("lm", model(ids), data["output/lm"], ids) <= TOL
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key of transformers' T5 configs is understood
        builder = build_transformer_model(
            checkpoint_path=os.path.join(FOLDERS, case), with_lm="linear", return_keras_model=False
        )
    assert builder.model_name == {"t5": "t5.1.0", "t5.1.1": "t5.1.1", "mt5": "mt5.1.1"}[case]
    assert compare("encoder", builder.encoder(ids), data["output/encoder"], ids) <= TOL
    logits = keras.ops.convert_to_numpy(builder.model([ids, data["output/decoder_ids"]]))
    err = np.abs(logits[real] - data["output/lm"][real]).max() / max(1.0, np.abs(data["output/lm"]).max())
    assert err <= TOL, "decoder logits: %.3g" % err
    encoder = build_transformer_model(checkpoint_path=os.path.join(FOLDERS, case),
                                      model=builder.model_name + "_encoder")  # the other stack is allowed
    assert compare("encoder", encoder(ids), data["output/encoder"], ids) <= TOL


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed: pytorch_model.bin needs it")
@pytest.mark.parametrize("case", ["gpt2", "t5", "t5.1.1", "mt5"])
def test_generative_bin_folders_load_the_same_weights_as_safetensors(case):
    """The legacy pytorch_model.bin form of each generative folder (GPT2's with the causal-mask
    buffers older files carry) loads to exactly the weights of its safetensors twin."""
    ours = build_case_weights(os.path.join(FOLDERS, case))
    legacy = build_case_weights(os.path.join(FOLDERS, case + "_bin"))
    assert sorted(ours) == sorted(legacy)
    for path in ours:
        np.testing.assert_array_equal(ours[path], legacy[path], err_msg=path)


def build_case_weights(folder):
    kwargs = {} if "gpt2" in folder else dict(with_lm="linear")
    model = build_transformer_model(checkpoint_path=folder, **kwargs)
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights if "seed_generator" not in w.path}


@pytest.mark.parametrize("case", ["gpt2", "t5", "t5.1.1", "mt5"])
def test_generative_export_reproduces_save_pretrained(tmp_path, case):
    """GPT2's fused c_attn is put back together and the T5.1.1 / mT5 head's sqrt(d_model)
    factor undone: the same tensors as save_pretrained wrote; the export loads back identically."""
    from safetensors.numpy import load_file

    source = os.path.join(FOLDERS, case)
    options = dict(final_activation="linear") if case == "gpt2" else dict(with_lm="linear")
    builder = build_transformer_model(checkpoint_path=source, return_keras_model=False, **options)
    out = builder.save_weights_as_huggingface(tmp_path / "out")
    theirs, ours = load_file(os.path.join(source, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    assert sorted(ours) == sorted(set(theirs) - tied)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=0, err_msg=name)
    config = json.load(open(os.path.join(out, "config.json")))
    reference = json.load(open(os.path.join(source, "config.json")))
    keys = (["n_embd", "n_layer", "n_head", "n_inner", "n_positions", "activation_function"] if case == "gpt2"
            else ["d_model", "d_kv", "d_ff", "num_layers", "num_heads", "model_type"])
    for key in keys + ["vocab_size", "architectures"]:
        assert config[key] == reference[key], key
    again = build_transformer_model(checkpoint_path=out, return_keras_model=False, **options)
    data = np.load(os.path.join(FOLDERS, case + ".npz"))
    feed = data["input/token_ids"] if case == "gpt2" else [data["input/token_ids"], data["output/decoder_ids"]]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again.model(feed)),
                               keras.ops.convert_to_numpy(builder.model(feed)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2_lm", "t5.1.0_full", "mt5.1.1_full"])
def test_generative_tf1_checkpoint_to_hf_folder_and_back_is_bit_exact(tmp_path, name):
    from tests.generative_cases import build_case as build_generative

    overrides = {} if name.startswith("gpt") else dict(cross_position_bias=False)
    builder, feed, _ = build_generative(name, **overrides)
    folder = builder.save_weights_as_huggingface(tmp_path / name)
    again = build_transformer_model(checkpoint_path=folder, return_keras_model=False,
                                    model=builder.model_name)
    assert again.hidden_act == builder.hidden_act  # erf GELU survives as gated-gelu_python
    ours = {w.path: keras.ops.convert_to_numpy(w) for w in builder.model.weights}
    back = {w.path: keras.ops.convert_to_numpy(w) for w in again.model.weights}
    assert sorted(ours) == sorted(back)
    head = "Decoder-Output-LM/kernel"  # stored / sqrt(d_model) for transformers, read back * it
    for path in ours:
        if head in path:  # sqrt(32) is irrational: within one float32 rounding
            np.testing.assert_allclose(back[path], ours[path], rtol=1.2e-7, atol=0, err_msg=path)
        else:
            np.testing.assert_array_equal(back[path], ours[path], err_msg=path)
    inputs = list(feed.values())
    inputs = inputs if len(inputs) > 1 else inputs[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again.model(inputs)),
                               keras.ops.convert_to_numpy(builder.model(inputs)),
                               rtol=0, atol=0 if name != "mt5.1.1_full" else 1e-6)


def test_t5_keep_tokens_slice_the_untied_head():
    keep = [0, 1, 5, 9, 30, 2]
    folder = os.path.join(FOLDERS, "mt5")
    data = np.load(os.path.join(FOLDERS, "mt5.npz"))
    ids = np.where(data["input/token_ids"] > 0, 1 + data["input/token_ids"] % 5, 0)
    dec = np.where(data["output/decoder_ids"] > 0, 1 + data["output/decoder_ids"] % 5, 0)
    small = build_transformer_model(checkpoint_path=folder, with_lm="linear", keep_tokens=keep)
    full = build_transformer_model(checkpoint_path=folder, with_lm="linear")
    keep = np.asarray(keep)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small([ids, dec])),
                               keras.ops.convert_to_numpy(full([keep[ids], keep[dec]]))[..., keep], atol=1e-5)


def test_fused_and_scaled_views():
    reader = HFReader(os.path.join(FOLDERS, "gpt2"))
    fused = reader.read("h.0.attn.c_attn.weight")
    parts = [reader.read("h.0.attn.c_attn.weight|split=1:%d:3" % n) for n in range(3)]
    assert reader.shape("h.0.attn.c_attn.weight|split=1:2:3") == (16, 16)
    np.testing.assert_array_equal(np.concatenate(parts, 1), fused)
    t5 = HFReader(os.path.join(FOLDERS, "mt5"))
    np.testing.assert_allclose(t5.read("lm_head.weight|scale=sqrt:d_model"), t5.read("lm_head.weight") * 4.0)


# ---- boundary errors -----------------------------------------------------------------------


def edited_copy(tmp_path, case, **changes):
    folder = tmp_path / case
    shutil.copytree(os.path.join(FOLDERS, case), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_contradicting_model_is_an_error():
    with pytest.raises(ValueError, match="model='roformer' contradicts.*model_type 'bert'"):
        build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert"), model="roformer")
    # agreeing names are fine
    build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert"), model="roberta")


def test_config_path_beside_a_folder_is_an_error(tmp_path):
    other = tmp_path / "bert_config.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="config_path=None"):
        build_transformer_model(str(other), os.path.join(FOLDERS, "bert"))


@pytest.mark.parametrize(
    "case,changes,message",
    [
        ("roformer", dict(rotary_value=True), "rotary_value=True cannot be honoured"),
        ("albert", dict(num_hidden_groups=2), "num_hidden_groups=2"),
        ("bert", dict(position_embedding_type="relative_key"), "position_embedding_type"),
        ("bert", dict(hidden_act="mish_x"), "hidden_act='mish_x'"),
        ("bert", dict(model_type="roberta"), "RobertaModel offsets positions"),
        ("bert", dict(model_type="llama"), "model_type 'llama' has no counterpart"),
    ],
)
def test_settings_we_cannot_honour_are_errors(tmp_path, case, changes, message):
    folder = edited_copy(tmp_path, case, **changes)
    with pytest.raises(ValueError, match=message) as info:
        build_transformer_model(checkpoint_path=folder)
    assert "config.json" in str(info.value) or "model_type" in str(info.value)


def test_unknown_config_key_warns(tmp_path):
    folder = edited_copy(tmp_path, "bert", shiny_new_option=3)
    with pytest.warns(UserWarning, match="shiny_new_option"):
        build_transformer_model(checkpoint_path=folder)


def test_layer_norm_eps_is_honoured(tmp_path):
    folder = edited_copy(tmp_path, "bert", layer_norm_eps=0.5)
    builder = build_transformer_model(checkpoint_path=folder, return_keras_model=False)
    assert builder.model.get_layer("Embedding-Norm").epsilon == 0.5
    assert builder.model.get_layer("Transformer-1-FeedForward-Norm").epsilon == 0.5


def test_unused_blocks_fail_the_load():
    with pytest.raises(CheckpointMismatchError, match=r"(?s)encoder\.layer\.1\..*num_hidden_layers"):
        build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert"), num_hidden_layers=1)


def test_missing_weight_names_the_variable(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = edited_copy(tmp_path, "bert")
    arrays = load_file(os.path.join(folder, "model.safetensors"))
    del arrays["bert.encoder.layer.1.output.LayerNorm.bias"]
    save_file(arrays, os.path.join(folder, "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layer\.1\.output\.LayerNorm\.bias"):
        build_transformer_model(checkpoint_path=folder)


# ---- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_from_the_folder_matches_transformers():
    with open(os.path.join(FOLDERS, "tokenizer.json"), encoding="utf-8") as f:
        expected = json.load(f)
    tokenizer = load_hf_tokenizer(os.path.join(FOLDERS, "bert"))
    for text, ids in expected.items():
        assert tokenizer.encode(text)[0] == ids, text


def test_tokenizer_from_a_wordpiece_tokenizer_json(tmp_path):
    vocab = open(os.path.join(FOLDERS, "bert", "vocab.txt"), encoding="utf-8").read().split()
    spec = {"normalizer": {"type": "BertNormalizer", "lowercase": True},
            "model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(vocab)}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    tokenizer = load_hf_tokenizer(str(tmp_path))
    with open(os.path.join(FOLDERS, "tokenizer.json"), encoding="utf-8") as f:
        for text, ids in json.load(f).items():
            assert tokenizer.encode(text)[0] == ids
    spec["model"]["type"] = "Unigram"
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="Unigram tokenizer"):
        load_hf_tokenizer(str(tmp_path))


# ---- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("case,variant", [("bert", 2), ("albert", 1), ("electra", 1), ("electra_generator", 1), ("roformer", 1)])
def test_export_reproduces_save_pretrained(tmp_path, case, variant):
    """Folder -> ours -> save_weights_as_huggingface: the same tensors under the same names as
    transformers' save_pretrained wrote, a config transformers reads the same way, and the
    exported folder loads back to identical outputs."""
    from safetensors.numpy import load_file

    options, names = HEADS[case][variant]
    source = os.path.join(FOLDERS, case)
    builder = build_transformer_model(checkpoint_path=source, return_keras_model=False, **options)
    out = builder.save_weights_as_huggingface(tmp_path / "out", vocab=os.path.join(source, "vocab.txt"))
    theirs = load_file(os.path.join(source, "model.safetensors"))
    ours = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    config = json.load(open(os.path.join(out, "config.json")))
    reference = json.load(open(os.path.join(source, "config.json")))
    for key in ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "hidden_act", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps", "embedding_size"):
        assert config.get(key) == reference.get(key), key
    assert open(os.path.join(out, "vocab.txt")).read() == open(os.path.join(source, "vocab.txt")).read()
    again = build_transformer_model(checkpoint_path=out, **options)
    feed, _ = golden(case)
    for a, b in zip(as_list(builder.model(feed)), as_list(again(feed))):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


_FROM_PRETRAINED = """
import sys, numpy as np, torch, transformers
folder, feed, out, kind = sys.argv[1:]
data = np.load(feed)
ids = torch.tensor(data["input/token_ids"]).long()
with torch.no_grad():
    if kind == "causal":
        model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        np.savez(out, lm=model(input_ids=ids, attention_mask=(ids > 0).long()).logits.numpy())
    elif kind == "seq2seq":
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        hf = model(input_ids=ids, attention_mask=(ids > 0).long(),
                   decoder_input_ids=torch.tensor(data["output/decoder_ids"]).long())
        np.savez(out, lm=hf.logits.numpy(), encoder=hf.encoder_last_hidden_state.numpy())
    else:
        model = transformers.AutoModel.from_pretrained(folder).eval()
        hf = model(input_ids=ids, token_type_ids=torch.tensor(data["input/segment_ids"]).long(),
                   attention_mask=(ids > 0).long(), output_hidden_states=True)
        extra = {"pooled": hf.pooler_output.numpy()} if getattr(hf, "pooler_output", None) is not None else {}
        np.savez(out, sequence=hf.hidden_states[-1].numpy(), **extra)
"""


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers + torch not installed")
@pytest.mark.parametrize("case", ["bert", "albert", "electra", "roformer", "gpt2", "t5", "t5.1.1", "mt5"])
def test_export_loads_in_transformers(tmp_path, case):  # pragma: no cover - reference env only
    """Export -> transformers from_pretrained -> the same outputs as the original folder's (in a
    subprocess: TensorFlow and torch in one process can crash)."""
    import subprocess

    kind = {"gpt2": "causal", "t5": "seq2seq", "t5.1.1": "seq2seq", "mt5": "seq2seq"}.get(case, "encoder")
    options = {"encoder": dict(with_pool=True) if case in ("bert", "albert") else {},
               "causal": dict(final_activation="linear"), "seq2seq": dict(with_lm="linear")}[kind]
    builder = build_transformer_model(
        checkpoint_path=os.path.join(FOLDERS, case), return_keras_model=False, **options
    )
    out = builder.save_weights_as_huggingface(tmp_path / "out")
    result = tmp_path / "hf.npz"
    subprocess.run(
        [sys.executable, "-c", _FROM_PRETRAINED, out, os.path.join(FOLDERS, case + ".npz"), str(result), kind],
        check=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    hf = np.load(result)
    data = np.load(os.path.join(FOLDERS, case + ".npz"))
    ids = data["input/token_ids"]
    for key in hf.files:
        if key == "pooled":
            reference = keras.ops.convert_to_numpy(builder.model(golden(case)[0]))
        else:
            reference = data["output/" + key]
        assert compare(key, hf[key], reference, ids) <= TOL, key


@pytest.mark.parametrize("name", ["bert_pool_nsp_mlm", "albert_pool_nsp_mlm", "nezha_mlm", "roformer_pool_mlm", "electra_discriminator"])
def test_tf1_checkpoint_to_hf_folder_and_back_is_bit_exact(tmp_path, name):
    """TF1 checkpoint (bert4keras goldens) -> ours -> Hugging Face folder -> ours."""
    builder, feed, _ = build_case(name)
    with warnings.catch_warnings():
        # NEZHA / RoFormer / ALBERT have two LayerNorm epsilons, Hugging Face one (a warning)
        warnings.simplefilter("ignore")
        folder = builder.save_weights_as_huggingface(tmp_path / name)
    again = build_transformer_model(
        checkpoint_path=folder,
        return_keras_model=False,
        with_pool=builder.with_pool,
        with_nsp=builder.with_nsp,
        with_mlm=builder.with_mlm,
        with_discriminator=builder.with_discriminator,
    )
    ours = {w.path: keras.ops.convert_to_numpy(w) for w in builder.model.weights}
    back = {w.path: keras.ops.convert_to_numpy(w) for w in again.model.weights}
    assert sorted(ours) == sorted(back)
    for path in ours:
        np.testing.assert_array_equal(back[path], ours[path], err_msg=path)
    if builder.hf_model_type in ("bert", "electra"):  # one epsilon: the same network
        for a, b in zip(as_list(builder.model(feed)), as_list(again.model(feed))):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_export_is_atomic(tmp_path):
    builder = build_transformer_model(checkpoint_path=os.path.join(FOLDERS, "bert"), return_keras_model=False)
    target = tmp_path / "out"
    builder.save_weights_as_huggingface(target)
    before = sorted(os.listdir(target))
    with pytest.raises(FileNotFoundError):
        from bert4keras_ng.huggingface import write_hf_folder

        write_hf_folder(target, {"model_type": "bert"}, {"x": np.zeros(2)}, {"vocab.txt": str(tmp_path / "nope")})
    assert sorted(os.listdir(target)) == before  # the old folder is untouched
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder left behind
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 tokens but the model's vocab_size is 40"):
        builder.save_weights_as_huggingface(target, vocab=str(tmp_path / "short.txt"))


def test_families_without_counterpart_refuse_export(tmp_path):
    builder = build_transformer_model(
        model="roformer_v2", vocab_size=20, hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=12, hidden_act="gelu", return_keras_model=False,
    )
    with pytest.raises(ValueError, match="no Hugging Face counterpart"):
        builder.save_weights_as_huggingface(tmp_path / "x")


# ---- CLUE runner ---------------------------------------------------------------------------


def test_clue_runner_finds_config_vocab_and_family_in_a_folder():
    from bert4keras_ng.clue import runner

    folder = os.path.join(FOLDERS, "albert")
    _, cfg, tiny, _ = runner._resolve(runner.RunConfig(task="afqmc", checkpoint=folder))
    assert (cfg.model, cfg.config, cfg.vocab) == (
        "albert", os.path.join(folder, "config.json"), os.path.join(folder, "vocab.txt"))
    assert not tiny
    _, cfg, tiny, _ = runner._resolve(runner.RunConfig(task="afqmc"))  # the demo keeps its default
    assert cfg.model == runner.DEFAULT_MODEL and tiny


@pytest.mark.slow
def test_clue_runner_takes_a_folder_as_checkpoint(tmp_path):
    from bert4keras_ng.clue import runner

    folder = os.path.join(FOLDERS, "albert")
    results = runner.run(runner.RunConfig(task="afqmc", checkpoint=folder, epochs=1, maxlen=32,
                                          batch_size=32, verbose=0, output=str(tmp_path)))
    settings = results["settings"]
    assert settings["model"] == "albert"  # the family came from the folder
    assert settings["config"] == os.path.join(folder, "config.json")
    assert settings["vocab"] == os.path.join(folder, "vocab.txt")
    assert not results["tiny_checkpoint"] and len(results["history"]) == 1
    with pytest.raises(ValueError, match="contradicts"):
        runner.run(runner.RunConfig(task="afqmc", checkpoint=folder, model="roformer", epochs=1,
                                    verbose=0, output=str(tmp_path / "2")))


def test_strip_transpose_equals_numpy():
    from bert4keras_ng.checkpoints import transpose

    rng = np.random.default_rng(0)
    for shape in [(300, 517), (64, 2048), (129, 1024), (5, 7), (4,)]:  # a partial last strip too
        a = rng.standard_normal(shape).astype(np.float32)
        out = transpose(a)
        assert out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, a.T)
        into = np.empty(a.T.shape, np.float64)  # into a given array, cast on the way
        assert transpose(a, out=into) is into
        np.testing.assert_array_equal(into, a.T.astype(np.float64))


def test_tokenizer_from_a_t5_folder_with_spiece_model(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["我是人 hello world", "大地上的 abc", "the quick brown fox"] * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=31,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    folder = tmp_path / "t5"
    folder.mkdir()
    (tmp_path / "spiece.model").rename(folder / "spiece.model")
    (folder / "config.json").write_text(json.dumps({"model_type": "mt5"}))
    tokenizer = load_hf_tokenizer(str(folder))
    reference = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    ids, _ = tokenizer.encode("hello world")
    assert ids == reference.encode("hello world") + [1]  # T5 style: no start token, </s> at the end


def test_bfloat16_safetensors_read_as_float32(tmp_path):
    """NumPy has no bfloat16: such tensors are read from the memory map and widened."""
    import struct

    a = np.array([[1.5, -2.25, 3.0], [0.1, 7.0, -0.5]], dtype=np.float32)
    bf16 = (a.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, bf16.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bf16.tobytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    value = HFReader(str(tmp_path)).read("w")
    expected = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, expected)
    assert np.abs(value - a).max() < 0.01


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    folder = edited_copy(tmp_path, "bert")
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors.*incomplete"):
        build_transformer_model(checkpoint_path=folder)


def _write_safetensors(path, header, data=b""):
    import struct

    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    "header, data, message",
    [
        ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 16,
         "tensor 'w' of shape \\(2, 2\\) \\(F32\\) has data_offsets \\[0, 12\\]"),
        ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype C64"),
        ({"w": {"dtype": "F32", "shape": [4]}}, b"\0" * 16, "header entry 'w' is malformed"),
        ({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, b"\0" * 16,
         "is truncated: tensor 'w' ends at byte"),
    ],
)
def test_bad_safetensors_headers_are_clear_errors(tmp_path, header, data, message):
    _write_safetensors(tmp_path / "model.safetensors", header, data)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=message):
        HFReader(str(tmp_path))


def test_safetensors_reads_are_views_and_survive_release():
    """Reads are views of the memory map (no copy); releasing a tensor's pages after the
    loader copied it does not change what a later read returns."""
    from safetensors.numpy import load_file

    reader = HFReader(os.path.join(FOLDERS, "bert"))
    expected = load_file(os.path.join(FOLDERS, "bert", "model.safetensors"))
    name = "encoder.layer.0.intermediate.dense.weight"
    first = reader.read(name)
    assert not first.flags.writeable and not first.flags.owndata
    np.testing.assert_array_equal(first, expected["bert." + name])
    reader.release(name)
    np.testing.assert_array_equal(reader.read(name), expected["bert." + name])
    assert reader.concurrent_reads


def test_compound_tokens_apply_to_hf_folders():
    """compound_tokens append rows that are means of existing rows (embedding and MLM bias)."""
    compound = [[5, 7], ([3, 9, 11], [1.0, 2.0, 1.0])]
    folder = os.path.join(FOLDERS, "bert")
    builder = build_transformer_model(checkpoint_path=folder, with_mlm="linear",
                                      compound_tokens=compound, return_keras_model=False)
    reader = HFReader(folder)
    table = reader.read("embeddings.word_embeddings.weight").astype(np.float64)
    bias = reader.read("cls.predictions.bias").astype(np.float64)
    ours = keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].embeddings)
    ours_bias = keras.ops.convert_to_numpy(builder.layers["MLM-Bias"].beta)
    assert ours.shape == (42, 16)
    np.testing.assert_allclose(ours[40], table[[5, 7]].mean(0), atol=1e-6)
    np.testing.assert_allclose(ours[41], (table[3] + 2 * table[9] + table[11]) / 4, atol=1e-6)
    np.testing.assert_allclose(ours_bias[:40], bias, atol=0)
    np.testing.assert_allclose(ours_bias[41], (bias[3] + 2 * bias[9] + bias[11]) / 4, atol=1e-6)
