"""The vision-language projector: LLaVA's ``mlp2x_gelu`` (paper §4.1: LLaVA-NeXT's MLP projector)."""

from __future__ import annotations

import torch
from torch import nn


class MultiModalProjector(nn.Module):
    """``Linear(d_vision, d_llm) -> GELU -> Linear(d_llm, d_llm)``; maps ``(..., d_vision)`` to ``(..., d_llm)``.

    Applied to the image tokens ``V`` (B, l, d_vision) for the LLM and, with the same weights, to the pooled
    embedding ``P`` (B, d_vision) for the reconstruction branch's pooled head (DESIGN.md §2).
    """

    def __init__(self, vision_hidden_size: int, text_hidden_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden_size, text_hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_hidden_size, text_hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))
