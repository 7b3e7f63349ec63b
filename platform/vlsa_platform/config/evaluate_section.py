"""The ``evaluate`` section: benchmark evaluation through lmms-eval as a step of every run.

After each stage named in ``after`` (default: the run's last) the run's export of that stage is scored on
``tasks`` by lmms-eval in the evaluation environment (docs/evaluation.md), as Ray work on the class named
here, inside the run's trial; the scores land in the run's MLflow run as ``eval/<task>/<metric>``
(``orchestration.eval_step``). ``sweep.metric`` may name such a score (``eval/<task>/<metric>``): ASHA's rungs
are then the evaluation points.

Whether each task name exists is known only to lmms-eval (its own tasks, the platform's local ones, and
``include_paths``): ``submit`` looks them up in the evaluation environment before anything trains.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from .errors import FieldIssue
from .vocabulary import AcceleratorName, BatchSize, Name, Records, Section

TaskName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
EVAL_METRIC_PREFIX = "eval/"
"""What a ``sweep.metric`` that names a benchmark score starts with (``eval/<task>/<metric>``)."""
MAX_EVAL_TIMEOUT_S = 7 * 24 * 3600.0


def eval_metric_task(metric: str) -> str | None:
    """The task of an ``eval/<task>/<metric>`` metric name; ``None`` for any other metric."""
    if not metric.startswith(EVAL_METRIC_PREFIX):
        return None
    task, _, rest = metric[len(EVAL_METRIC_PREFIX) :].partition("/")
    return task if task and rest else None


class EvaluateConfig(Section):
    """Benchmarks a run is scored on after its stages (lmms-eval task names; docs/evaluation.md lists the
    paper's)."""

    tasks: list[TaskName] = Field(min_length=1)
    """lmms-eval task or group names, evaluated one at a time in this order (``mme``, ``mmbench_en_dev``...;
    ``--scale tiny``: the platform's local ``vlsa_synthetic_*`` tasks)."""
    after: list[Name] | None = Field(default=None, min_length=1)
    """Stages whose export is evaluated, each as soon as it has finished; ``null`` = the run's last stage. An
    ablation variant without one of them evaluates after those it has."""
    limit: Records | None = None
    """Documents per task (lmms-eval's ``--limit``); ``null`` = every document."""
    batch_size: BatchSize = 1
    """Requests per generation batch."""
    accelerator_type: AcceleratorName | None = None
    """The accelerator class the evaluation lands on (a ``cluster.accelerators`` class or a built-in one);
    ``null`` = any GPU with ``use_gpu``, else a CPU."""
    use_gpu: bool | None = None
    """Evaluate on one GPU; ``null`` = yes exactly when ``accelerator_type`` is set."""
    include_paths: list[str] = Field(default_factory=list)
    """Folders of more lmms-eval task files (beside lmms-eval's own and the platform's local tasks), as seen
    from the node that evaluates."""
    timeout_s: Annotated[float, Field(gt=0.0, le=MAX_EVAL_TIMEOUT_S)] = 6 * 3600.0
    """Longest one evaluation may take; the tasks not finished by then are recorded as failed."""

    def gpu(self) -> bool:
        """Whether the evaluation uses a GPU."""
        return self.use_gpu if self.use_gpu is not None else self.accelerator_type is not None

    def points(self, stages: list[str]) -> list[str]:
        """The stages of a run (``stages``, in order) after which it is evaluated."""
        if self.after is None:
            return stages[-1:]
        return [stage for stage in stages if stage in self.after]


def check_evaluate(evaluate: EvaluateConfig | None, stages: list[str], metric: str | None) -> None:
    """``evaluate.after`` names stages of the file (``stages``); an ``eval/<task>/...`` sweep ``metric``
    needs the section and names one of its tasks."""
    for i, stage in enumerate(evaluate.after or [] if evaluate is not None else []):
        if stage not in stages:
            raise FieldIssue(
                ("evaluate", "after", i), f"no stage named {stage!r} (stages: {', '.join(stages)})"
            )
    task = eval_metric_task(metric) if metric is not None else None
    if task is None:
        return
    if evaluate is None:
        raise FieldIssue(("sweep", "metric"), f"{metric} is a benchmark score: it needs an evaluate section")
    if task not in evaluate.tasks:
        raise FieldIssue(
            ("sweep", "metric"),
            f"{metric}: {task} is not among evaluate.tasks ({', '.join(evaluate.tasks)})",
            related=(("evaluate", "tasks"),),
        )


def check_evaluation_rungs(
    evaluate: EvaluateConfig, stages: list[str], start: str | None, metric: str
) -> None:
    """With an ``eval/`` ``metric`` ASHA's rung points are the evaluation points from ``start`` (the stage its
    rungs start in) on: at least one must fall there."""
    points = evaluate.points(stages)
    if start is None or not [p for p in points if stages.index(p) >= stages.index(start)]:
        raise FieldIssue(
            ("sweep", "scheduler", "rungs"),
            f"no evaluation point where ASHA may compare trials on {metric}: evaluate.after "
            f"({', '.join(points)}) has no stage from {start or 'the last stage'} on; evaluate after a later "
            "stage, or use kind: fifo",
            related=(("evaluate", "after"),),
        )


def variant_evaluation_points(raw: dict[str, Any], name: str) -> None:
    """In the raw mapping of ablation variant ``name``, whose stages are chosen: ``evaluate.after`` cut to the
    stages it keeps; none kept is refused (the variant would never be evaluated)."""
    evaluate = raw.get("evaluate")
    after = evaluate.get("after") if isinstance(evaluate, dict) else None
    if not isinstance(after, list):
        return
    kept = [stage for stage in after if stage in raw["stages"]]
    if not kept:
        raise FieldIssue(
            ("ablation", "variants", name, "stages"),
            f"keeps none of evaluate.after ({', '.join(map(str, after))}): variant {name} would never be "
            "evaluated",
            related=(("evaluate", "after"),),
        )
    evaluate["after"] = kept


__all__ = [
    "EVAL_METRIC_PREFIX",
    "EvaluateConfig",
    "TaskName",
    "check_evaluate",
    "check_evaluation_rungs",
    "eval_metric_task",
    "variant_evaluation_points",
]
