"""Compressive high-resolution image encoding: the tiling geometry (paper §3.1, DESIGN.md §2).

An image of any size is first shrunk (aspect ratio kept) if it would need more tiles than ``max_grid`` allows,
then padded at the bottom/right to the smallest multiple of the encoder's input size, cut into ``rows * cols``
hi-res tiles ``X_Hi`` (row-major), and the whole padded canvas is resized to the encoder size for the low-res
snapshot ``X_Lo``. Padding uses the encoder's mean colour, so it is zero after normalisation.

The same geometry feeds all three vision paths: the SA-Perceiver (which needs the grid for its locality mask),
LLaVA-NeXT ``anyres`` flattening (which needs the unpadded content size), and ``lowres`` (snapshot only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def plan_grid(height: int, width: int, tile: int, max_grid: tuple[int, int] = (2, 2)) -> TileGrid:
    """The tile grid for an image of ``height x width`` pixels.

    The image is shrunk only if it is larger than ``max_grid`` tiles allow in either direction (aspect kept);
    it is never enlarged.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    max_rows, max_cols = max_grid
    if max_rows < 1 or max_cols < 1:
        raise ValueError(f"max_grid must be at least (1, 1), got {max_grid}")
    scale = min(1.0, max_rows * tile / height, max_cols * tile / width)
    if scale < 1.0:
        height = min(max_rows * tile, max(1, round(height * scale)))
        width = min(max_cols * tile, max(1, round(width * scale)))
    return TileGrid(
        rows=math.ceil(height / tile),
        cols=math.ceil(width / tile),
        content_height=height,
        content_width=width,
        tile=tile,
    )


def tile_image(
    image: torch.Tensor,
    tile: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    max_grid: tuple[int, int] = (2, 2),
) -> tuple[torch.Tensor, torch.Tensor, TileGrid]:
    """Cut one image into normalised hi-res tiles and a low-res snapshot.

    Args:
        image: ``(3, H, W)`` float tensor in ``[0, 1]``.
        tile: encoder input size.
        mean, std: the encoder's normalisation.
        max_grid: ``(rows, cols)`` cap.

    Returns:
        ``tiles`` ``(m, 3, tile, tile)``, ``lowres`` ``(3, tile, tile)``, and the :class:`TileGrid`.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    grid = plan_grid(image.shape[1], image.shape[2], tile, max_grid)
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
