"""Package-level promises: importing has no global side effects."""

import os
import subprocess
import sys
import textwrap

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
