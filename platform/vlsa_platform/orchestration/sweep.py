"""Ray Tune pieces of a submission: the search space, the search algorithm, and what each trial's parameters
mean (DESIGN.md §4-5); the trial scheduler (ASHA) is in :mod:`.decisions`.

Every submission is a Tune experiment whose trials are child runs:

- a **sweep** (``sweep:`` in the file): the search space's dotted keys, sampled as the file says
  (``grid`` -> ``tune.grid_search``, ``choice``, ``uniform``, ``loguniform``), by Tune's own variant generator
  (``algorithm: grid`` or ``random``, seeded with the experiment's ``seed``) or by Optuna's TPE
  (``algorithm: optuna``, ``ray.tune.search.optuna.OptunaSearch``);
- **seed repeats** (``sweep.seeds: N``): a further ``tune.grid_search`` over the trial parameter ``seed``
  (the experiment's ``seed``, ``seed + 1``, ...), crossed with the grid, which :func:`trial_run` applies to
  the trial's config (``grid`` only: Tune's variant generator would draw a new setting per seed);
- an **ablation**: one trial per variant (``tune.grid_search`` over the variant keys);
- a **single run**: one trial.

Trials report to Tune only at validation points (every ``data.validation.every_steps`` optimizer steps and at
the end of every stage) and each report carries the sweep's metric; ASHA's clock counts those points (or
stage ends) from ``sweep.scheduler.rungs.from_stage`` on (:mod:`.rungs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config.schema import Domain, ExperimentConfig
from ..config.sweep_section import SEED_KEY
from .plan import PlannedRun

VARIANT_KEY = "variant"
"""Trial parameter that names the ablation variant of a trial."""
SINGLE_RUN_NAME = "main"


def _domain(domain: Domain) -> Any:
    from ray import tune

    if domain.grid is not None:
        return tune.grid_search(list(domain.grid))
    if domain.choice is not None:
        return tune.choice(list(domain.choice))
    if domain.uniform is not None:
        return tune.uniform(*domain.uniform)
    assert domain.loguniform is not None
    return tune.loguniform(*domain.loguniform)


def param_space(config: ExperimentConfig) -> dict[str, Any]:
    """Tune's ``param_space``: the sweep's dotted keys (and the seeds of its repeats), the ablation's variants,
    or nothing for one run."""
    from ray import tune

    if config.sweep is not None:
        space = {key: _domain(domain) for key, domain in config.sweep.search_space.items()}
        if config.sweep.seeds > 1:
            space[SEED_KEY] = tune.grid_search(seeds(config))
        return space
    if config.ablation is not None:
        return {VARIANT_KEY: tune.grid_search(list(config.ablation.variants))}
    return {}


def seeds(config: ExperimentConfig) -> list[int]:
    """The seeds every setting of the sweep runs with: ``seed``, ``seed + 1``, ... (``sweep.seeds`` of them);
    ``[seed]`` without a sweep."""
    return config.sweep.seed_values(config.seed) if config.sweep is not None else [config.seed]


def num_samples(config: ExperimentConfig) -> int:
    """Tune's ``num_samples``: repeats of the grid for ``grid``, the number of draws otherwise, 1 otherwise."""
    return config.sweep.num_samples if config.sweep is not None else 1


def search_algorithm(config: ExperimentConfig, max_concurrent: int) -> Any:
    """The searcher, running at most ``max_concurrent`` trials at once: Optuna's TPE for ``optuna`` (behind a
    ``ConcurrencyLimiter``); Tune's variant generator (seeded) otherwise."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if config.sweep is not None and config.sweep.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=config.seed), max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=config.seed, max_concurrent=max_concurrent)


@dataclass(frozen=True)
class TrialRun:
    """What one trial trains: its run (name, variant, config) and the values that set it apart."""

    run: PlannedRun
    values: dict[str, Any]
    """The sampled values (sweep; with ``seed`` when it repeats seeds) or ``{"variant": key}`` (ablation); empty
    for a single run."""


def trial_run(config: ExperimentConfig, params: dict[str, Any], trial_id: str) -> TrialRun:
    """The run a trial with Tune parameters ``params`` trains.

    Sweep trials are named ``trial-<n>`` after the number Tune gives them (``<experiment tag>_00003`` ->
    ``trial-00003``); an ablation trial is named after its variant; a single run is ``main``.
    """
    if config.sweep is not None:
        values = {key: params[key] for key in config.sweep.search_space}
        if SEED_KEY in params and SEED_KEY not in values:  # a seed repeat
            values[SEED_KEY] = params[SEED_KEY]
        name = f"trial-{trial_id.rsplit('_', 1)[-1]}"
        return TrialRun(PlannedRun(name, None, name, config.trial(values, trial_id=name)), values)
    if config.ablation is not None:
        variant = params[VARIANT_KEY]
        label = config.ablation.variants[variant].label or variant
        return TrialRun(PlannedRun(variant, variant, label, config.variant(variant)), {VARIANT_KEY: variant})
    return TrialRun(PlannedRun(SINGLE_RUN_NAME, None, config.name, config), {})


def describe_values(values: dict[str, Any]) -> str:
    """``loss.rec_weight=0.3 data.cognition.p_vq=0.412`` (floats to 3 significant digits)."""

    def short(value: Any) -> str:
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:.3g}"
        return str(value)

    return " ".join(f"{key}={short(value)}" for key, value in values.items())


__all__ = [
    "SINGLE_RUN_NAME",
    "VARIANT_KEY",
    "TrialRun",
    "describe_values",
    "num_samples",
    "param_space",
    "search_algorithm",
    "seeds",
    "trial_run",
]
