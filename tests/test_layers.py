"""DESIGN.md §3: ``model/`` and ``data/`` know nothing of Ray, DeepSpeed or MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

import vlsa_platform

PACKAGE = Path(vlsa_platform.__file__).parent
FORBIDDEN = {"ray", "deepspeed", "mlflow"}
PURE_LAYERS = ("model", "data")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pure_layers_do_not_import_infrastructure():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imports(path) & FORBIDDEN)
        for layer in PURE_LAYERS
        for path in (PACKAGE / layer).rglob("*.py")
        if _imports(path) & FORBIDDEN
    }
    assert not offenders, offenders
    assert any((PACKAGE / "model").rglob("*.py"))


def test_importing_the_model_loads_no_infrastructure():
    code = (
        "import importlib, pkgutil, sys\n"
        "for layer in ('vlsa_platform.model', 'vlsa_platform.data'):\n"
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
