"""``vlsa-platform report``: compare the child runs of an experiment, read back from MLflow.

One submission is one parent run; each ablation variant or sweep trial is one child run nested under it by
MLflow's ``mlflow.parentRunId`` tag (DESIGN.md §4). :func:`collect` reads them into a :class:`Report`: for each
child its name, status, ``vlsa.variant``/``vlsa.trial_id`` tag, the params that differ between children (the
flattened keys as logged, e.g. ``loss.rec_weight``), the value at the last step of every §4 metric and the
history of the validation metrics, the stage index and the report's metric; and which child is best by a metric
(``val/loss_llm``/``min`` unless told, or the parent run's ``sweep.metric``/``sweep.mode``) — or, when the
children repeat settings over seeds, each setting's mean ± spread and which setting is best; ties are marked as
ties, never starred (:mod:`.verdict`). :func:`render_markdown`, :func:`render_html`, :func:`plot` and
:func:`write_report` turn it into tables (each child's metric from its first to its last validation) and PNG
plots (validation curves per metric with the stages marked, the metric against each swept value);
``loss/total``, a weighted sum whose weights may be what is swept, is in neither (unless it is the metric).
When the children logged benchmark scores (``eval/<task>/<metric>``), a Table-3 table follows the runs: one
row per variant or trial, one column per benchmark grouped by ability, deltas against a baseline row.

- :mod:`.comparison`: the :class:`Report`, :class:`ChildRun`, :class:`Series` and :class:`Setting` dataclasses;
- :mod:`.verdict`: the best-or-tied rule (shared with a submission's terminal summary);
- :mod:`.queries`: :func:`collect`, the MLflow reads;
- :mod:`.render`: Markdown and HTML;
- :mod:`.benchmarks`: which ``eval/`` score is which column, under which ability (the paper's §4.3);
- :mod:`.score_table`: the Table-3 table (rows, cells, deltas against the baseline, its HTML);
- :mod:`.plots`: the PNG plots (matplotlib, imported on first use).

Only reads MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from .benchmarks import ABILITIES, BENCHMARKS, Benchmark
from .comparison import ChildRun, Report, ReportError, Series, Setting
from .plots import curve_plot_name, objective_plot_name, plot
from .queries import CURVE_KEYS, DEFAULT_METRIC, DEFAULT_MODE, HISTORY_KEYS, collect, first_values
from .render import SCORES_HEADING, render_html, render_markdown
from .score_table import MISSING, ScoreTable, score_table
from .verdict import (
    BEST_MARK,
    TIE_MARK,
    Score,
    Verdict,
    format_change,
    format_value,
    judge,
    verdict_line,
)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def write_report(report: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.md`` (linking the plots), ``report.html`` (plots embedded) and the PNGs of :func:`plot`
    into ``out_dir``; returns file name -> path, in that order."""
    out = Path(out_dir)
    pngs = plot(report, out)
    markdown = out / REPORT_MD
    markdown.write_text(render_markdown(report, images=[p.name for p in pngs]), encoding="utf-8")
    page = out / REPORT_HTML
    page.write_text(render_html(report, images=pngs), encoding="utf-8")
    return {REPORT_MD: markdown, REPORT_HTML: page, **{p.name: p for p in pngs}}


__all__ = [
    "ABILITIES",
    "BENCHMARKS",
    "BEST_MARK",
    "CURVE_KEYS",
    "DEFAULT_METRIC",
    "DEFAULT_MODE",
    "HISTORY_KEYS",
    "MISSING",
    "REPORT_HTML",
    "REPORT_MD",
    "SCORES_HEADING",
    "TIE_MARK",
    "Benchmark",
    "ChildRun",
    "Report",
    "ReportError",
    "Score",
    "ScoreTable",
    "Series",
    "Setting",
    "Verdict",
    "collect",
    "curve_plot_name",
    "first_values",
    "format_change",
    "format_value",
    "judge",
    "objective_plot_name",
    "plot",
    "render_html",
    "render_markdown",
    "score_table",
    "verdict_line",
    "write_report",
]
