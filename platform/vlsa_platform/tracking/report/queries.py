"""The report's MLflow queries: the child runs of one parent run, read into a :class:`~.comparison.Report`.

:func:`collect` finds the experiment and the parent run (the most recent one with children unless named),
reads each child's tags, params, final metric values and the history of the :data:`HISTORY_KEYS` (and of the
report's metric), and stars the best child (unless another ties with it, :mod:`.verdict`) by a metric (the
caller's, else the parent run's ``sweep.metric``/``sweep.mode``, else ``val/loss_llm``/``min``); every
``eval/`` benchmark score at its last step, and an ablation's variants in its file's order (the parent's
``config/resolved.yaml``), for the Table-3 table.
:func:`first_values` gives a submission's summary each trial's first value of its metric. Only reads MLflow,
through :func:`~vlsa_platform.tracking.client.mlflow_client`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import names
from ..client import download_artifact, mlflow_client, tracking_uri
from ..store import TrackingStore
from .benchmarks import EVAL_PREFIX
from .comparison import MODES, ChildRun, Mode, Report, ReportError, Series
from .score_table import find_row

DEFAULT_METRIC = names.VAL_LOSS_LLM
"""The metric the best child is chosen by when neither the caller nor the parent run names one."""
DEFAULT_MODE: Mode = "min"
SWEEP_METRIC_PARAM = "sweep.metric"
"""Parent-run param (the flattened ``sweep.metric`` of the experiment file) that names the sweep's metric."""
SWEEP_MODE_PARAM = "sweep.mode"
CURVE_KEYS: tuple[str, ...] = (
    names.VAL_LOSS_LLM,
    names.VAL_LOSS_REC,
    names.VAL_EXACT_MATCH,
    names.VAL_VQ_ACCURACY,
    names.VAL_PX_ACCURACY,
    names.VAL_PSNR,
)
"""The validation metrics drawn as curves over the global step (one plot each that some child has values
for); unlike ``loss/total`` they mean the same in every run whatever its loss weights."""
HISTORY_KEYS: tuple[str, ...] = (*CURVE_KEYS, names.STAGE)
"""Metrics whose full history is read (the curves, the stage boundaries; the report's metric is read too,
for its first validation); every other metric only at its last step."""
_PAGE_SIZE = 1000  # MLflow's largest search_runs page


def collect(
    experiment: str,
    store: TrackingStore | str | None,
    parent_run_id: str | None = None,
    *,
    metric: str | None = None,
    mode: Mode | None = None,
    baseline: str | None = None,
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
        baseline: the row the Table-3 table's deltas are taken against (:func:`~.score_table.find_row`);
            default an ablation's first variant, else the first child.

    Raises:
        ReportError: unknown experiment (the message lists the known ones), unknown parent run, no child
            runs, a ``baseline`` that names no child, a local store file that does not exist, or MLflow
            failing to answer.
    """
    if mode is not None and mode not in MODES:
        raise ReportError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    uri = tracking_uri(store)
    _require_sqlite_file(uri)
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow_client(store)
        where = uri or _default_uri()
        report = _collect(client, where, experiment, parent_run_id, metric, mode)
    except MlflowException as err:
        raise ReportError(f"MLflow at {uri or _default_uri()}: {_first_line(err)}") from err
    if baseline is not None:
        report = dataclasses.replace(report, baseline=baseline)
        find_row(report, baseline)  # raises for a name no child answers to
    return report


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
    history = HISTORY_KEYS if chosen_metric in HISTORY_KEYS else (*HISTORY_KEYS, chosen_metric)
    children = tuple(
        dataclasses.replace(
            child,
            estimated_gpu_hours=names.estimated_gpu_hours(
                parent.data.params, child.label if child.label_tag == names.TAG_VARIANT else None
            ),
        )
        for child in (_child(client, run, keys, history) for run in runs)
    )

    all_keys = sorted({key for child in children for key in child.params})
    varied = _distinct_columns(
        tuple(key for key in all_keys if len({c.params.get(key) for c in children}) > 1), children
    )

    report = Report(
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
        best_run_id=None,
        variants=_variants(client, parent_id)
        if any(c.label_tag == names.TAG_VARIANT for c in children)
        else (),
    )
    return dataclasses.replace(report, best_run_id=report.starred_run_id())


def _variants(client: Any, parent_id: str) -> tuple[tuple[str, str], ...]:
    """``(key, label)`` of the ablation's variants in the experiment file's order, from the parent run's
    ``config/resolved.yaml`` (params lose the order); ``()`` when it is missing or holds no ablation: the
    Table-3 table then keeps the start order and takes its first row as the baseline."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="vlsa-report-") as tmp, _no_progress_bar():
        try:
            path = download_artifact(client, parent_id, names.ARTIFACT_RESOLVED_CONFIG, tmp)
            resolved = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, yaml.YAMLError):
            return ()
    ablation = resolved.get("ablation") if isinstance(resolved, dict) else None
    variants = ablation.get("variants") if isinstance(ablation, dict) else None
    if not isinstance(variants, dict):
        return ()
    return tuple(
        (str(key), str(spec.get("label") or key) if isinstance(spec, dict) else str(key))
        for key, spec in variants.items()
    )


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow's download progress bar off (it would print to stderr, around the report's own output)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as BAR

    old = os.environ.get(BAR.name)
    os.environ[BAR.name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(BAR.name, None)
        else:
            os.environ[BAR.name] = old


def _distinct_columns(keys: tuple[str, ...], children: tuple[ChildRun, ...]) -> tuple[str, ...]:
    """``keys`` less those whose value in every child repeats an earlier key's (a top-level ``loss.rec_weight``
    is also logged as each stage's resolved ``stages.<stage>.loss.rec_weight``: one column, one plot)."""
    kept: list[str] = []
    seen: set[tuple[str | None, ...]] = set()
    for key in keys:
        values = tuple(c.params.get(key) for c in children)
        if values not in seen:
            seen.add(values)
            kept.append(key)
    return tuple(kept)


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


def _child(client: Any, run: Any, keys: Sequence[str], history_keys: Sequence[str]) -> ChildRun:
    """A :class:`ChildRun` from a searched run. MLflow keeps each metric's latest value as the one at the
    highest step (then latest timestamp), which is what "final" means here; histories need one request each."""
    tags = run.data.tags
    label_tag = next((t for t in (names.TAG_VARIANT, names.TAG_TRIAL_ID) if tags.get(t)), None)
    metrics = run.data.metrics
    evals = {key: float(value) for key, value in metrics.items() if key.startswith(EVAL_PREFIX)}
    history = {}
    for key in history_keys:
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
        evals=evals,
    )


def _series(metrics: Sequence[Any]) -> Series:
    """A metric history as one value per step (the last logged for a step wins), steps increasing."""
    by_step: dict[int, float] = {}
    for m in sorted(metrics, key=lambda m: (m.step, m.timestamp)):
        by_step[int(m.step)] = float(m.value)
    steps = tuple(sorted(by_step))
    return Series(steps=steps, values=tuple(by_step[s] for s in steps))


def first_values(store: TrackingStore | str | None, parent_run_id: str, metric: str) -> dict[str, float]:
    """Trial id (the ``vlsa.trial_id`` tag) -> the first finite value of ``metric`` in the history of each
    child run of ``parent_run_id`` (a ``val/`` metric's first validation): what a submission's summary shows
    a trial's change from. MLflow's errors are raised, and :class:`ReportError` for a missing local store."""
    _require_sqlite_file(tracking_uri(store))
    client = mlflow_client(store)
    parent = client.get_run(parent_run_id)
    query = f"tags.`{names.TAG_PARENT_RUN}` = '{_quote(parent_run_id)}'"
    out = {}
    for run in _search(client, parent.info.experiment_id, query):
        trial_id = run.data.tags.get(names.TAG_TRIAL_ID)
        if trial_id is None or metric not in run.data.metrics:
            continue
        values = _series(client.get_metric_history(run.info.run_id, metric)).values
        first = next((v for v in values if math.isfinite(v)), None)
        if first is not None:
            out[trial_id] = first
    return out


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


__all__ = [
    "CURVE_KEYS",
    "DEFAULT_METRIC",
    "DEFAULT_MODE",
    "HISTORY_KEYS",
    "SWEEP_METRIC_PARAM",
    "SWEEP_MODE_PARAM",
    "collect",
    "first_values",
]
