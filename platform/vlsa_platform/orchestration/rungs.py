"""ASHA's rungs in stage terms: the clock a trial's reports carry, and where its rungs fall (no Ray here).

A sweep's ``sweep.scheduler.rungs`` names the stage from which trials may be compared and what counts as a
tick of ASHA's clock there: each validation point, or each stage end (``at``) — or, when the sweep's metric
is a benchmark score (``eval/...``), each evaluation point (``evaluate.after``). The clock
(:data:`RUNG_CLOCK`, ASHA's ``time_attr``) is 0 before ``from_stage`` and counts those *rung points* from it
on, so no rung can fall before the stage; rank 0 of a trial writes it into every report from where it is
(:meth:`RungClock.reading`). ASHA puts its rungs at ``grace_period x reduction_factor^k`` ticks
(:func:`milestones`: Tune's own formula, pinned to Tune's by a test), ``max_t`` one tick before the trial's
last report; :func:`rung_schedule` turns them into ``(stage, step)`` for the plan, and :func:`decision_ticks`
tells the workers the only ticks at which ASHA decides (they wait for its decision there, nowhere else).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config.evaluate_section import EVAL_METRIC_PREFIX
from ..config.schema import ExperimentConfig

RUNG_CLOCK = "rung_clock"
"""The result key Tune's ASHA reads as its time (``time_attr``): rung points from ``rungs.from_stage`` on."""
EVALUATIONS = "evaluations"
"""``RungClock.at`` of a sweep whose metric is a benchmark score: the evaluation points are the rung points."""
UNKNOWN_MAX_T = 1000
"""ASHA's ``max_t`` when a stage's length is not known before it starts (``epochs`` over datasets of unknown
size): large enough never to cut a trial short."""


def milestones(grace_period: int, reduction_factor: float, max_t: int, bracket: int = 0) -> list[float]:
    """The rungs (in ticks, highest first) of ASHA's bracket ``bracket``, as Tune's ``_Bracket`` places them
    (``ray.tune.schedulers.async_hyperband``); none when ``max_t`` is below ``grace_period``."""
    if max_t < grace_period:
        return []
    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) - bracket + 1)
    return [grace_period * reduction_factor ** (k + bracket) for k in reversed(range(count))]


def decision_ticks(rungs: Sequence[float], last: int) -> list[int]:
    """The ticks (1..``last``) at which ASHA (``stop_last_trials=False``, as :func:`.decisions.scheduler` builds
    it) decides on a trial whose clock goes 1, 2, ... ``last``: at each tick, on the highest rung reached, unless
    that one is recorded already (Tune's ``_Bracket.on_result``)."""
    recorded: set[float] = set()
    out = []
    for tick in range(1, last + 1):
        reached = next((r for r in rungs if tick >= r), None)  # rungs run highest first
        if reached is not None and reached not in recorded:
            recorded.add(reached)
            out.append(tick)
    return out


@dataclass(frozen=True)
class RungClock:
    """How a trial's rank 0 reads the rung clock at a report, and at which ticks it waits for ASHA's decision.
    JSON-able (:meth:`to_dict` / :meth:`from_dict`): it travels to the workers in their loop config."""

    stages: tuple[str, ...]
    """The run's stages, in order."""
    from_stage: str
    at: str
    """``validations`` or ``stage_ends`` (``sweep.scheduler.rungs.at``), or :data:`EVALUATIONS`."""
    every: int | None
    """``data.validation.every_steps``."""
    waits: tuple[int, ...] = ()
    """The ticks at which ASHA decides (:func:`decision_ticks` over every bracket)."""
    evaluated: tuple[str, ...] = ()
    """``at == "evaluations"`` (an ``eval/`` metric): the stages after which the run is evaluated; each
    evaluation from ``from_stage`` on is one tick, read by the trial's driver (:meth:`evaluation_reading`)."""

    def ticks(self, stage_steps: int) -> int:
        """Rung points in a whole stage of ``stage_steps`` steps (one at or after ``from_stage``)."""
        if self.at == EVALUATIONS:
            return 0
        if self.at == "stage_ends" or not self.every:
            return 1
        return math.ceil(stage_steps / self.every)

    def evaluation_reading(self, stage: str) -> tuple[int, bool]:
        """``(clock, rung point?)`` at the evaluation after ``stage``: the evaluations from ``from_stage``
        through it (``at == "evaluations"``)."""
        start, index = self.stages.index(self.from_stage), self.stages.index(stage)
        if index < start or stage not in self.evaluated:
            return 0, False
        return sum(1 for s in self.stages[start : index + 1] if s in self.evaluated), True

    def reading(self, stage: str, step: int, last: bool, earlier: Sequence[int]) -> tuple[int, bool]:
        """``(clock, rung point?)`` at a report after ``step`` steps of ``stage`` (``last``: its final step),
        ``earlier`` the steps of each stage from ``from_stage`` up to ``stage`` (exclusive). A validation
        lands at every ``every``-th step and at the last, so ``ceil(step / every)`` of them have been by then."""
        index, start = self.stages.index(stage), self.stages.index(self.from_stage)
        if index < start or self.at == EVALUATIONS:  # evaluations: read by the driver, not at reports
            return 0, False
        before = sum(self.ticks(n) for n in earlier)
        if self.at == "stage_ends" or not self.every:
            return before + int(last), last
        return before + math.ceil(step / self.every), True

    def at_global_step(self, global_step: int, lengths: Mapping[str, int]) -> tuple[int, bool]:
        """:meth:`reading` at a validation after ``global_step`` steps of a run whose stages have ``lengths``
        steps (a step at a stage's end belongs to that stage): e.g. to read a recorded curve as ASHA would."""
        start = 0
        for index, stage in enumerate(self.stages):
            if global_step <= start + lengths[stage]:
                earlier = [lengths[s] for s in self.stages[self.stages.index(self.from_stage) : index]]
                return self.reading(
                    stage, global_step - start, global_step == start + lengths[stage], earlier
                )
            start += lengths[stage]
        raise ValueError(f"global step {global_step} is past the run's {start} steps")

    def waits_at(self, clock: int, point: bool) -> bool:
        """Whether ASHA decides on a validation report with this reading (the worker then waits for it)."""
        return point and clock in self.waits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RungClock:
        tuples = {key: tuple(data.get(key, ())) for key in ("stages", "waits", "evaluated")}
        return cls(**{**data, **tuples})


@dataclass(frozen=True)
class RungSchedule:
    """Where ASHA compares the trials of a sweep, from its file: the ticks and the ``(stage, step)`` of each."""

    clock: RungClock
    max_t: int
    """ASHA's ``max_t``: ``sweep.scheduler.max_t`` (at most one tick before the trial's last report), or one
    tick before it; :data:`UNKNOWN_MAX_T` when a stage's length is unknown."""
    points: list[tuple[str, int]] | None
    """Every rung point of a trial, ``(stage, step within the stage)`` (tick i is ``points[i - 1]``);
    ``None`` when a stage's length from ``from_stage`` on is not known before it runs."""

    def rungs(self) -> list[dict[str, Any]] | None:
        """The rungs as the plan shows them: ``{"stage", "step" (within the stage), "rung_point"}``; ``None``
        when unknown."""
        if self.points is None:
            return None
        return [
            {"stage": self.points[tick - 1][0], "step": self.points[tick - 1][1], "rung_point": tick}
            for tick in self.clock.waits
        ]


def _points(clock: RungClock, lengths: Mapping[str, int | None]) -> list[tuple[str, int]] | None:
    points: list[tuple[str, int]] = []
    for stage in clock.stages[clock.stages.index(clock.from_stage) :]:
        steps = lengths.get(stage)
        if steps is None:
            return None
        if clock.at == EVALUATIONS:
            if stage in clock.evaluated:
                points.append((stage, steps))
        elif clock.at == "validations" and clock.every:
            points.extend((stage, min(k * clock.every, steps)) for k in range(1, clock.ticks(steps) + 1))
        else:
            points.append((stage, steps))
    return points


def rung_schedule(config: ExperimentConfig, lengths: Mapping[str, int | None]) -> RungSchedule | None:
    """The rungs of an ASHA sweep (``None`` for FIFO or no sweep), ``lengths`` each stage's steps (``None``:
    unknown before it runs; ``plan.stage_steps``)."""
    if config.sweep is None or config.sweep.scheduler.kind != "asha":
        return None
    settings = config.sweep.scheduler
    assert settings.rungs.from_stage is not None  # the schema sets it
    every = config.data.validation.every_steps if config.data.validation is not None else None
    at, evaluated = settings.rungs.at, ()
    if config.sweep.metric.startswith(EVAL_METRIC_PREFIX) and config.evaluate is not None:
        at, evaluated = EVALUATIONS, tuple(config.evaluate.points(list(config.stages)))
    clock = RungClock(tuple(config.stages), settings.rungs.from_stage, at, every, (), evaluated)
    points = _points(clock, lengths)
    if points is None:
        max_t = settings.max_t or UNKNOWN_MAX_T
    else:
        # A rung at the trial's last report would stop a trial whose work is done: none reaches it.
        max_t = min(settings.max_t or len(points), len(points) - 1)
    last = len(points) if points is not None else max_t
    ticks: set[int] = set()
    for bracket in range(settings.brackets):
        rungs = milestones(settings.grace_period, settings.reduction_factor, max_t, bracket)
        ticks.update(decision_ticks(rungs, last))
    waiting = RungClock(clock.stages, clock.from_stage, clock.at, every, tuple(sorted(ticks)), evaluated)
    return RungSchedule(waiting, max_t, points)


__all__ = [
    "EVALUATIONS",
    "RUNG_CLOCK",
    "UNKNOWN_MAX_T",
    "RungClock",
    "RungSchedule",
    "decision_ticks",
    "milestones",
    "rung_schedule",
]
