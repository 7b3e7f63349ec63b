"""The report's Table-3 table: one row per variant or trial, one column per benchmark score, grouped by ability
(:mod:`.benchmarks`), each cell the score and its difference from the baseline row's.

The paper's Table 3 shows each variant's score beside its change from row (1), "the original LLaVA-Next serving
as the baseline" (§4.3): ``67.8 (-1.7)``. Here the baseline is the row ``report --baseline`` names; else, for an
ablation, its first variant in the experiment file (``experiments/ablation.yaml``'s first, ``anyres``, is the
paper's (1)); else the first row. An ablation's rows follow the file's order of its variants (Table 3's), other
reports' the children's start order. :func:`score_table` builds the table (``None`` when no child logged a
score), :func:`markdown_rows` and :func:`notes` give its text for :mod:`.render`'s Markdown table, and
:func:`html_table` its HTML, where a better delta (by the metric's direction) is green, a worse one red.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass
from typing import Literal

from .. import names
from .benchmarks import ABILITY_TITLES, Ability, Benchmark, columns
from .comparison import ChildRun, Report, ReportError
from .verdict import PRECISION, format_value

Change = Literal["better", "worse", "same"]
MISSING = "—"
"""What a cell shows for a score the run did not log (or logged as NaN)."""
BASELINE_NOTE = " (baseline)"
"""Appended to the baseline row's label."""


@dataclass(frozen=True)
class Cell:
    """One run's score on one benchmark."""

    value: float | None
    """The score at its last step; ``None`` when missing or not finite."""
    delta: float | None
    """``value`` minus the baseline row's; ``None`` on the baseline row or when either score is missing."""
    change: Change | None
    """Whether :attr:`delta` is better or worse by the column's direction; ``None`` when the direction is
    unknown or there is no delta."""

    def text(self) -> str:
        """``0.6523 (+0.0123)``; the value alone without a delta; :data:`MISSING` without a value."""
        if self.value is None:
            return MISSING
        shown = format_value(self.value)
        return shown if self.delta is None else f"{shown} ({format_delta(self.delta)})"


@dataclass(frozen=True)
class Row:
    """One variant or trial."""

    label: str
    """The variant's label (``(1) anyres``), else its key, else the run's name."""
    run_id: str
    is_baseline: bool
    cells: tuple[Cell, ...]
    """One per column of the table, in its order."""


@dataclass(frozen=True)
class ScoreTable:
    """The benchmark scores of a report's children."""

    header: str
    """Title of the label column: ``variant``, ``trial``, ``variant/trial`` or ``run``."""
    columns: tuple[Benchmark, ...]
    """Grouped by ability, in :data:`~.benchmarks.ABILITIES` order."""
    rows: tuple[Row, ...]
    baseline: str
    """The baseline row's label."""
    baseline_rule: str
    """Why that row is the baseline, as a phrase."""

    def groups(self) -> list[tuple[Ability, tuple[Benchmark, ...]]]:
        """The columns as runs of one ability each, left to right."""
        return [(a, tuple(g)) for a, g in itertools.groupby(self.columns, key=lambda b: b.ability)]


def format_delta(delta: float) -> str:
    """A difference from the baseline, signed, to the significant digits of a value: ``+23.2``, ``-0.0123``,
    ``±0``."""
    return "±0" if delta == 0 else f"{delta:+.{PRECISION}g}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _compare(value: float | None, base: float | None, column: Benchmark) -> Cell:
    if value is None or base is None:
        return Cell(value, None, None)
    delta = value - base
    change: Change | None
    if delta == 0:
        change = "same"
    elif column.higher_is_better is None:
        change = None
    else:
        change = "better" if (delta > 0) == column.higher_is_better else "worse"
    return Cell(value, delta, change)


def row_label(report: Report, child: ChildRun) -> str:
    """A row's label: the variant's label from the experiment file, else its variant key, else the run's name
    (a trial's run name says more than its Tune trial id)."""
    if child.label_tag == names.TAG_VARIANT and child.label:
        return dict(report.variants).get(child.label, child.label)
    return child.name


def find_row(report: Report, name: str) -> int:
    """Index into ``report.children`` of the first child that ``name`` names: its variant key or trial id, its
    row label, its run name or run id.

    Raises:
        ReportError: no child answers to ``name`` (the message lists the rows)."""
    for index, child in enumerate(report.children):
        if name in (child.label, row_label(report, child), child.name, child.run_id):
            return index
    known = ", ".join(repr(row_label(report, c)) for c in report.children)
    raise ReportError(f"--baseline {name!r} names no child run of the report; its rows are {known}")


def _ordered(report: Report) -> list[ChildRun]:
    """The children, an ablation's in its file's variant order (others after them, in start order)."""
    order = {key: i for i, (key, _) in enumerate(report.variants)}

    def place(child: ChildRun) -> int:
        if child.label_tag == names.TAG_VARIANT and child.label in order:
            return order[child.label]
        return len(order)

    return sorted(report.children, key=place)  # stable: start order within a place


def _baseline(report: Report, children: list[ChildRun]) -> tuple[int, str]:
    """(index into ``children``, rule) of the baseline row (module docstring)."""
    if report.baseline is not None:
        chosen = report.children[find_row(report, report.baseline)]
        return children.index(chosen), "named by --baseline"
    first = children[0]
    if report.variants and first.label_tag == names.TAG_VARIANT and first.label in dict(report.variants):
        return 0, "the ablation's first variant in its file, as Table 3's row (1) is the paper's"
    return 0, "the first row"


def score_table(report: Report) -> ScoreTable | None:
    """The table of the children's ``eval/`` scores; ``None`` when no child logged one."""
    table_columns = columns(key for child in report.children for key in child.evals)
    if not table_columns:
        return None
    children = _ordered(report)
    base_index, rule = _baseline(report, children)
    base = children[base_index]
    base_values = [_finite(base.evals.get(c.key)) for c in table_columns]
    rows = []
    for index, child in enumerate(children):
        values = [_finite(child.evals.get(c.key)) for c in table_columns]
        if index == base_index:
            cells = tuple(Cell(v, None, None) for v in values)
        else:
            cells = tuple(
                _compare(v, b, c) for v, b, c in zip(values, base_values, table_columns, strict=True)
            )
        rows.append(Row(row_label(report, child), child.run_id, index == base_index, cells))
    return ScoreTable(
        header=report.label_header or "run",
        columns=table_columns,
        rows=tuple(rows),
        baseline=row_label(report, base),
        baseline_rule=rule,
    )


def notes(table: ScoreTable) -> list[str]:
    """The sentences above the table, plain text: what a cell shows, the groups, which score each column is."""
    groups = "; ".join(
        f"{ABILITY_TITLES[ability]}: {', '.join(c.label for c in cols)}" for ability, cols in table.groups()
    )
    keys = ", ".join(f"{c.label} = {c.key}" for c in table.columns)
    return [
        f"One row per {table.header}, one column per benchmark score at its last step; each cell is the score "
        f"and, in brackets, its difference from the baseline {table.baseline} ({table.baseline_rule}); "
        f"{MISSING}: not logged.",
        f"Columns by ability, as the paper groups Table 3's benchmarks (§4.3): {groups}.",
        f"Scores: {keys}.",
    ]


def markdown_rows(table: ScoreTable) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and ``("", cells)`` per row, plain text (as :mod:`.render`'s tables take them)."""
    header = [table.header, *(c.label for c in table.columns)]
    rows = [
        ("", [row.label + (BASELINE_NOTE if row.is_baseline else ""), *(cell.text() for cell in row.cells)])
        for row in table.rows
    ]
    return header, rows


_CHANGE_TITLE = {
    "better": "better than the baseline",
    "worse": "worse than the baseline",
    "same": "as the baseline",
}


def _html_cell(cell: Cell) -> str:
    if cell.value is None or cell.delta is None:
        return f'<td class="num">{html.escape(cell.text())}</td>'
    css = f"delta {cell.change}" if cell.change is not None else "delta"
    title = _CHANGE_TITLE[cell.change] if cell.change is not None else "direction unknown"
    return (
        f'<td class="num">{html.escape(format_value(cell.value))} '
        f'<span class="{css}" title="{title}">({html.escape(format_delta(cell.delta))})</span></td>'
    )


def html_table(table: ScoreTable) -> list[str]:
    """The table as HTML lines (escaped): a header row of the ability groups over one of the benchmarks (each
    titled with its MLflow key), the baseline row marked, each delta's ``span`` classed ``better``, ``worse`` or
    ``same`` by the column's direction (neither when it is unknown)."""
    esc = html.escape
    groups = "".join(
        f'<th class="group" colspan="{len(cols)}">{esc(ABILITY_TITLES[ability])}</th>'
        for ability, cols in table.groups()
    )
    labels = "".join(f'<th title="{esc(c.key)}">{esc(c.label)}</th>' for c in table.columns)
    out = [
        '<table class="scores">',
        f'<thead><tr><th rowspan="2">{esc(table.header)}</th>{groups}</tr><tr>{labels}</tr></thead>',
        "<tbody>",
    ]
    for row in table.rows:
        css = ' class="baseline"' if row.is_baseline else ""
        label = esc(row.label + (BASELINE_NOTE if row.is_baseline else ""))
        cells = "".join(_html_cell(cell) for cell in row.cells)
        out.append(f'<tr{css} title="{esc(row.run_id)}"><td>{label}</td>{cells}</tr>')
    out.extend(["</tbody>", "</table>"])
    return out


__all__ = [
    "MISSING",
    "Cell",
    "Row",
    "ScoreTable",
    "find_row",
    "format_delta",
    "html_table",
    "markdown_rows",
    "notes",
    "row_label",
    "score_table",
]
