"""The ``sweep`` and ``ablation`` sections: a Ray Tune search over dotted config keys (domains, algorithm,
metric, trial scheduler) and the Table 3 ablation variants.

That a search-space key names a real field and changes a run is checked by ``ExperimentConfig``
(:mod:`.schema`), which holds the rest of the file.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from .errors import FieldIssue
from .vocabulary import METRICS, Name, Section, VisionMode


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


class SchedulerConfig(Section):
    """Trial scheduler. Its time unit is one report of the trial (``training_iteration``)."""

    kind: Literal["fifo", "asha"] = "fifo"
    """``fifo``: run every trial to the end; ``asha``: stop the worse trials early (Ray Tune ASHA)."""
    grace_period: PositiveInt = 1
    """ASHA: reports a trial makes before it may be stopped."""
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0
    """ASHA: 1 / fraction of trials promoted at each rung."""
    max_t: PositiveInt | None = None
    """ASHA: where its rungs end (none at or past it); ``null`` = one report less than a trial makes (derived
    from the stages' lengths: a rung at the last report would stop a trial whose work is done)."""
    brackets: PositiveInt = 1
    """ASHA: number of brackets."""


class SweepConfig(Section):
    """A Ray Tune search over dotted config keys; each trial is one child run through all stages."""

    search_space: dict[str, Domain] = Field(min_length=1)
    """Dotted key of the resolved config (e.g. ``loss.rec_weight``, ``stages.stage2.loss.schedule.kind``) -> domain."""
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    """``grid``: every combination (all domains must be ``grid``); ``random``: ``num_samples`` random draws;
    ``optuna``: ``num_samples`` trials proposed by Optuna's TPE (no ``grid`` domains)."""
    num_samples: PositiveInt = 1
    """``grid``: repeats of each grid point; otherwise the number of trials."""
    metric: str = "val/loss_llm"
    """Metric key the search and the scheduler compare."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher ``metric`` is better."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """Early stopping of trials."""
    max_concurrent_trials: PositiveInt | None = None
    """Trials running at once; ``null`` = as many as the cluster fits."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; the trainer reports {', '.join(METRICS)}")
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
        return self

    @property
    def num_trials(self) -> int:
        """Trials the sweep runs: the grid's size x ``num_samples`` for ``grid``, else ``num_samples``."""
        if self.algorithm == "grid":
            return math.prod(len(d.grid or ()) for d in self.search_space.values()) * self.num_samples
        return self.num_samples


class VariantConfig(Section):
    """One ablation variant: overrides of the model's switches (``null`` = as ``model`` says)."""

    label: str | None = None
    """Display name, e.g. ``(1) anyres`` for Table 3's rows; ``null`` = the variant's key."""
    vision: VisionMode | None = None
    """Overrides ``model.vision``."""
    recon: bool | None = None
    """Overrides ``model.recon``."""
    cognition: bool | None = None
    """Overrides ``model.cognition``."""

    def switches(self) -> dict[str, Any]:
        """The overridden switches only."""
        return {k: getattr(self, k) for k in ("vision", "recon", "cognition") if getattr(self, k) is not None}


class AblationConfig(Section):
    """One child run per variant, all with the same stages and data."""

    variants: dict[Name, VariantConfig] = Field(min_length=1)
    """Variant key -> switches."""


__all__ = [
    "AblationConfig",
    "Domain",
    "SchedulerConfig",
    "SweepConfig",
    "VariantConfig",
]
