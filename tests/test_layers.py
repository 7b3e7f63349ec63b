"""DESIGN.md §3: the package's layers and the direction of its imports.

- ``model/``, ``data/`` and ``eval/`` know nothing of Ray, DeepSpeed or MLflow (statically, and when every
  module of theirs is imported).
- Inside the package every import points down the layers or sideways within one, never up:
  cli -> orchestration/lmms -> train -> tracking/eval -> cluster/data -> config/model/storage/exits/redact.
- lmms-eval (its own environment, ``make install-eval``) is imported only by ``lmms/``'s lmms-eval model, its
  registration and the evaluation entry point run there (``lmms.run``), so the rest of ``lmms/`` runs where
  lmms-eval is not installed.
- No circle of imports between the package's modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a function-level import that dodges a circle is still a circle).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vlsa_platform

PACKAGE = Path(vlsa_platform.__file__).parent
FORBIDDEN = {"ray", "deepspeed", "mlflow"}
PURE_LAYERS = ("model", "data", "eval")

#: Each top-level room of the package and its layer (higher imports lower).
LAYERS: dict[str, int] = {
    "cli": 6,
    "orchestration": 5,
    "lmms": 5,
    "train": 4,
    "tracking": 3,
    "eval": 3,
    "cluster": 2,
    "data": 2,
    "config": 1,
    "model": 1,
    "storage": 1,
    "durable": 1,
    "exits": 1,
    "redact": 1,
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _module_name(path: Path) -> str:
    parts = ("vlsa_platform", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _internal_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (a ``from X import name`` counts as an
    import of ``X.name`` when that is a module, else of ``X``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _internal_imports(path, modules) for name, path in modules.items()}


def test_pure_layers_do_not_import_infrastructure():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imports(path) & FORBIDDEN)
        for layer in PURE_LAYERS
        for path in (PACKAGE / layer).rglob("*.py")
        if _imports(path) & FORBIDDEN
    }
    assert not offenders, offenders
    assert any((PACKAGE / "model").rglob("*.py"))
    assert len(list((PACKAGE / "eval").rglob("*.py"))) > 1


@pytest.mark.parametrize("layers", [("model", "data"), ("eval",)], ids=["model-data", "eval"])
def test_importing_the_pure_layers_loads_no_infrastructure(layers):
    code = (
        "import importlib, pkgutil, sys\n"
        f"for layer in {[f'vlsa_platform.{layer}' for layer in layers]!r}:\n"
        "    try:\n"
        "        pkg = importlib.import_module(layer)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, layer + '.'):\n"
        "        importlib.import_module(info.name)\n"
        f"print(sorted(k for k in sys.modules if k.split('.')[0] in {sorted(FORBIDDEN)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


#: The only modules that import lmms-eval (the evaluation environment's package).
LMMS_EVAL_IMPORTERS = {
    "vlsa_platform.lmms.model",
    "vlsa_platform.lmms.manifest",
    "vlsa_platform.lmms.run",
    "vlsa_platform.lmms.task_check",
}


def test_only_the_lmms_eval_model_imports_lmms_eval():
    importers = {name for name, path in _modules().items() if "lmms_eval" in _imports(path)}
    assert importers == LMMS_EVAL_IMPORTERS


def test_every_room_has_a_layer():
    rooms = {_room(name) for name in _modules()} - {None}
    assert rooms <= set(LAYERS), sorted(rooms - set(LAYERS))


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if LAYERS.get(_room(target) or "", 0) > LAYERS.get(_room(source) or "", 0)
    )
    assert not upward, upward


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert _circles(_graph()) == []


def test_the_circle_check_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_circles(graph)) == [["a", "b", "c"], ["e"]]
