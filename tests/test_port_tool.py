"""The porting tool: each rule of its table, the lines it must leave alone, the command line."""

import os
import re
import subprocess
import sys

import pytest

from bert4keras_ng.port import port_source, rules
from bert4keras_ng.port.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REWRITE_CASES = {
    "import-from": [
        ("from bert4keras.backend import keras, K", "from bert4keras_ng.backend import keras, K"),
        ("    from bert4keras.snippets import uniout",
         "    from bert4keras_ng.snippets import uniout"),
    ],
    "import-module": [("import bert4keras.snippets as sn", "import bert4keras_ng.snippets as sn")],
    "import-package": [("import bert4keras", "import bert4keras_ng as bert4keras")],
    "fit_generator": [
        ("model.fit_generator(", "model.fit("),
        ("y = model.predict_generator(g, steps=3)", "y = model.predict(g, steps=3)"),
        ("model.evaluate_generator(g)", "model.evaluate(g)"),
    ],
    "weights-suffix": [
        ("model.save_weights('./best_model.weights')", "model.save_weights('./best_model.weights.h5')"),
        ('model.load_weights("weights/afqmc.weights")', 'model.load_weights("weights/afqmc.weights.h5")'),
        ("model.save_weights('best.h5')", "model.save_weights('best.weights.h5')"),
        ("m.load_weights('best', by_name=True)", "m.load_weights('best.weights.h5', by_name=True)"),
    ],
    "weights-literal": [
        ("evaluator = Evaluator('best_predecessor.weights')",
         "evaluator = Evaluator('best_predecessor.weights.h5')"),
    ],
    "model-suffix": [
        ("model.save('test.model')", "model.save('test.keras')"),
        ("model = keras.models.load_model('test.model')",
         "model = keras.models.load_model('test.keras')"),
        ("m = load_model('x')", "m = load_model('x.keras')"),
    ],
    "optimizer-lr": [
        ("K.set_value(self.model.optimizer.lr, 1e-5)",
         "K.set_value(self.model.optimizer.learning_rate, 1e-5)"),
    ],
    "keras-optimizer-lr": [
        ("opt = keras.optimizers.Adam(lr=1e-3)", "opt = keras.optimizers.Adam(learning_rate=1e-3)"),
        ("SGD( lr = 0.1)", "SGD( learning_rate=0.1)"),
    ],
    "get_output_at": [
        ("output = bert.model.layers[-2].get_output_at(-1)", "output = bert.model.layers[-2].output"),
        ("x = layer.get_output_at(0)", "x = layer.output"),
    ],
    "num_hidden_layers-subset": [
        ("    num_hidden_layers=6,", "    num_hidden_layers=6, ignore_unused_variables=True,"),
        ("    num_hidden_layers = n // 2,",
         "    num_hidden_layers = n // 2, ignore_unused_variables=True,"),
    ],
}


def test_every_rewrite_rule_has_cases():
    assert sorted(REWRITE_CASES) == sorted(r.name for r in rules.REWRITES)


@pytest.mark.parametrize("rule,before,after",
                         [(r, b, a) for r, cases in REWRITE_CASES.items() for b, a in cases])
def test_rewrite_rule(rule, before, after):
    new, findings = port_source(before + "\n")
    assert new == after + "\n"
    assert [(f.kind, f.rule, f.line) for f in findings] == [("changed", rule, 1)]
    assert findings[0].before == before and findings[0].after == after


def test_rewrites_compose_on_one_line():
    new, findings = port_source("model.fit_generator(g); model.save_weights('a.weights')\n")
    assert new == "model.fit(g); model.save_weights('a.weights.h5')\n"
    assert [f.rule for f in findings] == ["fit_generator", "weights-suffix"]


MANUAL_CASES = {
    "def-adversarial_training": "def adversarial_training(model, embedding_name, epsilon=1):",
    "def-gradient_penalty": "def loss_with_gradient_penalty(y_true, y_pred, epsilon=1):",
    "def-virtual_adversarial_training": "def virtual_adversarial_training(model, name, eps=1):",
    "make_train_function": "        model._make_train_function()",
    "train_function": "    old_train_function = model.train_function",
    "total_loss": "    loss = model.total_loss",
    "K.gradients": "    gp = K.sum(K.gradients(loss, [embeddings])[0].values**2)",
    "K.function": "    f = K.function(inputs, outputs)",
    "session": "graph = tf.get_default_graph()",
    "learning_phase": "K.set_learning_phase(1)",
    "multi_gpu_model": "parallel = multi_gpu_model(model, gpus=2)",
    "get_output_at-node": "output = model.get_layer(name).get_output_at(bert_layers - 1)",
    "generator-workers": "model.fit(g, workers=4, use_multiprocessing=True)",
    "predict-nested-list": "            label = model.predict([[token_ids], [segment_ids]])[0]",
}


def test_every_manual_rule_has_a_case():
    assert sorted(MANUAL_CASES) == sorted(r.name for r in rules.MANUAL)


@pytest.mark.parametrize("rule,line", sorted(MANUAL_CASES.items()))
def test_manual_line_is_left_alone_with_its_replacement(rule, line):
    new, findings = port_source(line + "\n")
    assert new == line + "\n", "a line the tool does not understand must not change"
    manual = [f for f in findings if f.kind == "manual"]
    assert rule in [f.rule for f in manual]
    assert all(f.message for f in manual)
    assert not [f for f in findings if f.kind == "changed"]


def test_manual_line_blocks_rewrites_on_that_line():
    line = "model.fit_generator(g, workers=4)"  # fit_generator alone would be rewritten
    new, findings = port_source(line + "\n")
    assert new == line + "\n"
    assert [f.kind for f in findings] == ["manual"]


@pytest.mark.parametrize("line", [
    "y = grad_model.predict([ [token_ids], [segment_ids], [[label]]])[0]",
    "y = model.predict_on_batch([[token_ids], [segment_ids]])",
])
def test_predict_on_nested_lists_is_flagged_with_the_np_array_fix(line):
    new, findings = port_source(line + "\n")
    assert new == line + "\n"
    assert [(f.kind, f.rule) for f in findings] == [("manual", "predict-nested-list")]
    assert "np.array([token_ids])" in findings[0].message


@pytest.mark.parametrize("line", [
    "y = model.predict([np.array([token_ids]), np.array([segment_ids])])",
    "y = model.predict(np.array([[1, 2, 3]]))",
    "y = model.predict([token_ids, segment_ids])",  # arrays or lists: cannot tell, not flagged
    "y = model.predict(x)[[0, 1]]",
])
def test_predict_on_arrays_is_not_flagged(line):
    assert port_source(line + "\n") == (line + "\n", [])


def test_the_nested_list_fix_is_what_keras_3_needs():
    """The rule's premise: Keras 3 refuses the nested lists, takes the np.array form."""
    import keras
    import numpy as np

    ids, segments = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    out = keras.layers.Embedding(10, 2)(ids) + keras.layers.Embedding(2, 2)(segments)
    model = keras.Model([ids, segments], out)
    token_ids, segment_ids = [1, 2, 3], [0, 0, 1]
    with pytest.raises(ValueError):
        model.predict([[token_ids], [segment_ids]], verbose=0)
    y = model.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
    assert y.shape == (1, 3, 2)


def test_tf1_internals_point_to_examples():
    messages = " ".join(r.message for r in rules.MANUAL)
    for example in (rules.FGM_EXAMPLE, rules.GP_EXAMPLE, rules.VAT_EXAMPLE, rules.IG_EXAMPLE):
        assert example in messages
    for example in (rules.FGM_EXAMPLE, rules.IG_EXAMPLE):  # the ones this branch ships
        assert os.path.exists(os.path.join(ROOT, example)), example


def test_notes_keep_the_line():
    for line in ("set_gelu('tanh')", "os.environ['TF_KERAS'] = '1'",
                 "self.model.save_weights(self.savename)"):
        new, findings = port_source(line + "\n")
        assert new == line + "\n" and [f.kind for f in findings] == ["note"], line


def test_comments_and_docstrings_are_not_touched():
    source = (
        "# model.fit_generator(g)\n"
        '"""\n'
        "output = model.get_layer(x).get_output_at(bert_layers - 1)\n"
        "model.save_weights('a.weights')\n"
        '"""\n'
        "x = 1  # model.fit_generator(g) in a trailing comment\n"
        "model.fit_generator(g)  # model.fit_generator(g)\n"
    )
    new, findings = port_source(source)
    assert new.splitlines()[:6] == source.splitlines()[:6]
    assert new.splitlines()[6] == "model.fit(g)  # model.fit_generator(g)"
    assert [f.line for f in findings] == [7]


def test_untouched_script_is_identical():
    source = "import numpy as np\nx = np.zeros(3)\n\nprint(x)\r\n"
    new, findings = port_source(source)
    assert new == source and findings == []


def test_command_line_file_and_folder(tmp_path, capsys):
    script = tmp_path / "in" / "train.py"
    script.parent.mkdir()
    script.write_text("from bert4keras.models import build_transformer_model\n"
                      "model.fit_generator(gen.forfit())\n"
                      "    model._make_train_function()\n", encoding="utf-8")
    (script.parent / "data.txt").write_text("x", encoding="utf-8")
    out = tmp_path / "out.py"
    assert main([str(script), "-o", str(out)]) == 0
    report = capsys.readouterr().err
    assert out.read_text(encoding="utf-8").splitlines()[:2] == [
        "from bert4keras_ng.models import build_transformer_model", "model.fit(gen.forfit())"]
    assert re.search(r"train\.py:1: changed \[import-from\]", report)
    assert re.search(r"train\.py:3: NOT CHANGED, do by hand \[make_train_function\]", report)
    assert "2 change(s), 1 line(s) to port by hand" in report
    assert main([str(script)]) == 0  # no -o: the ported script goes to stdout
    assert capsys.readouterr().out.startswith("from bert4keras_ng.models")
    assert main([str(script.parent), "-o", str(tmp_path / "ported")]) == 0
    assert (tmp_path / "ported" / "train.py").exists()
    assert (tmp_path / "ported" / "data.txt").read_text(encoding="utf-8") == "x"
    with pytest.raises(SystemExit):
        main([str(script.parent)])  # a folder needs -o


def test_module_entry_point(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("from bert4keras.backend import K\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bert4keras_ng.port", str(script)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0
    assert done.stdout == "from bert4keras_ng.backend import K\n"


def test_readme_table_lists_exactly_the_rules():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Porting a bert4keras script", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w.-]+)` \|", section, re.M))
    expected = {r.name for r in rules.REWRITES} | {r.name for r in rules.MANUAL}
    assert listed == expected
