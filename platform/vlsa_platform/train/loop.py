"""The per-worker loop of one training stage (DESIGN.md §3: ``train/`` owns it; it never imports Ray).

:func:`run_stage` is what every data-parallel worker of a stage runs. Orchestration hands it a
:class:`StageSpec` (plain JSON: the resolved config, the stage, its resolved placement, where it starts from)
and a :class:`WorkerContext` — rank and world size, the latest checkpoint to resume from, and ``report`` —
which Ray Train implements (``orchestration.training``); :class:`LocalContext` runs it in one process.

One stage:

1. set-up (:func:`_set_up`): builds the model (the previous stage's exported weights, or the initial ones),
   freezes all but the stage's trainable parts, and wraps it in the :class:`~.strategy.DeepSpeedStrategy` of
   the placement, with one AdamW group per part and the stage's warm-up + decay schedule; resumes from the
   latest checkpoint when there is one: engine, optimizer, scheduler, this rank's RNG, and the data position
   (the micro-step) and counters in the client state;
2. fit (:meth:`_StageRun.fit`): trains micro-batch by micro-batch (:func:`~.step.train_step`, loss weights
   from the stage's schedule) until the stage's optimizer steps are done; after each optimizer step its
   duties: every ``tracking.log_every`` steps rank 0 logs the metrics averaged over all ranks and micro-batches
   since the last log (:mod:`.metrics`), every ``validation.every_steps`` (and at the end) the validation
   losses (:mod:`.validate`), every ``tracking.recon_every`` a reconstruction panel; every
   ``checkpoint_every`` steps (and at the end) every rank saves its part of a DeepSpeed checkpoint and
   reports it; ``training.on_nonfinite.skip_limit`` micro-batches in a row skipped for a non-finite loss end
   the stage with :class:`DivergedError` (no checkpoint of the diverged state is written);
3. at the end, exports the whole model (``model/`` in the final checkpoint: safetensors + config), which the
   next stage starts from.

Metric steps are global: a stage's step ``s`` is logged at ``step_offset + s``, so the stages of a run form
one series in MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..config.schema import EffectiveLoss, ExperimentConfig, StageConfig
from ..data.targets import TARGET_KINDS
from ..model.parts import set_trainable
from ..tracking import names
from ..tracking.cost import GpuHoursMeter
from ..tracking.tracker import NullTracker, Tracker, tracker_for_rank
from . import checkpoint_files
from .batches import Batch, StageData, to_device, vq_targets
from .build import build_model, build_tokenizer, write_export
from .frozen_targets import ENCODER_CALLS_METRIC, encoder_calls, latent_targets
from .metrics import MetricWindow, all_reduce, skipped_totals
from .schedules import build_lr_scheduler
from .spec import CHECKPOINT_TAG, EXPORT_DIR, PROGRESS_FILE, DivergedError, StageSpec
from .step import train_step
from .strategy import DeepSpeedStrategy, param_groups
from .validate import Validation, keep_recon, log_reconstruction


class WorkerContext(Protocol):
    """What a worker's environment gives the loop (Ray Train's context in ``orchestration.training``)."""

    rank: int
    world_size: int

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[str | None]:
        """A local folder holding the latest reported checkpoint, or ``None`` on a fresh start."""
        ...

    def checkpoint_folder(self, final: bool) -> contextlib.AbstractContextManager[Path]:
        """The folder this rank writes its files of the next checkpoint into, then reports (inside): the
        checkpoint's own folder in run storage where the workers can write it (nothing is copied), else a local
        staging folder the report uploads. ``final``: the stage's last checkpoint (the next stage reads its
        export). A save that raises inside leaves nothing behind. Every rank calls it together."""
        ...

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        """Report ``metrics`` (and this rank's files of a checkpoint); every rank calls it together."""
        ...


@dataclass
class LocalContext:
    """A one-process :class:`WorkerContext`: checkpoints are kept in ``root/checkpoint_<n>``, copied there
    from a staging folder or, with ``direct``, written there."""

    root: str | None = None
    rank: int = 0
    world_size: int = 1
    reports: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    direct: bool = False
    """Write each checkpoint straight into its folder under ``root`` (as Ray Train's workers do where they
    can write the run storage) instead of staging it and copying it there."""

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield self.checkpoints[-1] if self.checkpoints else None

    def _next(self) -> Path:
        if self.root is None:
            raise ValueError("LocalContext needs a root to keep checkpoints")
        return Path(self.root) / f"checkpoint_{len(self.checkpoints):06d}"

    def checkpoint_folder(self, final: bool = False) -> contextlib.AbstractContextManager[Path]:
        if self.direct:
            target = self._next()
            return checkpoint_files.direct_folder(target, lambda: str(target) in self.checkpoints)
        return checkpoint_files.staging_folder()

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            target = self._next()
            if Path(checkpoint_dir) != target:
                shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.checkpoints.append(str(target))


# ------------------------------------------------------------------------------------------------- set-up


def _seed_worker(seed: int, stage_index: int, rank: int) -> None:
    """Fresh-start RNG of one rank in one stage (L_rec noise and timesteps differ across ranks)."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, stage_index, rank]).generate_state(2)
    value = int(words[0]) << 32 | int(words[1])
    torch.manual_seed(value)
    np.random.seed(int(words[0]))
    import random

    random.seed(value)


def _target_cache(config: ExperimentConfig, spec: StageSpec, model: torch.nn.Module) -> tuple[Any, Any]:
    """``(VQ targets, latent cache)`` through the frozen-target cache: VQ grids for the cognition turns of the
    stage's training data and of the validation set (computed and stored on a miss; built whenever either asks
    VQ questions, whatever ``model.cognition``), and VAE latents read from it when a fill put them there (keyed
    by the model's own frozen VAE and L_rec transform, :func:`.frozen_targets.latent_targets`, so a cache
    filled with other weights never matches). ``(None, None)`` without a cache: no VQ questions, VAE latents
    computed in the forward."""
    if spec.target_cache is None:
        return None, None
    from ..data.targets import CachedTargets, TargetCache

    cache = TargetCache(spec.target_cache)
    vq = vq_targets(config, spec.stage, cache)
    frozen_vae = latent_targets(model)
    return vq, CachedTargets(cache, frozen_vae) if frozen_vae is not None else None


def _check_world(spec: StageSpec, ctx: WorkerContext) -> None:
    """The stage runs on as many workers as it was placed on (or its global batch would change)."""
    if ctx.world_size != spec.placement.num_workers:
        raise ValueError(
            f"stage {spec.stage} is placed on {spec.placement.num_workers} workers but runs on "
            f"{ctx.world_size}: micro-batch x accumulation x workers would no longer give its global batch"
        )


@dataclass
class _Counters:
    """Where a stage stands on this rank (in every checkpoint's client state, restored on resume)."""

    step: int
    """Optimizer steps done in this stage."""
    micro_step: int
    """Micro-batches trained on (the data position)."""
    skipped: Counter[str]
    """Records skipped, by reason."""
    stats: dict[str, int]
    """``skipped_nonfinite`` / ``skipped_no_grad``: micro-batches ``train_step`` skipped."""
    meter: GpuHoursMeter


def _resume(spec: StageSpec, ctx: WorkerContext, strategy: DeepSpeedStrategy, data: StageData) -> _Counters:
    """Load the latest checkpoint into the prepared engine when there is one; the counters it held (or a fresh
    start's: rank 0 counts the records the readers rejected, once)."""
    state: dict[str, Any] = {}
    with ctx.latest_checkpoint() as checkpoint:
        if checkpoint is not None:
            state = strategy.load(checkpoint, tag=CHECKPOINT_TAG)
    skipped: Counter[str] = Counter(state.get("skipped", {}))
    if not state and ctx.rank == 0:  # records the readers rejected (bad JSON, missing keys...), counted once
        skipped.update(skip.reason for skips in data.sources.unreadable.values() for skip in skips)
    return _Counters(
        step=strategy.optimizer_steps,
        micro_step=int(state.get("micro_step", 0)),
        skipped=skipped,
        stats={key: int(state.get(key, 0)) for key in ("skipped_nonfinite", "skipped_no_grad")},
        meter=GpuHoursMeter(
            spec.placement.accelerator,
            ctx.world_size,
            already=float(state.get("gpu_hours", spec.gpu_hours_before)),
        ),
    )


def _set_up(spec: StageSpec, ctx: WorkerContext) -> _StageRun:
    """Build the stage on this worker: model, strategy (prepared), data, resumed counters, tracker and
    validation. Every rank of the stage calls it with the same ``spec``."""
    config = ExperimentConfig.model_validate(spec.config)
    stage = config.stages[spec.stage]
    placement = spec.placement
    _check_world(spec, ctx)
    on_gpu = placement.use_gpu and torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    model = build_model(config, init_from=spec.init_from)
    trainable = set_trainable(model, stage.trainable)
    tokenizer = build_tokenizer(config)
    vq_targets, latent_cache = _target_cache(config, spec, model)
    strategy = DeepSpeedStrategy.from_placement(
        placement,
        bf16=on_gpu,
        max_grad_norm=stage.max_grad_norm,
        activation_checkpointing=config.model.gradient_checkpointing,
    )
    data = StageData(
        config,
        stage,
        model.config,
        tokenizer,
        rank=ctx.rank,
        world_size=ctx.world_size,
        micro_batch=placement.micro_batch,
        by_modality=strategy.needs_same_batch_structure,
        latent_cache=latent_cache,
    )
    data.attach_cognition(spec.stage, vq_targets)
    steps = spec.steps or data.steps_for_epochs(stage.epochs or 1.0, placement.global_batch)

    scheduler = functools.partial(
        build_lr_scheduler, kind=stage.lr_scheduler, total_steps=steps, warmup_ratio=stage.warmup_ratio
    )
    _seed_worker(config.seed, spec.stage_index, ctx.rank)
    strategy.prepare(model, param_groups(model, stage.lr, stage.weight_decay), scheduler)
    counters = _resume(spec, ctx, strategy, data)

    tracker = tracker_for_rank(ctx.rank, spec.run_id, store=spec.tracking_uri)
    tracker.log_deepspeed_config(spec.stage, strategy.ds_config)
    tracker.set_tags({f"vlsa.stage.{spec.stage}.trainable": ",".join(trainable)})
    return _StageRun(
        spec=spec,
        ctx=ctx,
        config=config,
        stage=stage,
        loss=config.stage_loss(spec.stage),
        steps=steps,
        trainable=trainable,
        strategy=strategy,
        data=data,
        counters=counters,
        tracker=tracker,
        validation=Validation.for_stage(config, data, tokenizer, model, ctx.world_size),
        unproven_checkpoint=counters.step or None,  # a checkpoint is written only after an optimizer step
        encoder_calls=functools.partial(encoder_calls, model, vq_targets),
    )


# ---------------------------------------------------------------------------------------------------- fit


@dataclass
class _StageRun:
    """A stage set up on this worker (:func:`_set_up`): the fit loop and its per-step duties."""

    spec: StageSpec
    ctx: WorkerContext
    config: ExperimentConfig
    stage: StageConfig
    loss: EffectiveLoss
    steps: int
    """The stage's optimizer steps."""
    trainable: list[str]
    strategy: DeepSpeedStrategy
    data: StageData
    counters: _Counters
    tracker: Tracker | NullTracker
    validation: Validation
    window: MetricWindow = field(default_factory=MetricWindow)
    recon_due: bool = False
    """A reconstruction panel is due: the next micro-batch with L_rec latents gives it."""
    good_checkpoint: int | None = None
    """Step of the stage's latest checkpoint whose weights then gave a finite loss (in this attempt)."""
    unproven_checkpoint: int | None = None
    """Step of a newer checkpoint (written, or resumed from) whose weights no micro-batch has tried yet: a
    checkpoint is written after an optimizer step, so it may hold the very update that diverged."""
    nonfinite_streak: int = 0
    """Micro-batches skipped in a row for a non-finite loss (``training.on_nonfinite``)."""
    encoder_calls: Callable[[], dict[str, int]] = dict
    """Images this rank's frozen encoders have seen, by kind (:func:`.frozen_targets.encoder_calls`)."""

    def progress(self) -> dict[str, Any]:
        """The stage's progress (a checkpoint's client state and ``progress.json``; what :func:`run_stage`
        returns)."""
        c = self.counters
        return {
            "stage": self.spec.stage,
            "stage_index": self.spec.stage_index,
            "stage_steps": self.steps,
            "step": c.step,
            "global_step": self.spec.step_offset + c.step,
            "micro_step": c.micro_step,
            "gpu_hours": c.meter.value(),
            "skipped": dict(c.skipped),
            "skipped_nonfinite": c.stats["skipped_nonfinite"],
            "skipped_no_grad": c.stats["skipped_no_grad"],
            "trainable": self.trainable,
        }

    def fit(self) -> None:
        """Train from the data position the counters hold until the stage's optimizer steps are done. The batch
        iterator has no end: a skipped micro-batch takes no step, so ``training.on_nonfinite.skip_limit``
        non-finite ones in a row end the stage (:meth:`_count_nonfinite`) instead of looping for ever."""
        c = self.counters
        batches = self.data.batches(start=c.micro_step) if c.step < self.steps else iter(())
        for batch in batches:
            if c.step >= self.steps:
                break
            skipped_before = c.stats["skipped_nonfinite"]
            metrics = self._train(batch)
            self._count_nonfinite(c.stats["skipped_nonfinite"] > skipped_before)
            if metrics["optimizer_step"]:
                self._after_optimizer_step(metrics)

    def log_encoder_calls(self) -> None:
        """Log the images the frozen encoders saw on all ranks in this attempt at the stage, by kind
        (:data:`.frozen_targets.ENCODER_CALLS_METRIC`), once, at the stage's last step. Every rank calls it."""
        calls = self.encoder_calls()
        vector = torch.tensor([float(calls.get(kind, 0)) for kind in TARGET_KINDS], dtype=torch.float64)
        totals = all_reduce(vector, self.strategy.device).tolist()
        metrics = {
            ENCODER_CALLS_METRIC.format(kind=k): float(n) for k, n in zip(TARGET_KINDS, totals, strict=True)
        }
        self.tracker.log_metrics(metrics, self.spec.step_offset + self.counters.step)

    def _count_nonfinite(self, skipped: bool) -> None:
        """Count a micro-batch skipped for a non-finite loss (every rank skips it together, so every rank
        counts alike); at ``skip_limit`` in a row, apply the policy: ``stop`` raises :class:`DivergedError` on
        every rank, after rank 0 tagged the run with the reason, which names the last good checkpoint (one that
        a finite loss followed: a checkpoint holds the weights after its step's update, which may be the one
        that diverged). No checkpoint is written on the way out."""
        if not skipped:
            self.nonfinite_streak = 0
            if self.unproven_checkpoint is not None:  # its weights just gave a finite loss
                self.good_checkpoint, self.unproven_checkpoint = self.unproven_checkpoint, None
            return
        self.nonfinite_streak += 1
        policy = self.config.training.on_nonfinite
        if self.nonfinite_streak < policy.skip_limit:
            return
        c = self.counters
        reason = (
            f"stage {self.spec.stage} diverged: {self.nonfinite_streak} consecutive micro-batches had a "
            f"non-finite loss (training.on_nonfinite.skip_limit {policy.skip_limit}, action {policy.action}) "
            f"at step {c.step} of {self.steps} (global step {self.spec.step_offset + c.step}, micro-step "
            f"{c.micro_step}); {self._last_good()}"
        )
        # A tag, not a metric: the step was logged already, and a (key, step) is sent once.
        self.tracker.set_tags({names.TAG_FAILURE: reason})
        raise DivergedError(reason)

    def _last_good(self) -> str:
        """Which checkpoint of the stage is the last good one, in words (for the divergence reason)."""
        if self.good_checkpoint is not None:
            good = f"its last good checkpoint (a finite loss followed it) is at step {self.good_checkpoint}"
        else:
            good = "no checkpoint of it was followed by a finite loss in this attempt"
        if self.unproven_checkpoint is None:
            return good
        return (
            f"{good}; only non-finite losses followed the one at step {self.unproven_checkpoint} "
            "(it may hold the update that diverged)"
        )

    def _train(self, batch: Batch) -> dict[str, float]:
        """One micro-batch; its reconstruction panel when one is due and the batch has L_rec latents."""
        c = self.counters
        captured: list[tuple[torch.Tensor, ...]] = []
        capture = self.recon_due and (self.ctx.rank == 0 or self.strategy.zero_stage == 3)
        metrics = train_step(
            self.strategy,
            to_device(batch.tensors, self.strategy.device),
            self.loss.weights(c.step / self.steps),
            c.stats,
            on_output=functools.partial(keep_recon, captured, self.config.tracking.recon_samples)
            if capture
            else None,
        )
        c.micro_step += 1
        c.skipped.update(skip.reason for skip in batch.skips)
        self.window.add(metrics, batch.samples)
        if captured:
            global_step = self.spec.step_offset + c.step
            log_reconstruction(self.strategy, self.tracker, batch, captured[0], global_step, self.spec.stage)
            self.recon_due = False
        return metrics

    def _after_optimizer_step(self, metrics: dict[str, float]) -> None:
        """The duties of an optimizer step: log, validate, checkpoint (or report what was logged)."""
        c = self.counters
        c.step += 1
        global_step = self.spec.step_offset + c.step
        last = c.step == self.steps
        recon_every = self.config.tracking.recon_every if self.config.model.recon else None
        if recon_every and c.step % recon_every == 0:
            self.recon_due = True
        report: dict[str, float] = {}
        if c.step % self.config.tracking.log_every == 0 or last:
            report.update(self._log(metrics, global_step))
        if self.validation.due(c.step, last):
            report.update(self._validate(global_step))
        every_checkpoint = self.stage.checkpoint_every
        if (every_checkpoint and c.step % every_checkpoint == 0) or last:
            _checkpoint(self.strategy, self.ctx, report, self.progress(), model_export=last, spec=self.spec)
            self.unproven_checkpoint = c.step
            self.window.started = time.perf_counter()
        elif report:
            self.ctx.report({**report, "global_step": float(global_step)})

    def _log(self, metrics: dict[str, float], global_step: int) -> dict[str, float]:
        """Log the window's means over all ranks with the step's learning rates, cost and skip counts; the
        logged metrics."""
        c = self.counters
        report = self.window.reduce(self.strategy.device)
        report.update(
            {
                names.LR: metrics["lr"],
                **{k: v for k, v in metrics.items() if k.startswith("lr/")},
                names.STAGE: float(self.spec.stage_index),
                names.COST_GPU_HOURS: c.meter.value(),
                "train/skipped_nonfinite": float(c.stats["skipped_nonfinite"]),
                "train/skipped_no_grad": float(c.stats["skipped_no_grad"]),
            }
        )
        if "grad_norm" in metrics:
            report["grad_norm"] = metrics["grad_norm"]
        self.tracker.log_metrics(report, global_step)
        self.tracker.log_skipped(skipped_totals(c.skipped, self.strategy.device), global_step)
        self.window.reset()
        return report

    def _validate(self, global_step: int) -> dict[str, float]:
        """One validation pass, logged; its metrics with the stage's index (a validation between logging
        steps names its stage too)."""
        val = self.validation.run(self.strategy)
        self.tracker.log_metrics(val, global_step)
        self.window.started = time.perf_counter()
        return {**val, names.STAGE: float(self.spec.stage_index)}


def _checkpoint(
    strategy: DeepSpeedStrategy,
    ctx: WorkerContext,
    metrics: dict[str, float],
    progress: dict[str, Any],
    *,
    model_export: bool,
    spec: StageSpec,
) -> None:
    """Every rank writes its part of the checkpoint into the folder the context gives (the checkpoint's own
    folder in run storage, or a staging folder: :meth:`WorkerContext.checkpoint_folder`), after checking its
    file system has room for it, and reports it (Ray merges the ranks' parts into one); the final one also
    holds the exported model (written by rank 0). Outside staging the files are put on disk before rank 0's
    ``progress.json``, the marker, is renamed into place last."""
    export_here = model_export and ctx.rank == 0
    with ctx.checkpoint_folder(final=model_export) as where:
        folder = Path(where)
        extra = strategy.model_bytes() if export_here else 0
        strategy.save(folder, client_state=progress, tag=CHECKPOINT_TAG, extra_bytes=extra)
        state = strategy.full_state_dict() if model_export else None
        if ctx.rank == 0 and state is not None:
            described = {k: v for k, v in spec.to_dict().items() if k != "config"}
            described["placement"] = spec.placement.as_plan()  # as the plan shows it
            info = {**progress, "spec": described}
            write_export(folder / EXPORT_DIR, state, strategy.engine.module.config, info)
        if not checkpoint_files.is_staging(folder):
            checkpoint_files.sync_files(folder)
        if ctx.rank == 0:
            checkpoint_files.write_marker(folder / PROGRESS_FILE, json.dumps(progress, sort_keys=True))
        ctx.report({**metrics, "global_step": float(progress["global_step"])}, str(folder))


def run_stage(spec: StageSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Run (or resume) one stage on this worker; returns its final progress (``global_step``,
    ``stage_steps``, ``gpu_hours``...). Every rank of the stage calls it with the same ``spec``. It first removes
    the checkpoint staging folders that killed workers on this host left behind."""
    checkpoint_files.remove_leaked_staging()
    run = _set_up(spec, ctx)
    try:
        run.fit()
        run.log_encoder_calls()
        return run.progress()
    finally:
        run.tracker.close(timeout=30)
        run.strategy.release()


__all__ = [
    "CHECKPOINT_TAG",
    "EXPORT_DIR",
    "PROGRESS_FILE",
    "DivergedError",
    "LocalContext",
    "StageSpec",
    "WorkerContext",
    "run_stage",
]
