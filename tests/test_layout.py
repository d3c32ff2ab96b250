"""The package's shape (issue 17): imports point one way, engine <- training/hub/evaluation <-
app/toy <- cli, with no cycle. Read with `ast` (every import, lazy ones inside functions too), so a
new upward edge fails here rather than as a cycle at import time."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "viscodex"

# Longest matching prefix wins. A module may import its own layer or lower ones.
LAYERS = {
    "viscodex._version": 0,
    "viscodex.errors": 0,
    "viscodex._util": 0,  # cache dirs, sizes, HubRef, quiet transformers, ZeroGPU sizing
    "viscodex.engine": 1,  # recipe, arch, sources, safetensors_io, plan, methods, merge
    "viscodex.sandbox": 1,  # running untrusted code; used by evaluation and the app
    # The toy world is pure data (scenes, SVG, questions) that training data, evaluation tasks and
    # the tiny models all draw from; it imports nothing from viscodex.
    "viscodex.toy.world": 1,
    "viscodex.training": 2,
    "viscodex.hub": 2,
    "viscodex.evaluation": 2,
    "viscodex.app": 3,
    "viscodex.toy": 3,
    "viscodex.api": 4,  # the library's front door (merge, train, publish, evaluate, sweep)
    "viscodex.cli": 4,
    "viscodex.__main__": 4,
    "viscodex": 4,  # the package itself: the lazily exported public API
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    # data, not modules: evaluation samples, and the Space's app.py shipped as a template
    data = {"samples", "space_config"}
    return {module_name(p): p for p in PKG.rglob("*.py") if not data & set(p.relative_to(PKG).parts)}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """viscodex modules that `name` imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "viscodex"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "viscodex":
                continue
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in out if m != name}


def layer(mod: str) -> int:
    best = max((p for p in LAYERS if mod == p or mod.startswith(p + ".")), key=len)
    return LAYERS[best]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def test_every_module_has_a_layer(graph):
    assert "viscodex.engine.merge" in graph and "viscodex.toy.demo" in graph  # the walk found the package
    for m in graph:
        layer(m)  # raises on a module outside every prefix


def test_no_upward_imports(graph):
    upward = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                    for a, deps in graph.items() for b in deps if layer(b) > layer(a))
    assert not upward, "\n".join(upward)


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules(graph):
    assert _cycles(graph) == []


def test_no_cycle_between_subpackages(graph):
    """One concern per folder: the folders themselves form no cycle either (app <-> toy, say). A
    folder is a LAYERS entry, so the toy world (pure data, layer 1) is its own node."""
    def folder(m: str) -> str:
        return max((p for p in LAYERS if m == p or m.startswith(p + ".")), key=len)

    g: dict[str, set[str]] = {}
    for a, deps in graph.items():
        g.setdefault(folder(a), set()).update(folder(b) for b in deps if folder(b) != folder(a))
    assert _cycles(g) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The walk must not miss an import inside a function, nor misresolve `..x` / `from . import y`."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from ..engine import merge\n    from .. import errors\n    from .world import X\n")
    known = {"viscodex.engine.merge", "viscodex.errors", "viscodex.toy.world"}
    assert imports("viscodex.toy.demo", src, known) == known


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_error_classes_live_in_errors_py():
    """One home for error classes: no module but errors.py defines a ViscodexError subclass."""
    stray = []
    for name, path in modules().items():
        if name == "viscodex.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "ViscodexError" or
                                                      getattr(b, "attr", None) == "ViscodexError" for b in node.bases):
                stray.append(f"{name}.{node.name}")
    assert not stray, stray


def test_every_error_class_is_exported():
    import viscodex
    import viscodex.errors as errors

    classes = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.ViscodexError)}
    assert classes <= set(viscodex.__all__)
    assert all(getattr(viscodex, n) is getattr(errors, n) for n in classes)


# Modules that other issue-17 work still has open (the lead empties these sets when it merges it).
KEY_NAME_PENDING: set[str] = set()
HUB_REF_PENDING: set[str] = set()


def _strings(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def test_key_names_live_in_arch():
    """arch.py: "Nothing else in the package should hard-code a key name; it asks this module." A
    string constant that starts like a checkpoint key (model.layers..., visual.*, lm_head.*) is one."""
    import re

    key = re.compile(r"^(model\.(embed_tokens|layers|norm|language_model|visual)\b|visual\.|lm_head\.)")
    found = sorted(f"{name}:{node.lineno}: {node.value!r}" for name, path in modules().items()
                   if name != "viscodex.engine.arch" and name not in KEY_NAME_PENDING
                   for node in _strings(path) if key.match(node.value))
    assert not found, "\n".join(found)


def test_hub_references_are_parsed_by_hubref():
    """`id@revision` has one parser (_util.hubref.HubRef): no `.split("@")`, `.rsplit("@")` or
    `.partition("@")` elsewhere."""
    found = []
    for name, path in modules().items():
        if name == "viscodex._util.hubref" or name in HUB_REF_PENDING:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("split", "rsplit", "partition", "rpartition")
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "@"):
                found.append(f"{name}:{node.lineno}")
    assert not found, found
