"""What a report holds: an experiment's child runs as read from MLflow, and which one is best.

:class:`Report` (the children of one parent run, compared), :class:`ChildRun` (one variant or trial: status,
label, params, final metric values, loss histories), :class:`Series` (one metric's history) and
:class:`Setting` (the children that share every varied param but the seed: one setting's seed repeats). Plain
frozen dataclasses: :mod:`.queries` fills them, :mod:`.render` and :mod:`.plots` draw them; which child or
setting is best, or which tie, is :mod:`.verdict`'s rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...config.sweep_section import SEED_KEY
from .. import names
from .verdict import MODES, Mode, Score, Verdict, judge, score


def parse_number(text: str) -> float | None:
    """``text`` as a finite float (param values are JSON: ``0.5``, ``1e-05``), else ``None``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


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
    """Full history of the :data:`~.queries.HISTORY_KEYS` (and of the report's metric) the run logged."""
    estimated_gpu_hours: float | None = None
    """The plan's estimate of the run's device-hours, from its parent run's params
    (``names.estimated_gpu_hours``), to set beside the measured ``cost/gpu_hours``; ``None`` without one."""
    evals: Mapping[str, float] = field(default_factory=dict)
    """Value at the last logged step of every benchmark score the run logged, ``eval/<task>/<metric>``
    (lmms-eval's; :mod:`.benchmarks`), for the Table-3 table (:mod:`.score_table`)."""

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

    def stage_starts(self) -> list[tuple[float, int]]:
        """``(x, number)`` for each stage after the first: ``number`` is the 1-based position of the stage that
        starts there (the ``stage`` metric is its 0-based index) and ``x`` is half a step after the last step
        the stage before it logged (a stage's last step is always logged, so the new stage's first step is the
        next one), where a plot draws the boundary."""
        series = self.history.get(names.STAGE)
        if series is None:
            return []
        points = zip(series.steps, series.values, strict=True)
        return [
            (before_step + 0.5, int(value) + 1)
            for (before_step, before), (_, value) in itertools.pairwise(points)
            if value != before
        ]

    def first_value(self, key: str) -> float | None:
        """The first finite value in the history of ``key`` (the first validation of a ``val/`` metric);
        ``None`` without a history or a finite value."""
        series = self.history.get(key)
        if series is None:
            return None
        return next((v for v in series.values if math.isfinite(v)), None)


@dataclass(frozen=True)
class Setting:
    """The children that share the value of every varied param other than the seed."""

    params: tuple[tuple[str, str | None], ...]
    """(param, value) for each of :meth:`Report.setting_params`; ``None`` where a child lacks the param."""
    children: tuple[ChildRun, ...]
    score: Score | None
    """The metric's final values of the children that have one; ``None`` when none has."""

    def describe(self) -> str:
        """``loss.rec_weight=0.3 model.vision=anyres``; ``(every run)`` when nothing but the seed varies."""
        return " ".join(f"{key}={value if value is not None else '-'}" for key, value in self.params) or (
            "(every run)"
        )


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
    """The starred child: the best by :attr:`metric`/:attr:`mode` when no other child ties with it and the
    report does not group seed repeats (:attr:`repeated`; the star then goes to a setting); else ``None``."""
    variants: tuple[tuple[str, str], ...] = ()
    """``(variant key, label)`` of an ablation's variants in the experiment file's order (the parent run's
    ``config/resolved.yaml``; the label is the variant's ``label``, else its key); empty for a sweep or when the
    parent has no readable config. Orders the Table-3 table's rows and picks its baseline (:mod:`.score_table`)."""
    baseline: str | None = None
    """The row the Table-3 table's deltas are taken against, as the caller named it (``report --baseline``):
    a variant key or label, a trial id, a run name or id; ``None``: the table's default (:mod:`.score_table`)."""

    @property
    def best(self) -> ChildRun | None:
        """The starred child (see :attr:`best_run_id`)."""
        return next((c for c in self.children if c.run_id == self.best_run_id), None)

    def setting_params(self) -> tuple[str, ...]:
        """The varied params that make a setting: all but the seed."""
        return tuple(key for key in self.varied_params if key != SEED_KEY)

    def settings(self) -> tuple[Setting, ...]:
        """The children grouped by setting, in the order of each setting's first child."""
        keys = self.setting_params()
        groups: dict[tuple[str | None, ...], list[ChildRun]] = {}
        for child in self.children:
            groups.setdefault(tuple(child.params.get(k) for k in keys), []).append(child)
        return tuple(
            Setting(
                tuple(zip(keys, values, strict=True)),
                tuple(group),
                score([c.value(self.metric) for c in group]),
            )
            for values, group in groups.items()
        )

    @property
    def repeated(self) -> bool:
        """Whether some setting has values of the metric from two or more seeds (``sweep.seeds``): the report
        then compares settings by mean and spread. Runs of one setting with one seed (a grid's ``num_samples``,
        a random search drawing a setting twice) are not seed repeats: they are compared run by run."""
        return any(
            len({c.params.get(SEED_KEY) for c in s.children if c.value(self.metric) is not None}) >= 2
            for s in self.settings()
        )

    def verdict(self) -> Verdict:
        """Best and ties (:func:`~.verdict.judge`) over :meth:`settings` when :attr:`repeated`, else over the
        children."""
        return judge(self.scores(), self.mode)

    def scores(self) -> list[Score | None]:
        """What :meth:`verdict` compares: each setting's score when :attr:`repeated`, else each child's."""
        if self.repeated:
            return [s.score for s in self.settings()]
        return [score([c.value(self.metric)]) for c in self.children]

    def starred_run_id(self) -> str | None:
        """What :attr:`best_run_id` holds, derived from the children."""
        starred = self.verdict().starred
        return None if starred is None or self.repeated else self.children[starred].run_id

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
            numbers = [parse_number(c.params[key]) for c in self.children if key in c.params]
            if numbers and all(n is not None for n in numbers) and len(set(numbers)) > 1:
                out.append(key)
        return tuple(out)

    def metric_columns(self) -> tuple[str, ...]:
        """Metrics shown in the table: the report's metric first, then every ``names.METRICS`` key some child
        has a value for, in DESIGN §4's order, but ``loss/total`` (unless it is the report's metric): it is
        each run's weighted sum ``w_llm * loss/llm + w_rec * loss/rec``, which differs with the weights by
        construction, so it does not compare runs; ``loss/llm`` and ``loss/rec`` do."""
        logged = [
            key
            for key in names.METRICS
            if key not in (self.metric, names.LOSS_TOTAL)
            and any(c.final.get(key) is not None for c in self.children)
        ]
        return (self.metric, *logged)


__all__ = ["MODES", "ChildRun", "Mode", "Report", "ReportError", "Series", "Setting", "parse_number"]
