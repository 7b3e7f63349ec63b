"""A training run: its stages, in order, each a Ray Train ``TorchTrainer`` whose workers run ``train.loop``.

Layout of a run in the run storage (a local folder or ``s3://``, ``storage.path``)::

    <storage>/<experiment>/<run name>/
        run.json                 the config's digest and the MLflow run id (a re-launch of the same config
                                 resumes and logs to the same run; another config is refused)
        <stage>/                 Ray Train's run folder for the stage (RunConfig(storage_path, name))
            checkpoint_*/        DeepSpeed state of every rank, progress.json; the last also model/
        <stage>.complete.json    written when the stage finished: its final checkpoint, steps, device-hours

Each stage gets the ``ScalingConfig`` of its resolved placement (workers, GPU or not, the accelerator-type
resource that lands them on their class), a ``FailureConfig`` (a dead worker is replaced and the stage resumes
from its latest checkpoint) and a ``CheckpointConfig`` keeping the newest ``storage.keep_checkpoints``.
Stage N+1 starts from the model exported in stage N's final checkpoint. Re-launching a run with the same name
skips the stages marked complete and resumes the interrupted one from its latest checkpoint (Ray Train V2
restores a run's checkpoint history from its storage folder).

This module is the only one in the training path that imports Ray (DESIGN.md §3).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..cluster import ResolvedPlacement
from ..config.schema import ExperimentConfig
from ..tracking import names
from ..tracking.store import TrackingStore
from ..tracking.tracker import Tracker, git_commit
from ..train.spec import EXPORT_DIR, PROGRESS_FILE, StageSpec
from .plan import PlannedRun, plan_run, stage_placements

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
TARGETS_DIR = "targets"


class RunConflictError(ValueError):
    """A run folder already holds a run trained from another config (a re-launch must not mix the two)."""


def config_digest(config: ExperimentConfig) -> str:
    """SHA-256 of the resolved config (what a re-launch must match to resume a run)."""
    text = json.dumps(config.resolved(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def claim_run_dir(directory: str, config: ExperimentConfig) -> dict[str, Any]:
    """What an earlier launch recorded in ``<run dir>/run.json`` (``{}`` for a new run). Raises
    :class:`RunConflictError` when that launch trained another config: resuming it would mix two experiments."""
    marker = storage.join(directory, RUN_FILE)
    if not storage.exists(marker):
        return {}
    recorded = json.loads(storage.read_text(marker))
    if recorded.get("config_sha256") != config_digest(config):
        raise RunConflictError(
            f"{directory} holds a run of another config (a re-launch resumes only the same resolved config); "
            "give the run another name, or move that folder away to start over"
        )
    return recorded


def run_dir(storage_root: str, experiment: str, run_name: str) -> str:
    """Where a run keeps its checkpoints (``<storage>/<experiment>/<run name>``)."""
    return storage.join(storage_root, names.path_part(experiment), names.path_part(run_name))


def _complete_marker(directory: str, stage: str) -> str:
    return storage.join(directory, f"{stage}.complete.json")


@dataclass
class StageOutcome:
    """How a stage ended (the content of ``<stage>.complete.json``)."""

    stage: str
    checkpoint: str
    """Its final checkpoint (local folder or ``s3://``); the exported model is in ``<checkpoint>/model``."""
    global_step: int
    stage_steps: int
    gpu_hours: float
    metrics: dict[str, float] = field(default_factory=dict)
    """The last metrics rank 0 reported."""

    @property
    def model(self) -> str:
        return storage.join(self.checkpoint, EXPORT_DIR)


@dataclass
class TrainingResult:
    """A finished run: where it lives, its MLflow run, and each stage's outcome."""

    name: str
    directory: str
    run_id: str | None
    stages: list[StageOutcome]

    @property
    def final_model(self) -> str:
        return self.stages[-1].model


# --------------------------------------------------------------------------------------------- the worker


class _RayWorkerContext:
    """:class:`vlsa_platform.train.loop.WorkerContext` on Ray Train."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield folder

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of every stage."""
    from ..train.loop import run_stage

    run_stage(StageSpec.from_dict(loop_config["spec"]), _RayWorkerContext())


# --------------------------------------------------------------------------------------------- the driver


def _scaling_config(placement: ResolvedPlacement, loader_workers: int) -> Any:
    """Ray Train's ``ScalingConfig`` of a stage: the placement's own arguments (workers, GPU, the
    ``accelerator_type`` that lands them on their class) and, per worker, one CPU plus its loader processes
    and a GPU when ``use_gpu``."""
    from ray.train import ScalingConfig

    resources: dict[str, float] = {"CPU": float(1 + loader_workers)}
    if placement.use_gpu:
        resources["GPU"] = 1.0
    return ScalingConfig(**placement.scaling_config_kwargs(), resources_per_worker=resources)


def _fit_stage(
    spec: StageSpec,
    placement: ResolvedPlacement,
    directory: str,
    config: ExperimentConfig,
    callbacks: Sequence[Any] = (),
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_config = RunConfig(
        name=spec.stage,
        storage_path=directory,
        storage_filesystem=storage.arrow_filesystem(directory),
        failure_config=FailureConfig(max_failures=config.storage.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=config.storage.keep_checkpoints),
        callbacks=list(callbacks) or None,
    )
    if storage.is_s3(directory):  # pyarrow takes the bucket/prefix without the scheme
        run_config.storage_path = directory[len("s3://") :]
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"spec": spec.to_dict()},
        scaling_config=_scaling_config(placement, config.data.loader_workers),
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if placement.use_gpu else "gloo"),
    )
    return trainer.fit()


def _checkpoint_location(checkpoint: Any, directory: str) -> str:
    """A Ray checkpoint's path as a location our storage helpers read (``s3://`` again for S3)."""
    path = checkpoint.path
    return f"s3://{path.lstrip('/')}" if storage.is_s3(directory) else path


def _attach_tracking(
    directory: str,
    run: PlannedRun,
    name: str,
    recorded: Mapping[str, Any],
    store: TrackingStore | None,
    parent_run_id: str | None,
    tags: Mapping[str, str],
) -> Tracker | None:
    """The run's MLflow run: the one an earlier launch recorded, else a new one (a child of ``parent_run_id``
    when given) with the resolved config, params and tags; ``run.json`` records it with the config's digest."""
    config = run.config
    tracker = None
    if store is not None and recorded.get("run_id"):
        tracker = Tracker.for_run(recorded["run_id"], store=store)
    elif store is not None:
        all_tags = {
            **names.run_tags(scale=config.model.preset, variant=run.variant, git_commit=git_commit()),
            **dict(tags),
        }
        if parent_run_id:
            tracker = Tracker.start_child(parent_run_id, name, tags=all_tags, store=store)
        else:
            tracker = Tracker.start_parent(config.name, name, tags=all_tags, store=store)
        tracker.log_config(config.resolved())
    if not recorded or (tracker is not None and not recorded.get("run_id")):
        record = {
            "config_sha256": config_digest(config),
            "run_id": tracker.run_id if tracker is not None else None,
            "tracking_uri": store.uri if store is not None else None,
        }
        storage.write_text(storage.join(directory, RUN_FILE), json.dumps(record, sort_keys=True))
    return tracker


def run_training(
    run: PlannedRun,
    *,
    storage_root: str,
    store: TrackingStore | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainingResult:
    """Train ``run`` through all its stages (resuming a run of the same name found in ``storage_root``).

    Args:
        run: the run (``plan.expand_runs``), with its config.
        storage_root: the run storage (``storage.path``, local or ``s3://``).
        store: where MLflow is (``tracking.store.resolve_store``); ``None`` = no tracking.
        parent_run_id: the submission's parent MLflow run, if any (this run becomes its child).
        run_name: name of the run folder and MLflow run (default: ``run.name``).
        tags: extra MLflow tags (``vlsa.trial_id``...).
        callbacks: Ray Train callbacks for every stage (e.g. Tune's ``TuneReportCallback``).
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("run_training needs a Ray cluster: call ray.init() (or submit) first")
    config = run.config
    name = run_name or run.name
    directory = run_dir(storage_root, config.name, name)
    recorded = claim_run_dir(directory, config)
    plan = plan_run(run)
    placements = stage_placements(run)
    tracker = _attach_tracking(directory, run, name, recorded, store, parent_run_id, tags or {})
    resolved = config.resolved()
    outcomes: list[StageOutcome] = []
    previous: StageOutcome | None = None
    status = "FAILED"
    try:
        for index, planned in enumerate(plan["stages"]):
            stage = planned["name"]
            marker = _complete_marker(directory, stage)
            if storage.exists(marker):
                previous = StageOutcome(**json.loads(storage.read_text(marker)))
                outcomes.append(previous)
                log.info("stage %s of %s is complete; skipping it", stage, name)
                continue
            spec = StageSpec(
                config=resolved,
                stage=stage,
                stage_index=index,
                placement=planned["placement"],
                steps=planned["steps"],
                step_offset=previous.global_step if previous else 0,
                init_from=previous.model if previous else None,
                run_id=tracker.run_id if tracker else None,
                tracking_uri=store.uri if store else None,
                gpu_hours_before=previous.gpu_hours if previous else 0.0,
                target_cache=storage.join(storage_root, names.path_part(config.name), TARGETS_DIR),
            )
            result = _fit_stage(spec, placements[stage], directory, config, callbacks)
            if result.error is not None:
                raise RuntimeError(f"stage {stage} of run {name} failed: {result.error}") from result.error
            if result.checkpoint is None:
                raise RuntimeError(f"stage {stage} of run {name} ended without a checkpoint")
            location = _checkpoint_location(result.checkpoint, directory)
            progress = json.loads(storage.read_text(storage.join(location, PROGRESS_FILE)))
            previous = StageOutcome(
                stage=stage,
                checkpoint=location,
                global_step=int(progress["global_step"]),
                stage_steps=int(progress["stage_steps"]),
                gpu_hours=float(progress["gpu_hours"]),
                metrics={
                    k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)
                },
            )
            storage.write_text(marker, json.dumps(previous.__dict__, sort_keys=True))
            outcomes.append(previous)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.close(status=status, timeout=30)
    return TrainingResult(
        name=name, directory=directory, run_id=tracker.run_id if tracker else None, stages=outcomes
    )


__all__ = [
    "RunConflictError",
    "StageOutcome",
    "TrainingResult",
    "claim_run_dir",
    "config_digest",
    "run_dir",
    "run_training",
]
