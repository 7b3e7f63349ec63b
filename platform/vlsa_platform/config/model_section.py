"""The ``model`` section: the variant (preset, the three Table 3 switches), its geometry, LoRA and weight sources.

Checks that need only this section live here (``recon_resolution`` a multiple of 16, ``recon`` needs the
SA-Perceiver); an ablation variant's switches are checked again by ``ExperimentConfig`` in :mod:`.schema`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .errors import FieldIssue
from .vocabulary import LLAMA_LINEARS, AttnImplementation, Count, Preset, Section, VisionMode, recon_needs_sa

#: ``(rows, cols)`` tile grids an image may be cut into by default: LLaVA-NeXT's ``image_grid_pinpoints``
#: (336x672, 672x336, 672x672, 1008x336, 336x1008 at 336 px tiles) plus 1x1, so that an image that fits one
#: tile is not padded to two. ``model.tiling`` uses the same list.
DEFAULT_GRID_PINPOINTS: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1))


class ModelWeights(Section):
    """Where each sub-model's pretrained weights come from: a Hugging Face hub id, a local directory or an
    ``s3://`` prefix. ``null`` = the preset's default (``model/presets``: LLaMA-3-8B-Instruct, CLIP-ViT-L/14-336,
    SD3-medium, ITHQ VQ-VAE); ignored by the ``tiny`` preset, whose weights ``model.tiny_weights`` chooses."""

    vision_encoder: str | None = None
    """CLIP vision tower weights."""
    llm: str | None = None
    """LLaMA weights (and tokenizer)."""
    vae: str | None = None
    """SD3 VAE weights (frozen)."""
    denoiser: str | None = None
    """SD3 MMDiT weights (the reconstruction branch's denoiser)."""
    vq: str | None = None
    """VQ-VAE weights whose codebook indices are the cognition targets (frozen)."""


class LoraConfig(Section):
    """LoRA adapters on the LLM (through peft), used in stages where ``llm`` is trainable."""

    enabled: bool = False
    """Train LoRA adapters instead of the full LLM (the paper trains it fully in stage 3)."""
    r: Count = 16
    """Adapter rank."""
    alpha: Count = 32
    """``lora_alpha``; the update is scaled by ``alpha / r``."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEARS), min_length=1)
    """Names of the LLM's linear layers that get adapters."""


class ModelConfig(Section):
    """The model variant: preset size, the three ablation switches of the paper's Table 3, and geometry."""

    preset: Preset = "paper"
    """``paper``: LLaMA-3-8B-Instruct + CLIP-ViT-L/14-336 + SD3-medium; ``tiny``: the same classes, 2 layers wide 32."""
    vision: VisionMode = "sa_perceiver"
    """Visual encoding: ``sa_perceiver`` (VLSA, 576 tokens), ``anyres`` (LLaVA-NeXT, up to 2928) or ``lowres``
    (the 336 px snapshot only, 576)."""
    recon: bool = True
    """Reconstructive training (Epigone + SD3 MMDiT + frozen VAE, L_rec); needs ``vision: sa_perceiver``."""
    cognition: bool = True
    """Cognition-alignment turns (VQ codebook indices and pixel values) inserted into the training conversations."""
    grid_pinpoints: list[tuple[Count, Count]] = Field(
        default_factory=lambda: list(DEFAULT_GRID_PINPOINTS), min_length=1
    )
    """``[rows, cols]`` grids of hi-res tiles an image may be cut into, as LLaVA-NeXT's ``image_grid_pinpoints``:
    each image gets the grid that keeps most of it with the least padding (``select_best_resolution``), and is
    shrunk to fit only when larger than every grid. Default: 1x1, 1x2, 2x1, 2x2, 1x3, 3x1 (LLaVA-NeXT's list plus
    1x1). The largest grid sets the ``anyres`` token count the plan shows (2928 for 2x2 at paper scale)."""
    recon_resolution: Count | None = None
    """Side in pixels of the image the VAE encodes for L_rec; a multiple of 16 (the VAE downsamples by 8 and the
    MMDiT patchifies by 2). ``null`` = the preset's default (512 for ``paper``)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA on the LLM instead of full fine-tuning."""
    attn_implementation: AttnImplementation = "auto"
    """Attention kernel of the transformers sub-models; ``auto`` = flash-attn when installed on a GPU, else SDPA."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (LLM and vision tower) to save memory."""
    weights: ModelWeights = Field(default_factory=ModelWeights)
    """Weight sources per sub-model."""
    tiny_weights: Literal["random", "pretrained"] = "pretrained"
    """``tiny`` preset only: ``pretrained`` (LLM, vision encoder and VAE from the platform's own pretraining on
    the synthetic data, bundled with the package: ``train.tiny_pretrain``; the denoiser stays random), as the
    paper starts from published weights; or ``random`` (every weight drawn from the seed)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_grid" in data:
            raise FieldIssue(
                ("max_grid",),
                "replaced by grid_pinpoints, a list of [rows, cols] grids (e.g. [[1, 1], [1, 2], [2, 1], [2, 2], "
                "[1, 3], [3, 1]]; a cap of [2, 2] is [[1, 1], [1, 2], [2, 1], [2, 2]])",
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if len(set(self.grid_pinpoints)) != len(self.grid_pinpoints):
            repeated = next(g for g in self.grid_pinpoints if self.grid_pinpoints.count(g) > 1)
            raise FieldIssue(("grid_pinpoints",), f"repeats the grid {list(repeated)}")
        if self.recon_resolution is not None and self.recon_resolution % 16:
            raise FieldIssue(
                ("recon_resolution",),
                f"{self.recon_resolution} is not a multiple of 16 (the VAE downsamples by 8, the MMDiT "
                "patchifies its latent by 2)",
            )
        if self.recon and self.vision != "sa_perceiver":
            raise FieldIssue(("recon",), recon_needs_sa(self.vision), related=(("vision",),))
        return self


__all__ = [
    "DEFAULT_GRID_PINPOINTS",
    "LoraConfig",
    "ModelConfig",
    "ModelWeights",
]
