"""What a submission will cost before it starts: the plan's ``estimate`` blocks (docs/experiments.md).

Per stage: FLOPs per sample (:mod:`vlsa_platform.cluster.flops`) x samples (planned steps x global batch) on
the stage's class and workers (:mod:`vlsa_platform.cluster.cost`: bf16 peak, MFU, price). Per run: the sum of
its stages (they run one after the other, so wall times add up too). Per submission, in GPU-hours and USD:

- ``full``: every run trains every stage (a grid's trials: ``num_trials`` x the template run);
- ``with_prefixes``: each stage as often as the plan's ``prefixes`` say it is trained, the other runs adopting
  it (a stage's cost averaged over the runs that reach it);
- ``asha_floor``: as ``with_prefixes``, and from ASHA's first rung on only ``ceil(n / reduction_factor)`` of
  the ``n`` trials still running go past each rung — the least ASHA can spend if it stops every trial it may.
  What it does spend lies between this and ``with_prefixes`` (a trial that reaches a rung first is not
  stopped there, having nothing to be compared with).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..cluster import ModelDims, ResolvedPlacement, compute_cost, sample_flops
from ..config.schema import ExperimentConfig, sampled_size


def mean_text_tokens(config: ExperimentConfig, stage: str) -> float | None:
    """Text tokens per sample of ``stage``'s mixture (each dataset's ``mean_text_tokens``, weighted as the
    mixture samples them); ``None`` when a dataset does not state it."""
    total = tokens = 0.0
    for entry in config.stages[stage].mixture:
        dataset = config.data.datasets[entry.dataset]
        if dataset.mean_text_tokens is None:
            return None
        size = entry.weight * (
            sampled_size(entry.sampling, dataset.num_samples) if dataset.num_samples else 1
        )
        total += size
        tokens += size * dataset.mean_text_tokens
    return tokens / total if total else None


def stage_estimate(
    config: ExperimentConfig,
    stage: str,
    numbers: tuple[Mapping[str, tuple[int, int]], int, ModelDims],
    placement: ResolvedPlacement,
    steps: int | None,
) -> dict[str, Any]:
    """The plan's ``estimate`` of one stage (``numbers``: the run's parameter counts, visual tokens per image
    and dimensions; ``steps``: its planned steps, ``None`` when unknown)."""
    counts, visual, dims = numbers
    text = mean_text_tokens(config, stage)
    limit = config.data.max_length
    llm_tokens = limit if text is None else min(limit, visual + math.ceil(text))
    loss = config.stage_loss(stage)

    def flops_at(tokens: int) -> Any:
        return sample_flops(
            dims,
            counts,
            [part for part in config.stages[stage].trainable if part in counts],
            visual_tokens=visual,
            llm_tokens=tokens,
            llm_weight=loss.llm_weight,
            rec_weight=loss.rec_weight,
        )

    flops = flops_at(llm_tokens)
    samples = None if steps is None else steps * placement.global_batch
    out: dict[str, Any] = {
        "flops_per_sample": flops.total,
        "flops_by_part": flops.as_plan(),
        "llm_tokens": llm_tokens,
        "text_tokens": None if text is None else round(text, 1),
        "text_tokens_from": "max_length" if text is None else "mean_text_tokens",
        "samples": samples,
        "accelerator": placement.accelerator.name,
    }
    if samples is None:
        none = {"flops": None, "devices": placement.num_workers, "mfu": None, "gpu_hours": None}
        return {**out, **none, "wall_hours": None, "price_usd": None, "note": "steps unknown"}
    if text is None:  # the other bound: no text at all, the LLM sees the visual tokens only
        low = compute_cost(
            flops_at(min(limit, visual)).total * samples, placement.accelerator, placement.num_workers
        )
        out["lower_bound"] = {"llm_tokens": min(limit, visual), **low.as_plan()}
    return {
        **out,
        **compute_cost(flops.total * samples, placement.accelerator, placement.num_workers).as_plan(),
    }


def _sum(values: Sequence[float | None]) -> float | None:
    """The sum, or ``None`` when any is unknown."""
    return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))


def run_estimate(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's ``estimate``: its stages' GPU-hours, wall hours and price added up (``None`` if any is)."""
    return {
        key: None if (total := _sum([s["estimate"][key] for s in stages])) is None else round(total, ndigits)
        for key, ndigits in (("gpu_hours", 3), ("wall_hours", 3), ("price_usd", 2))
    }


def _asha_fractions(plan: Mapping[str, Any], stage: str, steps: int, n: int) -> float:
    """Trials that run ``stage`` on average under the ASHA floor: ``n`` up to the stage's first rung, then
    ``ceil(alive / reduction_factor)`` past each; the rungs of earlier stages already applied."""
    asha, rungs = plan["asha"], plan.get("rungs") or []
    factor = float(asha["reduction_factor"])
    order = [s["name"] for s in plan["runs"][0]["stages"]]
    alive = float(n)
    for rung in rungs:
        if order.index(rung["stage"]) < order.index(stage):
            alive = max(1.0, math.ceil(alive / factor))
    runs, done = 0.0, 0
    for rung in (r for r in rungs if r["stage"] == stage):
        runs += alive * (rung["step"] - done) / steps
        done = rung["step"]
        alive = max(1.0, math.ceil(alive / factor))
    return runs + alive * (steps - done) / steps


def submission_estimate(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's top-level ``estimate``: GPU-hours and USD of the whole submission, ``full``,
    ``with_prefixes`` and ``asha_floor`` (module docs); a figure is ``None`` when a stage has none."""
    per_run = plan["num_trials"] if plan["kind"] == "sweep" else 1
    prefixes = plan.get("prefixes") or {}
    asha = plan.get("asha") is not None and plan.get("rungs") is not None and plan["kind"] == "sweep"
    totals: dict[str, dict[str, list[float | None]]] = {
        key: {"full": [], "with_prefixes": [], "asha_floor": []} for key in ("gpu_hours", "price_usd")
    }
    for run in plan["runs"]:
        for stage in run["stages"]:
            entry = prefixes.get(stage["name"])
            share = entry["trained"] / entry["runs"] if entry else 1.0
            trained = per_run * share
            steps = stage["steps"]
            floor = _asha_fractions(plan, stage["name"], steps, per_run) if asha and steps else trained
            for key, figures in totals.items():
                cost = stage["estimate"][key]
                figures["full"].append(None if cost is None else cost * per_run)
                figures["with_prefixes"].append(None if cost is None else cost * trained)
                figures["asha_floor"].append(None if cost is None else cost * min(trained, floor))
    return {
        "runs": per_run * len(plan["runs"]),
        **{
            key: {name: None if (t := _sum(v)) is None else round(t, 2) for name, v in figures.items()}
            for key, figures in totals.items()
        },
        "asha": asha,
    }


__all__ = ["mean_text_tokens", "run_estimate", "stage_estimate", "submission_estimate"]
