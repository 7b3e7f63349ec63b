"""Hostile variants of every shipped experiment file, and how ``vlsa-platform validate`` must refuse each one.

:func:`corpus` mutates each file of ``experiments/`` (issue 15): syntax errors, truncation mid-token, raw
bytes, an unknown key at every mapping level, a wrong type for every leaf, non-finite and huge numbers for
every numeric leaf, alias expansion, deep nesting, an oversized file, a missing and a cyclic ``extends``,
python tags, and odd ``--set`` items. A :class:`Case` holds the files to write side by side (the mutated file
and the shipped files it ``extends``), the ``--set`` items, and what the message must name; :meth:`Case.write`
puts them in a folder (a test's ``tmp_path``: nothing generated is committed) and :func:`problems` judges one
run: exit 2, no traceback, the field (or ``--set`` item) named, and ``file:LINE`` where the case has a line.

Mutations that change the tree are made on the parsed file and dumped back as YAML (comments are lost; the
line of the mutated key is read from the dumped text), so a key inserted into a flow mapping is as easy as one
in a block mapping. Text that YAML cannot dump (``1e400``, tags, 3,000 ``[``) goes in as a placeholder,
swapped after the line is found. Shared by ``tests/config/test_hostile_corpus.py`` and
``benchmarks/hostile_input.py``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlsa_platform.config.bounded_yaml import MAX_FILE_BYTES, MAX_SET_BYTES
from vlsa_platform.config.errors import Loc, dotted

#: libyaml's safe loader and dumper where PyYAML has them (ten times faster than the pure-Python ones).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: The shipped experiment files.
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

#: A key no section has.
UNKNOWN = "zz_unknown_key"

#: A string no number, flag or name field takes.
WRONG = "zz_wrong"

#: Values put in place of a leaf, by what the leaf holds: a string where a number or flag is, a list and a
#: mapping where a scalar is.
WRONG_TYPES: dict[str, dict[str, str]] = {
    "number": {"string": WRONG, "list": f"[{WRONG}, 1]", "mapping": f"{{{UNKNOWN}: 1}}"},
    "flag": {"string": WRONG, "list": f"[{WRONG}, 1]", "mapping": f"{{{UNKNOWN}: 1}}"},
    "text": {"list": f"[{WRONG}, 1]", "mapping": f"{{{UNKNOWN}: 1}}"},
    "null": {"list": f"[{WRONG}, 1]", "mapping": f"{{{UNKNOWN}: 1}}"},
}

#: Non-finite and huge numbers put in place of a numeric leaf. YAML 1.1 reads ``1e400`` (no dot) as a string,
#: which pydantic parses to inf; ``.inf`` is what a YAML float past the range (``1.0e+400``) reads as.
BAD_NUMBERS: dict[str, str] = {
    "inf": ".inf",
    "-inf": "-.inf",
    "nan": ".nan",
    "1e400": "1e400",
    "10**40": str(10**40),
}

#: Tags SafeLoader has no constructor for (PyYAML's full loader would run or import what they name).
PYTHON_TAGS: dict[str, str] = {
    "object-apply": '!!python/object/apply:os.system ["echo zz"]',
    "name": "!!python/name:os.system ''",
    "object-new": "!!python/object/new:builtins.dict {}",
    "object-map": "!!python/object:builtins.object {a: 1}",
}

#: Characters YAML refuses in a stream, and bytes that are not UTF-8.
RAW_BYTES: dict[str, bytes] = {
    "nul": b"\x00",
    "bel": b"\x07",
    "esc": b"\x1b",
    "formfeed": b"\x0c",
    "del": b"\x7f",
    "c1": "\u009b".encode(),  # a C1 control, as UTF-8
    "utf8-ff": b"\xff",
    "utf8-lone-continuation": b"\x80",
    "utf8-truncated": b"\xc3",
    "utf8-surrogate": b"\xed\xa0\x80",
}


@dataclass(frozen=True)
class Case:
    """One hostile input: files written side by side, ``validate TARGET --set ...``, what the message names."""

    id: str
    """``<file stem>/<kind>/<detail>``: the pytest id and the benchmark's row name."""
    kind: str
    """The mutation (``wrong-type``, ``truncation``, ``set-key``...)."""
    files: dict[str, bytes]
    """File name -> content: the mutated target and the shipped files it extends."""
    target: str
    """The file given to ``validate``."""
    overrides: tuple[str, ...] = ()
    """``--set`` items, in order."""
    names: tuple[str, ...] = ()
    """Text the message must contain: the dotted field, the key, or the ``--set`` item."""
    file: str | None = None
    """The file the message must locate the problem in (``NAME:LINE``), if any."""
    lines: tuple[int, int] | None = None
    """Inclusive range of the line given after ``file``: the mutated line, or the span a parser may stop in."""

    def write(self, folder: Path) -> list[str]:
        """Write the files into ``folder``; return the ``vlsa-platform`` arguments that validate the target."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (folder / name).write_bytes(content)
        argv = ["validate", str(folder / self.target)]
        for item in self.overrides:
            argv += ["--set", item]
        return argv


def problems(case: Case, status: int, output: str) -> list[str]:
    """What is wrong with how ``validate`` refused ``case`` (empty when it exited 2 naming the place)."""
    found = []
    if status != 2:
        found.append(f"exit status {status}, not 2")
    if "Traceback" in output:
        found.append("a traceback in the output")
    found += [f"does not name {name!r}" for name in case.names if name not in output]
    if case.file is not None:
        at = [int(n) for n in re.findall(rf"(?:^|/){re.escape(case.file)}:(\d+)", output, re.M)]
        if not at:
            found.append(f"does not name {case.file}:LINE")
        elif case.lines is not None and not any(case.lines[0] <= n <= case.lines[1] for n in at):
            found.append(f"names {case.file} at line {at}, not in {case.lines}")
    return found


# --- the tree: leaves, mappings, lines -------------------------------------------------------------------------


def walk(data: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every node of a parsed file, parents before children, with its path."""
    yield loc, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from walk(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from walk(value, (*loc, i))


def _leaf_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "null" if value is None else None


def leaves(data: Any) -> list[tuple[Loc, str]]:
    """``(path, kind)`` of every scalar of a parsed file; kind is number, flag, text or null."""
    return [(loc, kind) for loc, value in walk(data) if loc and (kind := _leaf_kind(value)) is not None]


def _set(data: Any, loc: Loc, value: Any) -> Any:
    """A deep copy of ``data`` with ``loc`` set to ``value``."""
    if not loc:
        return value
    head, rest = loc[0], loc[1:]
    if isinstance(data, dict):
        return {k: (_set(v, rest, value) if k == head else v) for k, v in data.items()}
    return [(_set(v, rest, value) if i == head else v) for i, v in enumerate(data)]


def line_in(text: str, loc: Loc) -> int:
    """1-based line where ``text`` writes ``loc``: its key for a mapping entry, its start for a list item."""
    node = yaml.compose(text, Loader=_LOADER)
    line = 1
    for segment in loc:
        if isinstance(node, yaml.MappingNode):
            key, node = next((k, v) for k, v in node.value if k.value == str(segment))
            line = key.start_mark.line + 1
        else:
            node = node.value[int(segment)]
            line = node.start_mark.line + 1
    return line


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=1_000_000)


@dataclass
class Shipped:
    """A shipped experiment file, parsed, and the shipped files its ``extends`` chain reads."""

    name: str
    """File name (``ablation.yaml``)."""
    text: str
    """As shipped."""
    data: dict[str, Any]
    """Parsed (``extends`` not resolved): the tree whose mappings and leaves are mutated."""
    chain: dict[str, bytes] = field(default_factory=dict)
    """The shipped files it extends, transitively: written beside each of its cases."""

    @property
    def stem(self) -> str:
        """The name without ``.yaml``: the first part of its cases' ids."""
        return self.name.removesuffix(".yaml")

    def case(self, kind: str, detail: str, content: str | bytes, **expect: Any) -> Case:
        """A case whose target is this file with ``content`` (its parents shipped as they are)."""
        raw = content.encode() if isinstance(content, str) else content
        extra = expect.pop("extra_files", {})
        files = {**self.chain, **extra, self.name: raw}
        return Case(f"{self.stem}/{kind}/{detail}", kind, files, self.name, **expect)

    def replaced(self, kind: str, detail: str, loc: Loc, raw: str, names: tuple[str, ...] = ()) -> Case:
        """This file with the value at ``loc`` replaced by the YAML text ``raw``; the message names ``loc``
        and its line."""
        placeholder = "zz_placeholder_value"
        dumped = _dump(_set(self.data, loc, placeholder))
        line = line_in(dumped, loc)
        text = dumped.replace(placeholder, raw, 1)
        return self.case(
            kind, detail, text, names=names or (dotted(loc),), file=self.name, lines=(line, line)
        )


def shipped() -> list[Shipped]:
    """Every file of ``experiments/``, with its ``extends`` chain (shipped files only)."""
    texts = {p.name: p.read_text() for p in sorted(EXPERIMENTS.glob("*.yaml"))}
    files = []
    for name, text in texts.items():
        data = yaml.safe_load(text)
        chain: dict[str, bytes] = {}
        parent = data.get("extends")
        while parent is not None and parent not in chain:
            chain[parent] = texts[parent].encode()
            parent = yaml.safe_load(texts[parent]).get("extends")
        files.append(Shipped(name, text, data, chain))
    return files


# --- the generators --------------------------------------------------------------------------------------------


def tree_cases(f: Shipped) -> Iterator[Case]:
    """An unknown key in every mapping; a wrong type for every leaf; bad numbers for every numeric leaf."""
    for loc, value in walk(f.data):
        if isinstance(value, dict):
            dumped = _dump(_set(f.data, loc, {**value, UNKNOWN: 1}))
            line = line_in(dumped, (*loc, UNKNOWN))
            names = (dotted((*loc, UNKNOWN)),)
            yield f.case("unknown-key", dotted(loc), dumped, names=names, file=f.name, lines=(line, line))
    for loc, kind in leaves(f.data):
        for detail, raw in WRONG_TYPES[kind].items():
            yield f.replaced("wrong-type", f"{dotted(loc)}={detail}", loc, raw)
        if kind == "number":
            for detail, raw in BAD_NUMBERS.items():
                yield f.replaced("bad-number", f"{dotted(loc)}={detail}", loc, raw)


def _code_lines(text: str) -> list[int]:
    """0-based indices of the lines that hold YAML (not blank, not only a comment)."""
    return [
        i for i, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")
    ]


def _key_line(line: str) -> re.Match[str] | None:
    """``  key: value`` (a block mapping entry, not a list item)."""
    return re.match(r"^( *)([A-Za-z_][\w.]*):(?: (.*))?$", line.split(" #")[0].rstrip())


def syntax_cases(f: Shipped) -> Iterator[Case]:
    """An unclosed bracket, a key indented one space too far, one indented one space too little."""
    lines = f.text.splitlines(keepends=True)
    code = _code_lines(f.text)
    for n, i in enumerate(code):
        body = lines[i].split(" #")[0].rstrip()
        if body.endswith(("]", "}")) and ("[" in body or "{" in body):
            broken = "".join([*lines[:i], body[:-1] + "\n", *lines[i + 1 :]])
            last = code[min(n + 2, len(code) - 1)] + 1
            yield f.case("syntax", "unclosed-bracket", broken, file=f.name, lines=(i + 1, last))
            break
    for detail, shift in (("indent-too-far", " "), ("indent-too-little", None)):
        for before, i in itertools.pairwise(code):
            here, prev = _key_line(lines[i]), _key_line(lines[before])
            if not (here and prev and len(here[1]) >= 4 and here[1] == prev[1] and prev[3]):
                continue
            if prev[3].startswith(("[", "{", "&", "*", "!", '"', "'")):
                continue
            moved = shift + lines[i] if shift else lines[i][1:]
            text = "".join([*lines[:i], moved, *lines[i + 1 :]])
            yield f.case("syntax", detail, text, file=f.name, lines=(i + 1, i + 2))
            break


def truncation_cases(f: Shipped) -> Iterator[Case]:
    """The file cut mid-token, where no cut can leave valid YAML: inside a key that is not the first of its
    mapping (a bare word where ``key:`` is due), right after a ``[`` or ``{``, inside a quoted string."""
    lines = f.text.splitlines(keepends=True)
    code = _code_lines(f.text)
    starts = [sum(len(x) for x in lines[:i]) for i in range(len(lines))]
    keys = []
    for before, i in itertools.pairwise(code):
        here, prev = _key_line(lines[i]), _key_line(lines[before])
        if here and prev and here[1] == prev[1] and prev[3] and len(here[2]) >= 3:
            keys.append((i, starts[i] + len(here[1]) + len(here[2]) // 2))
    picks = {keys[len(keys) // 4], keys[len(keys) // 2], keys[-1]} if keys else set()
    for i, cut in sorted(picks):
        yield f.case("truncation", f"mid-key-line{i + 1}", f.text[:cut], file=f.name, lines=(i + 1, i + 1))
    for detail, pattern in (("after-bracket", r"[\[{]"), ("in-quotes", r'"')):
        hits = [i for i in code if re.search(pattern, lines[i].split(" #")[0])]
        if hits:
            i = hits[len(hits) // 2]
            cut = starts[i] + re.search(pattern, lines[i]).end()  # type: ignore[union-attr]
            cut += 2 if detail == "in-quotes" else 0
            yield f.case("truncation", detail, f.text[:cut], file=f.name, lines=(i + 1, i + 1))


def raw_byte_cases(f: Shipped) -> Iterator[Case]:
    """Each of :data:`RAW_BYTES` at the start of a value in the middle of the file."""
    lines = f.text.encode().splitlines(keepends=True)
    code = [i for i in _code_lines(f.text) if (m := _key_line(f.text.splitlines()[i])) and m[3]]
    i = code[len(code) // 2]
    at = lines[i].index(b": ") + 2
    for detail, raw in RAW_BYTES.items():
        content = b"".join([*lines[:i], lines[i][:at] + raw + lines[i][at:], *lines[i + 1 :]])
        yield f.case("raw-bytes", detail, content, file=f.name, lines=(i + 1, i + 1))


def size_cases(f: Shipped) -> Iterator[Case]:
    """Past :data:`MAX_FILE_BYTES`: padded with comments, and with one long flow list."""
    padding = ("# " + "x" * 97 + "\n") * (MAX_FILE_BYTES // 100 + 10)
    padded = (f.text + padding).encode()
    line = padded[:MAX_FILE_BYTES].count(b"\n") + 1
    yield f.case("oversized", "comments", padded, names=("64 KiB",), file=f.name, lines=(line, line))
    listed = f"{f.text}zz_big: [{', '.join(['1'] * (MAX_FILE_BYTES // 3))}]\n".encode()
    line = f.text.count("\n") + 1
    yield f.case("oversized", "flow-list", listed, names=("64 KiB",), file=f.name, lines=(line, line))


def alias_bomb(prefix: str = "lvl") -> str:
    """Nine levels of ten aliases each (about 800 bytes): 10**9 values if every alias were copied."""
    rows = [f"{prefix}0: &{prefix}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        rows.append(f"{prefix}{i}: &{prefix}{i} [" + ", ".join([f"*{prefix}{i - 1}"] * 10) + "]")
    return "\n".join(rows) + "\n"


def structure_cases(f: Shipped) -> Iterator[Case]:
    """Alias expansion (a bomb, an alias inside itself, depth through aliases) and deep nesting."""
    base = f.text.rstrip("\n") + "\n"
    first = base.count("\n") + 1
    yield f.case("alias", "bomb", base + alias_bomb(), names=("lvl",), file=f.name, lines=(first, first + 8))
    text = base + "zz_self: &zz [1, *zz]\n"
    yield f.case("alias", "self", text, names=("zz_self.1",), file=f.name, lines=(first, first))
    half = 17
    text = base + f"zz_a: &zz_a {'[' * half}{']' * half}\nzz_b: {'[' * half}*zz_a{']' * half}\n"
    yield f.case("alias", "depth", text, names=("zz_b.0",), file=f.name, lines=(first + 1, first + 1))
    loc: Loc = ("name",)
    deep = {"flow-list": "[" * 3000 + "]" * 3000, "flow-map": "{a: " * 3000 + "1" + "}" * 3000}
    for detail, raw in deep.items():
        yield f.replaced("deep-nesting", detail, loc, raw, names=("name.",))
    nested: Any = 1
    for _ in range(40):
        nested = [nested]
    dumped = _dump(_set(f.data, loc, nested))
    line = line_in(dumped, loc)
    yield f.case("deep-nesting", "block", dumped, names=("name.0",), file=f.name, lines=(line, line + 40))


def extends_cases(f: Shipped) -> Iterator[Case]:
    """``extends`` to a missing file, a folder, an empty path, a list-shaped file; to itself and in a cycle."""
    body = {k: v for k, v in f.data.items() if k != "extends"}
    targets = {
        "missing": ("zz_missing.yaml", ("extends", "zz_missing.yaml")),
        "folder": (".", ("extends", "no such file")),
        "empty": ("", ("extends",)),
        "self": (f.name, ("extends", "cycle")),
    }
    for detail, (parent, names) in targets.items():
        dumped = _dump({"extends": parent, **body})
        yield f.case("extends", detail, dumped, names=names, file=f.name, lines=(1, 1))
    dumped = _dump({"extends": "zz_list.yaml", **body})
    extra = {"zz_list.yaml": b"- 1\n- 2\n"}
    yield f.case(
        "extends",
        "not-a-mapping",
        dumped,
        names=("mapping",),
        file="zz_list.yaml",
        lines=(1, 1),
        extra_files=extra,
    )
    dumped = _dump({"extends": "zz_cycle.yaml", **body})
    extra = {"zz_cycle.yaml": f"extends: {f.name}\nname: zz-cycle\n".encode()}
    yield f.case(
        "extends",
        "cycle",
        dumped,
        names=("extends", "cycle"),
        file="zz_cycle.yaml",
        lines=(1, 1),
        extra_files=extra,
    )


def tag_cases(f: Shipped) -> Iterator[Case]:
    """Python tags on a text leaf, a numeric leaf and a mapping."""
    numbers = [loc for loc, kind in leaves(f.data) if kind == "number"]
    mapping = next(loc for loc, value in walk(f.data) if loc and isinstance(value, dict))
    for detail, raw in PYTHON_TAGS.items():
        yield f.replaced("python-tag", f"name={detail}", ("name",), raw)
        for number in numbers[:1]:  # ablation.yaml has none
            yield f.replaced("python-tag", f"{dotted(number)}={detail}", number, raw)
    yield f.replaced("python-tag", f"{dotted(mapping)}=object-map", mapping, PYTHON_TAGS["object-map"])


def _set_items() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``--set`` items that must be refused: ``detail -> (item, what the message names)``."""
    bomb = alias_bomb().replace("\n", ", ").rstrip(", ")
    long_key = "k" * 300
    items = {
        "key-superscript": ("²=1", ("²",)),
        "key-arabic-digit": ("stages.stage1.mixture.١.dataset=zz", ("١",)),
        "key-double-dot": ("a..b=1", ("a..b",)),
        "key-empty": ("=1", ("=1",)),
        "key-blank": (" =1", ("=1",)),
        "key-trailing-dot": ("stages.=1", ("stages.",)),
        "key-unknown-stage": ("stages.stage9.x=1", ("stages.stage9",)),
        "key-no-item": ("stages.stage1.mixture.99.dataset=zz", ("stages.stage1.mixture.99",)),
        "key-into-scalar": ("name.zz=1", ("name.zz",)),
        "key-long": (long_key + "=1", (long_key[:40],)),
        "key-oversized": ("k" * (MAX_SET_BYTES + 1) + "=1", (str(MAX_SET_BYTES),)),
        "no-equals": ("stages.stage1.epochs", ("stages.stage1.epochs",)),
        "value-inf": ("stages.stage1.lr.default=.inf", ("stages.stage1.lr.default",)),
        "value-huge-int": (f"stages.stage1.placement.global_batch={10**40}", ("global_batch",)),
        "value-huge-float": ("loss.rec_weight=1e400", ("loss.rec_weight",)),
        "value-wrong-type": ("stages.stage1.epochs=zz", ("stages.stage1.epochs",)),
        "value-unknown-key": (f"model={{{UNKNOWN}: 1}}", (f"model.{UNKNOWN}",)),
        "value-python-name": ("description=!!python/name:os.system ''", ("description",)),
        "value-python-apply": ('description=!!python/object/apply:os.system ["echo zz"]', ("description",)),
        "value-deep": ("description=" + "[" * 5000, ("description",)),
        "value-bomb": ("description={" + bomb + "}", ("description",)),
        "value-unterminated": ('description="zz', ("description",)),
        "value-control": ("description=a\x07b", ("description",)),
        "value-surrogate": ("description=a\udcffb", ("description",)),
    }
    return {detail: (item, ("--set", *names)) for detail, (item, names) in items.items()}


def set_cases(f: Shipped) -> Iterator[Case]:
    """Each of the odd ``--set`` items on the (valid) shipped file."""
    for detail, (item, names) in _set_items().items():
        yield f.case("set", detail, f.text, overrides=(item,), names=names)


#: Generators that depend on the file's structure only (as against one case per leaf).
STRUCTURAL = (
    syntax_cases,
    truncation_cases,
    raw_byte_cases,
    size_cases,
    structure_cases,
    extends_cases,
    tag_cases,
    set_cases,
)


def corpus() -> list[Case]:
    """Every case for every shipped file: the structural ones, then one or more per mapping and leaf."""
    cases = []
    for f in shipped():
        for make in (*STRUCTURAL, tree_cases):
            cases.extend(make(f))
    return cases


__all__ = [
    "BAD_NUMBERS",
    "EXPERIMENTS",
    "PYTHON_TAGS",
    "RAW_BYTES",
    "STRUCTURAL",
    "UNKNOWN",
    "WRONG",
    "WRONG_TYPES",
    "Case",
    "Shipped",
    "alias_bomb",
    "corpus",
    "leaves",
    "line_in",
    "problems",
    "shipped",
    "tree_cases",
    "walk",
]
