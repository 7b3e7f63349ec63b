"""Model presets: ``paper`` (the paper's sub-models, configs bundled here) and ``tiny`` (the same classes, small).

``paper``: LLaMA-3-8B-Instruct, CLIP-ViT-L/14-336, SD3-medium's VAE, MMDiT and scheduler, and the ITHQ VQ-VAE of
``microsoft/vq-diffusion-ithq`` — each config copied from its published ``config.json`` into ``paper/`` (see the
README there), so that planning and ``meta``-device construction need no network. Weights are loaded from a hub
id or a local path only when training (``model/pretrained.py``).

``tiny``: the same classes with 2-layer, width-32/64 configs and the tokenizer bundled in ``tiny/tokenizer``
(built locally, LLaMA-3's special tokens and chat template); it trains on a CPU in seconds. ``tiny/pretrained``
holds the weights ``train/tiny_pretrain.py`` made for its LLM, vision tower and VAE (``model.tiny_weights``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ...config.vocabulary import PRESETS
from ..attention import resolve_attn_implementation
from ..configuration_vlsa import VLSAConfig
from ..tokenizer import IMAGE_TOKEN, PAPER_TOKENIZER_SOURCE, load_tiny_tokenizer

_HERE = Path(__file__).parent

#: Where the paper preset's weights come from (hub id, subfolder); the experiment file may point elsewhere.
PAPER_SOURCES: dict[str, tuple[str, str | None]] = {
    "llm": (PAPER_TOKENIZER_SOURCE, None),
    "vision_encoder": ("openai/clip-vit-large-patch14-336", None),
    "vae": ("stabilityai/stable-diffusion-3-medium-diffusers", "vae"),
    "denoiser": ("stabilityai/stable-diffusion-3-medium-diffusers", "transformer"),
    "vq": ("microsoft/vq-diffusion-ithq", "vqvae"),
}

#: Id of ``IMAGE_TOKEN["paper"]`` (LLaMA-3's first reserved special token) in the LLaMA-3 vocabulary.
PAPER_IMAGE_TOKEN_ID = 128002


@cache
def _paper(name: str) -> dict[str, Any]:
    data = json.loads((_HERE / "paper" / f"{name}.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_") or k == "_class_name"}


def _tiny_configs() -> dict[str, Any]:
    tokenizer = load_tiny_tokenizer()
    return {
        "vision": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 112,
            "patch_size": 14,
            "projection_dim": 32,
            "hidden_act": "quick_gelu",
        },
        "llm": {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [16, 32, 32, 32],
            "layers_per_block": 1,
            "latent_channels": 16,
            "norm_num_groups": 8,
            "sample_size": 64,
            "scaling_factor": 1.5305,
            "shift_factor": 0.0609,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
        },
        "denoiser": {
            "sample_size": 8,
            "patch_size": 2,
            "in_channels": 16,
            "num_layers": 2,
            "attention_head_dim": 8,
            "num_attention_heads": 4,
            "joint_attention_dim": 64,
            "caption_projection_dim": 32,
            "pooled_projection_dim": 32,
            "out_channels": 16,
            "pos_embed_max_size": 16,
        },
        "scheduler": {"num_train_timesteps": 1000, "shift": 3.0},
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN["tiny"]),
        "recon_resolution": 64,
        "epigone_rank": 16,
    }


def tiny_configs() -> dict[str, Any]:
    """The tiny preset's sub-model configs as written here (plain dicts, before any library fills in its
    defaults): what content-addresses the tiny preset's pretrained weights (``train.tiny_pretrain``)."""
    return _tiny_configs()


def vq_config(preset: str) -> dict[str, Any]:
    """The frozen VQ-VAE whose codebook indices are the cognition targets (diffusers ``VQModel`` config)."""
    if preset == "paper":
        return _paper("vq")
    _check(preset)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [16, 16, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 8,
        "num_vq_embeddings": 64,
        "vq_embed_dim": 8,
        "norm_num_groups": 8,
        "sample_size": 64,
    }


def _check(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; expected one of {PRESETS}")


def build_vlsa_config(
    preset: str,
    *,
    vision: str = "sa_perceiver",
    recon: bool = True,
    grid_pinpoints: Sequence[Sequence[int]] | None = None,
    recon_resolution: int | None = None,
    extra_vocab: int = 0,
    attn_implementation: str = "auto",
) -> VLSAConfig:
    """The :class:`VLSAConfig` of a preset with the ablation switches and geometry applied.

    Args:
        preset: ``paper`` or ``tiny``.
        vision: ``sa_perceiver`` | ``anyres`` | ``lowres``.
        recon: build the reconstruction branch (needs ``sa_perceiver``).
        grid_pinpoints: the ``(rows, cols)`` tile grids an image may be cut into (``None`` = the default
            list, ``tiling.DEFAULT_GRID_PINPOINTS``).
        recon_resolution: side of the VAE input for L_rec (preset default if ``None``).
        extra_vocab: tokens added to the LLM's vocabulary (e.g. the VQ codes as special tokens).
        attn_implementation: ``auto`` (flash-attention-2 where installed on a GPU, else SDPA), ``sdpa``,
            ``flash_attention_2`` or ``eager``, for the transformers sub-models.
    """
    _check(preset)
    if preset == "paper":
        llm = dict(_paper("llm"))
        vision_cfg = dict(_paper("vision_encoder"))
        vision_cfg.setdefault("model_type", "clip_vision_model")
        processor = _paper("image_processor")
        parts: dict[str, Any] = {
            "vision": vision_cfg,
            "llm": llm,
            "vae": _paper("vae"),
            "denoiser": _paper("denoiser"),
            "scheduler": _paper("scheduler"),
            "image_token_id": PAPER_IMAGE_TOKEN_ID,
            "recon_resolution": 512,
            "epigone_rank": 256,
            "image_mean": processor["image_mean"],
            "image_std": processor["image_std"],
        }
    else:
        parts = _tiny_configs()
    parts["llm"] = {**parts["llm"], "vocab_size": parts["llm"]["vocab_size"] + extra_vocab}
    return VLSAConfig(
        vision_config=parts["vision"],
        text_config=parts["llm"],
        vision_mode=vision,
        recon=recon,
        grid_pinpoints=None if grid_pinpoints is None else [list(grid) for grid in grid_pinpoints],
        image_token_id=parts["image_token_id"],
        epigone_rank=parts["epigone_rank"],
        recon_resolution=recon_resolution or parts["recon_resolution"],
        vae_config=parts["vae"] if recon else None,
        denoiser_config=parts["denoiser"] if recon else None,
        scheduler_config=parts["scheduler"] if recon else None,
        image_mean=parts.get("image_mean"),
        image_std=parts.get("image_std"),
        attn_implementation=resolve_attn_implementation(attn_implementation),
    )


__all__ = ["PAPER_SOURCES", "build_vlsa_config", "tiny_configs", "vq_config"]
