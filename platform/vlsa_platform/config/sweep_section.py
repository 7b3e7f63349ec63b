"""The ``sweep`` and ``ablation`` sections: a Ray Tune search over dotted config keys (domains, algorithm,
metric, trial scheduler) and the Table 3 ablation variants.

That a search-space key names a real field and changes a run is checked by ``ExperimentConfig``
(:mod:`.schema`), which holds the rest of the file.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, field_validator, model_validator

from .errors import FieldIssue
from .evaluate_section import eval_metric_task
from .vocabulary import METRICS, Count, Name, Section, Steps, VisionMode, Workers

SEED_KEY = "seed"
"""The config field (and flattened MLflow param) a sweep's seed repeats set, and the Tune trial parameter that
carries a trial's seed."""


class Domain(Section):
    """Values a sweep key takes: exactly one of ``grid``, ``choice``, ``uniform``, ``loguniform``."""

    grid: list[Any] | None = Field(default=None, min_length=1)
    """Every value, each combined with every other grid key's values (Ray Tune ``grid_search``)."""
    choice: list[Any] | None = Field(default=None, min_length=1)
    """One value drawn at random per trial."""
    uniform: tuple[float, float] | None = None
    """``[low, high]``: a float drawn uniformly."""
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    """``[low, high]``: a float drawn uniformly in log space (both positive)."""

    @model_validator(mode="after")
    def _one(self) -> Domain:
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given or 'none'})")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise FieldIssue((self.kind,), f"low {bounds[0]} must be below high {bounds[1]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None)

    def indexed_values(self) -> list[tuple[tuple[str, int], Any]]:
        """Every value written, with where it sits in the domain: ``(("grid", 2), 1.0)``; a range's bounds."""
        kind = self.kind
        return [((kind, i), value) for i, value in enumerate(getattr(self, kind))]

    def probe_values(self) -> list[Any]:
        """Up to two distinct values from the domain, used to check that the key is real and has an effect."""
        if self.grid is not None or self.choice is not None:
            values: list[Any] = []
            for v in self.grid if self.grid is not None else self.choice:  # type: ignore[union-attr]
                if v not in values:
                    values.append(v)
            return values[:2]
        low, high = self.uniform or self.loguniform  # type: ignore[misc]
        return [low, high]

    def describe(self) -> dict[str, Any]:
        """JSON-able ``{kind: values}``."""
        return {self.kind: list(getattr(self, self.kind))}


RungPoints = Literal["validations", "stage_ends"]


class RungsConfig(Section):
    """Where ASHA may compare trials, in stage terms: its clock counts *rung points* — validation points, or
    stage ends — from ``from_stage`` on (0 before it), so no rung can fall before that stage. ``validate``
    prints the rungs as ``(stage, step)`` and refuses a ``from_stage`` where a swept setting has not yet
    acted."""

    from_stage: Name | None = None
    """The first stage whose rung points count. It must not come before the first stage in which every
    search-space key has acted (the trials' inputs to it differ), nor — for ``val/loss_llm`` unless
    ``allow_frozen_llm`` — before a stage that does not train the LLM. ``null`` = the earliest such stage."""
    at: RungPoints = "validations"
    """``validations``: every validation point (each ``data.validation.every_steps`` steps and each stage's
    end) from ``from_stage`` on is one tick of the clock; ``stage_ends``: only the ends of ``from_stage`` and
    of the stages after it are. With an ``eval/`` metric neither: the evaluation points (``evaluate.after``)
    from ``from_stage`` on are."""
    allow_frozen_llm: bool = False
    """Let rungs fall in stages that train no LLM (``trainable`` without ``llm`` or ``all``) although the
    metric is ``val/loss_llm``, on purpose (by default such a rung is refused: there the LLM loss moves only through
    the visual tokens, and early leaders need not lead once the LLM trains)."""


class SchedulerConfig(Section):
    """Trial scheduler. ASHA's time unit is one rung point of :class:`RungsConfig` (its ``rungs``)."""

    kind: Literal["fifo", "asha"] = "fifo"
    """``fifo``: run every trial to the end; ``asha``: stop the worse trials early (Ray Tune ASHA)."""
    rungs: RungsConfig = Field(default_factory=RungsConfig)
    """ASHA: where it may compare trials (the stage its clock starts in, and what counts as a tick)."""
    grace_period: Steps = 1
    """ASHA: rung points (counted from ``rungs.from_stage``) a trial passes before it may be stopped: the
    first rung; the k-th is at ``grace_period x reduction_factor^k`` of them."""
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0
    """ASHA: 1 / fraction of trials promoted at each rung."""
    max_t: Steps | None = None
    """ASHA: where its rungs end, in rung points (none past it); ``null`` = one less than a trial passes
    (derived from the stages' lengths: a rung at the trial's last report would stop a trial whose work is
    done)."""
    brackets: Count = 1
    """ASHA: number of brackets."""


class SweepConfig(Section):
    """A Ray Tune search over dotted config keys; each trial is one child run through all stages."""

    search_space: dict[str, Domain] = Field(min_length=1)
    """Dotted key of the resolved config (e.g. ``loss.rec_weight``, ``stages.stage2.loss.schedule.kind``) -> domain."""
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    """``grid``: every combination (all domains must be ``grid``); ``random``: ``num_samples`` random draws;
    ``optuna``: ``num_samples`` trials proposed by Optuna's TPE (no ``grid`` domains)."""
    num_samples: Count = 1
    """``grid``: repeats of each grid point; otherwise the number of trials."""
    seeds: Count = 1
    """Seeds each setting runs with: the experiment's ``seed``, ``seed + 1``, ..., ``seed + seeds - 1`` (each
    a trial; ``grid`` only when above 1). The report shows each setting's mean and spread over its seeds."""
    metric: str = "val/loss_llm"
    """Metric key the search and the scheduler compare: one the trainer reports, or a benchmark score
    ``eval/<task>/<metric>`` of a task in ``evaluate.tasks`` (then ASHA's rung points are the evaluation
    points, ``evaluate.after``)."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher ``metric`` is better."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """Early stopping of trials."""
    max_concurrent_trials: Workers | None = None
    """Trials running at once; ``null`` = as many as the cluster fits."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS and eval_metric_task(value) is None:
            raise ValueError(
                f"unknown metric {value!r}; the trainer reports {', '.join(METRICS)}, and benchmark scores are "
                "eval/<task>/<metric>"
            )
        return value

    @model_validator(mode="after")
    def _domains(self) -> SweepConfig:
        for key, domain in self.search_space.items():
            if self.algorithm == "grid" and domain.kind != "grid":
                raise FieldIssue(
                    ("search_space", key),
                    f"algorithm: grid enumerates values; use grid: [...] here, or algorithm: random for {domain.kind}",
                )
            if self.algorithm != "grid" and domain.kind == "grid":
                raise FieldIssue(
                    ("search_space", key),
                    f"algorithm: {self.algorithm} draws values; use choice: [...] instead of grid",
                )
        if self.seeds > 1 and SEED_KEY in self.search_space:
            raise FieldIssue(
                ("seeds",),
                f"seeds: {self.seeds} sets {SEED_KEY}; do not also search {SEED_KEY} in search_space",
            )
        if self.seeds > 1 and self.algorithm != "grid":
            # Tune's Repeater (the searcher wrapper that repeats a drawn setting) keeps its groups outside the
            # experiment's checkpoint: a resumed sweep could not finish them. Refused rather than half-done.
            raise FieldIssue(
                ("seeds",),
                f"seeds above 1 need algorithm: grid (algorithm: {self.algorithm} would draw a new setting per "
                "seed); list the values to repeat as grid: [...]",
            )
        return self

    def seed_values(self, base: int) -> list[int]:
        """The seeds each setting runs with, from the experiment's seed ``base``: ``base``, ``base + 1``, ...
        (``seeds`` of them) — the one place that rule is written."""
        return [base + i for i in range(self.seeds)]

    @property
    def num_trials(self) -> int:
        """Trials the sweep runs: the grid's size x ``num_samples`` x ``seeds`` for ``grid``, else
        ``num_samples`` x ``seeds``."""
        if self.algorithm == "grid":
            grid = math.prod(len(d.grid or ()) for d in self.search_space.values())
            return grid * self.num_samples * self.seeds
        return self.num_samples * self.seeds


class VariantConfig(Section):
    """One ablation variant: overrides of the model's switches (``null`` = as ``model`` says), the stages it
    trains, and dotted overrides of its own (e.g. its stage-1 data)."""

    label: str | None = None
    """Display name, e.g. ``(1) anyres`` for Table 3's rows; ``null`` = the variant's key."""
    vision: VisionMode | None = None
    """Overrides ``model.vision``."""
    recon: bool | None = None
    """Overrides ``model.recon``."""
    cognition: bool | None = None
    """Overrides ``model.cognition``."""
    stages: list[Name] | None = None
    """The stages this variant trains: some of the file's ``stages``, in the file's order (e.g. ``[stage1,
    stage3]``: LLaVA-NeXT's 558K pre-training then its 790K fine-tune); ``null`` = all of them."""
    set: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys of the config set for this variant only, as ``--set`` sets them, after its stages are chosen
    (e.g. ``{stages.stage1.mixture: captions_and_llavar}``): a key must name a field of one of its stages or
    of the rest of the file; the switches above are set by ``vision``, ``recon`` and ``cognition``."""

    @model_validator(mode="after")
    def _check(self) -> VariantConfig:
        if self.stages is not None:
            if not self.stages:
                raise FieldIssue(("stages",), "leaves no stage to train (null = all the file's stages)")
            repeated = [name for i, name in enumerate(self.stages) if name in self.stages[:i]]
            if repeated:
                raise FieldIssue(("stages",), f"names {repeated[0]!r} twice")
        for key in self.set:
            head = key.split(".")[0]
            if head in ("ablation", "sweep"):
                raise FieldIssue(("set", key), f"a variant cannot set {head}: it is one run of the ablation")
            if key in ("model.vision", "model.recon", "model.cognition"):
                field = key.split(".")[1]
                raise FieldIssue(("set", key), f"set it with the variant's own {field} field")
        return self

    def switches(self) -> dict[str, Any]:
        """The overridden switches only."""
        return {k: getattr(self, k) for k in ("vision", "recon", "cognition") if getattr(self, k) is not None}


class AblationConfig(Section):
    """One child run per variant (Table 3's rows), each through its own stages (``stages``, default all)."""

    variants: dict[Name, VariantConfig] = Field(min_length=1)
    """Variant key -> switches, stages and overrides."""


__all__ = [
    "SEED_KEY",
    "AblationConfig",
    "Domain",
    "RungPoints",
    "RungsConfig",
    "SchedulerConfig",
    "SweepConfig",
    "VariantConfig",
]
