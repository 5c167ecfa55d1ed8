"""The house rules, kept true: each folder of the package imports only the folders its
``__init__`` docstring allows ("May import: ..."), nothing inside a folder imports the package's
top level (its API) back, and no module imports itself round a circle."""
from __future__ import annotations

import ast
import os
import re

import ovforensics

PKG = os.path.dirname(ovforensics.__file__)
#: top-level modules every folder may use (no package imports: the version string, sizes)
SHARED = {"ovforensics.version", "ovforensics.units", "ovforensics.ticker"}


def _modules():
    for d, _, files in os.walk(PKG):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


def _imports(path: str) -> set[str]:
    """Every ovforensics module a file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the house writes them absolute)"
            if node.module and node.module.startswith("ovforensics"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if _is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ovforensics")}
    return out


def _is_module(dotted: str) -> bool:
    base = os.path.join(os.path.dirname(PKG), *dotted.split("."))
    return os.path.isfile(base + ".py") or os.path.isdir(base)


def _folders() -> dict[str, set[str]]:
    """folder -> the folders it may import, from its __init__ docstring."""
    rules = {}
    for name in sorted(os.listdir(PKG)):
        init = os.path.join(PKG, name, "__init__.py")
        if not os.path.isfile(init):
            continue
        doc = ast.get_docstring(ast.parse(open(init).read())) or ""
        m = re.search(r"^May import: (.+?)\.?\s*(?:\n\n|\Z)", doc, re.M | re.S)
        assert m, f"{init}: the docstring says what the folder owns and has a 'May import: ...' line"
        allowed = " ".join(m.group(1).split())
        rules[name] = set() if allowed == "nothing" else {x.strip() for x in allowed.split(",")}
    return rules


def test_every_folder_says_what_it_may_import():
    rules = _folders()
    assert {"evidence", "records", "layers", "stores", "scanner", "writers", "bloat", "recovery"} <= set(rules)
    tops = {"ovforensics"} | {f[:-3] for f in os.listdir(PKG) if f.endswith(".py")}
    for folder, allowed in rules.items():
        assert allowed <= set(rules) | tops, f"{folder}: allows unknown folders {allowed - set(rules)}"


def test_folders_import_only_what_they_may():
    rules = _folders()
    bad = []
    for mod, path in _modules():
        parts = mod.split(".")
        if len(parts) < 3 and not (len(parts) == 2 and parts[1] in rules):
            continue  # a top-level module (the API, the CLI): it may use any floor
        folder = parts[1]
        for imp in _imports(path):
            ip = imp.split(".")
            if imp in SHARED or (imp == "ovforensics" and "ovforensics" in rules[folder]) or \
                    (len(ip) > 1 and ip[1] in ({folder} | rules[folder])):
                continue
            bad.append(f"{mod} imports {imp} (ovforensics/{folder} may import: "
                       f"{', '.join(sorted(rules[folder])) or 'nothing'})")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    paths = dict(_modules())
    graph = {mod: {i for i in _imports(path) if i != mod} for mod, path in paths.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else nxt)
            elif nxt in graph and state.get(nxt) is None:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if state.get(mod) is None:
            visit(mod, [mod])
    assert not cycles, "\n".join(cycles)


def test_architecture_doc_names_every_folder():
    doc = open(os.path.join(os.path.dirname(PKG), "docs", "architecture.md")).read()
    for folder in _folders():
        assert f"`{folder}/`" in doc, f"docs/architecture.md does not describe {folder}/"
