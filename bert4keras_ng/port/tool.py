"""The porting engine: apply the rule table to a script's lines and report every decision."""

import io
import os
import shutil
import tokenize
from collections import namedtuple

from bert4keras_ng.port import rules as _rules

Finding = namedtuple("Finding", "line kind rule before after message")
# kind: 'changed' (rewritten), 'manual' (left alone: needs a hand change), 'note' (no action)


def _non_code(source):
    """(lines holding only a comment or only part of a multi-line string, {line: column where
    a trailing comment starts}).

    Comments and docstrings are never rewritten nor reported (they often quote Keras 2 code).
    """
    lines, comment_at = set(), {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            (first, col), (last, end_col) = token.start, token.end
            if token.type == tokenize.COMMENT:
                if token.line[:col].strip():
                    comment_at[first] = col
                else:
                    lines.add(first)
            elif token.type == tokenize.STRING and first != last:
                text = token.line.splitlines()
                lines.update(range(first + 1, last))
                if not text[0][:col].strip():
                    lines.add(first)
                if not text[-1][end_col:].strip():
                    lines.add(last)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return lines, comment_at


def port_source(source, table=None):
    """Port one script's text; returns ``(new_source, findings)``.

    A line matching a MANUAL rule is kept exactly as it is; other code lines get every
    REWRITE that matches, in table order.
    """
    table = table or _rules
    skipped, comment_at = _non_code(source)
    out, findings = [], []
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        full = line.rstrip("\r\n")
        if number in skipped or not full.strip():
            out.append(line)
            continue
        cut = comment_at.get(number, len(full))
        body, comment = full[:cut], full[cut:]
        ending = line[len(full):]
        manual = [r for r in table.MANUAL if r.pattern.search(body)]
        for rule in table.NOTES:
            if rule.pattern.search(body):
                findings.append(Finding(number, "note", rule.name, full, full, rule.message))
        if manual:
            for rule in manual:
                findings.append(Finding(number, "manual", rule.name, full, full, rule.message))
            out.append(line)
            continue
        new = body
        for rule in table.REWRITES:
            changed = rule.pattern.sub(rule.replacement, new)
            if changed != new:
                findings.append(Finding(number, "changed", rule.name, new + comment,
                                        changed + comment, rule.description))
                new = changed
        out.append(new + comment + ending)
    return "".join(out), findings


def format_findings(path, findings):
    """Line-by-line report, tf_upgrade_v2 style."""
    lines = []
    for f in findings:
        if f.kind == "changed":
            lines.append("%s:%d: changed [%s]\n    - %s\n    + %s"
                         % (path, f.line, f.rule, f.before.strip(), f.after.strip()))
        elif f.kind == "manual":
            lines.append("%s:%d: NOT CHANGED, do by hand [%s]: %s\n    | %s"
                         % (path, f.line, f.rule, f.message, f.before.strip()))
        else:
            lines.append("%s:%d: note [%s]: %s" % (path, f.line, f.rule, f.message))
    changed = sum(f.kind == "changed" for f in findings)
    manual = len({f.line for f in findings if f.kind == "manual"})
    lines.append("%s: %d change(s), %d line(s) to port by hand" % (path, changed, manual))
    return "\n".join(lines)


def port_file(path, output=None):
    """Port ``path``; write to ``output`` when given. Returns ``(new_source, findings)``."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    new_source, findings = port_source(source)
    if output is not None:
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        with open(output, "w", encoding="utf-8") as f:
            f.write(new_source)
    return new_source, findings


def port_tree(folder, output):
    """Port every ``.py`` file under ``folder`` into ``output`` (other files are copied).

    Returns ``{relative path: findings}``.
    """
    if os.path.abspath(folder) == os.path.abspath(output):
        raise ValueError("port: the output folder must differ from the input folder %r" % folder)
    results = {}
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            source = os.path.join(root, name)
            relative = os.path.relpath(source, folder)
            target = os.path.join(output, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if name.endswith(".py"):
                results[relative] = port_file(source, target)[1]
            else:
                shutil.copyfile(source, target)
    return results
