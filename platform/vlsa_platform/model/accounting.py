"""Planning numbers from configs alone: parameter counts (built on the ``meta`` device) and visual tokens."""

from __future__ import annotations

import json
from functools import lru_cache

import torch

from .configuration_vlsa import VLSAConfig
from .lora import LoraSettings, apply_lora
from .modeling_vlsa import VLSAForConditionalGeneration, num_visual_tokens
from .parts import count_by_part
from .tiling import plan_grid


def build_on_meta(config: VLSAConfig, lora: LoraSettings | None = None) -> VLSAForConditionalGeneration:
    """The full model with no storage: shapes and names only, for any size."""
    with torch.device("meta"):
        model = VLSAForConditionalGeneration(config)
        if lora is not None:
            apply_lora(model, lora)
    return model


@lru_cache(maxsize=32)
def _counts(config_json: str, lora: LoraSettings | None) -> tuple[tuple[str, tuple[int, int]], ...]:
    config = VLSAConfig.from_dict(json.loads(config_json))
    return tuple(count_by_part(build_on_meta(config, lora)).items())


def parameter_counts(config: VLSAConfig, lora: LoraSettings | None = None) -> dict[str, tuple[int, int]]:
    """``{part: (params, params trained when the part is trainable)}`` for the parts this variant has."""
    return dict(_counts(config.to_json_string(use_diff=False), lora))


def visual_tokens_per_image(config: VLSAConfig) -> int:
    """Visual tokens the LLM receives for the largest image the pinpoints allow: the most over the grids of
    ``grid_pinpoints``, each filled by an image of its canvas size (2928 at 672x672 on 2x2 for ``anyres``,
    against 2376 at 1008x336 on 3x1; ``l`` for the other modes whatever the grid)."""
    tile = config.vision_config.image_size
    return max(
        num_visual_tokens(config, plan_grid(rows * tile, cols * tile, tile, config.grid_pinpoints))
        for rows, cols in config.grid_pinpoints
    )


__all__ = ["build_on_meta", "parameter_counts", "visual_tokens_per_image"]
