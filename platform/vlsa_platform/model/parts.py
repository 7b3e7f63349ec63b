"""The model's named parts: what a training stage makes trainable (paper §4.1, DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..config.vocabulary import TRAINABLE_PARTS

#: Every part, in the order the paper introduces them (the trainable ones are the config's). The VAE is always
#: frozen.
PARTS: tuple[str, ...] = (*TRAINABLE_PARTS, "vae")

_PREFIXES: dict[str, tuple[str, ...]] = {
    "vision_encoder": ("vision_tower.",),
    "sa_perceiver": ("sa_perceiver.",),
    "projector": ("multi_modal_projector.", "image_newline"),
    "llm": ("language_model.",),
    "epigone": ("reconstruction.epigone.",),
    "denoiser": ("reconstruction.denoiser.",),
    "vae": ("reconstruction.vae.",),
}


def part_of(name: str) -> str:
    """The part a parameter belongs to, by its name in the composed model."""
    for part, prefixes in _PREFIXES.items():
        if name.startswith(prefixes):
            return part
    raise KeyError(f"parameter {name!r} belongs to no part")


def part_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """``{part: [(name, parameter), ...]}`` for the parts this model has."""
    out: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        out.setdefault(part_of(name), []).append((name, param))
    return out


def _trained_inside(part: str, name: str, lora: bool) -> bool:
    """With LoRA on the LLM, only its adapters train when the ``llm`` part is trainable."""
    return not (part == "llm" and lora) or "lora_" in name


def set_trainable(model: nn.Module, parts: Iterable[str]) -> list[str]:
    """Freeze everything, then unfreeze ``parts`` (names from :data:`TRAINABLE_PARTS`).

    Parts the model does not have (e.g. ``sa_perceiver`` in an ``anyres`` variant) are skipped; the parts
    actually made trainable are returned.
    """
    wanted = set(parts)
    unknown = wanted - set(TRAINABLE_PARTS)
    if unknown:
        raise ValueError(f"not trainable parts: {sorted(unknown)}; expected some of {TRAINABLE_PARTS}")
    lora = any("lora_" in n for n, _ in model.named_parameters())
    enabled = []
    for part, named in part_parameters(model).items():
        on = part in wanted
        if on:
            enabled.append(part)
        for name, param in named:
            param.requires_grad_(on and _trained_inside(part, name, lora))
    return [p for p in TRAINABLE_PARTS if p in enabled]


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def count_by_part(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{part: (params, params trained when the part is trainable)}``."""
    lora = any("lora_" in n for n, _ in model.named_parameters())
    counts: dict[str, tuple[int, int]] = {}
    for part, named in part_parameters(model).items():
        total = sum(p.numel() for _, p in named)
        trained = 0 if part == "vae" else sum(p.numel() for n, p in named if _trained_inside(part, n, lora))
        counts[part] = (total, trained)
    return {p: counts[p] for p in PARTS if p in counts}


def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter that does not require grad (for "frozen stays bitwise unchanged" checks)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
