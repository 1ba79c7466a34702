"""The house rules, read from the source: rooms, the arrows between them, no cycles, sizes.

The import graph is read from every module of the installed packages (``zor``,
``zor.common``, ``zor.engine``, ``zor.tasks``, ``zor.devices``, ``zor.export``,
``zor.runtime``) with :mod:`ast`, imports inside functions included; only imports under
``if TYPE_CHECKING:`` are left out (they never run). The README's layout section draws
the same rooms and arrows.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"zor": "zor", "export": "zor.export", "runtime": "zor.runtime", "devices": "zor.devices"}

# room -> the rooms it may import (itself included)
ALLOWED = {
    "zor": {"zor", "common"},
    "common": {"common"},
    "engine": {"zor", "common", "engine"},
    "tasks": {"zor", "common", "engine", "tasks"},
    "train": {"zor", "common", "engine", "tasks", "train"},      # zor.train: the training entry point
    "devices": {"zor", "common", "devices"},
    "export": {"zor", "common", "engine", "tasks", "devices", "export"},
    "runtime": {"zor", "common", "devices", "runtime"},
    "runtime.tasks": {"zor", "common", "devices", "runtime", "runtime.tasks"},
}
# the runtime modules that use the task helpers beside Model: the package's re-export, zor-run, zor-bench
RUNTIME_TASK_USERS = {"zor.runtime", "zor.runtime.cli", "zor.runtime.bench"}
# third-party packages a room must never import, not even inside a function
FORBIDDEN = {"runtime": {"torch", "onnx"}, "runtime.tasks": {"torch", "onnx"}, "devices": {"torch", "onnx"},
             "common": {"torch", "onnx", "onnxruntime"}, "engine": {"onnx", "onnxruntime"}}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# module -> why it may stay longer
MODULE_EXCEPTIONS: dict[str, str] = {}
# "module:function" -> why it may stay longer
FUNCTION_EXCEPTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str                 # importing module
    target: str                 # imported module (ours) or top-level package name (third party)
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [] if rel.parts == ("__init__",) else [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def room(module: str) -> str:
    """The room a module of ours belongs to."""
    parts = module.split(".")
    if parts[:3] == ["zor", "runtime", "tasks"]:
        return "runtime.tasks"
    if len(parts) == 1:
        return "zor"
    if parts[1] in ("common", "engine", "tasks", "devices", "export", "runtime", "train"):
        return parts[1]
    return "zor"                 # zor/__init__ only


def allowed(module: str, target: str) -> bool:
    """Whether the drawing has an arrow from ``module``'s room to ``target``'s."""
    mine, theirs = room(module), room(target)
    if mine == "runtime" and theirs == "runtime.tasks":
        return module in RUNTIME_TASK_USERS
    return theirs in ALLOWED[mine]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST):
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _resolve(module: str, level: int, name: Optional[str]) -> str:
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module) if node.level else (node.module or "")
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(Import(module, sub if sub in MODULES else base, node.lineno))
    return out


def _ours(imp: Import) -> bool:
    return imp.target == "zor" or imp.target.startswith("zor.")


def _owner(target: str) -> Optional[str]:
    """The module of ours that an import target names (a package for a name imported from it)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {m: [i for i in imports_of(m)] for m in MODULES}


def test_every_package_folder_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    missing = sorted(p for p in packages if f'"{p}"' not in text)
    assert not missing, f"packages not installed by pyproject.toml: {missing}"


def test_only_the_drawn_arrows():
    bad = []
    for module, imps in GRAPH.items():
        for imp in imps:
            if not _ours(imp):
                continue
            target = _owner(imp.target)
            if target is None:
                bad.append(f"{module}:{imp.line} imports {imp.target}, which is not a module of ours")
                continue
            if not allowed(module, target):
                bad.append(f"{module}:{imp.line} ({room(module)}) imports {target} ({room(target)})")
    assert not bad, "imports the layout does not allow:\n" + "\n".join(bad)


def test_rooms_never_import_forbidden_packages():
    bad = [f"{m}:{i.line} imports {i.target}" for m, imps in GRAPH.items() for i in imps
           if i.target.split(".")[0] in FORBIDDEN.get(room(m), set())]
    assert not bad, "\n".join(bad)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    edges = {m: sorted({t for i in imps if _ours(i) and (t := _owner(i.target)) and t != m})
             for m, imps in GRAPH.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    a, b = "zor.common.errors", "zor.common.format"
    monkeypatch.setitem(GRAPH, a, [Import(a, b, 1)])
    monkeypatch.setitem(GRAPH, b, [Import(b, a, 1)])
    assert [a, b] in _cycles()


@pytest.mark.parametrize("module, target, expected", [
    ("zor.runtime.model", "zor.engine.network", False),
    ("zor.runtime.model", "zor.devices.profiles", True),
    ("zor.runtime.tasks.images", "zor.runtime.model", True),
    ("zor.runtime.model", "zor.runtime.tasks.core", False),
    ("zor.runtime.cli", "zor.runtime.tasks.images", True),
    ("zor.engine.network", "zor.tasks.datasets", False),
    ("zor.export.api", "zor.tasks.datasets", True),
    ("zor.common.metrics", "zor.engine.layer", False),
    ("zor.devices.profiles", "zor.common.errors", True),
])
def test_the_arrow_rule_by_hand(module, target, expected):
    assert allowed(module, target) is expected


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_module_sizes():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    unexplained = {m: n for m, n in long.items() if m not in MODULE_EXCEPTIONS}
    assert not unexplained, f"modules over {MAX_MODULE_LINES} lines: {unexplained}"
    stale = sorted(set(MODULE_EXCEPTIONS) - set(long))
    assert not stale, f"listed as exceptions but no longer long (remove them): {stale}"


def test_function_sizes():
    long = {}
    for m, p in MODULES.items():
        for fn in _functions(ast.parse(p.read_text(encoding="utf-8"))):
            n = fn.end_lineno - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long[f"{m}:{fn.name}"] = n
    unexplained = {k: n for k, n in long.items() if k not in FUNCTION_EXCEPTIONS}
    assert not unexplained, f"functions over {MAX_FUNCTION_LINES} lines: {unexplained}"
    stale = sorted(set(FUNCTION_EXCEPTIONS) - set(long))
    assert not stale, f"listed as exceptions but no longer long (remove them): {stale}"
