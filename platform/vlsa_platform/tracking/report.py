"""``vlsa-platform report``: compare the child runs of an experiment, read back from MLflow.

One submission is one parent run; each ablation variant or sweep trial is one child run nested under it by
MLflow's ``mlflow.parentRunId`` tag (DESIGN.md §4). :func:`collect` reads them into a :class:`Report`: for each
child its name, status, ``vlsa.variant``/``vlsa.trial_id`` tag, the params that differ between children (the
flattened keys as logged, e.g. ``loss.rec_weight``), the value at the last step of every §4 metric and the
history of the loss curves; and which child is best by a metric (``val/loss_llm``/``min`` unless told, or the
parent run's ``sweep.metric``/``sweep.mode``). :func:`render_markdown`, :func:`render_html`, :func:`plot` and
:func:`write_report` turn it into a table and PNG plots.

Only reads MLflow. Plots are drawn on matplotlib's Agg canvas through the object API (no pyplot, so no global
backend switch and no display needed).
"""

from __future__ import annotations

import base64
import html
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import names
from .store import TrackingStore
from .tracker import _client  # the tracker's client: bounded HTTP retries and timeout

Mode = Literal["min", "max"]
MODES: tuple[Mode, ...] = ("min", "max")

DEFAULT_METRIC = names.VAL_LOSS_LLM
"""The metric the best child is chosen by when neither the caller nor the parent run names one."""
DEFAULT_MODE: Mode = "min"
SWEEP_METRIC_PARAM = "sweep.metric"
"""Parent-run param (the flattened ``sweep.metric`` of the experiment file) that names the sweep's metric."""
SWEEP_MODE_PARAM = "sweep.mode"
HISTORY_KEYS: tuple[str, ...] = (
    names.LOSS_TOTAL,
    names.LOSS_LLM,
    names.LOSS_REC,
    names.VAL_LOSS_LLM,
    names.STAGE,
)
"""Metrics whose full history is read (for the plots); every other metric only at its last step."""

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOSS_CURVES_PNG = "loss_curves.png"
BEST_MARK = "★"
_PAGE_SIZE = 1000  # MLflow's largest search_runs page
_MAX_CELL = 60  # characters of a param value shown in a table cell
_MAX_ANNOTATED_POINTS = 12  # objective plots name their points up to this many


class ReportError(RuntimeError):
    """The report cannot be made (unknown experiment or run, no child runs, unreadable store); one line."""


@dataclass(frozen=True)
class Series:
    """One metric's history: one value per global step (the last one logged for a step), steps increasing."""

    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class ChildRun:
    """One variant or trial of the experiment, as MLflow holds it."""

    run_id: str
    name: str
    status: str
    """MLflow run status: ``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``, ``SCHEDULED``."""
    label: str | None
    """The ``vlsa.variant`` tag, else the ``vlsa.trial_id`` tag, else ``None``."""
    label_tag: str | None
    """Which of the two tags :attr:`label` came from."""
    start_time: int | None
    """Milliseconds since the epoch."""
    params: Mapping[str, str]
    """Every param of the run (the flattened resolved config)."""
    final: Mapping[str, float | None]
    """Value at the last logged step of each metric in ``names.METRICS`` (plus the report's metric);
    ``None`` when the run never logged it."""
    history: Mapping[str, Series]
    """Full history of the :data:`HISTORY_KEYS` the run logged."""

    def value(self, key: str) -> float | None:
        """The final value of ``key`` when it is a finite number, else ``None``."""
        value = self.final.get(key)
        return value if value is not None and math.isfinite(value) else None

    def stage_changes(self) -> list[tuple[int, float]]:
        """``(step, new stage)`` for every step at which the ``stage`` metric takes a new value (the first
        step logged with that value)."""
        series = self.history.get(names.STAGE)
        if series is None:
            return []
        points = zip(series.steps, series.values, strict=True)
        return [(step, value) for (_, before), (step, value) in itertools.pairwise(points) if value != before]


@dataclass(frozen=True)
class Report:
    """The children of one parent run, compared."""

    experiment: str
    experiment_id: str
    tracking_uri: str
    parent_run_id: str
    parent_name: str
    metric: str
    """Metric the best child is chosen by (its value at the last step)."""
    mode: Mode
    metric_source: str
    """Where :attr:`metric`/:attr:`mode` came from: ``option``, ``parent run`` or ``default``."""
    children: tuple[ChildRun, ...]
    """In start order (then by name)."""
    varied_params: tuple[str, ...]
    """Params whose values differ across the children (absent in some counts as different), sorted."""
    best_run_id: str | None
    """The best child by :attr:`metric`/:attr:`mode`; ``None`` when no child has a finite value."""

    @property
    def best(self) -> ChildRun | None:
        """The best child (see :attr:`best_run_id`)."""
        return next((c for c in self.children if c.run_id == self.best_run_id), None)

    @property
    def label_header(self) -> str | None:
        """Column title for the children's labels: ``variant``, ``trial``, both, or ``None`` without labels."""
        tags = {c.label_tag for c in self.children if c.label_tag is not None}
        if not tags:
            return None
        if tags == {names.TAG_VARIANT}:
            return "variant"
        if tags == {names.TAG_TRIAL_ID}:
            return "trial"
        return "variant/trial"

    def numeric_params(self) -> tuple[str, ...]:
        """Varied params whose value is a finite number in every child that has them, with at least two
        distinct values (the ones an objective can be plotted against)."""
        out = []
        for key in self.varied_params:
            numbers = [_number(c.params[key]) for c in self.children if key in c.params]
            if numbers and all(n is not None for n in numbers) and len(set(numbers)) > 1:
                out.append(key)
        return tuple(out)

    def metric_columns(self) -> tuple[str, ...]:
        """Metrics shown in the table: the report's metric first, then every ``names.METRICS`` key some child
        has a value for, in DESIGN §4's order."""
        logged = [
            key
            for key in names.METRICS
            if key != self.metric and any(c.final.get(key) is not None for c in self.children)
        ]
        return (self.metric, *logged)


# ------------------------------------------------------------------------------------------------ collect


def collect(
    experiment: str,
    store: TrackingStore | str | None,
    parent_run_id: str | None = None,
    *,
    metric: str | None = None,
    mode: Mode | None = None,
) -> Report:
    """Read the child runs of one parent run of ``experiment`` from MLflow.

    Args:
        experiment: the experiment's name (the experiment file's ``name``).
        store: a resolved :class:`TrackingStore`, a tracking URI, or ``None`` for MLflow's own resolution.
        parent_run_id: the parent run; default the most recent run without a parent that has child runs.
        metric: metric to pick the best child by; default the parent run's ``sweep.metric`` param, else
            ``val/loss_llm``.
        mode: ``min`` or ``max``; default the parent's ``sweep.mode`` when the metric is the parent's
            ``sweep.metric``, else ``min``.

    Raises:
        ReportError: unknown experiment (the message lists the known ones), unknown parent run, no child
            runs, a local store file that does not exist, or MLflow failing to answer.
    """
    if mode is not None and mode not in MODES:
        raise ReportError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    uri = store.uri if isinstance(store, TrackingStore) else store
    _require_sqlite_file(uri)
    from mlflow.exceptions import MlflowException

    try:
        client = _client(store)
        where = uri or _default_uri()
        return _collect(client, where, experiment, parent_run_id, metric, mode)
    except MlflowException as err:
        raise ReportError(f"MLflow at {uri or _default_uri()}: {_first_line(err)}") from err


def _collect(
    client: Any,
    uri: str,
    experiment: str,
    parent_run_id: str | None,
    metric: str | None,
    mode: Mode | None,
) -> Report:
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments())
        raise ReportError(
            f"no experiment {experiment!r} in {uri}; known experiments: {', '.join(known) or '(none)'}"
        )
    experiment_id = found.experiment_id
    if parent_run_id:
        parent = _get_run(client, parent_run_id, uri)
        if parent.info.experiment_id != experiment_id:
            raise ReportError(f"run {parent_run_id} is not in experiment {experiment!r}")
    else:
        parent = _latest_parent(client, experiment, experiment_id)
    parent_id = parent.info.run_id
    runs = list(_search(client, experiment_id, f"tags.`{names.TAG_PARENT_RUN}` = '{_quote(parent_id)}'"))
    if not runs:
        raise ReportError(f"run {parent_id} of experiment {experiment!r} has no child runs")
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_name or ""))

    chosen_metric, chosen_mode, source = _objective(parent.data.params, metric, mode)
    keys = names.METRICS if chosen_metric in names.METRICS else (*names.METRICS, chosen_metric)
    children = tuple(_child(client, run, keys) for run in runs)

    all_keys = sorted({key for child in children for key in child.params})
    varied = tuple(key for key in all_keys if len({c.params.get(key) for c in children}) > 1)

    scored = [(v, c.run_id) for c in children if (v := c.value(chosen_metric)) is not None]
    best_id = None
    if scored:
        pick = min if chosen_mode == "min" else max
        best_id = pick(scored, key=lambda pair: pair[0])[1]  # ties: the earliest child

    return Report(
        experiment=experiment,
        experiment_id=experiment_id,
        tracking_uri=uri,
        parent_run_id=parent_id,
        parent_name=parent.info.run_name or parent_id,
        metric=chosen_metric,
        mode=chosen_mode,
        metric_source=source,
        children=children,
        varied_params=varied,
        best_run_id=best_id,
    )


def _objective(
    parent_params: Mapping[str, str], metric: str | None, mode: Mode | None
) -> tuple[str, Mode, str]:
    """(metric, mode, source): the caller's choice > the parent's ``sweep.metric``/``sweep.mode`` > default.
    The parent's mode is only taken for the parent's own metric (it says nothing about another one)."""
    parent_metric = parent_params.get(SWEEP_METRIC_PARAM)
    parent_mode = parent_params.get(SWEEP_MODE_PARAM)
    if parent_metric in {None, "", "null"}:
        parent_metric = None
    chosen = metric or parent_metric or DEFAULT_METRIC
    if mode is not None:
        chosen_mode: Mode = mode
    elif parent_metric is not None and chosen == parent_metric and parent_mode in MODES:
        chosen_mode = "max" if parent_mode == "max" else "min"
    else:
        chosen_mode = DEFAULT_MODE
    if metric is not None or mode is not None:
        source = "option"
    elif parent_metric is not None:
        source = "parent run"
    else:
        source = "default"
    return chosen, chosen_mode, source


def _child(client: Any, run: Any, keys: Sequence[str]) -> ChildRun:
    """A :class:`ChildRun` from a searched run. MLflow keeps each metric's latest value as the one at the
    highest step (then latest timestamp), which is what "final" means here; histories need one request each."""
    tags = run.data.tags
    label_tag = next((t for t in (names.TAG_VARIANT, names.TAG_TRIAL_ID) if tags.get(t)), None)
    metrics = run.data.metrics
    history = {}
    for key in HISTORY_KEYS:
        if key in metrics:
            history[key] = _series(client.get_metric_history(run.info.run_id, key))
    return ChildRun(
        run_id=run.info.run_id,
        name=run.info.run_name or tags.get(names.TAG_RUN_NAME) or run.info.run_id,
        status=run.info.status,
        label=tags.get(label_tag) if label_tag else None,
        label_tag=label_tag,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        final={key: (float(metrics[key]) if key in metrics else None) for key in keys},
        history=history,
    )


def _series(metrics: Sequence[Any]) -> Series:
    """A metric history as one value per step (the last logged for a step wins), steps increasing."""
    by_step: dict[int, float] = {}
    for m in sorted(metrics, key=lambda m: (m.step, m.timestamp)):
        by_step[int(m.step)] = float(m.value)
    steps = tuple(sorted(by_step))
    return Series(steps=steps, values=tuple(by_step[s] for s in steps))


def _search(
    client: Any, experiment_id: str, filter_string: str, order_by: list[str] | None = None
) -> Iterator[Any]:
    """Every active run of the experiment matching ``filter_string``, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=_PAGE_SIZE,
            order_by=order_by,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _latest_parent(client: Any, experiment: str, experiment_id: str) -> Any:
    """The most recent run without a parent tag that some run names as its parent."""
    runs = list(_search(client, experiment_id, "", ["attributes.start_time DESC"]))
    parents = {r.data.tags.get(names.TAG_PARENT_RUN) for r in runs} - {None}
    for run in runs:
        if names.TAG_PARENT_RUN not in run.data.tags and run.info.run_id in parents:
            return run
    raise ReportError(
        f"experiment {experiment!r} has no parent run with child runs ({len(runs)} run(s) in it)"
    )


def _get_run(client: Any, run_id: str, uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise ReportError(f"no run {run_id} in {uri}") from err
        raise


def _require_sqlite_file(uri: str | None) -> None:
    """A ``sqlite:///`` store must exist already: MLflow would silently create an empty one."""
    if uri and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path} (nothing tracked there yet)")


def _default_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _number(text: str) -> float | None:
    """``text`` as a finite float (param values are JSON: ``0.5``, ``1e-05``), else ``None``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------- render


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


# --------------------------------------------------------------------------------------------------- plot


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
    for child, series in curves:
        best = child.run_id == report.best_run_id
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
    """The final value of the report's metric against ``param``, one point per child that has both (best
    as a star); log x-axis when every value is positive and they span at least 10x. ``False`` when no child
    has a value."""
    points = [
        (x, y, child)
        for child in report.children
        if param in child.params
        and (x := _number(child.params[param])) is not None
        and (y := child.value(report.metric)) is not None
    ]
    if not points:
        return False
    xs = [x for x, _, _ in points]
    ys = [y for _, y, _ in points]
    figure = _figure(6.4, 4.8)
    ax = figure.add_subplot()
    if len(report.varied_params) == 1 and len(set(xs)) == len(xs):  # one knob: a curve reads naturally
        ordered = sorted(zip(xs, ys, strict=True))
        ax.plot([x for x, _ in ordered], [y for _, y in ordered], color="0.6", linewidth=1, zorder=1)
    ax.scatter(xs, ys, zorder=2, label="child runs")
    for x, y, child in points:
        if child.run_id == report.best_run_id:
            ax.scatter([x], [y], marker="*", s=260, color="gold", edgecolor="black", zorder=3, label="best")
        if len(points) <= _MAX_ANNOTATED_POINTS:
            ax.annotate(child.name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize="x-small")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(f"{report.metric} (final)")
    ax.set_title(f"{report.metric} ({report.mode}) vs {param}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    return True


def objective_plot_name(param: str) -> str:
    """File name of the objective plot for ``param``: ``objective_vs_loss.rec_weight.png``."""
    return f"objective_vs_{names.path_part(param)}.png"


def plot(report: Report, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the PNG plots into ``out_dir`` (created if missing) and return their paths:
    ``loss_curves.png`` (when some child logged ``loss/total``) and ``objective_vs_<param>.png`` for each
    varied numeric param (when some child has a value for the report's metric)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if _loss_curves(report, out / LOSS_CURVES_PNG):
        written.append(out / LOSS_CURVES_PNG)
    for param in report.numeric_params():
        path = out / objective_plot_name(param)
        if _objective_plot(report, param, path):
            written.append(path)
    return written


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
    "DEFAULT_METRIC",
    "DEFAULT_MODE",
    "HISTORY_KEYS",
    "LOSS_CURVES_PNG",
    "REPORT_HTML",
    "REPORT_MD",
    "ChildRun",
    "Report",
    "ReportError",
    "Series",
    "collect",
    "format_value",
    "objective_plot_name",
    "plot",
    "render_html",
    "render_markdown",
    "write_report",
]
