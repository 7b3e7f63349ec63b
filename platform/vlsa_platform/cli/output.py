"""What ``vlsa-platform`` prints, shared by its verbs: the plan as a table (:func:`render_plan`, with an ASHA
sweep's rungs), aligned tables (:func:`table`), parameter counts (:func:`human`), a submission's trial summary
(:func:`summary`), the one-line error (:func:`error`) and a problem list (:func:`problems`). Both error printers
mask secrets (:func:`vlsa_platform.redact.redact_text`): a message that echoes a tracking URI with its password
shows ``user:***@host``."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..orchestration.submission_types import SubmissionResult
from ..redact import redact_text


def human(n: int) -> str:
    """``8030261248`` -> ``8.03B``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """``rows`` (the first the header) as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def print_rows(rows: list[list[str]]) -> None:
    print("\n".join(table(rows, indent="")))


def error(verb: str, message: Any) -> None:
    """``vlsa-platform VERB: message`` on stderr, on one line, secrets masked."""
    print(redact_text(f"vlsa-platform {verb}: {' '.join(str(message).split())}"), file=sys.stderr)


def problems(message: Any) -> None:
    """A multi-line message (a ``ConfigError``: one problem a line) on stderr as it is, secrets masked."""
    print(redact_text(str(message)), file=sys.stderr)


def _memory(place: dict[str, Any]) -> str:
    """``"61.2/80 GiB"`` (estimate / card) on an accelerator class, ``"-"`` without one."""
    if place.get("accelerator_memory_gib") is None or place.get("memory_gib_per_gpu") is None:
        return "-"
    fits = "" if place.get("fits") is not False else " (does not fit)"
    return f"{place['memory_gib_per_gpu']:.1f}/{place['accelerator_memory_gib']:g} GiB{fits}"


def _stage_row(stage: dict[str, Any]) -> list[str]:
    place = stage["placement"]
    where = f"{place['num_workers']}x{place['accelerator_type'] or ('GPU' if place['use_gpu'] else 'CPU')}"
    offload = f" offload={place['offload']}" if place["offload"] != "none" else ""
    return [
        stage["name"],
        "+".join(entry["dataset"] for entry in stage.get("mixture", [])) or "-",
        ",".join(stage["trainable"]),
        human(stage["params_total"]),
        human(stage["params_trainable"]),
        f"{stage['loss']['llm_weight']:g}/{stage['loss']['rec_weight']:g}",
        "?" if stage["steps"] is None else str(stage["steps"]),
        f"{where} zero{place['zero_stage']}{offload} "
        f"batch {place['micro_batch']}x{place['num_workers']}x{place['grad_accum']}={place['global_batch']}",
        _memory(place),
    ]


def _rung_lines(plan: dict[str, Any]) -> list[str]:
    """ASHA's rungs as ``stage3 step 400`` pairs, with the note that says what they count."""
    asha = plan.get("asha")
    if not asha:
        return []
    rungs = plan.get("rungs")
    shown = (
        "unknown" if rungs is None else ", ".join(f"{r['stage']} step {r['step']}" for r in rungs) or "none"
    )
    return [
        f"  ASHA rungs ({asha['at'].replace('_', ' ')} from {asha['from_stage']}, grace {asha['grace_period']}, "
        f"reduction {asha['reduction_factor']:g}): {shown}",
        f"    {asha['note']}",
    ]


def _prefix_lines(plan: dict[str, Any]) -> list[str]:
    """How many of the runs train each stage, when runs share stage prefixes."""
    prefixes = plan.get("prefixes")
    if not prefixes or all(e["trained"] == e["runs"] for e in prefixes.values()):
        return []
    trained, total = sum(e["trained"] for e in prefixes.values()), sum(e["runs"] for e in prefixes.values())
    each = ", ".join(f"{stage} {e['trained']} of {e['runs']}" for stage, e in prefixes.items())
    return [
        f"  shared stage prefixes: {trained} of {total} stage runs trained ({each}); the others reuse them"
    ]


def _flops(value: float) -> str:
    """``1.59e14`` -> ``"159 TFLOP"``."""
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}FLOP"
    return f"{value:.3g} FLOP"


def _hours(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}"


def _usd(value: float | None) -> str:
    return "not priced" if value is None else f"${value:,.0f}"


def _estimate_row(stage: dict[str, Any]) -> list[str]:
    est = stage["estimate"]
    text = "max_length" if est["text_tokens"] is None else f"text {est['text_tokens']:g}"
    return [
        stage["name"],
        _flops(est["flops_per_sample"]),
        f"{est['llm_tokens']} ({text})",
        "?" if est["samples"] is None else f"{est['samples']:,}",
        f"{est['devices']}x{est['accelerator']}",
        "-" if est["mfu"] is None else f"{est['mfu']:.2f}",
        _hours(est["gpu_hours"]),
        _hours(est["wall_hours"], " h"),
        _usd(est["price_usd"]) if est["gpu_hours"] is not None else "not priced",
    ]


def _estimate_lines(run: dict[str, Any]) -> list[str]:
    """The run's cost estimate: per stage the figures' inputs and results, then the run's total."""
    header = [
        "estimate",
        "FLOPs/sample",
        "LLM tokens",
        "samples",
        "GPUs",
        "MFU",
        "GPU-hours",
        "wall",
        "price",
    ]
    rows = [header, *(_estimate_row(stage) for stage in run["stages"])]
    total = run["estimate"]
    rows.append(
        [
            "total",
            "",
            "",
            "",
            "",
            "",
            _hours(total["gpu_hours"]),
            _hours(total["wall_hours"], " h"),
            _usd(total["price_usd"]) if total["gpu_hours"] is not None else "-",
        ]
    )
    notes = [f"    ! {s['name']}: {s['estimate']['note']}" for s in run["stages"] if s["estimate"]["note"]]
    saves = [
        f"{s['name']} {c['node_gb']:.0f} GB/node in {c['save_s']:.0f} s every {c['interval_s'] / 3600:.1f} h "
        f"({100 * c['stall_fraction']:.1f}%)"
        for s in run["stages"]
        if (c := s.get("checkpoint"))
    ]
    if saves:  # cluster.checkpoint_cost: the save's stall at a stated disk bandwidth
        notes.append(f"    checkpoints (stall, goal <= 5%): {'; '.join(saves)}")
    return [*table(rows, indent="    "), *notes]


def _estimate_footer(plan: dict[str, Any]) -> list[str]:
    """What the estimate assumed, once per plan (docs/experiments.md, "What a run will cost")."""
    stages = [s for run in plan["runs"] for s in run["stages"] if "estimate" in s]
    if not stages:
        return []
    lines = [
        "  estimate: GPU-hours = FLOPs/sample x samples / (bf16 peak x MFU) / 3600; wall = GPU-hours / GPUs; "
        'price = GPU-hours x hourly_usd (docs/experiments.md, "What a run will cost")'
    ]
    unknown = [s for s in stages if s["estimate"]["text_tokens"] is None]
    if unknown:
        lines.append(
            "  LLM tokens (max_length): text length unknown, every sample taken as long as data.max_length "
            "allows (an upper bound); set data.datasets.NAME.mean_text_tokens from `data inspect`"
        )
        bounds = [
            f"{s['name']} {_hours(low['gpu_hours'])}"
            for s in unknown
            if (low := s["estimate"].get("lower_bound")) and low["gpu_hours"] is not None
        ]
        if bounds:
            lines.append(
                f"  lower bound, no text (the LLM sees {unknown[0]['estimate']['lower_bound']['llm_tokens']} "
                f"visual tokens only), GPU-hours: {', '.join(bounds)}"
            )
    return lines


def _submission_estimate_lines(plan: dict[str, Any]) -> list[str]:
    """The whole submission's cost when it has several runs: every run in full, with shared prefixes, and
    the least ASHA can spend."""
    est = plan.get("estimate")
    if not est or est["runs"] < 2:
        return []
    hours, usd = est["gpu_hours"], est["price_usd"]

    def figure(name: str) -> str:
        price = "" if usd[name] is None else f", {_usd(usd[name])}"
        return f"{_hours(hours[name])} GPU-hours{price}"

    lines = [f"  estimated cost of {est['runs']} runs: {figure('full')} if every run trains every stage"]
    if hours["with_prefixes"] != hours["full"]:
        lines.append(f"    {figure('with_prefixes')} with shared stage prefixes (each trained once)")
    if est["asha"]:
        lines.append(
            f"    {figure('asha_floor')} at least under ASHA (only 1/reduction_factor of the trials go past "
            "each rung; it spends between this and the figure above)"
        )
    return lines


def render_plan(plan: dict[str, Any], source: str) -> str:
    """The plan as a compact, human-readable table."""
    lines = [
        f"{source}: experiment {plan['experiment']!r} — {plan['kind']}, scale {plan['scale']}, "
        f"{plan['num_trials']} run{'s' if plan['num_trials'] != 1 else ''}"
    ]
    if plan["search_space"]:
        lines.append("  search space:")
        for key, domain in plan["search_space"].items():
            ((kind, values),) = domain.items()
            lines.append(f"    {key}: {kind} {json.dumps(values)}")
    if len(plan.get("seeds") or ()) > 1:
        lines.append(f"  seeds per setting: {', '.join(str(s) for s in plan['seeds'])}")
    lines.extend(_rung_lines(plan))
    lines.extend(_prefix_lines(plan))
    lines.extend(_submission_estimate_lines(plan))
    for run in plan["runs"]:
        switches = run["model"]
        flags = [switches["vision"], *(name for name in ("recon", "cognition", "lora") if switches[name])]
        lines.append(
            f"  run {run['label']}  [{' + '.join(flags)}]  {run['visual_tokens_per_image']} visual tokens/image"
            f"  stages: {' -> '.join(stage['name'] for stage in run['stages'])}"
        )
        header = ["stage", "data", "trainable", "params", "trained", "loss llm/rec", "steps", "placement"]
        rows = [[*header, "memory/GPU"]]
        notes = []
        for stage in run["stages"]:
            notes.extend(f"    ! {stage['name']}: {warning}" for warning in stage.get("warnings", []))
            rows.append(_stage_row(stage))
        lines.extend(table(rows, indent="    "))
        lines.extend(notes)
        if run.get("evaluation"):
            evaluation = run["evaluation"]
            lines.append(
                f"    evaluate after {', '.join(evaluation['after'])}: {', '.join(evaluation['tasks'])}"
                f" (lmms-eval, {evaluation['limit'] or 'all'} documents each, on {evaluation['on']})"
            )
        if all("estimate" in stage for stage in run["stages"]) and "estimate" in run:
            lines.extend(_estimate_lines(run))
    lines.extend(_estimate_footer(plan))
    return "\n".join(lines)


def summary(result: SubmissionResult, metric: str, mode: str | None = None) -> list[str]:
    """A finished submission's trials: status, ``metric`` at the end, its change from the trial's first
    validation (``6.912 -> 6.874 (-0.6%)``) and the values that set each apart; then one line with the best
    trial, or with seed repeats the best setting (mean ± spread), or the trials that tie — the report's rule
    (:mod:`vlsa_platform.tracking.report.verdict`), when there are two trials or more. ``mode`` defaults to the
    sweep's."""
    from ..orchestration.sweep import describe_values  # the plan's imports: not for every verb's start
    from ..tracking.report.verdict import format_change, format_value

    rows = [["trial", "status", metric, "first -> last", "values"]]
    for trial in result.trials:
        value = trial.metrics.get(metric)
        rows.append(
            [
                trial.name,
                trial.status,
                format_value(value),
                format_change(trial.first.get(metric), value),
                describe_values(trial.values),
            ]
        )
    if len(result.trials) < 2:
        return table(rows)  # one run: nothing to compare
    return [*table(rows), _verdict(result, metric, mode)]


def _verdict(result: SubmissionResult, metric: str, mode: str | None) -> str:
    """The summary's last line: trials grouped by their values but the seed, judged as the report judges."""
    from ..config.sweep_section import SEED_KEY
    from ..orchestration.sweep import describe_values
    from ..tracking.report.verdict import Mode, judge, score, verdict_line

    if mode is None:
        sweep = result.spec.experiment_config().sweep
        mode = sweep.mode if sweep is not None else "min"
    chosen: Mode = "max" if mode == "max" else "min"
    groups: dict[str, list[float | None]] = {}  # exact values (repr) -> the metric of each run
    labels: dict[str, str] = {}
    seeds: dict[str, set[Any]] = {}
    for trial in result.trials:
        setting = {k: v for k, v in trial.values.items() if k != SEED_KEY}
        key = repr(sorted(setting.items()))
        labels.setdefault(key, describe_values(setting) or "(every trial)")
        groups.setdefault(key, []).append(trial.metrics.get(metric))
        if trial.metrics.get(metric) is not None:
            seeds.setdefault(key, set()).add(trial.values.get(SEED_KEY))
    objective = f"{metric} ({chosen})"
    if any(len(s) >= 2 for s in seeds.values()):  # seed repeats: settings by mean and spread
        scores = [score(values) for values in groups.values()]
        return verdict_line(objective, list(labels.values()), scores, judge(scores, chosen), "setting")
    labels = [f"{t.name} ({describe_values(t.values)})" if t.values else t.name for t in result.trials]
    scores = [score([t.metrics.get(metric)]) for t in result.trials]
    return verdict_line(objective, labels, scores, judge(scores, chosen), "trial")


__all__ = ["error", "human", "print_rows", "problems", "render_plan", "summary", "table"]
