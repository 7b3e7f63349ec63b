"""Peak signal-to-noise ratio of reconstructions (``val/psnr``).

``PSNR = 10 log10(MAX^2 / MSE)`` dB per image, MSE over all its channels and pixels, with pixel values in
``[0, 1]`` (``MAX = 1``). Identical images give ``+inf``. (torchmetrics is not a dependency; this is its
formula for one image.)
"""

from __future__ import annotations

import torch


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``(N,)`` PSNR in dB of each image of ``prediction`` against ``target`` (both ``(N, ...)``), computed in
    float64."""
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in ``[-1, 1]`` (the VAE's range) -> ``[0, 1]``, clamped."""
    return ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)


__all__ = ["psnr", "to_unit_range"]
