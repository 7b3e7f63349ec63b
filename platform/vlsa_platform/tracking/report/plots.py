"""The report's PNG plots: ``loss/total`` per child over the global step (stage changes dashed) and the
report's metric against each varied numeric param (with seed repeats: each setting's mean, its seeds' spread as
error bars).

Drawn on matplotlib's Agg canvas through the object API (no pyplot, so no global backend switch and no display
needed); matplotlib is imported on first use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .. import names
from .comparison import Report, parse_number
from .verdict import BEST_MARK, TIE_MARK

LOSS_CURVES_PNG = "loss_curves.png"
_MAX_ANNOTATED_POINTS = 12  # objective plots name their points up to this many


def _figure(width: float = 8.0, height: float = 4.8) -> Any:
    """A matplotlib figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _loss_curves(report: Report, path: Path) -> bool:
    """``loss/total`` over the global step, one line per child; dashed vertical lines where ``stage``
    changes (grey and labelled when every child changes stage at the same steps, else in the child's colour).
    ``False`` (nothing written) when no child logged ``loss/total``."""
    curves = [(c, c.history[names.LOSS_TOTAL]) for c in report.children if names.LOSS_TOTAL in c.history]
    if not curves:
        return False
    figure = _figure()
    ax = figure.add_subplot()
    colours = {}
    starred = _starred_runs(report)
    for child, series in curves:
        best = child.run_id in starred
        (line,) = ax.plot(
            series.steps,
            series.values,
            label=f"{child.name} (best)" if best else child.name,
            linewidth=2.4 if best else 1.3,
            marker="o" if len(series.steps) <= 30 else None,
            markersize=3,
        )
        colours[child.run_id] = line.get_color()
    changes = {c.run_id: c.stage_changes() for c, _ in curves if names.STAGE in c.history}
    shared = list(changes.values())
    if shared and all(c == shared[0] for c in shared):
        for step, stage in shared[0]:
            ax.axvline(step, color="0.45", linestyle="--", linewidth=1)
            ax.annotate(
                f"stage {stage:g}",
                xy=(step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize="small",
                color="0.3",
            )
    else:
        for run_id, steps in changes.items():
            for step, _ in steps:
                ax.axvline(step, color=colours[run_id], linestyle="--", linewidth=1, alpha=0.6)
    ax.set_xlabel("global step")
    ax.set_ylabel(names.LOSS_TOTAL)
    ax.set_title(f"{report.experiment}: {names.LOSS_TOTAL} per child run (dashed: stage changes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=max(1, math.ceil(len(curves) / 12)))
    figure.savefig(path, dpi=120)
    return True


def _objective_plot(report: Report, param: str, path: Path) -> bool:
    """The final value of the report's metric against ``param``: one point per child that has both, or with
    seed repeats (:attr:`~.comparison.Report.repeated`) each setting's mean with its sample standard deviation
    as error bars over its seeds' values; the best as a star, tied ones ringed; log x-axis when every value is
    positive and they span at least 10x. ``False`` when nothing has a value."""
    points = _objective_points(report, param)
    if not points:
        return False
    xs = [x for x, *_ in points]
    ys = [y for _, y, *_ in points]
    figure = _figure(6.4, 4.8)
    ax = figure.add_subplot()
    if len(report.setting_params()) == 1 and len(set(xs)) == len(xs):  # one knob: a curve reads naturally
        ordered = sorted(zip(xs, ys, strict=True))
        ax.plot([x for x, _ in ordered], [y for _, y in ordered], color="0.6", linewidth=1, zorder=1)
    if report.repeated:
        seeds = [(x, v) for x, _, _, _, _, values in points for v in values]
        ax.scatter([x for x, _ in seeds], [v for _, v in seeds], s=10, color="0.55", zorder=2, label="seeds")
        spreads = [spread or 0.0 for _, _, spread, *_ in points]
        ax.errorbar(xs, ys, yerr=spreads, fmt="o", capsize=4, zorder=3, label="mean ± sd over seeds")
    else:
        ax.scatter(xs, ys, zorder=2, label="child runs")
    tie_label = "tied with the best"
    for x, y, _, name, mark, _ in points:
        if mark == BEST_MARK:
            ax.scatter([x], [y], marker="*", s=260, color="gold", edgecolor="black", zorder=4, label="best")
        elif mark == TIE_MARK:
            ax.scatter([x], [y], s=160, facecolor="none", edgecolor="tab:red", zorder=4, label=tie_label)
            tie_label = "_"  # one legend entry
        if len(points) <= _MAX_ANNOTATED_POINTS:
            ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize="x-small")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(f"{report.metric} (final{', mean over seeds' if report.repeated else ''})")
    ax.set_title(f"{report.metric} ({report.mode}) vs {param}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    return True


def _objective_points(
    report: Report, param: str
) -> list[tuple[float, float, float | None, str, str, tuple[float, ...]]]:
    """(x, y, spread, name, mark, values) to plot: per setting (mean, sample standard deviation, the seeds'
    values) with seed repeats, else per child (its value, no spread)."""
    verdict = report.verdict()
    if report.repeated:
        return [
            (
                x,
                setting.score.mean,
                setting.score.spread,
                setting.describe(),
                verdict.mark(i),
                setting.score.values,
            )
            for i, setting in enumerate(report.settings())
            if setting.score is not None
            and (x := parse_number(dict(setting.params).get(param) or "")) is not None
        ]
    return [
        (x, y, None, child.name, verdict.mark(i), (y,))
        for i, child in enumerate(report.children)
        if param in child.params
        and (x := parse_number(child.params[param])) is not None
        and (y := child.value(report.metric)) is not None
    ]


def _starred_runs(report: Report) -> set[str]:
    """The starred child, or with seed repeats every child of the starred setting; empty on a tie."""
    if not report.repeated:
        return {report.best_run_id} if report.best_run_id else set()
    starred = report.verdict().starred
    return set() if starred is None else {c.run_id for c in report.settings()[starred].children}


def objective_plot_name(param: str) -> str:
    """File name of the objective plot for ``param``: ``objective_vs_loss.rec_weight.png``."""
    return f"objective_vs_{names.path_part(param)}.png"


def plot(report: Report, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the PNG plots into ``out_dir`` (created if missing) and return their paths:
    ``loss_curves.png`` (when some child logged ``loss/total``) and ``objective_vs_<param>.png`` for each
    varied numeric param but the seed (when some child has a value for the report's metric)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if _loss_curves(report, out / LOSS_CURVES_PNG):
        written.append(out / LOSS_CURVES_PNG)
    for param in report.numeric_params():
        if param not in report.setting_params():
            continue  # the seed: its repeats are the error bars
        path = out / objective_plot_name(param)
        if _objective_plot(report, param, path):
            written.append(path)
    return written


__all__ = ["LOSS_CURVES_PNG", "objective_plot_name", "plot"]
