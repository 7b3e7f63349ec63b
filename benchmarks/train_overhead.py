"""Platform overhead: the trainer's per-micro-batch path against a plain PyTorch loop, same model and batch.

Both loops train the tiny preset's model (stage-3 trainable parts: everything but the VAE) on the same
collated micro-batch of the bundled synthetic data, with the same thread count:

- ``plain``: ``model(**batch)``, ``loss_llm + loss_rec``, ``backward``, gradient clipping, ``torch.optim.AdamW``
  over one group per part, an HF cosine scheduler step, ``zero_grad`` — what a hand-written loop does;
- ``platform``: what ``train.loop.run_stage`` does per micro-batch — the stage's loss weights
  (``schedules.loss_weights``), :func:`vlsa_platform.train.step.train_step` through the
  :class:`~vlsa_platform.train.strategy.DeepSpeedStrategy` (DeepSpeed engine at the given ZeRO stage; the
  finiteness check, the reached-parameter check for text-only batches, per-group learning rates and the grad
  norm as metrics) and the metric window of the loop.

Each step is timed alone (``torch.cuda.synchronize`` on a GPU); after warm-up, the two loops alternate in
rounds so drift of a shared machine hits both, and the median step time of each is reported with the overhead
``platform / plain - 1``. On a GPU the platform runs DeepSpeed bf16 (bf16 weights, fp32 master copy) and the
plain loop runs ``torch.autocast(bfloat16)`` over fp32 weights with fused AdamW.

    .venv/bin/python benchmarks/train_overhead.py [--zero-stage 0] [--micro-batch 2] [--steps 20] [--rounds 3]

DeepSpeed needs a process group: this script makes a one-rank one (gloo on CPU, NCCL on a GPU). Prints one
JSON line on stdout, then a human-readable line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.model.parts import set_trainable
from vlsa_platform.tracking.store import free_port
from vlsa_platform.train.batches import StageData
from vlsa_platform.train.build import build_model, build_tokenizer
from vlsa_platform.train.metrics import MetricWindow
from vlsa_platform.train.schedules import build_lr_scheduler, loss_weights
from vlsa_platform.train.step import train_step
from vlsa_platform.train.strategy import DeepSpeedStrategy, param_groups

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "vlsa_paper.yaml")
STAGE = "stage3"


def _process_group(on_gpu: bool) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")


def _batch(config: Any, micro_batch: int) -> dict[str, torch.Tensor]:
    """The first micro-batch of stage 3 with images on every sample (the expensive, common case)."""
    stage = config.stages[STAGE]
    model_config = build_model(config).config
    data = StageData(
        config,
        stage,
        model_config,
        build_tokenizer(config),
        rank=0,
        world_size=1,
        micro_batch=micro_batch,
        by_modality=False,
    )
    for batch in data.batches():
        if (
            batch.tensors.get("pixel_values") is not None
            and len(batch.tensors["pixel_values"]) == micro_batch
        ):
            return batch.tensors
    raise RuntimeError("no micro-batch with an image on every sample")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(
    config: Any, device: torch.device, model: torch.nn.Module | None = None
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """The stage's model (``model`` when given: another size, e.g. ``benchmarks/gpu``'s) and its param groups."""
    model = build_model(config) if model is None else model
    set_trainable(model, config.stages[STAGE].trainable)
    groups = param_groups(model, config.stages[STAGE].lr, 0.0)
    return model, groups


class Plain:
    """The hand-written loop."""

    def __init__(
        self, config: Any, device: torch.device, steps: int, model: torch.nn.Module | None = None
    ) -> None:
        self.model, groups = _build(config, device, model)
        self.model.to(device).train()
        if config.model.gradient_checkpointing:
            self.model.enable_activation_checkpointing()
        fused = device.type == "cuda"
        for group in groups:
            group.pop("name", None), group.pop("part", None)
        self.optimizer = torch.optim.AdamW(groups, fused=fused)
        self.scheduler = build_lr_scheduler(self.optimizer, "cosine", steps, 0.0)
        self.params = [p for g in groups for p in g["params"]]
        self.device = device

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            out = self.model(**batch)
            loss = out.loss_llm + out.loss_rec
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class Platform:
    """The trainer's per-micro-batch path."""

    def __init__(
        self,
        config: Any,
        device: torch.device,
        steps: int,
        zero_stage: int,
        micro_batch: int,
        model: torch.nn.Module | None = None,
    ) -> None:
        model, groups = _build(config, device, model)
        stage = config.stages[STAGE]
        self.strategy = DeepSpeedStrategy(
            zero_stage=zero_stage,
            micro_batch=micro_batch,
            grad_accum=1,
            world_size=1,
            bf16=device.type == "cuda",
            max_grad_norm=1.0,
            activation_checkpointing=config.model.gradient_checkpointing,
        )
        self.strategy.prepare(model, groups, lambda opt: build_lr_scheduler(opt, "cosine", steps, 0.0))
        self.loss = stage.loss
        self.steps = steps
        self.window = MetricWindow()
        self.stats: dict[str, int] = {}
        self.done = 0

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        weights = loss_weights(self.loss, self.done / self.steps)
        metrics = train_step(self.strategy, batch, weights, self.stats)
        self.window.add(metrics, len(batch["input_ids"]))
        self.done += 1
        return metrics["loss/total"]


def _time(loop: Any, batch: dict[str, torch.Tensor], steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        loop.step(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zero-stage", type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-checkpointing", action="store_true", help="turn activation checkpointing off")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    _process_group(on_gpu)
    overrides = [] if not args.no_checkpointing else ["model.gradient_checkpointing=false"]
    config = load_experiment(EXPERIMENT, scale="tiny", overrides=overrides)
    batch = {k: v.to(device) for k, v in _batch(config, args.micro_batch).items()}
    total = (args.warmup + args.steps * args.rounds) * 2
    plain = Plain(config, device, total)
    ours = Platform(config, device, total, args.zero_stage, args.micro_batch)
    _time(plain, batch, args.warmup, device)
    _time(ours, batch, args.warmup, device)
    plain_times, platform_times = [], []
    for _ in range(args.rounds):
        plain_times += _time(plain, batch, args.steps, device)
        platform_times += _time(ours, batch, args.steps, device)
    plain_ms = statistics.median(plain_times) * 1000
    platform_ms = statistics.median(platform_times) * 1000
    result = {
        "benchmark": "train_overhead",
        "device": torch.cuda.get_device_name(device)
        if on_gpu
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "zero_stage": args.zero_stage,
        "micro_batch": args.micro_batch,
        "tokens_per_sample": int(batch["input_ids"].shape[1]),
        "activation_checkpointing": not args.no_checkpointing,
        "steps_timed": len(plain_times),
        "plain_ms_per_step": round(plain_ms, 3),
        "platform_ms_per_step": round(platform_ms, 3),
        "overhead": round(platform_ms / plain_ms - 1.0, 4),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    print(
        f"plain {plain_ms:.1f} ms/step, platform {platform_ms:.1f} ms/step (ZeRO-{args.zero_stage}, micro-batch "
        f"{args.micro_batch}, {result['device']}, {result['threads']} threads): overhead {result['overhead']:+.1%}"
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
