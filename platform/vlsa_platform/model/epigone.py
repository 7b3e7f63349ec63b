"""Epigone (paper §3.1, Eq. 4): visual embeddings -> pseudo caption embeddings for the SD3 denoiser."""

from __future__ import annotations

import torch
from torch import nn


class Epigone(nn.Module):
    """``c = Epigone(V, P)``: a low-rank MLP for the token embeddings plus a linear pooled head.

    Paper §4.1: "a low-rank MLP, which consists of two linear layers and the SiLU activation function", input
    and output 4096 (the LLM width and SD3's ``joint_attention_dim``), intermediate 256.

    Shapes: ``tokens`` (B, l, d_llm) -> (B, l, joint_attention_dim); ``pooled`` (B, d_llm) ->
    (B, pooled_projection_dim).
    """

    def __init__(
        self, text_hidden_size: int, rank: int, joint_attention_dim: int, pooled_projection_dim: int
    ):
        super().__init__()
        self.down = nn.Linear(text_hidden_size, rank)
        self.act = nn.SiLU()
        self.up = nn.Linear(rank, joint_attention_dim)
        self.pooled = nn.Linear(text_hidden_size, pooled_projection_dim)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.up(self.act(self.down(tokens))), self.pooled(pooled)
