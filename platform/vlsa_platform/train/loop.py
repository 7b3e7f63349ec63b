"""The per-worker loop of one training stage (DESIGN.md §3: ``train/`` owns it; it never imports Ray).

:func:`run_stage` is what every data-parallel worker of a stage runs. Orchestration hands it a
:class:`StageSpec` (plain JSON: the resolved config, the stage, its resolved placement, where it starts from)
and a :class:`WorkerContext` — rank and world size, the latest checkpoint to resume from, and ``report`` —
which Ray Train implements (``orchestration.training``); :class:`LocalContext` runs it in one process.

One stage:

1. builds the model (the previous stage's exported weights, or the initial ones), freezes all but the
   stage's trainable parts, and wraps it in the :class:`~.strategy.DeepSpeedStrategy` of the placement, with
   one AdamW group per part and the stage's warm-up + decay schedule;
2. resumes from the latest checkpoint when there is one: engine, optimizer, scheduler, this rank's RNG, and
   the data position (the micro-step) and counters in the client state;
3. trains micro-batch by micro-batch (:func:`~.step.train_step`, loss weights from the stage's schedule) until
   the stage's optimizer steps are done; every ``tracking.log_every`` steps rank 0 logs the metrics averaged
   over all ranks and micro-batches since the last log, every ``validation.every_steps`` (and at the end)
   the validation losses, every ``tracking.recon_every`` a reconstruction panel; every ``checkpoint_every``
   steps (and at the end) every rank saves its part of a DeepSpeed checkpoint and reports it;
4. at the end, exports the whole model (``model/`` in the final checkpoint: safetensors + config), which the
   next stage starts from.

Metric steps are global: a stage's step ``s`` is logged at ``step_offset + s``, so the stages of a run form
one series in MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..cluster import AcceleratorTable, accelerator_for
from ..config.schema import ExperimentConfig
from ..data.types import SKIP_REASONS
from ..eval.psnr import psnr, to_unit_range
from ..eval.validation import GenerationSettings, SampleCollector, Tally, decode_samples
from ..model.parts import set_trainable
from ..tracking import names
from ..tracking.cost import GpuHoursMeter
from ..tracking.tracker import NullTracker, Tracker, tracker_for_rank
from .build import build_model, build_tokenizer, write_export
from .data import Batch, StageData, cognition_hook
from .schedules import build_lr_scheduler
from .spec import CHECKPOINT_TAG, EXPORT_DIR, PROGRESS_FILE, StageSpec
from .step import LOSS_PARTS, check_same_structure, train_step
from .strategy import DeepSpeedStrategy, param_groups


class WorkerContext(Protocol):
    """What a worker's environment gives the loop (Ray Train's context in ``orchestration.training``)."""

    rank: int
    world_size: int

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[str | None]:
        """A local folder holding the latest reported checkpoint, or ``None`` on a fresh start."""
        ...

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        """Report ``metrics`` (and this rank's files of a checkpoint); every rank calls it together."""
        ...


@dataclass
class LocalContext:
    """A one-process :class:`WorkerContext`: checkpoints are copied to ``root/checkpoint_<n>``."""

    root: str | None = None
    rank: int = 0
    world_size: int = 1
    reports: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield self.checkpoints[-1] if self.checkpoints else None

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            if self.root is None:
                raise ValueError("LocalContext needs a root to keep checkpoints")
            target = Path(self.root) / f"checkpoint_{len(self.checkpoints):06d}"
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.checkpoints.append(str(target))


# ------------------------------------------------------------------------------------------------ metrics


class MetricWindow:
    """Sums and counts of the per-micro-batch metrics since the last log, averaged over every rank."""

    KEYS = tuple(f"loss/{part}" for part in ("total", *LOSS_PARTS))

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros(len(self.KEYS))
        self.counts = np.zeros(len(self.KEYS))
        self.micro_batches = 0
        self.samples = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, float], samples: int) -> None:
        for i, key in enumerate(self.KEYS):
            value = metrics.get(key, math.nan)
            if math.isfinite(value):
                self.sums[i] += value
                self.counts[i] += 1
        self.micro_batches += 1
        self.samples += samples

    def reduce(self, device: torch.device) -> dict[str, float]:
        """Means over all ranks (NaN for a part no rank had), and ``throughput/samples_per_s``."""
        packed = torch.tensor([*self.sums, *self.counts, float(self.samples)], dtype=torch.float64)
        packed = _all_reduce(packed, device)
        n = len(self.KEYS)
        sums, counts, samples = packed[:n], packed[n : 2 * n], float(packed[-1])
        out = {key: float(sums[i] / counts[i]) if counts[i] else math.nan for i, key in enumerate(self.KEYS)}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out[names.THROUGHPUT] = samples / elapsed
        return out


def _all_reduce(tensor: torch.Tensor, device: torch.device, op: Any = None) -> torch.Tensor:
    """Sum (or ``op``) over ranks (a no-op without a process group); NCCL needs the tensor on the GPU."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    on = tensor.to(device) if torch.distributed.get_backend() == "nccl" else tensor
    torch.distributed.all_reduce(on, op=torch.distributed.ReduceOp.SUM if op is None else op)
    return on.cpu()


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _skip_vector(counts: Counter[str]) -> torch.Tensor:
    return torch.tensor([float(counts.get(reason, 0)) for reason in SKIP_REASONS], dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ the loop


def _seed_worker(seed: int, stage_index: int, rank: int) -> None:
    """Fresh-start RNG of one rank in one stage (L_rec noise and timesteps differ across ranks)."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, stage_index, rank]).generate_state(2)
    value = int(words[0]) << 32 | int(words[1])
    torch.manual_seed(value)
    np.random.seed(int(words[0]))
    import random

    random.seed(value)


def _placement_settings(config: ExperimentConfig, spec: StageSpec) -> tuple[Any, bool]:
    """``(accelerator class, use the GPU)`` of the stage."""
    stage = config.stages[spec.stage]
    table = AcceleratorTable.from_config(config.cluster)
    accelerator = accelerator_for(stage.placement, table, f"stages.{spec.stage}.placement")
    return accelerator, bool(spec.placement.get("use_gpu")) and torch.cuda.is_available()


def _target_cache(config: ExperimentConfig, spec: StageSpec, model: torch.nn.Module) -> tuple[Any, Any]:
    """``(VQ targets, latent cache)`` through the frozen-target cache: VQ grids for the cognition turns
    (computed and stored on a miss), and VAE latents read from it when a fill put them there (keyed by the
    model's own frozen VAE, so a cache filled with other weights never matches). ``(None, None)`` without a
    cache: no VQ questions, VAE latents computed in the forward."""
    if spec.target_cache is None:
        return None, None
    from ..data.targets import CachedTargets, FrozenTargets, TargetCache, build_frozen_targets

    cache = TargetCache(spec.target_cache)
    vq = None
    if config.model.cognition and config.data.cognition.p_vq > 0:
        frozen = build_frozen_targets(
            config.model.preset,
            kinds=("vq",),
            max_grid=tuple(config.model.max_grid),
            vq_source=config.model.weights.vq,
            seed=config.seed,
        )
        vq = CachedTargets(cache, frozen)
    latent = None
    recon = getattr(model, "reconstruction", None)
    if recon is not None:
        frozen_vae = FrozenTargets(vae=recon.vae, recon_resolution=model.config.recon_resolution)
        latent = CachedTargets(cache, frozen_vae)
    return vq, latent


def run_stage(spec: StageSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Run (or resume) one stage on this worker; returns its final progress (``global_step``,
    ``stage_steps``, ``gpu_hours``...). Every rank of the stage calls it with the same ``spec``."""
    config = ExperimentConfig.model_validate(spec.config)
    stage = config.stages[spec.stage]
    loss = config.stage_loss(spec.stage)
    placement = spec.placement
    if ctx.world_size != placement["num_workers"]:
        raise ValueError(
            f"stage {spec.stage} is placed on {placement['num_workers']} workers but runs on {ctx.world_size}: "
            "micro-batch x accumulation x workers would no longer give its global batch"
        )
    accelerator, on_gpu = _placement_settings(config, spec)
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
        micro_batch=placement["micro_batch"],
        by_modality=strategy.needs_same_batch_structure,
        latent_cache=latent_cache,
    )
    vq_lookup = vq_targets.vq_lookup(data.sources.image_roots) if vq_targets is not None else None
    data.cognition = cognition_hook(config, vq_lookup)
    steps = spec.steps or data.steps_for_epochs(stage.epochs or 1.0, placement["global_batch"])

    scheduler = functools.partial(
        build_lr_scheduler, kind=stage.lr_scheduler, total_steps=steps, warmup_ratio=stage.warmup_ratio
    )
    _seed_worker(config.seed, spec.stage_index, ctx.rank)
    strategy.prepare(model, param_groups(model, stage.lr, stage.weight_decay), scheduler)

    state: dict[str, Any] = {}
    with ctx.latest_checkpoint() as checkpoint:
        if checkpoint is not None:
            state = strategy.load(checkpoint, tag=CHECKPOINT_TAG)
    micro_step = int(state.get("micro_step", 0))
    step = strategy.optimizer_steps
    skipped: Counter[str] = Counter(state.get("skipped", {}))
    if not state and ctx.rank == 0:  # records the readers rejected (bad JSON, missing keys...), counted once
        skipped.update(skip.reason for skips in data.sources.unreadable.values() for skip in skips)
    stats = {key: int(state.get(key, 0)) for key in ("skipped_nonfinite", "skipped_no_grad")}
    meter = GpuHoursMeter(
        accelerator, ctx.world_size, already=float(state.get("gpu_hours", spec.gpu_hours_before))
    )

    tracker = tracker_for_rank(ctx.rank, spec.run_id, store=spec.tracking_uri)
    tracker.log_deepspeed_config(spec.stage, strategy.ds_config)
    tracker.set_tags({f"vlsa.stage.{spec.stage}.trainable": ",".join(trainable)})

    validation = data.validation_batches()
    val_every = config.data.validation.every_steps if config.data.validation else None
    generation = _generation_settings(config, tokenizer, model, ctx.world_size)
    psnr_images = (
        _per_rank(config.data.validation.psnr_images, ctx.world_size) if config.data.validation else None
    )
    log_every, recon_every = config.tracking.log_every, config.tracking.recon_every
    if not config.model.recon:
        recon_every = None
    every_ckpt = stage.checkpoint_every
    recon_due = False
    window = MetricWindow()

    def progress() -> dict[str, Any]:
        return {
            "stage": spec.stage,
            "stage_index": spec.stage_index,
            "stage_steps": steps,
            "step": step,
            "global_step": spec.step_offset + step,
            "micro_step": micro_step,
            "gpu_hours": meter.value(),
            "skipped": dict(skipped),
            "skipped_nonfinite": stats["skipped_nonfinite"],
            "skipped_no_grad": stats["skipped_no_grad"],
            "trainable": trainable,
        }

    try:
        batches = data.batches(start=micro_step) if step < steps else iter(())
        for batch in batches:
            if step >= steps:
                break
            weights = loss.weights(step / steps)
            captured: list[tuple[torch.Tensor, ...]] = []
            capture = recon_due and (ctx.rank == 0 or strategy.zero_stage == 3)
            metrics = train_step(
                strategy,
                _to_device(batch.tensors, strategy.device),
                weights,
                stats,
                on_output=functools.partial(_keep_recon, captured, config.tracking.recon_samples)
                if capture
                else None,
            )
            micro_step += 1
            skipped.update(skip.reason for skip in batch.skips)
            window.add(metrics, batch.samples)
            if captured:
                _log_reconstruction(
                    strategy, tracker, batch, captured[0], spec.step_offset + step, spec.stage
                )
                recon_due = False
            if not metrics["optimizer_step"]:
                continue

            step += 1
            global_step = spec.step_offset + step
            last = step == steps
            if recon_every and step % recon_every == 0:
                recon_due = True
            report: dict[str, float] = {}
            if step % log_every == 0 or last:
                report.update(window.reduce(strategy.device))
                report.update(
                    {
                        names.LR: metrics["lr"],
                        **{k: v for k, v in metrics.items() if k.startswith("lr/")},
                        names.STAGE: float(spec.stage_index),
                        names.COST_GPU_HOURS: meter.value(),
                        "train/skipped_nonfinite": float(stats["skipped_nonfinite"]),
                        "train/skipped_no_grad": float(stats["skipped_no_grad"]),
                    }
                )
                if "grad_norm" in metrics:
                    report["grad_norm"] = metrics["grad_norm"]
                tracker.log_metrics(report, global_step)
                totals = _all_reduce(_skip_vector(skipped), strategy.device)
                tracker.log_skipped(
                    {reason: int(n) for reason, n in zip(SKIP_REASONS, totals.tolist(), strict=True)},
                    global_step,
                )
                window.reset()
            if validation is not None and ((val_every and step % val_every == 0) or last):
                val = evaluate(strategy, validation, config.seed, generation, psnr_images)
                tracker.log_metrics(val, global_step)
                report.update(val)
                report[names.STAGE] = float(
                    spec.stage_index
                )  # a validation between logging steps names its stage too
                window.started = time.perf_counter()
            if (every_ckpt and step % every_ckpt == 0) or last:
                _checkpoint(strategy, ctx, report, progress(), model_export=last, spec=spec)
                window.started = time.perf_counter()
            elif report:
                ctx.report({**report, "global_step": float(global_step)})
        return progress()
    finally:
        tracker.close(timeout=30)
        strategy.release()


def _keep_recon(captured: list[tuple[torch.Tensor, ...]], samples: int, out: Any) -> None:
    if getattr(out, "recon_denoised", None) is not None:
        captured.append((out.recon_latents.detach()[:samples], out.recon_denoised.detach()[:samples]))


def _log_reconstruction(
    strategy: DeepSpeedStrategy,
    tracker: Tracker | NullTracker,
    batch: Batch,
    captured: tuple[torch.Tensor, ...],
    step: int,
    stage: str,
) -> None:
    """Decode the denoised latents (and, without target pixels, the clean ones) with the frozen VAE; rank 0
    logs ground truth beside reconstruction. Under ZeRO-3 every rank decodes (the VAE is gathered)."""
    latents, denoised = captured
    recon = strategy.engine.module.reconstruction
    with torch.no_grad(), strategy.gathered(recon.vae):
        decoded = recon.decode(denoised.to(recon.vae.dtype))
        pixels = batch.tensors.get("recon_pixel_values")
        truth = pixels[: len(decoded)] if pixels is not None else recon.decode(latents.to(recon.vae.dtype))
    tracker.log_reconstruction(truth.float().cpu(), decoded.float().cpu(), step, stage)


def _per_rank(count: int | None, world_size: int) -> int | None:
    """A per-pass count over all ranks as each rank's share (rounded up; ``None`` stays ``None``)."""
    return None if count is None else math.ceil(count / world_size)


def _generation_settings(
    config: ExperimentConfig, tokenizer: Any, model: torch.nn.Module, world_size: int
) -> GenerationSettings | None:
    """How validation decodes answers on this rank (``data.validation.generate_*``), ``None`` for no decoding."""
    validation = config.data.validation
    if validation is None or validation.generate_samples == 0:
        return None
    return GenerationSettings.for_model(
        tokenizer,
        model,
        samples=_per_rank(validation.generate_samples, world_size),
        extra_tokens=validation.generate_extra_tokens,
        batch_size=validation.generate_batch,
        vq_format=config.data.cognition.vq_format,
    )


def _own_parameters_gathered(strategy: DeepSpeedStrategy, module: torch.nn.Module) -> Any:
    """Context in which ``module``'s own parameters (not its sub-modules') are whole on every rank. ZeRO-3
    gathers them in the module's forward hook, which ``generate`` does not go through (anyres's
    ``image_newline`` is one); sub-modules gather theirs in their own hooks. Every rank enters it together."""
    if strategy.zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=None)


def _reconstruction_psnr(
    strategy: DeepSpeedStrategy, batch: dict[str, torch.Tensor], out: Any, limit: int | None
) -> torch.Tensor:
    """Per-image PSNR (dB, pixels in [0, 1]) of the frozen VAE's decoding of the denoised latents ``z_hat``
    of the batch's first ``limit`` images (``None``: all) against their L_rec target pixels; a batch with cached latents
    instead of pixels is compared with the VAE's decoding of the clean latents ``z``. Under ZeRO-3 every rank
    decodes (the VAE is gathered; the ranks' batches have the same structure, so the same images count)."""
    recon = strategy.engine.module.reconstruction
    with strategy.gathered(recon.vae):
        decoded = recon.decode(out.recon_denoised[:limit].to(recon.vae.dtype))
        pixels = batch.get("recon_pixel_values")
        if pixels is not None:
            truth = pixels[:limit]
        else:
            truth = recon.decode(out.recon_latents[:limit].to(recon.vae.dtype))
    return psnr(to_unit_range(decoded), to_unit_range(truth))


def evaluate(
    strategy: DeepSpeedStrategy,
    batches: Any,
    seed: int,
    generation: GenerationSettings | None = None,
    psnr_images: int | None = None,
) -> dict[str, float]:
    """One validation pass; every rank calls it together. Means over every rank's validation shard of:

    - ``val/loss_llm``, ``val/loss_rec``: over the validation micro-batches, with the RNG (L_rec timesteps and
      noise) seeded the same on every pass so values are comparable across steps;
    - ``val/psnr``: over the first ``psnr_images`` images of the shard with an L_rec target (``None`` = all;
      NaN without ``recon``);
    - ``val/exact_match``, ``val/vq_accuracy``, ``val/px_accuracy``: greedy answers to the first
      ``generation.samples`` samples of the shard (``eval.validation``; NaN without ``generation``, and the
      cognition ones without such questions).
    """
    engine = strategy.engine
    model = engine.module
    sums = torch.zeros(4, dtype=torch.float64)  # llm sum, llm count, rec sum, rec count
    tally = Tally()
    collector = SampleCollector(generation) if generation is not None and generation.samples > 0 else None
    in_step = strategy.zero_stage == 3 and strategy.world_size_now > 1
    psnr_left = psnr_images  # None: every image
    devices = (
        [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    )
    engine.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(
                seed + 1_000_003 * (torch.distributed.get_rank() if torch.distributed.is_initialized() else 0)
            )
            for batch in batches:
                if collector is not None:
                    collector.add(batch.tensors)
                tensors = _to_device(batch.tensors, strategy.device)
                if in_step:
                    check_same_structure(tensors)
                out = strategy.forward(**tensors)
                for i, value in ((0, out.loss_llm), (2, out.loss_rec)):
                    if value is not None and torch.isfinite(value):
                        sums[i] += float(value)
                        sums[i + 1] += 1
                if getattr(out, "recon_denoised", None) is not None and (psnr_left is None or psnr_left > 0):
                    values = _reconstruction_psnr(strategy, tensors, out, psnr_left).cpu()
                    tally.add_psnr(values)
                    psnr_left = None if psnr_left is None else psnr_left - len(values)
            if collector is not None:
                sync = (
                    functools.partial(_all_reduce, device=strategy.device, op=torch.distributed.ReduceOp.MAX)
                    if in_step
                    else None
                )
                with _own_parameters_gathered(strategy, model):
                    decode_samples(
                        model, collector.samples, generation, tally, device=strategy.device, sync=sync
                    )
    finally:
        engine.train()
    packed = _all_reduce(torch.cat([sums, tally.to_tensor()]), strategy.device)
    sums, means = packed[:4], Tally.from_tensor(packed[4:]).means()
    return {
        names.VAL_LOSS_LLM: float(sums[0] / sums[1]) if sums[1] else math.nan,
        names.VAL_LOSS_REC: float(sums[2] / sums[3]) if sums[3] else math.nan,
        names.VAL_EXACT_MATCH: means["exact_match"],
        names.VAL_VQ_ACCURACY: means["vq_accuracy"],
        names.VAL_PX_ACCURACY: means["px_accuracy"],
        names.VAL_PSNR: means["psnr"],
    }


def _checkpoint(
    strategy: DeepSpeedStrategy,
    ctx: WorkerContext,
    metrics: dict[str, float],
    progress: dict[str, Any],
    *,
    model_export: bool,
    spec: StageSpec,
) -> None:
    """Every rank writes its part of the checkpoint to a temporary folder and reports it (Ray merges the
    ranks' folders into one); the final one also holds the exported model (written by rank 0)."""
    folder = tempfile.mkdtemp(prefix="vlsa-ckpt-")
    try:
        strategy.save(folder, client_state=progress, tag=CHECKPOINT_TAG)
        state = strategy.full_state_dict() if model_export else None
        if ctx.rank == 0:
            if state is not None:
                info = {**progress, "spec": {k: v for k, v in spec.to_dict().items() if k != "config"}}
                write_export(Path(folder) / EXPORT_DIR, state, strategy.engine.module.config, info)
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps(progress, sort_keys=True))
        ctx.report({**metrics, "global_step": float(progress["global_step"])}, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = [
    "CHECKPOINT_TAG",
    "EXPORT_DIR",
    "PROGRESS_FILE",
    "LocalContext",
    "MetricWindow",
    "StageSpec",
    "WorkerContext",
    "evaluate",
    "run_stage",
]
