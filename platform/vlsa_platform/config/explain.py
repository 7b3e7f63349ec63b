"""Turn a pydantic ``ValidationError`` into ``WHERE: FIELD: WHAT`` lines (see :mod:`.errors`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import FieldIssue, Loc, dotted
from .keys import model_at

#: At most this many problems are listed; the rest are counted.
MAX_PROBLEMS = 20


def _shown(value: Any) -> str | None:
    if isinstance(value, bool | int | float | str) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return None


def problem(error: dict[str, Any], root: type[BaseModel]) -> tuple[Loc, str]:
    """``(location of the offending key, message)`` for one entry of ``ValidationError.errors()``."""
    loc, message, _ = _problem(error, root)
    return loc, message


def _problem(error: dict[str, Any], root: type[BaseModel]) -> tuple[Loc, str, list[Loc]]:
    loc: Loc = tuple(p for p in error["loc"] if p != "[key]")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldIssue):
        return (*loc, *cause.path), cause.message, [(*loc, *r) for r in cause.related]
    kind = error["type"]
    if kind == "extra_forbidden":
        model = model_at(root, loc[:-1])
        known = f" (known keys here: {', '.join(model.model_fields)})" if model else ""
        return loc, f"unknown key{known}", []
    if kind == "missing":
        return loc, "required key is missing", []
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    shown = _shown(error.get("input"))
    if "[key]" in error["loc"]:
        message = f"bad name {shown}: {message}" if shown else message
    elif shown is not None and kind not in ("value_error", "assertion_error"):
        message = f"{message} (got {shown})"
    return loc, message, []


def explain(err: ValidationError, root: type[BaseModel], where: Callable[[Loc], str]) -> list[str]:
    """One line per problem: ``where(loc): dotted.field: message`` (duplicates removed)."""
    rows = []
    seen = set()
    for error in err.errors():
        loc, message, related = _problem(error, root)
        elsewhere = [f"{dotted(r)} at {where(r)}" for r in related if where(r) != where(loc)]
        if elsewhere:
            message = f"{message} ({'; '.join(elsewhere)})"
        line = f"{where(loc)}: {dotted(loc)}: {message}"
        if line not in seen:
            seen.add(line)
            rows.append(line)
    if len(rows) > MAX_PROBLEMS:
        rows = [*rows[:MAX_PROBLEMS], f"... and {len(rows) - MAX_PROBLEMS} more problems"]
    return rows


__all__ = ["explain", "problem"]
