"""Compressive high-resolution image encoding: the tiling geometry (paper §3.1, DESIGN.md §2).

The grid is the one of a pinpoint list (``(rows, cols)`` grids of encoder-sized tiles) that LLaVA-NeXT's
``select_best_resolution`` picks: the most image kept, then the least padding. The image is shrunk (aspect ratio
kept) only if it is larger than that grid's canvas, never enlarged, then padded at the bottom/right to the
canvas, cut into ``rows * cols`` hi-res tiles ``X_Hi`` (row-major), and the whole padded canvas is resized to
the encoder size for the low-res snapshot ``X_Lo``. Padding uses the encoder's mean colour, so it is zero after
normalisation. With the default list (:data:`DEFAULT_GRID_PINPOINTS`) the grid is the smallest multiple of the
tile that holds the image whenever the list has one (1x1 … 2x2, 1x3, 3x1).

The same geometry feeds all three vision paths: the SA-Perceiver (which needs the grid for its locality mask),
LLaVA-NeXT ``anyres`` flattening (which needs the unpadded content size), and ``lowres`` (snapshot only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.image_processing_utils import select_best_resolution

from ..config.model_section import DEFAULT_GRID_PINPOINTS


@dataclass(frozen=True)
class TileGrid:
    """Where an image of ``(height, width)`` lands on the tile canvas.

    Attributes:
        rows, cols: number of hi-res tiles vertically / horizontally (``m = rows * cols``).
        content_height, content_width: size of the (possibly shrunk) image on the canvas, top-left aligned.
        tile: the encoder's input size (336 for CLIP-ViT-L/14-336).
    """

    rows: int
    cols: int
    content_height: int
    content_width: int
    tile: int

    @property
    def num_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def canvas_height(self) -> int:
        return self.rows * self.tile

    @property
    def canvas_width(self) -> int:
        return self.cols * self.tile


def check_pinpoints(pinpoints: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """``pinpoints`` as a tuple of ``(rows, cols)`` pairs; ``ValueError`` for an empty list, a pair that is not
    two positive integers, or a repeated grid."""
    grids = tuple(tuple(int(n) for n in pair) for pair in pinpoints)
    if not grids:
        raise ValueError("grid_pinpoints is empty: give at least one (rows, cols) grid")
    for pair in grids:
        if len(pair) != 2 or min(pair) < 1:
            raise ValueError(f"grid pinpoint {list(pair)} is not [rows, cols] with both at least 1")
    if len(set(grids)) != len(grids):
        raise ValueError(f"grid_pinpoints repeats a grid: {[list(g) for g in grids]}")
    return grids  # type: ignore[return-value]


def largest_grids(pinpoints: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """The pinpoints with the most tiles (what a worst-case image is cut into)."""
    grids = check_pinpoints(pinpoints)
    most = max(rows * cols for rows, cols in grids)
    return [(rows, cols) for rows, cols in grids if rows * cols == most]


def plan_grid(
    height: int, width: int, tile: int, pinpoints: Sequence[Sequence[int]] = DEFAULT_GRID_PINPOINTS
) -> TileGrid:
    """The tile grid for an image of ``height x width`` pixels.

    The grid is the pinpoint whose canvas LLaVA-NeXT's ``select_best_resolution`` picks for the image; the
    image is shrunk (aspect kept) only if it is larger than that canvas in either direction, never enlarged,
    and a shrunk image gets the least-padded pinpoint that holds it.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    canvases = [(rows * tile, cols * tile) for rows, cols in check_pinpoints(pinpoints)]
    canvas_h, canvas_w = select_best_resolution((height, width), canvases)
    scale = min(1.0, canvas_h / height, canvas_w / width)
    if scale < 1.0:
        height = min(canvas_h, max(1, round(height * scale)))
        width = min(canvas_w, max(1, round(width * scale)))
        # The shrunk image fits this canvas; the least-padded canvas that holds it is chosen again, since the
        # effective-area rule truncates to whole pixels and can leave a tile of padding only (2679x1339 px
        # -> 672x336 on 3x1). Planning the shrunk image then gives the same grid.
        canvas_h, canvas_w = select_best_resolution((height, width), canvases)
    return TileGrid(
        rows=canvas_h // tile,
        cols=canvas_w // tile,
        content_height=height,
        content_width=width,
        tile=tile,
    )


def tile_image(
    image: torch.Tensor,
    tile: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pinpoints: Sequence[Sequence[int]] = DEFAULT_GRID_PINPOINTS,
) -> tuple[torch.Tensor, torch.Tensor, TileGrid]:
    """Cut one image into normalised hi-res tiles and a low-res snapshot.

    Args:
        image: ``(3, H, W)`` float tensor in ``[0, 1]``.
        tile: encoder input size.
        mean, std: the encoder's normalisation.
        pinpoints: the ``(rows, cols)`` grids allowed (:func:`plan_grid`).

    Returns:
        ``tiles`` ``(m, 3, tile, tile)``, ``lowres`` ``(3, tile, tile)``, and the :class:`TileGrid`.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    grid = plan_grid(image.shape[1], image.shape[2], tile, pinpoints)
    x = image.float().unsqueeze(0)
    if (grid.content_height, grid.content_width) != tuple(image.shape[1:]):
        x = F.interpolate(
            x,
            size=(grid.content_height, grid.content_width),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        ).clamp(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean_t) / std_t
    # Zero after normalisation = the mean colour before it.
    canvas = x.new_zeros(1, 3, grid.canvas_height, grid.canvas_width)
    canvas[:, :, : grid.content_height, : grid.content_width] = x
    tiles = (
        canvas.view(3, grid.rows, tile, grid.cols, tile)
        .permute(1, 3, 0, 2, 4)
        .reshape(grid.num_tiles, 3, tile, tile)
    )
    lowres = F.interpolate(canvas, size=(tile, tile), mode="bicubic", antialias=True, align_corners=False)[0]
    return tiles.contiguous(), lowres, grid


def anyres_token_count(grid: TileGrid, patches_per_side: int, newline: bool) -> int:
    """Visual tokens LLaVA-NeXT's ``anyres`` flattening gives the LLM for one image.

    The base (snapshot) features, then the tile features laid out as one ``(rows*n, cols*n)`` feature map,
    cropped to the image content (LLaVA-NeXT's ``unpad``), with one newline token after each feature row.
    """
    height, width = anyres_feature_size(grid, patches_per_side)
    return patches_per_side**2 + height * width + (height if newline else 0)


def anyres_feature_size(grid: TileGrid, patches_per_side: int) -> tuple[int, int]:
    """``(rows, cols)`` of the unpadded hi-res feature map for ``anyres`` (content rounded up to a patch)."""
    full_h, full_w = grid.rows * patches_per_side, grid.cols * patches_per_side
    height = min(full_h, math.ceil(grid.content_height * full_h / grid.canvas_height))
    width = min(full_w, math.ceil(grid.content_width * full_w / grid.canvas_width))
    return height, width
