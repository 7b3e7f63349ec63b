"""The SA-Perceiver (paper §3.1, Eq. 1-2; Fig. 2), as DESIGN.md §2 reads it.

Low-res snapshot tokens ``V_Lo`` (l, d) plus a learnable global query ``q`` gather information from the hi-res
tile tokens ``V_Hi`` (m, l, d) with a SiLU-activated cross-attention in which each low-res token sees only the
hi-res tokens that fall inside its own cell of the image ("spatially aware"), and ``q`` sees all of them.
A SiLU self-attention over the ``l + 1`` tokens then passes the gathered information between regions. The
output keeps the snapshot's length ``l`` whatever the input resolution: that is the compression claim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


@lru_cache(maxsize=64)
def _locality_mask_cpu(rows: int, cols: int, side: int, max_tiles: int) -> torch.Tensor:
    """``(l + 1, max_tiles * l)`` 0/1 mask for one image whose tiles form a ``rows x cols`` grid.

    Hi-res token ``(r, c)`` of the full tile canvas (``r < rows*side``) has its centre in low-res cell
    ``(r // rows, c // cols)``, since the snapshot's ``side x side`` grid covers the same canvas. Row ``l``
    (the global query) sees every real hi-res token; columns of padding tiles are zero.
    """
    l_tokens = side * side
    tile = torch.arange(rows * cols).view(rows, cols, 1, 1)
    pr = torch.arange(side).view(1, 1, side, 1)
    pc = torch.arange(side).view(1, 1, 1, side)
    tr, tc = tile // cols, tile % cols
    full_r, full_c = tr * side + pr, tc * side + pc  # (rows, cols, side, side) positions on the canvas
    cell = (full_r // rows) * side + (full_c // cols)  # low-res token each hi-res token belongs to
    cell = cell.reshape(-1)  # hi-res index order: tile-major (row-major tiles), then row-major patches
    mask = torch.zeros(l_tokens + 1, max_tiles * l_tokens)
    mask[cell, torch.arange(cell.numel())] = 1.0
    mask[l_tokens, : cell.numel()] = 1.0
    return mask


def locality_mask(
    grids: Sequence[tuple[int, int]], side: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Stacked locality masks ``(B, l + 1, M * l)`` for a batch of tile grids, ``M`` the largest tile count."""
    max_tiles = max(r * c for r, c in grids)
    return torch.stack([_locality_mask_cpu(r, c, side, max_tiles) for r, c in grids]).to(device)


class SAPerceiver(nn.Module):
    """Spatially-aware perceiver: ``(V_Lo, V_Hi) -> (V, P)``.

    Eq. 1 (cross-attention, one head, ``d x d`` projections, shared key/value projection)::

        Q = w_q V'_Lo;  K = V = w_kv V_Hi;  A = SiLU(Q K^T / sqrt(d)) * mask;  V'_Lo <- w_o1(A V) + V'_Lo

    Eq. 2 (garbled in the paper; we use the same SiLU form with ``w_k``, ``w_o2`` and a residual)::

        A2 = SiLU(V'_Lo (w_k V'_Lo)^T / sqrt(d));  V'_Lo <- w_o2(A2 V'_Lo) + V'_Lo

    Shapes: ``v_lo`` (B, l, d), ``v_hi`` (B, M*l, d) with the tiles of each image in row-major order and
    padding tiles (for images with fewer than M tiles) anywhere after its real ones; ``grids`` the
    ``(rows, cols)`` of each image. Returns ``V`` (B, l, d) and ``P`` (B, d).
    """

    def __init__(self, hidden_size: int, num_patches_per_side: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.side = num_patches_per_side
        self.query = nn.Parameter(torch.zeros(hidden_size))
        self.w_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_kv = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_o1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_o2 = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.normal_(self.query, std=0.02)

    def cross_attend(
        self, v_lo: torch.Tensor, v_hi: torch.Tensor, grids: Sequence[tuple[int, int]]
    ) -> torch.Tensor:
        """Eq. 1: ``V'_Lo`` (B, l + 1, d) after the spatially masked cross-attention (the query is last)."""
        batch = v_lo.shape[0]
        if len(grids) != batch:
            raise ValueError(f"{len(grids)} grids for a batch of {batch} images")
        if v_lo.shape[1] != self.side**2:
            raise ValueError(f"expected {self.side**2} low-res tokens, got {v_lo.shape[1]}")
        x = torch.cat([v_lo, self.query.to(v_lo.dtype).expand(batch, 1, -1)], dim=1)
        mask = locality_mask(grids, self.side, x.device).to(x.dtype)
        if mask.shape[-1] != v_hi.shape[1]:
            raise ValueError(f"v_hi has {v_hi.shape[1]} tokens, grids need {mask.shape[-1]}")
        q = self.w_q(x)
        kv = self.w_kv(v_hi)
        attn = F.silu(q @ kv.transpose(1, 2) / math.sqrt(self.hidden_size)) * mask
        return self.w_o1(attn @ kv) + x

    def self_attend(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2 as we read it: SiLU self-attention over the ``l + 1`` tokens with a residual."""
        attn = F.silu(x @ self.w_k(x).transpose(1, 2) / math.sqrt(self.hidden_size))
        return self.w_o2(attn @ x) + x

    def forward(
        self, v_lo: torch.Tensor, v_hi: torch.Tensor, grids: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.self_attend(self.cross_attend(v_lo, v_hi, grids))
        return x[:, :-1], x[:, -1]
