"""Building with a checkpoint skips the random initialisation of the loaded weights: the result
must be the same model as build-then-load, weights the checkpoint lacks must still come from
their declared initializers, and layer configs must not change. Also: the layers that report
their output shape without tracing call() agree with what call() returns."""

import os

import keras
import numpy as np
import pytest

from bert4keras_ng import checkpoints
from bert4keras_ng.layers import FeedForward, GatedAttentionUnit, MultiHeadAttention
from bert4keras_ng.models import CheckpointMismatchError, build_transformer_model

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "models")


def ckpt(family):
    return os.path.join(FIXTURES, family, "bert_model.ckpt")


def config(family):
    return os.path.join(FIXTURES, family, "bert_config.json")


def model_arrays(model):
    """{variable path: value} of the model's weights (seed-generator states excluded)."""
    return {
        w.path: keras.ops.convert_to_numpy(w)
        for w in model.weights
        if "seed_generator" not in w.path
    }


def in_stateless_scope():
    from keras.src.backend.common.stateless_scope import in_stateless_scope as check

    return check()


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("bert", dict(with_pool=True, with_nsp=True, with_mlm=True)),
        ("nezha", dict(with_mlm=True)),  # non-trainable relative table, not in the checkpoint
        ("roformer_v2", {}),  # DepthScaledTruncatedNormal initializer
        ("gau_alpha", {}),
    ],
)
def test_one_call_build_equals_build_then_load(family, kwargs):
    one = build_transformer_model(config(family), ckpt(family), model=family, **kwargs)
    two = build_transformer_model(config(family), model=family, return_keras_model=False, **kwargs)
    assert two.load_weights_from_checkpoint(ckpt(family)) > 0
    a, b = model_arrays(one), model_arrays(two.model)
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    ids = np.array([[2, 5, 7, 9, 0, 0], [3, 4, 1, 8, 6, 2]], dtype="int32")
    inputs = [ids, np.zeros_like(ids)]
    for x, y in zip(keras.tree.flatten(one.predict(inputs, verbose=0)),
                    keras.tree.flatten(two.model.predict(inputs, verbose=0))):
        np.testing.assert_array_equal(x, y)
    assert not in_stateless_scope()


def test_weights_the_checkpoint_lacks_get_their_declared_initializers():
    arrays = checkpoints.load_variables(ckpt("bert"))
    arrays = {k: v for k, v in arrays.items() if "pooler" not in k}  # no pooler in this one
    cond = keras.Input((16,), name="Condition")
    with pytest.warns(UserWarning, match="bert/pooler/dense/kernel"):
        builder = build_transformer_model(
            config("bert"), arrays, with_pool=True, ignore_invalid_weights=True,
            layer_norm_cond=cond, layer_norm_cond_hidden_size=512,
            additional_input_layers=cond, return_keras_model=False,
        )
    layers = builder.layers
    # loaded from the checkpoint, bit for bit
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layers["Embedding-Token"].embeddings),
        arrays["bert/embeddings/word_embeddings"],
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layers["Transformer-0-FeedForward-Norm"].gamma),
        arrays["bert/encoder/layer_0/output/LayerNorm/gamma"],
    )
    # not in the checkpoint: TruncatedNormal(stddev=0.02) draws (truncated at 2 sigma, whose
    # standard deviation is 0.02 * 0.8796) and zeros for the bias
    samples = [
        keras.ops.convert_to_numpy(layers["Pooler-Dense"].kernel),  # (32, 32)
        keras.ops.convert_to_numpy(layers["Embedding-Norm"].hidden_dense.kernel),  # (16, 512)
    ]
    for values in samples:
        assert np.abs(values).max() <= 0.04 + 1e-6
        assert 0.0150 < values.std() < 0.0202, values.std()
        assert abs(values.mean()) < 0.002
    assert not np.any(keras.ops.convert_to_numpy(layers["Pooler-Dense"].bias))
    # and the configs say what was used
    for layer, key in (("Pooler-Dense", "kernel_initializer"), ("Embedding-Token", "embeddings_initializer"),
                       ("Embedding-Norm", "hidden_initializer")):
        init = layers[layer].get_config()[key]
        assert init["class_name"] == "TruncatedNormal" and init["config"]["stddev"] == 0.02, init


def test_one_call_mismatch_raises_and_leaves_keras_usable():
    with pytest.raises(CheckpointMismatchError, match="Nothing was loaded"):
        build_transformer_model(config("bert"), ckpt("bert"), vocab_size=61)
    assert not in_stateless_scope()
    model = build_transformer_model(config("bert"), ckpt("bert"))
    words = checkpoints.load_variables(ckpt("bert"), ["bert/embeddings/word_embeddings"])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("Embedding-Token").embeddings),
        words["bert/embeddings/word_embeddings"],
    )


def test_one_call_model_saves_and_reloads(tmp_path):
    model = build_transformer_model(config("bert"), ckpt("bert"), with_pool=True, with_mlm=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    ids = np.array([[2, 5, 7, 9, 0]], dtype="int32")
    for x, y in zip(model.predict([ids, ids * 0], verbose=0), again.predict([ids, ids * 0], verbose=0)):
        np.testing.assert_array_equal(x, y)


def test_already_built_layers_passed_in_are_loaded_too():
    shared = {}
    build_transformer_model(config("bert"), layers=shared)  # creates and builds every layer
    builder = build_transformer_model(config("bert"), ckpt("bert"), layers=shared,
                                      return_keras_model=False)
    words = checkpoints.load_variables(ckpt("bert"), ["bert/embeddings/word_embeddings"])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].embeddings),
        words["bert/embeddings/word_embeddings"],
    )


# ---- one copy per tensor: adopted buffers, prefetching, materialize ---------------------------

HF_BERT = os.path.join(os.path.dirname(FIXTURES), "hf_folders", "bert")
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="buffer adoption is TensorFlow-only"
)


@pytest.fixture
def adopt_everything(monkeypatch):
    """Adopt every array, however small (the fixtures' tensors are below the size limit)."""
    from bert4keras_ng.models import transformer

    monkeypatch.setattr(transformer, "_ADOPT_MIN_BYTES", 0)


def _tensors_share_memory(model, arrays):
    pointers = {a.__array_interface__["data"][0] for a in arrays.values()}
    return any(keras.ops.convert_to_numpy(w).__array_interface__["data"][0] in pointers for w in model.weights)


@TF_ONLY
@pytest.mark.parametrize("one_call", [True, False])
def test_adopted_values_never_alias_the_callers_arrays(adopt_everything, one_call):
    """A dict checkpoint is the caller's: its arrays are copied, so changing them later (or
    training the model) cannot reach the other side."""
    arrays = checkpoints.load_variables(ckpt("bert"))
    name = "bert/embeddings/word_embeddings"
    expected = arrays[name].copy()
    if one_call:
        model = build_transformer_model(config("bert"), arrays)
    else:
        builder = build_transformer_model(config("bert"), return_keras_model=False)
        builder.load_weights_from_checkpoint(arrays)
        model = builder.model
    arrays[name][...] = 0
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("Embedding-Token").embeddings), expected
    )


@TF_ONLY
@pytest.mark.parametrize("source", ["tf1", "hf"])
def test_adopted_buffers_load_bit_exact_and_train_like_copied_ones(adopt_everything, monkeypatch, source):
    """Variables created on (or assigned) an adopted buffer hold the same values as copied
    ones and take optimizer updates alike; TF1 reads are adopted without any copy."""
    from bert4keras_ng.models import transformer

    def build(adopt):
        monkeypatch.setattr(transformer, "_ADOPT_MIN_BYTES", 0 if adopt else 1 << 62)
        quiet = dict(with_mlm=True, dropout_rate=0.0, attention_dropout_rate=0.0)
        if source == "tf1":
            return build_transformer_model(config("bert"), ckpt("bert"), **quiet)
        return build_transformer_model(checkpoint_path=HF_BERT, **quiet)

    adopted, copied = build(True), build(False)
    a, b = model_arrays(adopted), model_arrays(copied)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    ids = np.array([[2, 5, 7, 9, 0, 0], [3, 4, 1, 8, 6, 2]], dtype="int32")
    x, y = [ids, np.zeros_like(ids)], np.eye(adopted.output.shape[-1])[ids]
    for model in (adopted, copied):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
        model.train_on_batch(x, y)
    a2, b2 = model_arrays(adopted), model_arrays(copied)
    for path in a2:
        np.testing.assert_allclose(a2[path], b2[path], rtol=0, atol=1e-6, err_msg=path)
    moved = [p for p in a2 if "Embedding-Token" in p or "FeedForward" in p]
    assert moved and all(np.abs(a2[p] - a[p]).max() > 0 for p in moved)


def test_materialize_copies_once_aligned_cast_and_transposed():
    rng = np.random.default_rng(1)
    stored = rng.standard_normal((300, 517)).astype(np.float64)
    for transposed in (False, True):
        out = checkpoints.materialize(stored, transposed, np.float32)
        want = (stored.T if transposed else stored).astype(np.float32)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
        assert out.ctypes.data % checkpoints.ALIGNMENT == 0
        assert not np.shares_memory(out, stored)
        np.testing.assert_array_equal(out, want)
    fresh = checkpoints.aligned_empty((8, 9), np.float32)
    assert checkpoints.materialize(fresh, fresh=True) is fresh  # nobody else holds it
    assert checkpoints.materialize(fresh) is not fresh  # the caller's: copied
    view = np.ones((64, 64), np.float32)[:, :32]  # not contiguous: copied even when fresh
    assert checkpoints.materialize(view, fresh=True).flags.c_contiguous


class _FailingReader:
    """Delegates to a Hugging Face folder reader but fails reading one tensor, on a worker."""

    format, validated, concurrent_reads = "huggingface", True, True

    def __init__(self, folder, bad):
        from bert4keras_ng.huggingface import HFReader

        self.inner, self.bad = HFReader(folder), bad
        self.config, self.ignorable = self.inner.config, self.inner.ignorable

    def names(self):
        return self.inner.names()

    def __contains__(self, name):
        return name in self.inner

    def shape(self, name):
        return self.inner.shape(name)

    def describe(self):
        return self.inner.describe()

    def read(self, name):
        if name == self.bad:
            raise OSError("disk error reading %s" % name)
        return self.inner.read(name)


@pytest.mark.parametrize("one_call", [True, False])
def test_a_read_error_on_a_worker_thread_reaches_the_caller(one_call):
    reader = _FailingReader(HF_BERT, "encoder.layer.1.output.dense.weight")
    with pytest.raises(OSError, match="disk error reading encoder.layer.1.output.dense.weight"):
        if one_call:
            build_transformer_model(checkpoint_path=reader, model="bert", config_path=None,
                                    **_hf_kwargs())
        else:
            builder = build_transformer_model(model="bert", return_keras_model=False, **_hf_kwargs())
            builder.load_weights_from_checkpoint(reader)
    assert not in_stateless_scope()
    model = build_transformer_model(checkpoint_path=HF_BERT)  # Keras is still usable
    assert model.count_params() > 0


def _hf_kwargs():
    from bert4keras_ng.huggingface import read_hf_config
    from bert4keras_ng.models.huggingface import from_hf_config

    return from_hf_config(read_hf_config(HF_BERT), HF_BERT)[0]


# ---- symbolic output specs (no tracing) agree with call() -----------------------------------


def _symbolic_and_eager(layer, shapes, arrays, **kwargs):
    symbolic = layer([keras.Input(s[1:], batch_size=s[0]) for s in shapes], **kwargs)
    eager = layer(arrays, **kwargs)
    return keras.tree.flatten(symbolic), keras.tree.flatten(eager)


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize(
    "options, call",
    [
        (dict(heads=2, head_size=3, out_dim=5), {}),
        (dict(heads=2, key_size=4, return_attention_scores=True), {}),
        (dict(heads=2, head_size=4), dict(p_bias="rotary")),
        (dict(heads=2, head_size=4), dict(p_bias="typical_relative")),
    ],
)
def test_attention_output_spec_matches_call(dtype, options, call):
    rng = np.random.default_rng(0)
    b, n, d = 2, 5, 8
    shapes = [(b, n, d)] * 3
    if call.get("p_bias") == "rotary":
        shapes.append((1, n, options.get("key_size") or options["head_size"]))
    if call.get("p_bias") == "typical_relative":
        shapes.append((n, n, options["head_size"]))
    arrays = [rng.standard_normal(s).astype("float32") for s in shapes]
    layer = MultiHeadAttention(dtype=dtype, **options)
    symbolic, eager = _symbolic_and_eager(layer, shapes, arrays, **call)
    assert [tuple(s.shape) for s in symbolic] == [tuple(e.shape) for e in eager]
    assert [s.dtype for s in symbolic] == [keras.backend.standardize_dtype(e.dtype) for e in eager]


def test_attention_argument_errors_still_raise_at_model_construction():
    x = keras.Input((5, 8))
    with pytest.raises(ValueError, match="expects inputs"):
        MultiHeadAttention(heads=2)([x, x, x], a_bias=True)
    with pytest.raises(ValueError, match="p_bias"):
        MultiHeadAttention(heads=2)([x, x, x], p_bias="absolute")
    with pytest.raises(ValueError, match="head_size == key_size"):
        MultiHeadAttention(heads=2, key_size=2)([x, x, x, keras.Input((5, 4), batch_size=5)],
                                                p_bias="typical_relative")


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_gau_and_feedforward_output_specs_match_call(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 8)).astype("float32")
    gau = GatedAttentionUnit(units=6, key_size=4, dtype=dtype)
    symbolic, eager = _symbolic_and_eager(gau, [(2, 5, 8)], [x])
    assert tuple(symbolic[0].shape) == tuple(eager[0].shape) == (2, 5, 8)
    assert symbolic[0].dtype == keras.backend.standardize_dtype(eager[0].dtype)
    for activation in ("gelu", ["gelu", "linear"]):
        ffn = FeedForward(units=12, activation=activation, dtype=dtype)
        s = ffn(keras.Input((5, 8), batch_size=2))
        e = ffn(x)
        assert tuple(s.shape) == tuple(e.shape) and s.dtype == keras.backend.standardize_dtype(e.dtype)
    with pytest.raises(ValueError, match="expects inputs"):
        GatedAttentionUnit(units=6, key_size=4)([keras.Input((5, 8))] * 2)


# ---- reading overlaps building: the speculative reads cover the whole plan -------------------

HF_FOLDERS = os.path.join(os.path.dirname(FIXTURES), "hf_folders")


@pytest.mark.parametrize(
    "source, kwargs",
    [
        ("bert", dict(with_pool=True, with_nsp=True, with_mlm=True)),
        ("albert", dict(with_mlm=True)),
        ("roformer", {}),
        ("electra", dict(with_discriminator=True)),
        ("gpt2", {}),
        ("t5", {}),
        ("mt5", {}),
        ("tf1:bert", dict(with_pool=True, with_nsp=True, with_mlm=True)),
        ("tf1:nezha", dict(with_mlm=True)),
        ("tf1:gau_alpha", {}),
    ],
)
def test_every_tensor_of_a_one_call_load_is_read_before_the_plan_asks(source, kwargs, monkeypatch):
    """The one-call load makes its reads from the family's table before the layers exist (and,
    for memory-mapped safetensors, starts them on worker threads); the plan, once checked, must
    find every tensor it needs among them: a family whose table the speculation misreads would
    load correctly but read serially after the plan. (A TF1 reader holds the GIL, so its reads
    still run after the plan; the TF1 cases check only that the table walk matches.)"""
    from bert4keras_ng.models import transformer

    seen = {}
    original = transformer.Transformer._checkpoint_plan

    def plan(self, reader, mapping=None, reads=None):
        made = {id(t) for ts in (reads or {}).values() for t in ts}
        result = original(self, reader, mapping, reads)
        seen["made"], seen["plan"] = made, [v for _, v in result]
        return result

    monkeypatch.setattr(transformer.Transformer, "_checkpoint_plan", plan)
    if source.startswith("tf1:"):  # a TF1 checkpoint of the test families
        family = source[4:]
        model = build_transformer_model(config(family), ckpt(family), model=family, **kwargs)
    else:
        model = build_transformer_model(checkpoint_path=os.path.join(HF_FOLDERS, source), **kwargs)
    reads = [v for v in seen["plan"] if isinstance(v, transformer._ReadThunk)]
    assert reads, "the plan read nothing from the folder"
    late = [v.name for v in reads if id(v) not in seen["made"]]
    assert not late, "read only after the plan was checked: %s" % late
    assert model.count_params() > 0


def test_speculative_reads_are_matched_by_name_transpose_and_dtype():
    """A thunk made for another dtype is not taken for a variable of this one."""
    from bert4keras_ng.models import transformer

    reader = checkpoints.open_checkpoint(os.path.join(HF_FOLDERS, "bert"))
    name = "encoder.layer.0.attention.self.query.weight"
    a = transformer._ReadThunk(reader, name, True, "float32")
    assert a.key == transformer._ReadThunk(reader, name, True, "float32").key
    assert a.key != transformer._ReadThunk(reader, name, False, "float32").key
    assert a.key != transformer._ReadThunk(reader, name, True, "bfloat16").key
