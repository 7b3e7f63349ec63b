"""The report as text: a Markdown table (:func:`render_markdown`) and a self-contained HTML page
(:func:`render_html`), one row per child run with its metric's change from its first to its last validation,
the best one marked ★ (or every tied one marked ``tied``: never a star on a tie). When the children repeat
settings over seeds (:attr:`~.comparison.Report.repeated`), a table of the settings comes first: each setting's
mean ± sample standard deviation, its number of seeds and its mark. When the children logged benchmark scores
(``eval/...``), the Table-3 table of :mod:`.score_table` follows the runs' table."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

from .. import names
from .comparison import Report
from .score_table import html_table, markdown_rows, notes, score_table
from .verdict import (
    BEST_MARK,
    SPREAD_NAME,
    TIE_MARK,
    format_change,
    format_spread,
    format_value,
    ranks,
    verdict_line,
)

_MAX_CELL = 60  # characters of a param value shown in a table cell
SCORES_HEADING = "Benchmark scores (Table 3)"
"""Heading of the Table-3 table (:mod:`.score_table`), present only when some child logged an ``eval/`` score."""
RANK_HEADER = "rank"
"""Column of each child's rank by the report's metric (1 = best by its mode; equal values share a rank)."""
ESTIMATE_HEADER = "gpu_hours estimated"
"""Column of the plan's estimated device-hours per run (:attr:`~.comparison.ChildRun.estimated_gpu_hours`),
shown right after the measured ``cost/gpu_hours`` when the parent run logged one."""


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def change_header(report: Report) -> str:
    """Title of the column that shows each child's metric from its first to its last value."""
    return f"{report.metric} first -> last"


def _rows(report: Report) -> tuple[list[str], list[tuple[str, list[str]]], int]:
    """Header, (mark, cells) per child and the index of the first number column; plain text, not escaped.
    The report's metric comes first, then its change over the run (:func:`~.verdict.format_change`), then the
    other metrics. With seed repeats the marks go to the settings (:func:`_setting_rows`) and the children's
    are blank."""
    verdict = None if report.repeated else report.verdict()
    header = [BEST_MARK, "run"] if report.repeated else [BEST_MARK, RANK_HEADER, "run"]
    label = report.label_header
    if label:
        header.append(label)
    header.append("status")
    header.extend(report.varied_params)
    first_number = len(header)
    metric, *others = report.metric_columns()
    if any(c.estimated_gpu_hours is not None for c in report.children):
        at = others.index(names.COST_GPU_HOURS) + 1 if names.COST_GPU_HOURS in others else len(others)
        others.insert(at, ESTIMATE_HEADER)
    header.extend([metric, change_header(report), *others])
    rows = []
    places = ranks([child.value(metric) for child in report.children], report.mode)
    for index, child in enumerate(report.children):
        mark = verdict.mark(index) if verdict is not None else ""
        cells = [mark, child.name]
        if not report.repeated:  # with seed repeats the settings' table judges, not each child
            cells.insert(1, "-" if places[index] is None else str(places[index]))
        if label:
            cells.append(child.label or "-")
        cells.append(child.status)
        cells.extend(_short(child.params.get(key)) for key in report.varied_params)
        cells.append(format_value(child.final.get(metric)))
        cells.append(format_change(child.first_value(metric), child.value(metric)))
        cells.extend(
            format_value(child.estimated_gpu_hours if key == ESTIMATE_HEADER else child.final.get(key))
            for key in others
        )
        rows.append((mark, cells))
    return header, rows, first_number


def _setting_rows(report: Report) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and (mark, cells) per setting, for a report with seed repeats; plain text, not escaped."""
    verdict = report.verdict()
    params = report.setting_params()
    header = [BEST_MARK, *params, "seeds", f"{report.metric} (mean ± sd)", "runs"]
    rows = []
    for index, setting in enumerate(report.settings()):
        mark = verdict.mark(index)
        cells = [mark, *(_short(value) for _, value in setting.params)]
        if setting.score is None:
            cells.extend(["0", "-"])
        else:
            spread = setting.score.spread
            shown = format_value(setting.score.mean)
            cells.extend(
                [str(setting.score.n), shown if spread is None else f"{shown} ± {format_spread(spread)}"]
            )
        cells.append(", ".join(c.name for c in setting.children))
        rows.append((mark, cells))
    return header, rows


def _tie_rule(report: Report) -> str:
    """How a seeded report's marks were made, in one sentence."""
    band = report.verdict().band
    spread = "-" if band is None else format_spread(band)
    return (
        f"{len(report.settings())} settings; each shows the mean ± {SPREAD_NAME} of {report.metric} over its "
        f"seeds. {TIE_MARK}: the mean is within the seed spread (pooled {SPREAD_NAME}, {spread}) of the best "
        f"mean; {BEST_MARK} only when no other setting ties with the best."
    )


def _summary(report: Report) -> tuple[str, str]:
    """(parent line, verdict line) in plain text."""
    count = len(report.children)
    plural = "s" if count != 1 else ""
    parent = (
        f"Parent run {report.parent_name} ({report.parent_run_id}) with {count} child run{plural}; "
        f"tracking URI {report.tracking_uri}"
    )
    objective = f"{report.metric} ({report.mode}, {report.metric_source})"
    if report.repeated:
        labels, noun = [s.describe() for s in report.settings()], "setting"
    else:
        labels, noun = [c.name for c in report.children], "child"
    return parent, verdict_line(objective, labels, report.scores(), report.verdict(), noun)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(
    header: list[str], rows: list[tuple[str, list[str]]], first_number: int, last: int | None = None
) -> list[str]:
    """A Markdown table: the mark column centred, columns ``first_number`` to ``last`` (exclusive; default
    the end) right-aligned."""
    end = len(header) if last is None else last
    align = [":-:" if i == 0 else ("---:" if first_number <= i < end else "---") for i in range(len(header))]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines.extend("| " + " | ".join(_md(cell) for cell in cells) + " |" for _, cells in rows)
    return lines


def render_markdown(report: Report, images: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The comparison as Markdown: a heading, the parent and the verdict (best or tie), with seed repeats
    the table of settings, one table row per child (best row marked ★, tied rows ``tied``), the benchmark
    scores' table when some child logged one (:mod:`.score_table`), then ``images`` as image links (paths as
    given, e.g. relative to the report file)."""
    header, rows, first_metric = _rows(report)
    parent, best = _summary(report)
    lines = [f"# Report: {_md(report.experiment)}", "", _md(parent), "", _md(best), ""]
    if report.repeated:
        setting_header, setting_rows = _setting_rows(report)
        lines.extend([_md(_tie_rule(report)), ""])
        width = len(setting_header)
        lines.extend(_md_table(setting_header, setting_rows, width - 3, width - 1))
        lines.extend(["", "## Runs", ""])
    lines.extend(_md_table(header, rows, first_metric))
    scores = score_table(report)
    if scores is not None:
        lines.extend(["", f"## {SCORES_HEADING}", ""])
        for note in notes(scores):
            lines.extend([_md(note), ""])
        score_header, score_rows = markdown_rows(scores)
        lines.extend(_md_table(score_header, score_rows, 1))
    for image in images:
        path = Path(image)
        lines.extend(["", f"![{path.stem}]({path.as_posix()})"])
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff4c2; font-weight: 600; }
tr.tied td { background: #e8f0fe; }
table.scores th.group { text-align: center; }
table.scores tr.baseline td { background: #f4f4f4; }
span.delta { color: #666; }
span.delta.better { color: #1a7f37; }
span.delta.worse { color: #c62828; }
figure { margin: 1.5em 0; }
img { max-width: 100%; }
"""
_ROW_CLASS = {BEST_MARK: ' class="best"', TIE_MARK: ' class="tied"'}


def _html_table(
    header: list[str], rows: list[tuple[str, list[str]]], first_number: int, titles: Sequence[str], last: int
) -> list[str]:
    """An HTML table (escaped): columns ``first_number`` to ``last`` (exclusive) right-aligned, each row's
    ``title`` from ``titles``, its class from its mark."""
    esc = html.escape
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for title, (mark, cells) in zip(titles, rows, strict=True):
        tds = "".join(
            f'<td class="num">{esc(cell)}</td>' if first_number <= i < last else f"<td>{esc(cell)}</td>"
            for i, cell in enumerate(cells)
        )
        out.append(f'<tr{_ROW_CLASS.get(mark, "")} title="{esc(title)}">{tds}</tr>')
    out.extend(["</tbody>", "</table>"])
    return out


def render_html(report: Report, images: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The comparison as one self-contained HTML page (every text escaped; ``images``, PNG files, embedded
    as data URIs so the page needs nothing beside it)."""
    header, rows, first_metric = _rows(report)
    parent, best = _summary(report)
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>Report: {esc(report.experiment)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Report: {esc(report.experiment)}</h1>",
        f"<p>{esc(parent)}</p>",
        f"<p>{esc(best)}</p>",
    ]
    if report.repeated:
        setting_header, setting_rows = _setting_rows(report)
        titles = [s.describe() for s in report.settings()]
        out.append(f"<p>{esc(_tie_rule(report))}</p>")
        width = len(setting_header)
        out.extend(_html_table(setting_header, setting_rows, width - 3, titles, width - 1))
        out.append("<h2>Runs</h2>")
    out.extend(_html_table(header, rows, first_metric, [c.run_id for c in report.children], len(header)))
    scores = score_table(report)
    if scores is not None:
        out.append(f"<h2>{esc(SCORES_HEADING)}</h2>")
        out.extend(f"<p>{esc(note)}</p>" for note in notes(scores))
        out.extend(html_table(scores))
    for image in images:
        path = Path(image)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(path.stem)}">'
            f"<figcaption>{esc(path.name)}</figcaption></figure>"
        )
    out.extend(["</body>", "</html>"])
    return "\n".join(out) + "\n"


__all__ = ["BEST_MARK", "TIE_MARK", "format_value", "render_html", "render_markdown"]
