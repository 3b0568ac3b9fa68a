"""Shared checks for layers and models: config round trip, .keras save/load, mixed precision, XLA,
padding invariance, and context managers that always restore the global Keras dtype settings.

Typical use in a layer test:

    factory = functools.partial(MultiHeadAttention, heads=2, head_size=4)
    check_layer(factory, [x, x, x], masks=[m, m, m], call_kwargs={"p_bias": None})

`factory(**extra)` must build a fresh layer; the checks pass `dtype=` through `extra`.
"""

import contextlib
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Tolerances of mixed-precision outputs against float32, relative to max(1, max |float32 output|).
MIXED_TOLERANCES = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}
# Tolerances of XLA against eager (same float32 weights, only kernel/fusion order differs).
JIT_ATOL, JIT_RTOL = 1e-5, 1e-5


@contextlib.contextmanager
def dtype_policy(name):
    """Set the global Keras dtype policy inside the block and always restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def global_floatx(name):
    """Set the global Keras floatx inside the block and always restore the previous one."""
    previous = keras.config.floatx()
    keras.config.set_floatx(name)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def to_numpy(x):
    """Nested structure of tensors -> the same structure of float NumPy arrays (bool kept)."""
    if isinstance(x, (list, tuple)):
        return [to_numpy(t) for t in x]
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    arr = ops.convert_to_numpy(x)
    return arr if arr.dtype == bool else arr.astype("float64")


def flat(x):
    """Nested outputs as a flat list."""
    return [t for item in x for t in flat(item)] if isinstance(x, (list, tuple)) else [x]


def assert_all_close(actual, expected, atol=1e-6, rtol=0.0, msg=""):
    """Compare nested outputs element by element with NumPy's allclose rule."""
    actual, expected = flat(to_numpy(actual)), flat(to_numpy(expected))
    assert len(actual) == len(expected), f"{msg}: {len(actual)} outputs vs {len(expected)}"
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=msg)


def assert_close_scaled(actual, expected, tol, msg=""):
    """max |actual - expected| <= tol · max(1, max |expected|), and actual finite."""
    for a, e in zip(flat(to_numpy(actual)), flat(to_numpy(expected))):
        assert np.isfinite(a).all(), f"{msg}: non-finite values"
        scale = max(1.0, float(np.abs(e).max()) if e.size else 1.0)
        err = float(np.abs(a - e).max()) if e.size else 0.0
        assert err <= tol * scale, f"{msg}: max |diff| {err:.3g} > {tol} x {scale:.3g}"


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def call_layer(layer, inputs, masks=None, call_kwargs=None, training=None):
    """Call `layer` eagerly on arrays (one or a list) with optional masks and keyword arguments."""
    kwargs = dict(call_kwargs or {})
    if masks is not None:
        kwargs["mask"] = masks
    if training is not None:
        kwargs["training"] = training
    tensors = [ops.convert_to_tensor(x) for x in _as_list(inputs)]
    return layer(tensors if isinstance(inputs, (list, tuple)) else tensors[0], **kwargs)


def build_model(layer, inputs, masks=None, call_kwargs=None):
    """Wrap `layer` in a functional Model whose inputs are the arrays (then the non-None masks)."""
    single = not isinstance(inputs, (list, tuple))
    xs = [keras.Input(shape=np.shape(x)[1:], dtype=np.asarray(x).dtype.name) for x in _as_list(inputs)]
    model_inputs = list(xs)
    mask_struct = None
    if masks is not None:
        mask_struct = []
        for m in _as_list(masks):
            if m is None:
                mask_struct.append(None)
            else:
                mask_struct.append(keras.Input(shape=np.shape(m)[1:], dtype="bool"))
                model_inputs.append(mask_struct[-1])
        if not isinstance(masks, (list, tuple)):
            mask_struct = mask_struct[0]
    kwargs = dict(call_kwargs or {})
    if mask_struct is not None:
        kwargs["mask"] = mask_struct
    outputs = layer(xs[0] if single else xs, **kwargs)
    return keras.Model(model_inputs, outputs)


def model_feed(inputs, masks=None):
    """The list of arrays matching `build_model`'s inputs."""
    feed = [np.asarray(x) for x in _as_list(inputs)]
    if masks is not None:
        feed += [np.asarray(m, bool) for m in _as_list(masks) if m is not None]
    return feed


def check_config_round_trip(factory, inputs, masks=None, call_kwargs=None, atol=0.0):
    """from_config(get_config()) rebuilds a layer whose outputs equal the original's."""
    layer = factory()
    expected = call_layer(layer, inputs, masks, call_kwargs)
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config, "get_config is not stable under from_config"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer), "layer is not registered as serialisable"
    call_layer(clone, inputs, masks, call_kwargs)
    clone.set_weights(layer.get_weights())
    assert_all_close(call_layer(clone, inputs, masks, call_kwargs), expected, atol=atol,
                     msg="config round trip")
    return layer


def check_saving(factory, inputs, masks=None, call_kwargs=None, atol=0.0):
    """A Model around the layer saved to .keras and loaded back gives identical outputs."""
    model = build_model(factory(), inputs, masks, call_kwargs)
    feed = model_feed(inputs, masks)
    expected = model(feed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert_all_close(loaded(feed), expected, atol=atol, msg=".keras save/load")
    return loaded


def check_mixed_precision(factory, inputs, masks=None, call_kwargs=None, policies=None):
    """Under each mixed policy the layer runs, stays finite and is close to float32."""
    ref_layer = factory(dtype="float32")
    expected = call_layer(ref_layer, inputs, masks, call_kwargs)
    for policy in policies or MIXED_TOLERANCES:
        layer = factory(dtype=policy)
        call_layer(layer, inputs, masks, call_kwargs)
        layer.set_weights(ref_layer.get_weights())
        out = call_layer(layer, inputs, masks, call_kwargs)
        compute = policy.split("_")[-1]
        for o in flat(out):
            if "float" in keras.backend.standardize_dtype(o.dtype):
                assert keras.backend.standardize_dtype(o.dtype) == compute, (
                    f"{policy}: output dtype {o.dtype}, expected {compute}")
        assert_close_scaled(out, expected, MIXED_TOLERANCES[policy], msg=policy)


def check_global_dtype_independence(factory, inputs, masks=None, call_kwargs=None, atol=1e-6,
                                    rtol=1e-6):
    """A float32 layer gives float32 and the same numbers whatever the global policy/floatx is."""
    ref_layer = factory(dtype="float32")
    expected = call_layer(ref_layer, inputs, masks, call_kwargs)
    for setting in (dtype_policy("mixed_float16"), global_floatx("float64")):
        with setting:
            layer = factory(dtype="float32")
            try:
                call_layer(layer, inputs, masks, call_kwargs)
                layer.set_weights(ref_layer.get_weights())
                out = call_layer(layer, inputs, masks, call_kwargs)
            except Exception as error:  # a dtype clash is the usual symptom
                raise AssertionError(f"global float type leaked into call: {error}") from error
        for o, e in zip(flat(out), flat(expected)):
            assert o.dtype == e.dtype, f"output dtype {o.dtype} depends on the global float type"
        assert_all_close(out, expected, atol=atol, rtol=rtol,
                         msg="global float type leaked into call")


def xla_function(fn):
    """``fn`` compiled by XLA on the current Keras backend (tf.function(jit_compile=True) or
    jax.jit); layers called inside read their variables as captured values (inference only)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return tf.function(fn, jit_compile=True)


def check_jit(factory, inputs, masks=None, call_kwargs=None, atol=JIT_ATOL, rtol=JIT_RTOL):
    """The layer compiled with XLA (tf.function(jit_compile=True) / jax.jit) equals eager."""
    layer = factory()
    expected = call_layer(layer, inputs, masks, call_kwargs)
    tensors = [ops.convert_to_tensor(x) for x in _as_list(inputs)]
    mask_tensors = None if masks is None else [
        None if m is None else ops.convert_to_tensor(m) for m in _as_list(masks)]

    @xla_function
    def run(xs, ms):
        kwargs = dict(call_kwargs or {})
        if ms is not None:
            kwargs["mask"] = ms if isinstance(masks, (list, tuple)) else ms[0]
        return layer(xs if isinstance(inputs, (list, tuple)) else xs[0], **kwargs)

    assert_all_close(run(tensors, mask_tensors), expected, atol=atol, rtol=rtol,
                     msg="XLA vs eager")


def perturb_masked(inputs, mask, rng, scale=3.0):
    """Replace float inputs shaped (b, n, ...) at positions where `mask` (b, n) is False."""
    out = []
    mask = np.asarray(mask, bool)
    for x in _as_list(inputs):
        x = np.array(x)
        if x.dtype.kind == "f" and x.shape[:2] == mask.shape:
            noise = rng.normal(size=x.shape).astype(x.dtype) * scale
            x = np.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, noise)
        out.append(x)
    return out if isinstance(inputs, (list, tuple)) else out[0]


def check_padding_invariance(run, inputs, mask, perturb=perturb_masked, atol=1e-5, seed=0):
    """Changing inputs at padded positions leaves outputs at real positions unchanged.

    `run(inputs)` returns an output (or list) whose first two axes are (b, n) like `mask`;
    `perturb(inputs, mask, rng)` returns new inputs differing only at padded positions.
    """
    rng = np.random.default_rng(seed)
    mask = np.asarray(mask, bool)
    expected = flat(to_numpy(run(inputs)))
    changed = flat(to_numpy(run(perturb(inputs, mask, rng))))
    for e, c in zip(expected, changed):
        assert np.isfinite(c[mask]).all(), "non-finite output at real positions"
        np.testing.assert_allclose(c[mask], e[mask], atol=atol,
                                   err_msg="padding changed outputs at real positions")


def check_layer(factory, inputs, masks=None, call_kwargs=None, expected_output_shape=None,
                run_saving=True, run_mixed=True, run_jit=True, run_global_dtype=True):
    """Run the shared battery on one layer configuration; returns the float32 eager output."""
    layer = check_config_round_trip(factory, inputs, masks, call_kwargs)
    out = call_layer(layer, inputs, masks, call_kwargs)
    if expected_output_shape is not None:
        shapes = [tuple(o.shape) for o in flat(out)]
        expected = expected_output_shape
        expected = [tuple(s) for s in expected] if isinstance(expected, list) else [tuple(expected)]
        assert shapes == expected, f"output shapes {shapes} != {expected}"
    if run_saving:
        check_saving(factory, inputs, masks, call_kwargs)
    if run_mixed:
        check_mixed_precision(factory, inputs, masks, call_kwargs)
    if run_global_dtype:
        check_global_dtype_independence(factory, inputs, masks, call_kwargs)
    if run_jit:
        check_jit(factory, inputs, masks, call_kwargs)
    return out


def xla_call_count(graph):
    """How many function calls in a traced TF graph are marked for XLA compilation."""
    calls = ("PartitionedCall", "StatefulPartitionedCall")
    return sum(op.type in calls and op.node_def.attr["_XlaMustCompile"].b
               for op in graph.get_operations())
