"""Issue 12's bounds on the package's hubs: no function over 80 lines, no file over 600 lines (a longer concept
is split into modules of its own)."""

from __future__ import annotations

import ast

from tests.test_layers import PACKAGE

MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600


def test_no_file_over_the_bound():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, long


def test_no_function_over_the_bound():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = lines
    assert not long, long
