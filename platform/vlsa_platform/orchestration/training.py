"""A training run: its stages, in order, on Ray Train ``TorchTrainer`` s whose workers run ``train.loop``.

Consecutive stages placed alike (the same workers, GPUs and accelerator class: the same ``ScalingConfig``)
form one *segment*, trained by one ``TorchTrainer``: its workers run the segment's stages one after the other
in the same processes, each stage starting from the model the previous one exported. Starting a worker group
(processes that import torch, transformers, diffusers and DeepSpeed, plus Ray Train's controller actors) costs
tens of seconds; a stage of a short sweep trial often takes less. A stage placed differently starts a new
segment.

Layout of a run in the run storage (a local folder or ``s3://``, ``storage.path``)::

    <storage>/<experiment>/<run name>/
        run.json                 the config's digest and the MLflow run id (a re-launch of the same config
                                 resumes and logs to the same run; another config is refused)
        <first stage>/           Ray Train's run folder for a segment, named after its first stage
                                 (RunConfig(storage_path, name))
            checkpoint_*/        DeepSpeed state of every rank, progress.json (its stage and step); a stage's
                                 last also model/
        <stage>.complete.json    written when the stage finished: its final checkpoint, steps, device-hours
                                 (or adopted: a shared prefix another run trained, :mod:`.prefixes`)
        <stage>.eval.json        the evaluation after the stage (``evaluate``, :mod:`.eval_step`): its scores
        <stage>.diverged.json    written when the stage stopped for non-finite losses (``training.on_nonfinite``):
                                 the reason and the launch, raised by the driver as ``DivergedError`` (no
                                 Ray Train retry; Tune's retries in the same launch end with it at once)
    <storage>/<experiment>/prefixes/   claims and publications of shared stage prefixes

Each segment gets the ``ScalingConfig`` of its resolved placement (workers, GPU or not, the accelerator-type
resource that lands them on their class), a ``FailureConfig`` (a dead worker is replaced and the segment
resumes from its latest checkpoint: the stages marked complete are skipped, the interrupted one resumes) and a
``CheckpointConfig`` keeping the newest ``storage.keep_checkpoints``. Stage N+1 starts from the model exported
in stage N's final checkpoint. Re-launching a run with the same name skips the stages marked complete and
resumes the interrupted one from its latest checkpoint (Ray Train V2 restores a run's checkpoint history from
its storage folder).

This module and :mod:`.run_checkpoints` (where a worker writes its part of a checkpoint: in place in run storage,
or staged and uploaded) are the only ones in the training path that import Ray (DESIGN.md §3).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..cluster import ResolvedPlacement
from ..config.schema import ExperimentConfig
from ..tracking import names
from ..tracking.store import TrackingStore
from ..tracking.tracker import Tracker, git_commit
from ..train.spec import PROGRESS_FILE, DivergedError, StageSpec
from . import divergence
from .plan import PlannedRun, plan_run, stage_placements
from .prefixes import SharedPrefixes, publish
from .run_checkpoints import CheckpointWriter, remove_unreported_checkpoints
from .rungs import RUNG_CLOCK, RungClock
from .stage_markers import StageOutcome
from .stage_markers import complete_marker as _complete_marker
from .stage_markers import read_marker as _read_marker

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
AfterStage = Callable[..., None]
"""``after_stage(outcome, directory=..., run_id=...)``: what a run does after each stage it finished (or found
finished), in order, with the run folder and MLflow run id: the evaluation step (:mod:`.eval_step`). A stage
after which the config evaluates ends its segment."""
TARGETS_DIR = "targets"


def target_cache_root(storage_root: str, experiment: str) -> str:
    """The frozen-target cache every run of experiment ``experiment`` shares, under the run storage."""
    return storage.join(storage_root, names.path_part(experiment), TARGETS_DIR)


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
    """:class:`vlsa_platform.train.loop.WorkerContext` on Ray Train, for one stage of a segment at a time: the
    latest checkpoint it hands back is the latest of ``stage`` (a segment's checkpoint history holds earlier
    stages' too), and it remembers the last metrics reported."""

    def __init__(
        self, directory: str, await_decisions: str | None = None, rung_clock: RungClock | None = None
    ) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.directory = directory
        self.stage: str | None = None
        self.last_metrics: dict[str, float] = {}
        self.await_decisions = await_decisions
        self.rung_clock = rung_clock
        self.step_offset = 0
        """Global step of the running stage's step 0."""
        self._latest: dict[str, Any] = {}
        self._stage_steps: dict[str, int] = {}
        self._checkpoints = CheckpointWriter()

    def persisted_checkpoint(self) -> str | None:
        """The location (local folder or ``s3://``) of the latest checkpoint persisted in storage."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return _checkpoint_location(checkpoint, self.directory) if checkpoint is not None else None

    def _stage_of(self, location: str) -> str | None:
        return json.loads(storage.read_text(storage.join(location, PROGRESS_FILE))).get("stage")

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        import ray.train

        location = self.persisted_checkpoint()
        if location is None or self._stage_of(location) != self.stage:
            yield None
            return
        checkpoint = ray.train.get_checkpoint()
        with checkpoint.as_directory() as folder:
            yield folder

    def checkpoint_folder(self, final: bool) -> contextlib.AbstractContextManager[Path]:
        """The next checkpoint's folder (:meth:`.run_checkpoints.CheckpointWriter.folder`)."""
        return self._checkpoints.folder(final)

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        import ray.train

        self.last_metrics = dict(metrics)
        checkpoint = None
        options: dict[str, Any] = {}
        last = False
        if checkpoint_dir:
            checkpoint, options = self._checkpoints.for_report(checkpoint_dir)
            progress_file = Path(checkpoint_dir) / PROGRESS_FILE  # rank 0's, whose metrics Ray keeps
            if progress_file.exists():
                progress = json.loads(progress_file.read_text())
                metrics = {**metrics, KEEP_SCORE: _keep_score(progress)}
                last = int(progress["step"]) >= int(progress["stage_steps"])
        due = True
        if self.rung_clock is not None and self.rank == 0 and "global_step" in metrics:
            clock, point = self._rung_reading(int(metrics["global_step"]), last)
            metrics = {**metrics, RUNG_CLOCK: float(clock)}
            due = self.rung_clock.waits_at(clock, point)
        ray.train.report(metrics, checkpoint=checkpoint, **options)
        if self.await_decisions is not None and self.rank == 0:
            self._await_decision(metrics, due)

    def _rung_reading(self, global_step: int, last: bool) -> tuple[int, bool]:
        """Rank 0: the rung clock at a report of the running stage (:meth:`.rungs.RungClock.reading`); the
        earlier stages' lengths from their markers (rank 0 wrote them)."""
        assert self.rung_clock is not None and self.stage is not None
        stages = self.rung_clock.stages
        earlier = stages[stages.index(self.rung_clock.from_stage) : stages.index(self.stage)]
        for stage in earlier:
            if stage not in self._stage_steps:
                self._stage_steps[stage] = _read_marker(self.directory, stage).stage_steps
        lengths = [self._stage_steps[stage] for stage in earlier]
        return self.rung_clock.reading(self.stage, global_step - self.step_offset, last, lengths)

    def _await_decision(self, metrics: Mapping[str, Any], due: bool = True) -> None:
        """Rank 0, after a report: wait for the scheduler's decision on it when ASHA decides there (``due``;
        :func:`.decisions.await_decision`)."""
        from .decisions import await_decision  # Tune's scheduler classes: only in a trial that waits

        await_decision(self.directory, self._latest, metrics, self.await_decisions, due=due)


KEEP_SCORE = "vlsa_checkpoint_keep"
"""Reported with every checkpoint; the ``CheckpointConfig`` of a segment keeps the highest: every stage's final
checkpoint (the next stage starts from its export, its marker points at it), then the newest others."""
_FINAL = 1e15


def _keep_score(progress: Mapping[str, Any]) -> float:
    if int(progress["step"]) >= int(progress["stage_steps"]):
        return _FINAL + float(progress["stage_index"])
    return float(progress["global_step"])


def _train_worker(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of a segment: its stages in order, each from the previous one's export; the
    stages already marked complete (an earlier attempt, or adopted from a shared prefix) are skipped. Rank 0
    writes each stage's marker, and publishes the stages whose prefix the run claimed (``publish``)."""
    import gc

    import ray.train.collective
    import torch

    from ..train.loop import run_stage

    directory = loop_config["directory"]
    publish_to: dict[str, str] = loop_config.get("publish") or {}
    clock = loop_config.get("rung_clock")
    ctx = _RayWorkerContext(
        directory, loop_config.get("await_decisions"), RungClock.from_dict(clock) if clock else None
    )
    before = loop_config.get("previous")
    previous = StageOutcome(**before) if before else None
    if ctx.rank == 0:
        remove_unreported_checkpoints(directory)
    for data in loop_config["specs"]:
        spec = StageSpec.from_dict(data)
        marker = _complete_marker(directory, spec.stage)
        if storage.exists(marker):
            previous = StageOutcome(**json.loads(storage.read_text(marker)))
            continue
        if previous is not None:
            spec.step_offset = previous.global_step
            spec.init_from = previous.model
            spec.gpu_hours_before = previous.gpu_hours
        ctx.stage, ctx.step_offset = spec.stage, spec.step_offset
        try:
            progress = run_stage(spec, ctx)
        except DivergedError as err:
            # Not a failure for Ray to retry (resumed, the stage would diverge again): every rank ends the
            # segment here and the driver raises it from rank 0's marker (_run_segments).
            if ctx.rank == 0:
                divergence.record(directory, spec.stage, str(err), loop_config.get("launch"))
            return
        # Each rank's report returns once its own files of the final checkpoint are uploaded, not rank 0's:
        # wait for every rank before reading rank 0's progress file here and its export in the next stage.
        ray.train.collective.barrier()
        location = ctx.persisted_checkpoint()
        if location is None or ctx._stage_of(location) != spec.stage:
            raise RuntimeError(f"stage {spec.stage} ended without a checkpoint")
        previous = StageOutcome(
            stage=spec.stage,
            checkpoint=location,
            global_step=int(progress["global_step"]),
            stage_steps=int(progress["stage_steps"]),
            gpu_hours=float(progress["gpu_hours"]),
            metrics={k: float(v) for k, v in ctx.last_metrics.items() if isinstance(v, int | float)},
        )
        if ctx.rank == 0:
            storage.write_text(marker, json.dumps(previous.__dict__, sort_keys=True))
            if spec.stage in publish_to:
                run = {"name": loop_config["run_name"], "directory": directory, "run_id": spec.run_id}
                publish(publish_to[spec.stage], previous.__dict__, run)
        # the stage's model and engine, before the next stage builds its own
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _segments(
    stages: Sequence[dict[str, Any]],
    placements: Mapping[str, ResolvedPlacement],
    ends: Sequence[str] = (),
) -> list[list[int]]:
    """Indices of the planned stages grouped into segments: runs of consecutive stages whose placements ask
    Ray for the same workers (count, GPU, accelerator class); a stage in ``ends`` (an evaluation point) ends
    its segment."""

    def key(stage: dict[str, Any]) -> tuple[Any, ...]:
        placement = placements[stage["name"]]
        return (json.dumps(placement.scaling_config_kwargs(), sort_keys=True, default=str), placement.use_gpu)

    segments: list[list[int]] = []
    for index, stage in enumerate(stages):
        previous = stages[segments[-1][-1]] if segments else None
        if previous is not None and previous["name"] not in ends and key(previous) == key(stage):
            segments[-1].append(index)
        else:
            segments.append([index])
    return segments


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


def _fit_segment(
    specs: Sequence[StageSpec],
    previous: StageOutcome | None,
    publish: Mapping[str, str],
    *,
    placements: Mapping[str, ResolvedPlacement],
    directory: str,
    config: ExperimentConfig,
    run_name: str,
    callbacks: Sequence[Any] = (),
    await_decisions: str | None = None,
    rung_clock: RungClock | None = None,
    launch: str | None = None,
) -> Any:
    """Train one segment (``specs``, after ``previous``) on one ``TorchTrainer``; rank 0 publishes the stages
    in ``publish`` (stage -> prefix folder)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_config = RunConfig(
        name=specs[0].stage,
        storage_path=directory,
        storage_filesystem=storage.arrow_filesystem(directory),
        failure_config=FailureConfig(max_failures=config.storage.max_failures),
        checkpoint_config=CheckpointConfig(
            # the newest keep_checkpoints, and the final one of each of the segment's stages
            num_to_keep=config.storage.keep_checkpoints + len(specs),
            checkpoint_score_attribute=KEEP_SCORE,
            checkpoint_score_order="max",
        ),
        callbacks=list(callbacks) or None,
    )
    if storage.is_s3(directory):  # pyarrow takes the bucket/prefix without the scheme
        run_config.storage_path = directory[len("s3://") :]
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "specs": [spec.to_dict() for spec in specs],
            "previous": dict(previous.__dict__) if previous is not None else None,
            "directory": directory,
            "await_decisions": await_decisions,
            "rung_clock": rung_clock.to_dict() if rung_clock is not None else None,
            "publish": dict(publish),
            "run_name": run_name,
            "launch": launch,
        },
        scaling_config=_scaling_config(placements[specs[0].stage], config.data.loader_workers),
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if placements[specs[0].stage].use_gpu else "gloo"),
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
        tracker.reopen()  # an earlier launch ended it (interrupted, failed); this one continues it
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
    await_decisions: str | None = None,
    rung_clock: RungClock | None = None,
    launch: str | None = None,
    after_stage: AfterStage | None = None,
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
        await_decisions: in a Tune trial whose scheduler posts its decisions (``decisions.DecisionBoard``),
            the sweep metric: after each validation Tune sees, rank 0 waits for the decision on it.
        rung_clock: in a Tune trial of an ASHA sweep (``decisions.worker_clock``): rank 0 writes ASHA's clock
            (``rungs.RUNG_CLOCK``) into every report, and waits for decisions only at its rung ticks.
        launch: this launch of the submission (one per driver), for the divergence markers (:mod:`.divergence`).
        after_stage: called after each finished stage (:data:`AfterStage`): the evaluation step.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("run_training needs a Ray cluster: call ray.init() (or submit) first")
    config = run.config
    name = run_name or run.name
    directory = run_dir(storage_root, config.name, name)
    recorded = claim_run_dir(directory, config)
    placements = stage_placements(run)  # derived once: the plan shows them, the workers get them
    stages = plan_run(run, placements)["stages"]
    tracker = _attach_tracking(directory, run, name, recorded, store, parent_run_id, tags or {})
    resolved = config.resolved()

    def spec_for(index: int) -> StageSpec:
        return StageSpec(
            config=resolved,
            stage=stages[index]["name"],
            stage_index=index,
            placement=placements[stages[index]["name"]],
            steps=stages[index]["steps"],
            run_id=tracker.run_id if tracker else None,
            tracking_uri=store.uri if store else None,
            target_cache=target_cache_root(storage_root, config.name),
        )

    fit = functools.partial(
        _fit_segment, placements=placements, directory=directory, config=config, run_name=name, launch=launch
    )
    fit = functools.partial(fit, callbacks=callbacks, await_decisions=await_decisions, rung_clock=rung_clock)
    rungs_from = rung_clock.from_stage if rung_clock is not None else None
    run_id = tracker.run_id if tracker else None
    sharing = SharedPrefixes.for_run(
        config, storage_root, directory, stages, placements, rungs_from, store=store, run_id=run_id
    )
    status = "FAILED"
    try:
        with sharing.claims.kept_alive() if sharing is not None else contextlib.nullcontext():
            ends, after = _after_stages(config, after_stage, directory, run_id)
            segments = _segments(stages, placements, ends)
            outcomes = _run_segments(name, directory, segments, stages, spec_for, fit, sharing, launch, after)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.close(status=status, timeout=30)
    return TrainingResult(name=name, directory=directory, run_id=run_id, stages=outcomes)


def _after_stages(
    config: ExperimentConfig, after_stage: AfterStage | None, directory: str, run_id: str | None
) -> tuple[list[str], Callable[[StageOutcome], None] | None]:
    """The stages that end a segment for ``after_stage`` (where the config evaluates), and the call after each
    stage's outcome."""
    if after_stage is None:
        return [], None
    ends = config.evaluate.points(list(config.stages)) if config.evaluate is not None else []
    return ends, functools.partial(after_stage, directory=directory, run_id=run_id)


def _run_segments(
    name: str,
    directory: str,
    segments: Sequence[list[int]],
    stages: Sequence[dict[str, Any]],
    spec_for: Callable[[int], StageSpec],
    fit: Callable[[list[StageSpec], StageOutcome | None, Mapping[str, str]], Any],
    sharing: SharedPrefixes | None = None,
    launch: str | None = None,
    after: Callable[[StageOutcome], None] | None = None,
) -> list[StageOutcome]:
    """Fit each segment of run ``name`` in turn (``fit(specs, previous stage's outcome, stages to publish)``),
    skipping those whose stages are all marked complete or adopted from a shared prefix (``sharing``); each
    stage's outcome, in order, each passed to ``after`` at the end of its segment."""
    outcomes: list[StageOutcome] = []
    previous: StageOutcome | None = None
    for segment in segments:
        names_in = [stages[i]["name"] for i in segment]
        to_train = _adopt_front(directory, names_in, previous, sharing)
        if not to_train:
            for stage in names_in:
                log.info("stage %s of %s is complete; skipping it", stage, name)
                previous = _read_marker(directory, stage)
                outcomes.append(previous)
                if after is not None:
                    after(previous)
            continue
        publish = sharing.claim_for_training(to_train) if sharing is not None else {}
        divergence.clear_before_training(name, directory, to_train, launch)
        result = fit([spec_for(i) for i in segment], previous, publish)
        if result.error is not None:
            raise RuntimeError(
                f"stage(s) {', '.join(names_in)} of run {name} failed: {result.error}"
            ) from result.error
        for stage in names_in:
            if not storage.exists(_complete_marker(directory, stage)):
                divergence.raise_recorded(name, directory, stage)
                raise RuntimeError(f"stage {stage} of run {name} ended without completing")
            previous = _read_marker(directory, stage)
            outcomes.append(previous)
            if after is not None:
                after(previous)
    return outcomes


def _adopt_front(
    directory: str, stages: Sequence[str], previous: StageOutcome | None, sharing: SharedPrefixes | None
) -> list[str]:
    """The stages of a segment left to train: those after the ones at its front that are marked complete or,
    in turn, adopted from a shared prefix (waiting while another run trains one; each adopted stage's marker is
    written here, so the segment's workers skip it)."""
    reached = previous
    for index, stage in enumerate(stages):
        marker = _complete_marker(directory, stage)
        if storage.exists(marker):
            reached = _read_marker(directory, stage)
            continue
        first_step = reached.global_step if reached is not None else 0
        adopted = sharing.adopt(stage, first_step) if sharing is not None else None
        if adopted is None:
            return [s for s in stages[index:] if not storage.exists(_complete_marker(directory, s))]
        storage.write_text(marker, json.dumps(adopted, sort_keys=True))
        reached = StageOutcome(**adopted)
    return []


__all__ = [
    "RunConflictError",
    "StageOutcome",
    "TrainingResult",
    "claim_run_dir",
    "config_digest",
    "run_dir",
    "run_training",
]
