"""Porting tool for bert4keras 0.11.5 scripts (like TensorFlow's tf_upgrade_v2).

``python -m bert4keras_ng.port script.py -o out.py`` rewrites imports, ``fit_generator``,
weight-file suffixes and Keras 2 names by the table in ``rules``, and reports line by line what
it changed and what must be ported by hand (TF1 graph-mode training) with the replacement.
"""

from bert4keras_ng.port.tool import Finding, format_findings, port_file, port_source, port_tree

__all__ = ["Finding", "format_findings", "port_file", "port_source", "port_tree"]
