"""The evaluation step of a run: after each stage of ``evaluate.after``, its export scored through lmms-eval as
Ray work on the class ``evaluate`` names, inside the run's trial.

:class:`EvaluationStep` is what :func:`.training.run_training` calls after each stage it finished (or found
finished). At an evaluation point it

1. runs one Ray task (:func:`_evaluate_export`) asking for a CPU, a GPU when ``evaluate`` uses one, and the
   accelerator class's resource (:func:`~vlsa_platform.cluster.accelerators.ray_resources`), outside the
   trial's placement group. The task mirrors an ``s3://`` export to its node and evaluates it as
   ``vlsa-platform evaluate`` does (:func:`.evaluation.evaluate`: lmms-eval in the evaluation environment's
   interpreter on that node), into the run's MLflow run (``eval/<task>/<metric>`` at the stage's last global
   step, a status tag per task, lmms-eval's output under ``eval/<stage>/``);
2. writes ``<stage>.eval.json`` in the run folder (the scores, the failed tasks): a re-launched run does not
   evaluate a stage again;
3. in a sweep whose metric is a benchmark score (``sweep.metric: eval/...``), reports the scores to Tune with
   ASHA's clock (:meth:`.rungs.RungClock.evaluation_reading`) and, where ASHA decides, waits for its decision
   (:func:`.decisions.wait_for_decision`): a trial ASHA stops starts no further stage.

A task that fails inside lmms-eval is recorded failed (its tag, its traceback) while the others' scores are
logged; an evaluation that cannot run at all (no evaluation environment, a refused input, a crash before any
task) fails the run with its reason. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import storage
from ..cluster.accelerators import AcceleratorTable, ray_resources
from ..config.evaluate_section import EvaluateConfig, eval_metric_task
from ..config.schema import ExperimentConfig
from ..lmms.results import FINISHED
from ..tracking import names
from ..tracking.store import TrackingStore
from .evaluation import EvalRequest
from .evaluation import evaluate as run_evaluation
from .rungs import RUNG_CLOCK, RungClock
from .stage_markers import StageOutcome

log = logging.getLogger(__name__)


class EvaluationStepError(RuntimeError):
    """An evaluation step could not evaluate the run's export."""


def eval_marker(directory: str, stage: str) -> str:
    """Where the evaluation of ``stage`` of the run in ``directory`` is recorded."""
    return storage.join(directory, f"{stage}.eval.json")


@dataclass
class StageEvaluation:
    """One evaluation's outcome (the content of ``<stage>.eval.json``)."""

    stage: str
    global_step: int
    scores: dict[str, float] = field(default_factory=dict)
    """``<task>/<metric>`` -> value (lmms-eval's flat scores)."""
    failed: list[str] = field(default_factory=list)
    """The tasks that failed."""

    def metrics(self) -> dict[str, float]:
        """The scores as MLflow and Tune see them: ``eval/<task>/<metric>``."""
        return {names.eval_metric(score): value for score, value in self.scores.items()}


def evaluation_resources(evaluate: EvaluateConfig, config: ExperimentConfig) -> dict[str, Any]:
    """Ray options of the evaluation task: a CPU, a GPU when ``evaluate`` uses one, the class's resource.
    Raises ``ConfigError`` naming ``evaluate.accelerator_type`` for an unknown class."""
    resources: dict[str, float] = {}
    if evaluate.accelerator_type is not None:
        table = AcceleratorTable.from_config(config.cluster)
        resources = ray_resources(table.lookup(evaluate.accelerator_type, "evaluate.accelerator_type"))
    return {"num_cpus": 1, "num_gpus": 1 if evaluate.gpu() else 0, "resources": resources}


def _evaluate_export(
    model: str,
    resolved: dict[str, Any],
    stage: str,
    global_step: int,
    run_id: str | None,
    tracking_uri: str | None,
) -> dict[str, Any]:
    """The Ray task: evaluate the export at ``model`` (its run's resolved config ``resolved``) as its
    ``evaluate`` section says, log the results into MLflow run ``run_id`` (:func:`.evaluation.evaluate`, as
    ``vlsa-platform evaluate`` does); :class:`StageEvaluation` as a dict."""
    evaluate = EvaluateConfig.model_validate(resolved["evaluate"])
    export = Path(storage.materialize(model))
    with tempfile.TemporaryDirectory(prefix="vlsa-eval-") as tmp:
        config_path = Path(tmp) / "resolved.yaml"
        config_path.write_text(yaml.safe_dump(resolved, sort_keys=False))
        request = EvalRequest(
            export=export,
            config=config_path,
            tasks=tuple(evaluate.tasks),
            limit=evaluate.limit,
            batch_size=evaluate.batch_size,
            device="cuda" if evaluate.gpu() else "cpu",
            include_paths=tuple(Path(folder) for folder in evaluate.include_paths),
            timeout_s=evaluate.timeout_s,
        )
        tracked = run_id is not None and tracking_uri is not None
        store = TrackingStore(uri=tracking_uri) if tracked else None
        done = run_evaluation(request, Path(tmp) / "out", store=store, run_id=run_id)
        if done.tracking.get("dropped"):
            log.warning("evaluation of %s: not all was logged to MLflow (%s)", stage, done.tracking)
    results = done.results
    failed = sorted(task for task, outcome in results.tasks.items() if outcome.status != FINISHED)
    return asdict(StageEvaluation(stage, global_step, dict(results.scores), failed))


def evaluate_stage(
    config: ExperimentConfig,
    outcome: StageOutcome,
    directory: str,
    run_id: str | None,
    tracking_uri: str | None,
) -> StageEvaluation:
    """The evaluation of ``outcome``'s stage: the one recorded in the run folder ``directory``, else a new one
    as a Ray task (recorded there). Raises :class:`EvaluationStepError` when it could not run."""
    import ray

    marker = eval_marker(directory, outcome.stage)
    if storage.exists(marker):
        return StageEvaluation(**json.loads(storage.read_text(marker)))
    assert config.evaluate is not None
    options = evaluation_resources(config.evaluate, config)
    task = ray.remote(_evaluate_export).options(
        **options,
        max_retries=0,
        scheduling_strategy="DEFAULT",  # not in the trial's placement group
    )
    ref = task.remote(
        outcome.model, config.resolved(), outcome.stage, outcome.global_step, run_id, tracking_uri
    )
    try:
        done = StageEvaluation(**ray.get(ref))
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if getattr(err, "cause", None) is not None else err
        raise EvaluationStepError(f"the evaluation after stage {outcome.stage} failed: {cause}") from None
    if done.failed:
        log.warning("evaluation after %s: task(s) %s failed", outcome.stage, ", ".join(done.failed))
    storage.write_text(marker, json.dumps(asdict(done), sort_keys=True))
    return done


@dataclass
class EvaluationStep:
    """What a run does after each stage it finished (``run_training(after_stage=...)``): evaluate at the
    points of ``config.evaluate``; report to Tune when ``metric`` (a sweep's ``eval/`` metric) is given, and
    wait for ASHA's decision at the ticks of ``clock`` where it decides."""

    config: ExperimentConfig
    tracking_uri: str | None = None
    metric: str | None = None
    clock: RungClock | None = None

    def points(self) -> list[str]:
        """The stages after which the run is evaluated."""
        evaluate = self.config.evaluate
        return evaluate.points(list(self.config.stages)) if evaluate is not None else []

    def __call__(self, outcome: StageOutcome, directory: str, run_id: str | None) -> None:
        if outcome.stage not in self.points():
            return
        evaluation = evaluate_stage(self.config, outcome, directory, run_id, self.tracking_uri)
        if self.metric is not None:
            self._report(evaluation, directory)

    def _report(self, evaluation: StageEvaluation, directory: str) -> None:
        from ray import tune

        from .decisions import wait_for_decision

        metrics: dict[str, Any] = {**evaluation.metrics(), "global_step": evaluation.global_step}
        due = False
        if self.clock is not None:
            tick, point = self.clock.evaluation_reading(evaluation.stage)
            metrics[RUNG_CLOCK] = float(tick)
            due = self.clock.waits_at(tick, point)
        if self.metric not in metrics:
            log.warning("the evaluation after %s gave no %s", evaluation.stage, self.metric)
        tune.report(metrics)
        if due:
            wait_for_decision(directory, evaluation.global_step)


def for_trial(
    config: ExperimentConfig, tracking_uri: str | None, metric: str, clock: RungClock | None
) -> EvaluationStep | None:
    """The evaluation step of a trial's run (its ``config``; ``None`` without an ``evaluate`` section); it
    reports to Tune when the sweep's ``metric`` is a benchmark score, with ASHA's ``clock`` (or ``None``)."""
    if config.evaluate is None:
        return None
    if eval_metric_task(metric) is None:
        return EvaluationStep(config, tracking_uri)
    return EvaluationStep(config, tracking_uri, metric, clock)


__all__ = [
    "EvaluationStep",
    "EvaluationStepError",
    "StageEvaluation",
    "eval_marker",
    "evaluate_stage",
    "evaluation_resources",
    "for_trial",
]
