"""One image -> the model's image inputs: hi-res tiles, low-res snapshot, grid, visual token count, L_rec target.

The geometry is :mod:`vlsa_platform.model.tiling`'s (``plan_grid``; ``tile_image`` is the float reference
these inputs match); this module computes them on 8 bits where it can:

- An image larger than the canvas of its grid (the best fit among ``grid_pinpoints``) is shrunk to the grid's
  content size here, with PIL's bicubic filter
  on the 8-bit image (antialiased, and much cheaper than resampling a float tensor of a large photo), so the
  content needs no further resize. The size comes from ``plan_grid``, so the grid is the one ``tile_image``
  computes.
- The tiles are the content normalised in place in zero tiles (zero is the mean colour after normalisation),
  exactly ``tile_image``'s. The low-res snapshot is the 8-bit padded canvas (the mean colour rounded to 8 bits)
  resized on 8 bits, then normalised: within one 8-bit step of ``tile_image``'s float resize on average, about a
  third of its cost (``benchmarks/data_throughput.py``).
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
from ..model.tiling import TileGrid, plan_grid


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


def _mean_fill(mean: Sequence[float]) -> tuple[float, float, float]:
    """The encoder's mean colour to the nearest 8-bit value: the padding of the 8-bit canvases."""
    return tuple(float(round(m * 255)) for m in mean)  # type: ignore[return-value]


def _resize_uint8(canvas: torch.Tensor, size: int) -> torch.Tensor:
    """A ``(3, h, w)`` uint8 canvas to ``(3, size, size)`` uint8: torch's antialiased bicubic on 8 bits
    (vectorised; ~3x cheaper than the same filter on floats)."""
    if canvas.shape[1:] == (size, size):
        return canvas
    return F.interpolate(
        canvas.unsqueeze(0), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )[0]


def _recon_from_canvas(canvas: torch.Tensor, resolution: int) -> torch.Tensor:
    """The L_rec target from the 8-bit padded canvas: resized on 8 bits, scaled to [-1, 1]."""
    return _resize_uint8(canvas, resolution).float().div_(127.5).sub_(1.0)


def _normalise_(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(pixels / 255 - mean) / std`` in place on a float tensor of 8-bit values."""
    return pixels.div_(255.0).sub_(torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1))


def _encoder_inputs(
    pixels: torch.Tensor, canvas: torch.Tensor, grid: TileGrid, config: VLSAConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised tiles and low-res snapshot of ``tile_image``, from the 8-bit content and its 8-bit
    padded canvas. Tiles: each tile's part of the content copied into a zero tile and normalised in place
    (zero = the mean colour after normalisation, exactly ``tile_image``'s tiles). Snapshot: the 8-bit canvas
    resized on 8 bits, then normalised — within one 8-bit step of ``tile_image``'s float resize on average
    (the tests check it), at about a third of its cost."""
    tile = config.vision_config.image_size
    tiles = torch.zeros(grid.num_tiles, 3, tile, tile)
    for index in range(grid.num_tiles):
        top, left = (index // grid.cols) * tile, (index % grid.cols) * tile
        height, width = min(tile, grid.content_height - top), min(tile, grid.content_width - left)
        if height > 0 and width > 0:
            region = tiles[index, :, :height, :width]
            region.copy_(pixels[:, top : top + height, left : left + width])
            _normalise_(region, config.image_mean, config.image_std)
    lowres = _normalise_(_resize_uint8(canvas, tile).float(), config.image_mean, config.image_std)
    return tiles, lowres


def prepare_image(image: Image.Image, config: VLSAConfig, *, recon: bool | None = None) -> ImageInputs:
    """Tile one RGB image with ``config``'s geometry (encoder size, mean/std, ``grid_pinpoints``).

    Args:
        image: the decoded image.
        config: the model config (vision mode, geometry, ``recon_resolution``).
        recon: build the L_rec target; default ``config.recon``.
    """
    image, grid = _fit_to_grid(image, config.vision_config.image_size, config.grid_pinpoints)
    pixels = to_uint8(image)
    canvas = padded_canvas(pixels, grid, _mean_fill(config.image_mean))
    tiles, lowres = _encoder_inputs(pixels, canvas, grid, config)
    target = None
    if config.recon if recon is None else recon:
        target = _recon_from_canvas(canvas, config.recon_resolution)
    return ImageInputs(tiles, lowres, grid, num_visual_tokens(config, grid), target)


def recon_target(image: Image.Image, config: VLSAConfig) -> torch.Tensor:
    """The ``(3, R, R)`` L_rec target in ``[-1, 1]`` alone (for filling a frozen-target cache)."""
    image, grid = _fit_to_grid(image, config.vision_config.image_size, config.grid_pinpoints)
    canvas = padded_canvas(to_uint8(image), grid, _mean_fill(config.image_mean))
    return _recon_from_canvas(canvas, config.recon_resolution)


__all__ = ["ImageInputs", "padded_canvas", "prepare_image", "recon_target", "to_tensor", "to_uint8"]
