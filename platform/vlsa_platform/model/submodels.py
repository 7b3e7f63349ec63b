"""The published sub-models VLSA composes, built from the composite config (fresh weights)."""

from __future__ import annotations

from diffusers import AutoencoderKL, SD3Transformer2DModel
from torch import nn
from transformers import CLIPVisionModel, LlamaForCausalLM

from .configuration_vlsa import VLSAConfig

#: Sub-models that have published checkpoints, and where each lives in the composed model.
SUBMODEL_PATHS: dict[str, str] = {
    "vision_encoder": "vision_tower",
    "llm": "language_model",
    "vae": "reconstruction.vae",
    "denoiser": "reconstruction.denoiser",
}


def build_submodel(part: str, config: VLSAConfig) -> nn.Module:
    """A freshly initialised sub-model (CLIP vision tower, LLaMA, SD3 VAE or MMDiT) for ``part``."""
    if part == "vision_encoder":
        return CLIPVisionModel(config.vision_config)
    if part == "llm":
        return LlamaForCausalLM(config.text_config)
    if part == "vae":
        return AutoencoderKL.from_config(config.vae_config)
    if part == "denoiser":
        return SD3Transformer2DModel.from_config(config.denoiser_config)
    raise KeyError(f"no sub-model {part!r}; expected one of {sorted(SUBMODEL_PATHS)}")
