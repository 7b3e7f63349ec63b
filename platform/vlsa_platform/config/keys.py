"""Dotted keys and merging on the raw (not yet validated) config mapping.

Three operations share one set of rules, so that ``extends:``, ``--set`` and a sweep's search space behave the
same way:

- :func:`deep_merge` — a later layer over an earlier one: mappings merge recursively, lists and scalars
  replace.
- :func:`set_dotted` — one ``key=value`` (``--set``, a sweep sample, an ablation variant's switches).
- :func:`check_key` — a dotted key must name a real field of the schema; entries of named mappings
  (``stages.stage9``, ``data.datasets.foo``) must already exist, except in mappings marked open (the
  accelerator table, whose built-in entries may be overridden without being written out first).

Mutually exclusive keys: when a layer or an override sets one key of a pair in :data:`EXCLUSIVE` to a
non-null value, the other one inherited from below is dropped — so a child file (or ``--set
stages.stage1.steps=10``) can switch a stage written with ``epochs`` to ``steps``, and a file that extends a
sweep can declare an ablation instead.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from .bounded_yaml import MAX_SET_BYTES, YamlLimit, load_value
from .errors import Loc, dotted

#: Pairs of keys of which one layer's choice replaces the other inherited from below.
EXCLUSIVE: tuple[tuple[str, str], ...] = (("steps", "epochs"), ("sweep", "ablation"))

#: ``json_schema_extra`` flag on a ``dict[str, Model]`` field whose entries may be created by a dotted key.
OPEN_MAPPING = "open_mapping"


class KeyIssue(ValueError):
    """A dotted key that names nothing in the schema; ``loc`` is the longest part of it that does exist."""

    def __init__(self, loc: Loc, message: str):
        self.loc = loc
        self.message = message
        super().__init__(message)


def split_key(key: str) -> Loc:
    """``stages.stage1.mixture.0.weight`` -> ``('stages', 'stage1', 'mixture', 0, 'weight')``."""
    if not key or any(not part for part in key.split(".")):
        raise KeyIssue((), f"bad key {key!r}: expected dotted field names such as stages.stage1.steps")
    # ASCII digits only: str.isdigit() also holds for '²' and other digits int() refuses.
    return tuple(int(p) if p.isascii() and p.isdigit() else p for p in key.split("."))


def parse_assignment(text: str) -> tuple[Loc, Any]:
    """``'stages.stage1.steps=10'`` -> ``(('stages', 'stage1', 'steps'), 10)``; the value is YAML, read within
    the bounds of :mod:`.bounded_yaml` (the item at most :data:`~.bounded_yaml.MAX_SET_BYTES` long)."""
    origin = f"--set {shorten(text)!r}"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SET_BYTES:
        raise KeyIssue((), f"{origin}: {size} bytes, more than the {MAX_SET_BYTES} a --set item may have")
    key, sep, value = text.partition("=")
    if not sep:
        raise KeyIssue((), f"{origin}: expected KEY=VALUE, e.g. stages.stage1.steps=10")
    loc = split_key(key.strip())
    try:
        parsed = load_value(value) if value.strip() else None
    except YamlLimit as limit:
        raise KeyIssue((), f"{origin}: the value is refused: {limit.message}") from None
    except (yaml.YAMLError, ValueError, OverflowError) as err:
        raise KeyIssue((), f"{origin}: the value is not valid YAML ({_first_line(err)})") from None
    return loc, parsed


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with ``...``), to quote a long ``--set`` item in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` from an annotation."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that describes the mapping at ``loc`` (None if ``loc`` is not a model)."""
    tp: Any = root
    for seg in loc:
        tp = unwrap(tp)
        if is_model(tp):
            field = tp.model_fields.get(seg) if isinstance(seg, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = unwrap(tp)
    return tp if is_model(tp) else None


def check_key(root: type[BaseModel], raw: Mapping[str, Any], loc: Loc) -> None:
    """Raise :class:`KeyIssue` unless ``loc`` names a field of ``root`` (given the entries ``raw`` has)."""
    tp: Any = root
    data: Any = raw
    open_mapping = False
    for i, seg in enumerate(loc):
        here = loc[:i]
        tp = unwrap(tp)
        if is_model(tp):
            field = tp.model_fields.get(seg) if isinstance(seg, str) else None
            if field is None:
                known = ", ".join(tp.model_fields)
                raise KeyIssue(here, f"{dotted(loc[: i + 1])}: unknown key (known keys here: {known})")
            if seg == "extends":
                raise KeyIssue(here, "extends: only an experiment file can extend another one")
            tp = field.annotation
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            open_mapping = bool(extra.get(OPEN_MAPPING))
        elif get_origin(tp) is dict:
            entries = data if isinstance(data, Mapping) else {}
            if seg not in entries and not open_mapping:
                known = ", ".join(map(str, entries)) or "none"
                raise KeyIssue(
                    here, f"{dotted(loc[: i + 1])}: no entry {seg!r} in {dotted(here)} (has: {known})"
                )
            tp = get_args(tp)[1]
            open_mapping = False
        elif get_origin(tp) is list:
            items = data if isinstance(data, list) else []
            if not isinstance(seg, int) or seg >= len(items):
                raise KeyIssue(here, f"{dotted(loc[: i + 1])}: {dotted(here)} has no item {seg!r}")
            tp = get_args(tp)[0]
            open_mapping = False
        else:
            raise KeyIssue(here, f"{dotted(loc[: i + 1])}: {dotted(here)} is a single value, not a mapping")
        data = _child(data, seg)


def _child(data: Any, seg: str | int) -> Any:
    if isinstance(data, Mapping):
        return data.get(seg)
    if isinstance(data, list) and isinstance(seg, int) and seg < len(data):
        return data[seg]
    return None


def _drop_exclusive(target: dict[str, Any], incoming: Mapping[str, Any]) -> list[str]:
    """Remove from ``target`` the partner of every exclusive key ``incoming`` sets; return what was removed."""
    dropped = []
    for a, b in EXCLUSIVE:
        for new, old in ((a, b), (b, a)):
            if incoming.get(new) is not None and old in target and old not in incoming:
                del target[old]
                dropped.append(old)
    return dropped


def set_dotted(raw: dict[str, Any], loc: Loc, value: Any) -> None:
    """Set ``loc`` in ``raw`` in place: a mapping value merges into a mapping there, anything else replaces.

    Missing intermediate mappings are created (a field left at its default in the file). Call
    :func:`check_key` first: this function does not know the schema.
    """
    node: Any = raw
    for seg in loc[:-1]:
        if isinstance(node, list):
            node = node[seg]  # type: ignore[index]
            continue
        if not isinstance(node.get(seg), dict | list):
            node[seg] = {}
        node = node[seg]
    last = loc[-1]
    if isinstance(node, list):
        node[last] = copy.deepcopy(value)  # type: ignore[index]
        return
    _drop_exclusive(node, {last: value})
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def deep_merge(
    base: Mapping[str, Any], overlay: Mapping[str, Any], replaced: list[Loc] | None = None, _at: Loc = ()
) -> dict[str, Any]:
    """``overlay`` over ``base`` (neither is modified): mappings merge, lists and scalars replace.

    ``replaced`` collects the locations whose value from ``base`` was dropped or replaced wholesale (the
    loader uses it to forget the line numbers of what is gone).
    """
    out = copy.deepcopy(dict(base))
    for old in _drop_exclusive(out, overlay):
        if replaced is not None:
            replaced.append((*_at, old))
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, replaced, (*_at, key))
        else:
            out[key] = copy.deepcopy(value)
            if replaced is not None:
                replaced.append((*_at, key))
    return out


__all__ = [
    "EXCLUSIVE",
    "OPEN_MAPPING",
    "KeyIssue",
    "check_key",
    "deep_merge",
    "model_at",
    "parse_assignment",
    "set_dotted",
    "shorten",
    "split_key",
    "unwrap",
]
