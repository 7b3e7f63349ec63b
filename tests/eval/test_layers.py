"""DESIGN.md §3: ``eval/`` may import torch, transformers, ``model`` and ``data``, never Ray, DeepSpeed or
MLflow (the training loop wires it in)."""

from __future__ import annotations

import subprocess
import sys

from tests.test_layers import FORBIDDEN, PACKAGE, _imports


def test_eval_does_not_import_infrastructure():
    modules = list((PACKAGE / "eval").rglob("*.py"))
    assert len(modules) > 1
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imports(p) & FORBIDDEN)
        for p in modules
        if _imports(p) & FORBIDDEN
    }
    assert not offenders, offenders


def test_importing_eval_loads_no_infrastructure():
    code = (
        "import importlib, pkgutil, sys\n"
        "import vlsa_platform.eval as pkg\n"
        "for info in pkgutil.walk_packages(pkg.__path__, 'vlsa_platform.eval.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(sorted(k for k in sys.modules if k.split('.')[0] in {sorted(FORBIDDEN)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
