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
