"""Package-level promises: importing has no global side effects."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_leaves_keras_and_environment_untouched():
    stdout = _run(
        """
        import os, keras
        env_before = dict(os.environ)
        policy_before = keras.config.dtype_policy().name
        floatx_before = keras.config.floatx()
        import bert4keras_ng, pkgutil, importlib
        for mod in pkgutil.walk_packages(bert4keras_ng.__path__, 'bert4keras_ng.'):
            importlib.import_module(mod.name)
        assert dict(os.environ) == env_before, 'importing changed os.environ'
        assert keras.config.dtype_policy().name == policy_before
        assert keras.config.floatx() == floatx_before
        assert keras.config.backend() == 'tensorflow'
        print('ok', bert4keras_ng.__version__)
        """
    )
    assert stdout.startswith("ok ")


@pytest.mark.slow
def test_saved_models_load_after_importing_the_package_alone(tmp_path):
    """Every serialisable class the models use is registered by ``import bert4keras_ng``."""
    _run(
        f"""
        import numpy as np
        from bert4keras_ng.models import build_transformer_model
        tiny = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=24, hidden_act="gelu", max_position_embeddings=24)
        x = np.array([[2, 5, 7, 0], [3, 4, 0, 0]], "int32")
        for name, options in [("bert", dict(with_pool=True, with_mlm=True)),
                              ("nezha", dict(application="unilm")), ("gau_alpha", {{}}),
                              ("roformer_v2", dict(with_mlm=True))]:
            model = build_transformer_model(model=name, **tiny, **options)
            model.save(r"{tmp_path}/" + name + ".keras")
            out = model.predict([x, np.zeros_like(x)], verbose=0)
            np.save(r"{tmp_path}/" + name + ".npy", np.concatenate([np.ravel(o) for o in (out if isinstance(out, list) else [out])]))
        """
    )
    stdout = _run(
        f"""
        import numpy as np, keras
        import bert4keras_ng
        x = np.array([[2, 5, 7, 0], [3, 4, 0, 0]], "int32")
        for name in ["bert", "nezha", "gau_alpha", "roformer_v2"]:
            model = keras.saving.load_model(r"{tmp_path}/" + name + ".keras")
            out = model.predict([x, np.zeros_like(x)], verbose=0)
            out = np.concatenate([np.ravel(o) for o in (out if isinstance(out, list) else [out])])
            np.testing.assert_allclose(out, np.load(r"{tmp_path}/" + name + ".npy"), atol=1e-6)
        print("loaded")
        """
    )
    assert "loaded" in stdout
