"""The report's PNG plots: each validation metric (:data:`~.queries.CURVE_KEYS`) per child over the global step,
coloured by the swept value, stage boundaries dashed and labelled with the stage that starts there; and the
report's metric against each varied numeric param (with seed repeats: each setting's mean, its seeds' spread as
error bars). ``loss/total`` is never drawn: it is a weighted sum whose weight may be what is swept.

Drawn on matplotlib's Agg canvas through the object API (no pyplot, so no global backend switch and no display
needed); matplotlib is imported on first use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .. import names
from .comparison import ChildRun, Report, parse_number
from .queries import CURVE_KEYS
from .verdict import BEST_MARK, TIE_MARK

_MAX_ANNOTATED_POINTS = 12  # objective plots name their points up to this many


def _figure(width: float = 8.0, height: float = 4.8) -> Any:
    """A matplotlib figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def curve_plot_name(metric: str) -> str:
    """File name of the curves of ``metric``: ``curves_val_loss_llm.png``."""
    return f"curves_{names.path_part(metric.replace('/', '_'))}.png"


def _finite(child: ChildRun, key: str) -> tuple[list[int], list[float]]:
    """The finite points of ``key``'s history (a metric is NaN where it does not apply)."""
    series = child.history.get(key)
    if series is None:
        return [], []
    points = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if math.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def colour_key(report: Report) -> tuple[dict[str, Any], dict[str, str]]:
    """(run id -> colour, run id -> legend label). One varied numeric param but the seed: a colormap over
    its value (log-scaled when positive and spanning 10x or more), labelled ``param=value``; other settings:
    one categorical colour each, labelled by the setting; nothing varied: one colour per child, its name. The
    seed repeats of a setting share its colour and label."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    params = report.setting_params()
    numeric = [p for p in params if p in report.numeric_params()]
    colours: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if len(params) == 1 and numeric:
        param = numeric[0]
        values = {c.run_id: parse_number(c.params.get(param, "")) for c in report.children}
        present = [v for v in values.values() if v is not None]
        low, high = min(present), max(present)
        log = low > 0 and high / low >= 10
        norm = (LogNorm if log else Normalize)(vmin=low, vmax=high)
        cmap = colormaps["viridis"]
        for child in report.children:
            value = values[child.run_id]
            colours[child.run_id] = "0.5" if value is None else cmap(0.9 * norm(value))
            labels[child.run_id] = f"{param}={child.params.get(param, '-')}"
        return colours, labels
    cycle = colormaps["tab10"]
    if not params:
        for i, child in enumerate(report.children):
            colours[child.run_id], labels[child.run_id] = cycle(i % 10), child.name
        return colours, labels
    for i, setting in enumerate(report.settings()):
        for child in setting.children:
            colours[child.run_id], labels[child.run_id] = cycle(i % 10), setting.describe()
    return colours, labels


def _stage_lines(ax: Any, children: list[ChildRun], colours: dict[str, Any]) -> None:
    """Dashed vertical lines where a stage starts (:meth:`~.comparison.ChildRun.stage_starts`): grey and
    labelled ``stage N`` (the stage that starts there, 1-based) when every child starts its stages at the
    same steps, else in each child's colour."""
    starts = {c.run_id: c.stage_starts() for c in children if names.STAGE in c.history}
    shared = list(starts.values())
    if shared and all(s == shared[0] for s in shared):
        for x, number in shared[0]:
            ax.axvline(x, color="0.45", linestyle="--", linewidth=1)
            ax.annotate(
                f"stage {number}",
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize="small",
                color="0.3",
            )
        return
    for run_id, points in starts.items():
        for x, _ in points:
            ax.axvline(x, color=colours[run_id], linestyle="--", linewidth=1, alpha=0.6)


def curve_figure(report: Report, key: str) -> Any:
    """``key`` (a validation metric) over the global step, one line per child that has finite values of it,
    coloured by :func:`colour_key`, stage starts dashed (:func:`_stage_lines`), as a matplotlib figure; ``None``
    when no child has a finite value."""
    curves = [(c, *_finite(c, key)) for c in report.children]
    curves = [(c, steps, values) for c, steps, values in curves if steps]
    if not curves:
        return None
    colours, labels = colour_key(report)
    figure = _figure()
    ax = figure.add_subplot()
    shown: set[str] = set()
    for child, steps, values in curves:
        label = labels[child.run_id]
        ax.plot(
            steps,
            values,
            color=colours[child.run_id],
            label="_" if label in shown else label,  # seed repeats: one legend entry per setting
            linewidth=1.6,
            marker="o" if len(steps) <= 30 else None,
            markersize=3.5,
        )
        shown.add(label)
    _stage_lines(ax, [c for c, *_ in curves], colours)
    ax.set_xlabel("global step")
    ax.set_ylabel(key)
    ax.set_title(f"{report.experiment}: {key} per run (dashed: a stage starts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=max(1, math.ceil(len(shown) / 12)))
    return figure


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


def objective_plot_name(param: str) -> str:
    """File name of the objective plot for ``param``: ``objective_vs_loss.rec_weight.png``."""
    return f"objective_vs_{names.path_part(param)}.png"


def plot(report: Report, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the PNG plots into ``out_dir`` (created if missing) and return their paths: ``curves_<metric>.png``
    for each of :data:`~.queries.CURVE_KEYS` some child has finite values of, then ``objective_vs_<param>.png``
    for each varied numeric param but the seed (when some child has a value for the report's metric)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in CURVE_KEYS:
        figure = curve_figure(report, key)
        if figure is not None:
            figure.savefig(out / curve_plot_name(key), dpi=120)
            written.append(out / curve_plot_name(key))
    for param in report.numeric_params():
        if param not in report.setting_params():
            continue  # the seed: its repeats are the error bars
        path = out / objective_plot_name(param)
        if _objective_plot(report, param, path):
            written.append(path)
    return written


__all__ = ["colour_key", "curve_figure", "curve_plot_name", "objective_plot_name", "plot"]
