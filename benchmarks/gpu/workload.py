"""What ``benchmarks/gpu`` trains and how it counts: stage III of ``experiments/vlsa_paper.yaml`` at the paper's
widths with fewer layers, random weights, a synthetic micro-batch at the paper's tile geometry, and its model
FLOPs (``cluster.flops``, the plan's accounting).

Everything comes from the experiment file and the bundled preset configs: no download, no tokenizer, no data.
``tiny`` takes the file's ``--scale tiny`` model instead (the CPU fallback): the same code, the tiny widths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hardware import attention

from vlsa_platform.cluster import ModelDims, SampleFlops, sample_flops
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.schema import ExperimentConfig
from vlsa_platform.model.accounting import parameter_counts
from vlsa_platform.model.configuration_vlsa import VLSAConfig
from vlsa_platform.model.markers import IGNORE_INDEX
from vlsa_platform.model.modeling_vlsa import grids_to_tensor, num_visual_tokens
from vlsa_platform.model.tiling import plan_grid
from vlsa_platform.train.build import vlsa_config_for

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "vlsa_paper.yaml"
STAGE = "stage3"
#: The two vision modes measured: VLSA (SA-Perceiver, with L_rec through the MMDiT) first, it carries the goal.
MODES = ("sa_perceiver", "anyres")
#: ``model.*`` overrides of the experiment file per mode (anyres has no reconstruction branch).
MODE_OVERRIDES = {"sa_perceiver": [], "anyres": ["model.vision=anyres", "model.recon=off"]}


@dataclass(frozen=True)
class Dims:
    """Depths and vocabulary of the model measured; ``None`` keeps the preset's. Widths are always the preset's."""

    llm_layers: int | None = None
    """LLaMA decoder layers (the paper's 32 need ZeRO-3 over 8 GPUs; a single card holds a few)."""
    vision_layers: int | None = None
    """CLIP encoder layers (CLIP-L/336: 24)."""
    denoiser_layers: int | None = None
    """SD3-medium MMDiT joint blocks (24)."""
    vocab: int | None = None
    """LLM vocabulary (LLaMA-3: 128,256; its output head is a large share of a shallow LLM's FLOPs)."""

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


def experiment(mode: str, tiny: bool, checkpointing: bool | None = None) -> ExperimentConfig:
    """The paper experiment with ``mode``'s vision settings (``--scale tiny`` for the CPU fallback), the
    :func:`attention` kernel, and ``model.gradient_checkpointing`` set to ``checkpointing`` unless ``None``
    (the file's: on)."""
    overrides = [*MODE_OVERRIDES[mode], f"model.attn_implementation={attention()}"]
    if checkpointing is not None:
        overrides.append(f"model.gradient_checkpointing={str(checkpointing).lower()}")
    return load_experiment(str(EXPERIMENT), scale="tiny" if tiny else None, overrides=overrides)


def model_config(config: ExperimentConfig, dims: Dims) -> VLSAConfig:
    """The experiment's model config with ``dims`` applied (as ``benchmarks/stage_start.py`` reduces it)."""
    vlsa = vlsa_config_for(config)
    if dims.llm_layers is not None:
        vlsa.text_config.num_hidden_layers = dims.llm_layers
        if getattr(vlsa.text_config, "layer_types", None):
            vlsa.text_config.layer_types = vlsa.text_config.layer_types[: dims.llm_layers]
    if dims.vocab is not None:
        vlsa.text_config.vocab_size = dims.vocab
    if dims.vision_layers is not None:
        vlsa.vision_config.num_hidden_layers = dims.vision_layers
    if dims.denoiser_layers is not None and vlsa.denoiser_config is not None:
        vlsa.denoiser_config = {**vlsa.denoiser_config, "num_layers": dims.denoiser_layers}
    return vlsa


def image_side(vlsa: VLSAConfig) -> int:
    """The measured image's side: a 2x2 grid of tiles (672 px with CLIP-L/336's tiles, the paper's)."""
    return 2 * vlsa.vision_config.image_size


def synthetic_batch(
    vlsa: VLSAConfig, micro_batch: int, text_tokens: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], int, int]:
    """One micro-batch of ``micro_batch`` samples, one ``image_side`` square image each, as the collator lays it
    out: a first text token, the image's visual positions, ``text_tokens`` labelled text tokens; random pixels
    and, with reconstruction, random cached VAE posterior parameters (the frozen VAE is not run, as with the
    filled cache). Returns the batch, visual tokens per image and the LLM's sequence length."""
    tile, side = vlsa.vision_config.image_size, image_side(vlsa)
    grid = plan_grid(side, side, tile, vlsa.grid_pinpoints)
    visual = num_visual_tokens(vlsa, grid)
    seq = 1 + visual + text_tokens
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vlsa.text_config.vocab_size, (micro_batch, seq), generator=generator)
    ids[ids == vlsa.image_token_id] = 0
    ids[:, 1 : 1 + visual] = vlsa.image_token_id
    labels = ids.clone()
    labels[:, : 1 + visual] = IGNORE_INDEX
    batch = {
        "input_ids": ids,
        "labels": labels,
        "pixel_values": torch.randn(micro_batch, 3, tile, tile, generator=generator),
        "tile_pixel_values": torch.randn(micro_batch * grid.num_tiles, 3, tile, tile, generator=generator),
        "image_grids": grids_to_tensor([grid] * micro_batch),
    }
    if vlsa.recon and vlsa.vae_config is not None:
        channels = vlsa.vae_config["latent_channels"]
        latent = vlsa.recon_resolution // 2 ** (len(vlsa.vae_config["block_out_channels"]) - 1)
        batch["recon_latent_params"] = torch.randn(
            micro_batch, 2 * channels, latent, latent, generator=generator
        )
    return {k: v.to(device) for k, v in batch.items()}, visual, seq


def flops_per_sample(
    config: ExperimentConfig, vlsa: VLSAConfig, trainable: list[str], visual: int, seq: int
) -> SampleFlops:
    """Model FLOPs of one training sample of the stage, by part (``cluster.flops``: what the plan and its MFU
    count; activation recomputation and the frozen VAE not counted)."""
    counts = parameter_counts(vlsa)
    loss = config.stage_loss(STAGE)
    return sample_flops(
        ModelDims.from_vlsa_config(vlsa),
        counts,
        [part for part in trainable if part in counts],
        visual_tokens=visual,
        llm_tokens=seq,
        llm_weight=loss.llm_weight,
        rec_weight=loss.rec_weight if vlsa.recon else 0.0,
    )


__all__ = [
    "EXPERIMENT",
    "MODES",
    "STAGE",
    "Dims",
    "experiment",
    "flops_per_sample",
    "image_side",
    "model_config",
    "synthetic_batch",
]
