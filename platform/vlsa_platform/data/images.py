"""One image -> the model's image inputs: hi-res tiles, low-res snapshot, grid, visual token count, L_rec target.

The geometry is :mod:`vlsa_platform.model.tiling`'s (``plan_grid`` / ``tile_image``); this module only adds the
steps around it:

- An image larger than the canvas of its grid (the best fit among ``grid_pinpoints``) is shrunk to the grid's
  content size here, with PIL's bicubic filter
  on the 8-bit image (antialiased, and much cheaper than resampling a float tensor of a large photo), so
  ``tile_image`` receives an image that needs no resize. The size comes from ``plan_grid``, so the grid is the
  one ``tile_image`` computes.
- The reconstruction target is built from the same padded canvas the encoder sees — the image top-left, the
  rest in the encoder's mean colour, ``rows*tile x cols*tile`` — resized to ``recon_resolution`` square and
  scaled to ``[-1, 1]`` (the VAE's input range). So the picture the SA-Perceiver summarises and the picture
  L_rec asks to rebuild agree, padding included. It is made on 8 bits (the decoded pixels, the mean colour
  rounded to the nearest 8-bit value, torch's antialiased bicubic on ``uint8``): about 4x cheaper than on
  floats, and off the float computation by under one 8-bit step on average (a few at most, at sharp edges,
  from rounding between the two separable passes; the tests check it). Frozen-target caches build the VAE's input
  with :func:`recon_target` (``targets.recon_transform``), so cached latents match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..model.configuration_vlsa import VLSAConfig
from ..model.modeling_vlsa import num_visual_tokens
from ..model.tiling import TileGrid, plan_grid, tile_image


@dataclass(frozen=True)
class ImageInputs:
    """The model inputs derived from one image (``S`` = encoder input size, ``R`` = ``recon_resolution``).

    Attributes:
        tiles: ``(m, 3, S, S)`` normalised hi-res tiles ``X_Hi``, row-major.
        lowres: ``(3, S, S)`` normalised low-res snapshot ``X_Lo`` of the padded canvas.
        grid: where the image lies on the tile canvas.
        num_tokens: positions the image takes in the LLM's sequence (``num_visual_tokens``).
        recon: ``(3, R, R)`` L_rec target in ``[-1, 1]``, or ``None`` when not asked for.
    """

    tiles: torch.Tensor
    lowres: torch.Tensor
    grid: TileGrid
    num_tokens: int
    recon: torch.Tensor | None = None


def to_uint8(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` uint8, contiguous, from a PIL image (converted to RGB if needed)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` float32 in ``[0, 1]`` from a PIL image (converted to RGB if needed)."""
    return to_uint8(image).float().div_(255.0)


def _fit_to_grid(
    image: Image.Image, tile: int, pinpoints: Sequence[Sequence[int]]
) -> tuple[Image.Image, TileGrid]:
    grid = plan_grid(image.height, image.width, tile, pinpoints)
    if (grid.content_height, grid.content_width) != (image.height, image.width):
        image = image.resize((grid.content_width, grid.content_height), Image.Resampling.BICUBIC)
    return image, grid


def padded_canvas(content: torch.Tensor, grid: TileGrid, fill: tuple[float, float, float]) -> torch.Tensor:
    """The ``(3, rows*tile, cols*tile)`` canvas of ``content``'s dtype: ``content`` ``(3, h, w)`` top-left, the
    rest ``fill`` (the encoder's mean colour: what the normalised tiles hold, before normalisation)."""
    canvas = torch.empty(3, grid.canvas_height, grid.canvas_width, dtype=content.dtype)
    for channel, value in enumerate(fill):
        canvas[channel].fill_(value)
    canvas[:, : grid.content_height, : grid.content_width] = content
    return canvas


def _recon_from_uint8(
    content: torch.Tensor, grid: TileGrid, mean: Sequence[float], resolution: int
) -> torch.Tensor:
    """The L_rec target from the 8-bit content: padded with the mean colour (to the nearest 8-bit value),
    resized on 8 bits (torch's vectorised antialiased bicubic: ~4x faster than on floats), scaled to [-1, 1]."""
    fill = tuple(float(round(m * 255)) for m in mean)
    canvas = padded_canvas(content, grid, fill)
    if canvas.shape[1:] != (resolution, resolution):
        canvas = F.interpolate(
            canvas.unsqueeze(0),
            size=(resolution, resolution),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )[0]
    return canvas.float().div_(127.5).sub_(1.0)


def prepare_image(image: Image.Image, config: VLSAConfig, *, recon: bool | None = None) -> ImageInputs:
    """Tile one RGB image with ``config``'s geometry (encoder size, mean/std, ``grid_pinpoints``).

    Args:
        image: the decoded image.
        config: the model config (vision mode, geometry, ``recon_resolution``).
        recon: build the L_rec target; default ``config.recon``.
    """
    tile = config.vision_config.image_size
    image, grid = _fit_to_grid(image, tile, config.grid_pinpoints)
    pixels = to_uint8(image)
    tiles, lowres, tiled_grid = tile_image(
        pixels.float().div_(255.0),
        tile,
        tuple(config.image_mean),
        tuple(config.image_std),
        config.grid_pinpoints,
    )
    assert tiled_grid == grid, (tiled_grid, grid)  # the shrink above is plan_grid's own
    target = None
    if config.recon if recon is None else recon:
        target = _recon_from_uint8(pixels, grid, config.image_mean, config.recon_resolution)
    return ImageInputs(tiles, lowres, grid, num_visual_tokens(config, grid), target)


def recon_target(image: Image.Image, config: VLSAConfig) -> torch.Tensor:
    """The ``(3, R, R)`` L_rec target in ``[-1, 1]`` alone (for filling a frozen-target cache)."""
    image, grid = _fit_to_grid(image, config.vision_config.image_size, config.grid_pinpoints)
    return _recon_from_uint8(to_uint8(image), grid, config.image_mean, config.recon_resolution)


__all__ = ["ImageInputs", "padded_canvas", "prepare_image", "recon_target", "to_tensor", "to_uint8"]
