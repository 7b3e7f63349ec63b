"""YAML from the command line or a file, read with ``SafeLoader`` rules within fixed bounds.

PyYAML alone expands an alias again at every use (nine nested levels of ten aliases, 800 bytes, pass 1 GB),
recurses once per nesting level (a few thousand ``[`` end in a ``RecursionError``) and reads a file of any size.
:class:`BoundedLoader` composes each distinct node once, keeps for it how many values and how many levels it
holds with aliases expanded (from its children's counts, so an alias costs one lookup), and stops at the line
where the document passes :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels, or where an alias sits inside
the node it names. The
callers cap the text before parsing (:data:`MAX_FILE_BYTES`, :data:`MAX_SET_BYTES`). The shipped experiment
files are 3-5 KB, at most 230 values and 6 levels deep; every bound is far above that.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import Loc

#: Largest experiment file, in bytes (64 KiB: 15x the largest shipped file; pure-Python YAML reads a file
#: this size of small keys in under a second).
MAX_FILE_BYTES = 64 * 1024

#: Largest ``--set KEY=VALUE`` item, in bytes (16 KiB: a whole stage's mixture fits in under 1 KiB).
MAX_SET_BYTES = 16 * 1024

#: Most values (mappings, lists and scalars, keys included) a document may hold, aliases counted at every use
#: (the largest shipped file holds 230).
MAX_VALUES = 10_000

#: Deepest nesting of a document, aliases expanded (the shipped files reach 6 levels).
MAX_DEPTH = 32

#: ``(values, levels)`` of a node, aliases expanded.
Measure = tuple[int, int]


class YamlLimit(Exception):
    """A document past a bound of this module: ``line`` (1-based) and ``loc`` (dotted path) say where."""

    def __init__(self, line: int, loc: Loc, message: str):
        self.line = line
        self.loc = loc
        self.message = message
        super().__init__(message)


#: Path segment of a mapping's key (a level of nesting too: a key may be a mapping); left out of messages.
_KEY = "(key)"


def _segment(index: Any) -> str | int:
    """The path segment of a node that ``compose_node`` composes at ``index`` (an item's number, the value's
    key node, or ``None`` for a mapping's key)."""
    if isinstance(index, int):
        return index
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    return _KEY


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses (:class:`YamlLimit`) documents past :data:`MAX_VALUES` values or
    :data:`MAX_DEPTH` levels, aliases expanded, and aliases inside the node they name."""

    def __init__(self, text: str):
        super().__init__(text)
        self._path: list[str | int] = []
        self._measured: dict[int, Measure] = {}  # id(node) -> (values, levels), aliases expanded
        self._values = 0  # values of the document so far, aliases expanded: refused as soon as it passes

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        is_alias = isinstance(event, yaml.AliasEvent)
        if parent is not None:
            self._path.append(_segment(index))
        try:
            if len(self._path) >= MAX_DEPTH:  # before recursing: the composer recurses once per level
                raise YamlLimit(line, self._where(), f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
            values, levels = self._measure(node, is_alias, line)
            self._values += values if is_alias else 1
            if self._values > MAX_VALUES:
                raise YamlLimit(
                    line,
                    self._where(),
                    f"the document passes {MAX_VALUES} values here (aliases counted at every use)",
                )
            if len(self._path) + levels > MAX_DEPTH:
                raise YamlLimit(
                    line, self._where(), f"nested deeper than {MAX_DEPTH} levels (aliases expanded)"
                )
        finally:
            if parent is not None:
                self._path.pop()
        return node

    def _where(self) -> Loc:
        return tuple(seg for seg in self._path if seg != _KEY)

    def _measure(self, node: yaml.Node, is_alias: bool, line: int) -> Measure:
        known = self._measured.get(id(node))
        if is_alias:
            if known is None:  # the anchored node is still being composed: the alias is inside it
                raise YamlLimit(line, self._where(), "a YAML alias that contains itself")
            return known
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        counts = [self._measured[id(child)] for child in children]
        measure = (1 + sum(v for v, _ in counts), 1 + max((d for _, d in counts), default=0))
        self._measured[id(node)] = measure
        return measure


def refused_character(text: str, err: yaml.reader.ReaderError) -> tuple[int, str]:
    """The 1-based line of the character a :class:`yaml.reader.ReaderError` refuses in ``text``, and why."""
    line = text.count("\n", 0, max(err.position, 0)) + 1
    code = err.character if isinstance(err.character, int) else ord(err.character)
    return line, (
        f"character U+{code:04X} is not allowed (YAML takes printable characters, tab and line breaks; write "
        "others as escapes in a double-quoted string)"
    )


def load_value(text: str) -> Any:
    """One YAML value (a ``--set`` item's right-hand side) within the bounds of :class:`BoundedLoader`.

    Raises :class:`YamlLimit`, :class:`yaml.YAMLError`, or ``ValueError`` for a scalar its tag cannot hold
    (``2001-13-45``, an integer of more than 4300 digits).
    """
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_SET_BYTES",
    "MAX_VALUES",
    "BoundedLoader",
    "YamlLimit",
    "load_value",
    "refused_character",
]
