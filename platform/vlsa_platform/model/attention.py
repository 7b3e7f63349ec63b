"""Which attention kernel the transformers sub-models (CLIP, LLaMA) use.

SDPA everywhere by default; flash-attention-2 when the optional ``gpu`` extra (``flash-attn``) is installed and a
CUDA device is present. The diffusers MMDiT uses its own SDPA processor either way.
"""

from __future__ import annotations

import importlib.util

import torch

from ..config.vocabulary import ATTN_IMPLEMENTATIONS


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def resolve_attn_implementation(requested: str = "auto") -> str:
    """``auto`` -> ``flash_attention_2`` where it can run, else ``sdpa``; an explicit choice is checked."""
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {requested!r}")
    if requested == "auto":
        return "flash_attention_2" if flash_attention_available() else "sdpa"
    if requested == "flash_attention_2" and not flash_attention_available():
        raise ValueError(
            "attn_implementation 'flash_attention_2' needs a CUDA GPU and the flash-attn package "
            "(pip install 'vlsa-platform[gpu]'); use 'auto' or 'sdpa'"
        )
    return requested
