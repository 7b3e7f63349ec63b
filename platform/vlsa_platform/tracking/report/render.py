"""The report as text: a Markdown table (:func:`render_markdown`) and a self-contained HTML page
(:func:`render_html`), one row per child run, the best one marked ★."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .comparison import Report

BEST_MARK = "★"
_MAX_CELL = 60  # characters of a param value shown in a table cell


def format_value(value: float | None) -> str:
    """A metric value to 4 significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _rows(report: Report) -> tuple[list[str], list[tuple[bool, list[str]]]]:
    """Header and (is best, cells) per child; plain text, not escaped."""
    header = [BEST_MARK, "run"]
    label = report.label_header
    if label:
        header.append(label)
    header.append("status")
    header.extend(report.varied_params)
    metrics = report.metric_columns()
    header.extend(metrics)
    rows = []
    for child in report.children:
        best = child.run_id == report.best_run_id
        cells = [BEST_MARK if best else "", child.name]
        if label:
            cells.append(child.label or "-")
        cells.append(child.status)
        cells.extend(_short(child.params.get(key)) for key in report.varied_params)
        cells.extend(format_value(child.final.get(key)) for key in metrics)
        rows.append((best, cells))
    return header, rows


def _summary(report: Report) -> tuple[str, str]:
    """(parent line, best line) in plain text."""
    count = len(report.children)
    plural = "s" if count != 1 else ""
    parent = (
        f"Parent run {report.parent_name} ({report.parent_run_id}) with {count} child run{plural}; "
        f"tracking URI {report.tracking_uri}"
    )
    objective = f"{report.metric} ({report.mode}, {report.metric_source})"
    best = report.best
    if best is None:
        line = f"Best by {objective}: none (no child has a value)."
    else:
        line = f"Best by {objective}: {best.name} = {format_value(best.value(report.metric))}."
    return parent, line


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def render_markdown(report: Report, images: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The comparison as Markdown: a heading, the parent and best child, one table row per child (best row
    marked ★), then ``images`` as image links (paths as given, e.g. relative to the report file)."""
    header, rows = _rows(report)
    parent, best = _summary(report)
    first_metric = len(header) - len(report.metric_columns())
    align = [":-:" if i == 0 else ("---:" if i >= first_metric else "---") for i in range(len(header))]
    lines = [
        f"# Report: {_md(report.experiment)}",
        "",
        _md(parent),
        "",
        _md(best),
        "",
        "| " + " | ".join(_md(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines.extend("| " + " | ".join(_md(cell) for cell in cells) + " |" for _, cells in rows)
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
figure { margin: 1.5em 0; }
img { max-width: 100%; }
"""


def render_html(report: Report, images: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The comparison as one self-contained HTML page (every text escaped; ``images``, PNG files, embedded
    as data URIs so the page needs nothing beside it)."""
    header, rows = _rows(report)
    parent, best = _summary(report)
    first_metric = len(header) - len(report.metric_columns())
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
        "<table>",
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for child, (is_best, cells) in zip(report.children, rows, strict=True):
        tds = "".join(
            f'<td class="num">{esc(cell)}</td>' if i >= first_metric else f"<td>{esc(cell)}</td>"
            for i, cell in enumerate(cells)
        )
        css = ' class="best"' if is_best else ""
        out.append(f'<tr{css} title="{esc(child.run_id)}">{tds}</tr>')
    out.extend(["</tbody>", "</table>"])
    for image in images:
        path = Path(image)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(path.stem)}">'
            f"<figcaption>{esc(path.name)}</figcaption></figure>"
        )
    out.extend(["</body>", "</html>"])
    return "\n".join(out) + "\n"


__all__ = ["BEST_MARK", "format_value", "render_html", "render_markdown"]
