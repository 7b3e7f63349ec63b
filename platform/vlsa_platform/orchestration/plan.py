"""The plan of an experiment: which runs, which stages, what trains, how big, where (DESIGN.md §4).

``build_plan(config)`` is what ``vlsa-platform validate`` prints and what ``submit --dry-run`` will print; the
orchestration uses :func:`expand_runs` to start the same runs. Planning needs no Ray, no data and no weights:
parameter counts come from the model built on PyTorch's ``meta`` device from the bundled preset configs.

The JSON shape (fixed keys; extra keys may be added, never renamed)::

    {"experiment", "kind", "scale",
     "runs": [{"name", "variant", "visual_tokens_per_image",
               "stages": [{"name", "trainable", "params_total", "params_trainable",
                           "loss": {"llm_weight", "rec_weight"},
                           "placement": {"accelerator_type", "num_workers", "zero_stage",
                                         "micro_batch", "grad_accum", "global_batch"}}]}],
     "search_space", "num_trials"}

Extra keys: ``seeds`` (the seeds each setting runs with: ``sweep.seeds`` of them from ``seed``); ``rungs``
(an ASHA sweep's rungs, ``[{"stage", "step" (within the stage), "rung_point"}]``, in the order a trial meets
them, ``null`` when a stage's length is unknown; ``[]`` without ASHA) and ``asha`` (its clock: ``from_stage``,
``at``, ``grace_period``, ``reduction_factor``, ``brackets``, ``max_t``, ``rung_points`` a trial passes, and a
``note`` in words; ``null`` without ASHA); ``prefixes`` (shared stage prefixes, :mod:`.prefixes`: per stage
``{"runs", "trained"}``, the runs that reach it and how many of them train it, the others adopting it from a
run with the same prefix; ``null`` when ``storage.share_prefixes`` is off or the trials are drawn at run
time); per run
``label``, ``model`` (the switches), ``param_counts`` by part; per stage ``steps``
(estimated from ``epochs`` when every dataset's ``num_samples`` is known, else null), ``epochs``,
``lr`` by trainable part, ``mixture``, ``warnings`` (e.g. settings the memory estimate says do not fit); in
``loss`` the in-stage ``schedule``; in ``placement`` ``use_gpu``, ``offload``, ``derived`` (the fields the file
left open), ``memory_gib_per_gpu`` with its ``memory_breakdown_gib``, ``host_gib_per_gpu`` (offloaded
states), ``accelerator_memory_gib``, ``fits`` and ``hourly_usd`` (all workers); ``checkpoint`` (where a stage saves
every ``checkpoint_every`` steps and its wall time is estimated: the bytes each node writes, the save's seconds
at a stated disk bandwidth and the stall as a share of training time, ``cluster.checkpoint_cost``);
``estimate`` (:mod:`.estimate`)
per stage (FLOPs per sample and by part, LLM tokens, samples, devices, MFU, GPU-hours, wall hours, price),
per run (its stages added up) and for the submission (``full``, ``with_prefixes``, ``asha_floor``).

Placement fields the file leaves null are derived from the accelerator class of the stage
(:mod:`vlsa_platform.cluster`): ZeRO stage and offload from the memory the stage needs, micro-batch from
memory, accumulation from the global batch. ``global_batch`` and ``num_workers`` are never changed, and
``steps`` depends only on the global batch, so a stage follows the same schedule on every class.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cluster import (
    AcceleratorTable,
    ModelDims,
    ResolvedPlacement,
    accelerator_for,
    derive_placement,
    stage_needs,
)
from ..cluster.checkpoint_cost import stage_checkpoint_stall
from ..config.errors import ConfigError
from ..config.schema import ExperimentConfig, StageConfig, sampled_size
from ..config.sweep_section import SEED_KEY
from .estimate import run_estimate, stage_estimate, submission_estimate
from .prefixes import prefix_digests, shareable_stages
from .rungs import EVALUATIONS, RungSchedule, rung_schedule


@dataclass(frozen=True)
class PlannedRun:
    """One child run of a submission: an ablation variant, the sweep's trial template, or the single run."""

    name: str
    """Run name (the variant key; ``trial`` for a sweep; ``main`` for a single run)."""
    variant: str | None
    """Ablation variant key (the MLflow tag ``vlsa.variant``); ``None`` unless an ablation."""
    label: str
    """Display name, e.g. ``(1) anyres``."""
    config: ExperimentConfig
    """The run's config: for a variant, its switches applied, only its stages kept, its ``set`` keys applied and
    ``ablation`` removed (``ExperimentConfig.variant``)."""


def expand_runs(config: ExperimentConfig) -> list[PlannedRun]:
    """The runs a submission of ``config`` starts (a sweep's trials are all shaped like its one template)."""
    if config.ablation is not None:
        return [
            PlannedRun(name, name, variant.label or name, config.variant(name))
            for name, variant in config.ablation.variants.items()
        ]
    if config.sweep is not None:
        return [PlannedRun("trial", None, "trial", config)]
    return [PlannedRun("main", None, config.name, config)]


ModelNumbers = tuple[dict[str, tuple[int, int]], int, ModelDims]
"""``(parameter counts by part, visual tokens per image, dimensions)`` of a model."""

_MODEL_NUMBERS: dict[str, ModelNumbers] = {}


def _model_key(config: ExperimentConfig) -> str:
    """What the model side of the plan depends on: the ``model`` section and the VQ answer format (special
    tokens grow the vocabulary)."""
    return json.dumps(
        {"model": config.model.model_dump(mode="json"), "vq_format": config.data.cognition.vq_format},
        sort_keys=True,
    )


def model_numbers(config: ExperimentConfig) -> ModelNumbers:
    """``(parameter counts by part, visual tokens per image, dimensions)`` from the model side (counts from the
    meta device; remembered per model section, so a process plans the same model once)."""
    key = _model_key(config)
    if key in _MODEL_NUMBERS:
        return _MODEL_NUMBERS[key]
    from ..model.accounting import parameter_counts, visual_tokens_per_image
    from ..train.build import lora_settings_for, vlsa_config_for

    try:
        # Counts do not depend on the kernel; the driver need not have the workers' flash-attn.
        vlsa = vlsa_config_for(config, attn_implementation="sdpa")
        lora = lora_settings_for(config)
        numbers = (
            parameter_counts(vlsa, lora),
            visual_tokens_per_image(vlsa),
            ModelDims.from_vlsa_config(vlsa),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    _MODEL_NUMBERS[key] = numbers
    return numbers


def remember_model_numbers(config: ExperimentConfig, numbers: ModelNumbers) -> None:
    """Give this process the model numbers of ``config`` computed elsewhere (a sweep's driver hands them to
    its trials, which then plan without importing the model stack)."""
    _MODEL_NUMBERS[_model_key(config)] = numbers


def check_plan(config: ExperimentConfig) -> tuple[list[str], dict[str, ModelNumbers]]:
    """Build the plan of ``config`` and return ``(problems, model numbers)``: the model side's problems (empty
    when the plan builds) and the numbers it computed, as :func:`remember_planned` takes them back.

    For running the check in another process (picklable in and out): a local submission runs it in a child
    while Ray and the MLflow server start, so that importing the model stack (seconds; a first run also
    compiles it) neither waits for them nor shares the driver's interpreter with them.
    """
    try:
        build_plan(config)
    except ConfigError as err:
        return err.problems, {}
    return [], dict(_MODEL_NUMBERS)


def remember_planned(numbers: dict[str, ModelNumbers]) -> None:
    """Take the model numbers :func:`check_plan` computed in another process: this one then plans the same
    models without importing the model stack."""
    _MODEL_NUMBERS.update(numbers)


def stage_steps(config: ExperimentConfig, stage: StageConfig) -> int | None:
    """Optimizer steps of a stage: as written, or ``epochs`` x mixture size / global batch when sizes are known."""
    if stage.steps is not None:
        return stage.steps
    examples = 0.0
    for entry in stage.mixture:
        available = config.data.datasets[entry.dataset].num_samples
        if available is None:
            return None
        examples += entry.weight * sampled_size(entry.sampling, available)
    assert stage.epochs is not None
    return max(1, math.ceil(stage.epochs * examples / stage.placement.global_batch))


def _stage_placement(
    config: ExperimentConfig,
    name: str,
    counts: dict[str, tuple[int, int]],
    visual_tokens: int,
    dims: ModelDims,
    table: AcceleratorTable,
) -> ResolvedPlacement:
    """Stage ``name``'s placement with the open fields derived from its accelerator class and memory needs."""
    stage, model = config.stages[name], config.model
    loss = config.stage_loss(name)
    where = f"stages.{name}.placement"
    needs = stage_needs(
        dims,
        counts,
        [part for part in stage.trainable if part in counts],
        # worst case: every sample as long as truncation allows (visual tokens included)
        sequence_length=max(config.data.max_length, visual_tokens + 1),
        checkpointing=model.gradient_checkpointing,
        eager_attention=model.attn_implementation == "eager",
        llm_weight=loss.llm_weight,
        rec_weight=loss.rec_weight,
    )
    return derive_placement(
        stage.placement, accelerator_for(stage.placement, table, where), needs, where=where
    )


def stage_placements(run: PlannedRun) -> dict[str, ResolvedPlacement]:
    """Each stage's resolved placement (what :func:`plan_run` shows as ``placement``): derived once per run
    and handed on as it is — to :func:`plan_run`, to Ray's ``ScalingConfig``
    (``ResolvedPlacement.scaling_config_kwargs``) and, in each stage's spec, to the workers."""
    counts, visual_tokens, dims = model_numbers(run.config)
    table = AcceleratorTable.from_config(run.config.cluster)
    return {
        name: _stage_placement(run.config, name, counts, visual_tokens, dims, table)
        for name in run.config.stages
    }


def plan_run(run: PlannedRun, placements: Mapping[str, ResolvedPlacement] | None = None) -> dict[str, Any]:
    """One entry of the plan's ``runs``; ``placements`` are the run's :func:`stage_placements` when the caller
    has them already (derived here otherwise)."""
    config = run.config
    model = config.model
    numbers = model_numbers(config)
    counts, visual_tokens, _ = numbers
    if placements is None:
        placements = stage_placements(run)
    params_total = sum(total for total, _ in counts.values())
    stages = []
    for name, stage in config.stages.items():
        trainable = [part for part in stage.trainable if part in counts]
        loss = config.stage_loss(name)
        placement = placements[name]
        steps = stage_steps(config, stage)
        stages.append(
            {
                "name": name,
                "trainable": trainable,
                "params_total": params_total,
                "params_trainable": sum(counts[part][1] for part in trainable),
                "loss": {
                    "llm_weight": loss.llm_weight,
                    "rec_weight": loss.rec_weight,
                    "schedule": loss.schedule.model_dump(mode="json"),
                },
                "placement": placement.as_plan(),
                "steps": steps,
                "epochs": stage.epochs,
                "lr": {part: stage.lr.for_part(part) for part in trainable},
                "mixture": [entry.model_dump(mode="json") for entry in stage.mixture],
                "warnings": list(placement.warnings),
                "estimate": stage_estimate(config, name, numbers, placement, steps),
            }
        )
        if stage.checkpoint_every and (stall := stage_checkpoint_stall(stages[-1], stage.checkpoint_every)):
            stages[-1]["checkpoint"] = stall.as_plan()
    return {
        "name": run.name,
        "variant": run.variant,
        "label": run.label,
        "model": {
            "preset": model.preset,
            "vision": model.vision,
            "recon": model.recon,
            "cognition": model.cognition,
            "lora": model.lora.enabled,
        },
        "visual_tokens_per_image": visual_tokens,
        "param_counts": {
            part: {"params": total, "trainable": trained} for part, (total, trained) in counts.items()
        },
        "stages": stages,
        "estimate": run_estimate(stages),
        "evaluation": _evaluation_in_plan(config),
    }


def _evaluation_in_plan(config: ExperimentConfig) -> dict[str, Any] | None:
    """A run's evaluation step (``evaluate``): after which stages, which tasks, on which class (an unknown one
    is a ``ConfigError`` naming ``evaluate.accelerator_type``)."""
    evaluate = config.evaluate
    if evaluate is None:
        return None
    on = "a GPU" if evaluate.gpu() else "a CPU"
    if evaluate.accelerator_type is not None:
        table = AcceleratorTable.from_config(config.cluster)
        on = table.lookup(evaluate.accelerator_type, "evaluate.accelerator_type").name
    return {
        "after": evaluate.points(list(config.stages)),
        "tasks": list(evaluate.tasks),
        "limit": evaluate.limit,
        "on": on,
    }


def estimated_run_hours(config: ExperimentConfig) -> dict[str, float | None]:
    """Run name -> the plan's estimated GPU-hours of that run (:func:`expand_runs`' runs: a sweep's template
    stands for every trial); ``None`` where the plan cannot price it (CPU workers, unknown steps)."""
    return {run.name: plan_run(run)["estimate"]["gpu_hours"] for run in expand_runs(config)}


def build_plan(config: ExperimentConfig) -> dict[str, Any]:
    """The plan as a JSON-able dict (DESIGN.md §4). Raises ``ConfigError`` if the model side rejects a variant."""
    runs = expand_runs(config)
    if config.sweep is not None:
        search_space = {key: domain.describe() for key, domain in config.sweep.search_space.items()}
        num_trials = config.sweep.num_trials  # seed repeats included
        seeds = config.sweep.seed_values(config.seed)
    else:
        search_space = None
        num_trials = len(runs)
        seeds = [config.seed]
    plan = {
        "experiment": config.name,
        "kind": config.kind,
        "scale": config.model.preset,
        "runs": [plan_run(run) for run in runs],
        "search_space": search_space,
        "num_trials": num_trials,
        "seeds": seeds,
        **_rungs_in_plan(config),
        "prefixes": _prefixes_in_plan(config),
    }
    return {**plan, "estimate": submission_estimate(plan)}


def _known_runs(config: ExperimentConfig) -> list[PlannedRun] | None:
    """Every run a submission starts, when known before it starts: an ablation's variants, a grid's trials
    (each grid point with each seed, ``num_samples`` times), the one run; ``None`` for trials drawn at run time."""
    sweep = config.sweep
    if sweep is None:
        return expand_runs(config)
    if sweep.algorithm != "grid" or any(d.grid is None for d in sweep.search_space.values()):
        return None
    keys = list(sweep.search_space)
    points = itertools.product(*(sweep.search_space[k].grid or () for k in keys))
    settings = [dict(zip(keys, point, strict=True)) for point in points] * sweep.num_samples
    seeds = sweep.seed_values(config.seed) if sweep.seeds > 1 else [None]
    values = [{**v, SEED_KEY: seed} if seed is not None else v for seed in seeds for v in settings]
    return [PlannedRun("trial", None, "trial", config.trial(v)) for v in values]


def _prefixes_in_plan(config: ExperimentConfig) -> dict[str, Any] | None:
    """The plan's ``prefixes``: per stage, how many of the submission's runs reach it and how many train it,
    the others adopting it from a run with the same prefix (``orchestration.prefixes``); ``None`` when
    ``storage.share_prefixes`` is off or the runs are drawn at run time (random, optuna)."""
    runs = _known_runs(config) if config.storage.share_prefixes else None
    if runs is None:
        return None
    rungs = planned_rungs(config)
    rungs_from = rungs.clock.from_stage if rungs is not None else None
    stages: dict[str, dict[str, Any]] = {}
    for run in runs:
        placements = stage_placements(run)
        steps = {name: stage_steps(run.config, stage) for name, stage in run.config.stages.items()}
        shared = shareable_stages(list(run.config.stages), rungs_from)
        for stage, digest in prefix_digests(run.config, steps, placements).items():
            entry = stages.setdefault(stage, {"runs": 0, "digests": set(), "trained": 0})
            entry["runs"] += 1
            if stage not in shared:
                entry["trained"] += 1
            elif digest not in entry["digests"]:
                entry["digests"].add(digest)
                entry["trained"] += 1
    return {stage: {"runs": e["runs"], "trained": e["trained"]} for stage, e in stages.items()}


def planned_rungs(config: ExperimentConfig) -> RungSchedule | None:
    """ASHA's rungs (``None`` without ASHA), from the stage lengths the plan shows (:func:`stage_steps`) of the
    sweep's template: what ``validate`` prints and the scheduler and the workers use."""
    return rung_schedule(config, {name: stage_steps(config, stage) for name, stage in config.stages.items()})


def _rungs_in_plan(config: ExperimentConfig) -> dict[str, Any]:
    """The plan's ``rungs`` and ``asha``."""
    schedule = planned_rungs(config)
    if schedule is None or config.sweep is None:
        return {"rungs": [], "asha": None}
    settings, clock = config.sweep.scheduler, schedule.clock
    counted = "validation points" if clock.at == "validations" and clock.every else "stage ends"
    if clock.at == EVALUATIONS:
        counted = f"evaluations (after {', '.join(clock.evaluated)})"
    if schedule.points is None:
        note = f"rungs unknown: a stage from {clock.from_stage} on has no length before it runs (epochs)"
    elif not clock.waits:
        note = (
            f"no rung: from {clock.from_stage} on a trial meets {len(schedule.points)} "
            f"{counted if len(schedule.points) != 1 else counted.split(' (')[0][:-1]}, the last "
            f"where its work is done; the first rung needs grace_period {settings.grace_period} before it"
        )
    else:
        note = f"rungs at {counted} from {clock.from_stage} on; step within the stage"
    return {
        "rungs": schedule.rungs(),
        "asha": {
            "from_stage": clock.from_stage,
            "at": clock.at,
            "grace_period": settings.grace_period,
            "reduction_factor": settings.reduction_factor,
            "brackets": settings.brackets,
            "max_t": schedule.max_t,
            "rung_points": len(schedule.points) if schedule.points is not None else None,
            "note": note,
        },
    }


__all__ = [
    "ModelNumbers",
    "PlannedRun",
    "build_plan",
    "check_plan",
    "estimated_run_hours",
    "expand_runs",
    "model_numbers",
    "plan_run",
    "planned_rungs",
    "remember_model_numbers",
    "remember_planned",
    "stage_placements",
    "stage_steps",
]
