"""A stage's validation on one worker, and the reconstruction panels of its training batches.

- :class:`Validation`: this rank's validation batches, how often a pass runs, and what it decodes;
- :func:`evaluate`: one pass — the validation losses, ``val/psnr`` of the frozen VAE's decodings, and the greedy
  answers :mod:`vlsa_platform.eval.validation` scores — as means over every rank;
- :func:`keep_recon` / :func:`log_reconstruction`: a training micro-batch's ground truth beside its
  reconstruction, logged by rank 0.

Every DeepSpeed call (ZeRO-3 gathering) goes through the :class:`~.strategy.DeepSpeedStrategy`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config.schema import ExperimentConfig
from ..eval.psnr import psnr, to_unit_range
from ..eval.validation import GenerationSettings, SampleCollector, Tally, decode_samples
from ..tracking import names
from ..tracking.tracker import NullTracker, Tracker
from .batches import Batch, StageData, to_device
from .metrics import all_reduce
from .step import check_same_structure
from .strategy import DeepSpeedStrategy


def per_rank(count: int | None, world_size: int) -> int | None:
    """A per-pass count over all ranks as each rank's share (rounded up; ``None`` stays ``None``)."""
    return None if count is None else math.ceil(count / world_size)


def generation_settings(
    config: ExperimentConfig, tokenizer: Any, model: torch.nn.Module, world_size: int
) -> GenerationSettings | None:
    """How validation decodes answers on this rank (``data.validation.generate_*``), ``None`` for no decoding."""
    validation = config.data.validation
    if validation is None or validation.generate_samples == 0:
        return None
    return GenerationSettings.for_model(
        tokenizer,
        model,
        samples=per_rank(validation.generate_samples, world_size),
        extra_tokens=validation.generate_extra_tokens,
        batch_size=validation.generate_batch,
        vq_format=validation.cognition.vq_format,  # the validation's questions are its own
    )


@dataclass
class Validation:
    """A stage's validation on this rank (``data.validation``)."""

    batches: Any
    """This rank's validation shard (a ``DataLoader``), ``None`` without ``data.validation``."""
    every: int | None
    """``validation.every_steps``: a pass every that many optimizer steps (and always at the end)."""
    seed: int
    """The experiment's seed: every pass draws the same L_rec timesteps and noise."""
    generation: GenerationSettings | None
    """How a pass decodes answers; ``None``: no decoding."""
    psnr_images: int | None
    """This rank's share of ``validation.psnr_images`` (``None``: every image)."""

    @classmethod
    def for_stage(
        cls,
        config: ExperimentConfig,
        data: StageData,
        tokenizer: Any,
        model: torch.nn.Module,
        world_size: int,
    ) -> Validation:
        validation = config.data.validation
        return cls(
            batches=data.validation_batches(),
            every=validation.every_steps if validation else None,
            seed=config.seed,
            generation=generation_settings(config, tokenizer, model, world_size),
            psnr_images=per_rank(validation.psnr_images, world_size) if validation else None,
        )

    def due(self, step: int, last: bool) -> bool:
        """Whether a pass runs after optimizer step ``step`` (``last``: the stage's final one)."""
        return self.batches is not None and bool((self.every and step % self.every == 0) or last)

    def run(self, strategy: DeepSpeedStrategy) -> dict[str, float]:
        """One pass (:func:`evaluate`); every rank calls it together."""
        return evaluate(strategy, self.batches, self.seed, self.generation, self.psnr_images)


def _reconstruction_psnr(
    strategy: DeepSpeedStrategy, batch: dict[str, torch.Tensor], out: Any, limit: int | None
) -> torch.Tensor:
    """Per-image PSNR (dB, pixels in [0, 1]) of the frozen VAE's decoding of the denoised latents ``z_hat``
    of the batch's first ``limit`` images (``None``: all) against their L_rec target pixels; a batch with cached
    latents instead of pixels is compared with the VAE's decoding of the clean latents ``z``. Under ZeRO-3 every
    rank decodes (the VAE is gathered; the ranks' batches have the same structure, so the same images count)."""
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
                tensors = to_device(batch.tensors, strategy.device)
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
                    functools.partial(all_reduce, device=strategy.device, op=torch.distributed.ReduceOp.MAX)
                    if in_step
                    else None
                )
                # the model's own parameters (anyres's image_newline): generate skips its forward hook
                with strategy.gathered(model, recurse=False), strategy.precision():
                    decode_samples(
                        model, collector.samples, generation, tally, device=strategy.device, sync=sync
                    )
    finally:
        engine.train()
    packed = all_reduce(torch.cat([sums, tally.to_tensor()]), strategy.device)
    sums, means = packed[:4], Tally.from_tensor(packed[4:]).means()
    return {
        names.VAL_LOSS_LLM: float(sums[0] / sums[1]) if sums[1] else math.nan,
        names.VAL_LOSS_REC: float(sums[2] / sums[3]) if sums[3] else math.nan,
        names.VAL_EXACT_MATCH: means["exact_match"],
        names.VAL_VQ_ACCURACY: means["vq_accuracy"],
        names.VAL_PX_ACCURACY: means["px_accuracy"],
        names.VAL_PSNR: means["psnr"],
    }


def keep_recon(captured: list[tuple[torch.Tensor, ...]], samples: int, out: Any) -> None:
    """``train_step``'s ``on_output`` for a reconstruction panel: keep the first ``samples`` clean and denoised
    latents of the micro-batch (detached) in ``captured``."""
    if getattr(out, "recon_denoised", None) is not None:
        captured.append((out.recon_latents.detach()[:samples], out.recon_denoised.detach()[:samples]))


def log_reconstruction(
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


__all__ = [
    "Validation",
    "evaluate",
    "generation_settings",
    "keep_recon",
    "log_reconstruction",
    "per_rank",
]
