"""The measurements of ``benchmarks/gpu``, run in its child process: one stage-III training step per vision mode
(tokens/s, MFU, peak memory) and the platform's step against a plain loop at a size that fits both at once.

A training step is what one GPU of stage III does per optimizer step: ``grad_accum`` micro-batches of
``micro_batch`` samples (the file's placement: 4 and 128 / (8 x 4) = 4) forward and backward with the stage's
loss weights, gradient clipping, then fused AdamW over the bf16 parameters (bf16 moments: a single card holds no
fp32 master copy of a model this size next to its activations; under the stage's ZeRO-3 over 8 GPUs each holds
an eighth of DeepSpeed's fp32 states, and its optimizer step costs an eighth of this one). Each part stops timing
steps when its share of the time budget would be overrun (``end``, seconds since the epoch).
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from hardware import describe_device
from workload import (
    ROOT,
    STAGE,
    Dims,
    experiment,
    flops_per_sample,
    image_side,
    model_config,
    synthetic_batch,
)

from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration
from vlsa_platform.model.parts import set_trainable
from vlsa_platform.train.strategy import param_groups


@dataclass(frozen=True)
class Settings:
    """Everything a run is measured with (kept in the JSON file)."""

    tiny: bool
    """The CPU fallback: the file's ``--scale tiny`` model, few steps."""
    dims: Dims
    """The stepped model's depths and vocabulary (``Dims()`` under ``tiny``)."""
    overhead_dims: Dims
    """The overhead part's (its plain loop and DeepSpeed engine hold the model twice, fp32 states included)."""
    micro_batch: int | None
    """Samples per micro-batch; ``None``: stage III's placement (4)."""
    grad_accum: int | None
    """Micro-batches per optimizer step; ``None``: stage III's placement (global 128 / 8 workers / 4 = 4)."""
    text_tokens: int
    """Labelled text tokens per sample after the image (``benchmarks/compression.py``'s 64)."""
    checkpointing: bool | None
    """Activation checkpointing; ``None``: the file's ``model.gradient_checkpointing`` (on)."""
    warmup: int
    steps: int
    """Timed steps per mode at most (fewer when the time budget says so)."""
    overhead_warmup: int
    overhead_steps: int
    """Timed steps per loop per round of the overhead part."""
    overhead_rounds: int
    """Rounds at most (fewer when the time budget says so)."""
    zero_stage: int
    """The platform loop's ZeRO stage (one rank)."""
    peak_tflops: float | None
    """bf16 dense peak to take MFU against; ``None``: the accelerator table's for the detected card."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def release() -> None:
    """Give the freed memory back (the next part measures its own peak)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(
    step: Callable[[], float], warmup: int, steps: int, end: float, dev: torch.device
) -> dict[str, Any]:
    """Run ``warmup`` then up to ``steps`` timed calls of ``step``; stop timing when the next step (at the
    median so far) would end after ``end``. At least one step is timed."""
    warm, times, loss = [], [], float("nan")
    for i in range(warmup + steps):
        estimate = statistics.median(times) if times else (warm[-1] if warm else 0.0)
        if i > warmup and time.time() + estimate > end:
            break
        _sync(dev)
        start = time.perf_counter()
        loss = step()
        _sync(dev)
        (warm if i < warmup else times).append(time.perf_counter() - start)
    return {"warmup_s_raw": warm, "step_s_raw": times, "stopped_by_budget": len(times) < steps, "loss": loss}


def _build(vlsa: Any, dev: torch.device, dtype: torch.dtype) -> VLSAForConditionalGeneration:
    """Random weights, built in place on the device (no host copy, nothing downloaded)."""
    torch.manual_seed(0)
    with torch.device(dev):
        model = VLSAForConditionalGeneration(vlsa)
    return model.to(dtype)


def _micro_and_accum(placement: Any, settings: Settings) -> tuple[int, int]:
    micro = settings.micro_batch or placement.micro_batch or 1
    accum = settings.grad_accum or placement.grad_accum
    if accum is None:
        accum = max(1, placement.global_batch // ((placement.num_workers or 1) * micro))
    return micro, accum


def _layers(vlsa: Any) -> dict[str, int | None]:
    return {
        "llm": vlsa.text_config.num_hidden_layers,
        "vision": vlsa.vision_config.num_hidden_layers,
        "denoiser": (vlsa.denoiser_config or {}).get("num_layers"),
        "vocab": vlsa.text_config.vocab_size,
    }


class StageStep:
    """One GPU's stage-III optimizer step (module docs) on a model of random weights and a fixed micro-batch."""

    def __init__(self, mode: str, settings: Settings, dev: torch.device) -> None:
        self.config = experiment(mode, settings.tiny, settings.checkpointing)
        stage = self.config.stages[STAGE]
        self.weights = self.config.stage_loss(STAGE)
        self.vlsa = model_config(self.config, settings.dims)
        self.micro, self.accum = _micro_and_accum(stage.placement, settings)
        self.dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        self.model = _build(self.vlsa, dev, self.dtype)
        self.trained = set_trainable(self.model, stage.trainable)
        if self.config.model.gradient_checkpointing:
            self.model.enable_activation_checkpointing()
        self.model.train()
        groups = [
            {k: v for k, v in g.items() if k not in ("name", "part")}
            for g in param_groups(self.model, stage.lr, 0.0)
        ]
        self.optimizer = torch.optim.AdamW(groups, fused=dev.type == "cuda")
        self.params = [p for g in groups for p in g["params"]]
        self.batch, self.visual, self.seq = synthetic_batch(self.vlsa, self.micro, settings.text_tokens, dev)

    def step(self) -> float:
        """``accum`` micro-batches forward and backward (the stage's loss weights), clipping, AdamW."""
        for _ in range(self.accum):
            out = self.model(**self.batch)
            loss = self.weights.llm_weight * out.loss_llm
            if out.loss_rec is not None and self.weights.rec_weight > 0:
                loss = loss + self.weights.rec_weight * out.loss_rec
            (loss / self.accum).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def describe(self) -> dict[str, Any]:
        """What was stepped: geometry, batch, sizes, and the model FLOPs per sample by part."""
        flops = flops_per_sample(self.config, self.vlsa, self.trained, self.visual, self.seq)
        return {
            "image_px": image_side(self.vlsa),
            "visual_tokens_per_image": self.visual,
            "llm_tokens_per_sample": self.seq,
            "micro_batch": self.micro,
            "grad_accum": self.accum,
            "activation_checkpointing": self.config.model.gradient_checkpointing,
            "dtype": str(self.dtype).removeprefix("torch."),
            "layers": _layers(self.vlsa),
            "params": sum(p.numel() for p in self.model.parameters()),
            "trainable_params": sum(p.numel() for p in self.params),
            "parts_trained": self.trained,
            "loss_weights": {
                "llm": self.weights.llm_weight,
                "rec": self.weights.rec_weight if self.vlsa.recon else 0.0,
            },
            "flops_per_sample": flops.total,
            "flops_per_sample_by_part": {part: f.total for part, f in flops.parts.items()},
        }


def measure_mode(mode: str, settings: Settings, end: float) -> dict[str, Any]:
    """One vision mode's stage-III training step: raw step times, peak memory, what the FLOPs are of."""
    dev = device()
    started = time.perf_counter()
    stepper = StageStep(mode, settings, dev)
    build_s = time.perf_counter() - started
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run = timed(stepper.step, settings.warmup, settings.steps, end, dev)
    peak_gpu = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    result = {
        **stepper.describe(),
        "build_s": round(build_s, 3),
        **run,
        "peak_gpu_memory_gib": None if peak_gpu is None else round(peak_gpu, 3),
        "process_peak_rss_gib": round(_peak_rss_gib(), 3),
    }
    del stepper
    release()
    return result


def measure_overhead(settings: Settings, end: float) -> dict[str, Any]:
    """``benchmarks/train_overhead.py``'s two loops (its ``Plain`` and ``Platform``: a hand-written loop with
    autocast and fused AdamW against the trainer's ``train_step`` through DeepSpeed bf16) on VLSA's stage III
    at ``settings.overhead_dims``, this run's synthetic micro-batch; alternating rounds, median step times."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_overhead

    dev = device()
    if not torch.distributed.is_initialized():  # one group for both overhead parts (DeepSpeed keeps it)
        train_overhead._process_group(dev.type == "cuda")
    config = experiment("sa_perceiver", settings.tiny, settings.checkpointing)
    vlsa = model_config(config, settings.overhead_dims)
    micro, _ = _micro_and_accum(config.stages[STAGE].placement, settings)
    batch, _, seq = synthetic_batch(vlsa, micro, settings.text_tokens, dev)
    total = (settings.overhead_warmup + settings.overhead_steps * settings.overhead_rounds) * 2
    plain = train_overhead.Plain(config, dev, total, model=_build(vlsa, dev, torch.float32))
    ours = train_overhead.Platform(
        config, dev, total, settings.zero_stage, micro, model=_build(vlsa, dev, torch.float32)
    )
    train_overhead._time(plain, batch, settings.overhead_warmup, dev)
    train_overhead._time(ours, batch, settings.overhead_warmup, dev)
    plain_s: list[float] = []
    platform_s: list[float] = []
    for done in range(settings.overhead_rounds):
        per_round = (sum(plain_s) + sum(platform_s)) / done if done else 0.0
        if done and time.time() + per_round > end:
            break
        plain_s += train_overhead._time(plain, batch, settings.overhead_steps, dev)
        platform_s += train_overhead._time(ours, batch, settings.overhead_steps, dev)
    plain_med, platform_med = statistics.median(plain_s), statistics.median(platform_s)
    result = {
        "mode": "sa_perceiver",
        "layers": _layers(vlsa),
        "micro_batch": micro,
        "llm_tokens_per_sample": seq,
        "zero_stage": settings.zero_stage,
        "activation_checkpointing": config.model.gradient_checkpointing,
        "plain": "fp32 weights, torch.autocast(bfloat16), fused AdamW"
        if dev.type == "cuda"
        else "fp32, AdamW",
        "platform": "train.step.train_step through DeepSpeed " + ("bf16" if dev.type == "cuda" else "fp32"),
        "plain_s_raw": plain_s,
        "platform_s_raw": platform_s,
        "plain_ms_per_step": round(plain_med * 1000, 3),
        "platform_ms_per_step": round(platform_med * 1000, 3),
        "ratio": round(platform_med / plain_med, 4),
        "rounds": len(plain_s) // max(1, settings.overhead_steps),
        "stopped_by_budget": len(plain_s) < settings.overhead_steps * settings.overhead_rounds,
    }
    ours.strategy.release()
    del plain, ours, batch
    release()
    return result


def measure_device(settings: Settings) -> dict[str, Any]:
    return describe_device(device(), settings.peak_tflops)


__all__ = [
    "Settings",
    "StageStep",
    "device",
    "measure_device",
    "measure_mode",
    "measure_overhead",
    "release",
    "timed",
]
