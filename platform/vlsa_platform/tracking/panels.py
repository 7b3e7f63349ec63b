"""Images for the tracker: reconstruction panels and the conversion of arrays to PIL images.

:func:`reconstruction_panel` lays ground-truth images beside their reconstructions (what
:meth:`~vlsa_platform.tracking.tracker.Tracker.log_reconstruction` uploads); :func:`as_image` turns what
:meth:`~vlsa_platform.tracking.tracker.Tracker.log_image` is given into a PIL image. Tensors are accepted
without importing torch (anything with ``detach``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (tracking does not import torch)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _to_uint8_hwc(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return (np.clip((chw + 1.0) * 127.5, 0, 255) + 0.5).astype(np.uint8).transpose(1, 2, 0)


def reconstruction_panel(ground_truth: Any, reconstruction: Any, gap: int = 2) -> Image.Image:
    """A grid of N rows, each the ground-truth image beside its reconstruction.

    Args:
        ground_truth: (N, 3, H, W) in [-1, 1] (numpy or torch; the VAE's input range).
        reconstruction: (N, 3, H, W) in [-1, 1] — the decoded denoised latent (clipped to the range).
        gap: white pixels between panels.

    Returns:
        An RGB image of size (2W + gap, N·H + (N-1)·gap).
    """
    gt, rec = _to_numpy(ground_truth), _to_numpy(reconstruction)
    if gt.ndim == 3:
        gt, rec = gt[None], rec[None]
    if gt.shape != rec.shape or gt.ndim != 4 or gt.shape[1] != 3:
        raise ValueError(f"expected two (N, 3, H, W) arrays of one shape, got {gt.shape} and {rec.shape}")
    n, _, h, w = gt.shape
    canvas = np.full((n * h + (n - 1) * gap, 2 * w + gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        top = i * (h + gap)
        canvas[top : top + h, :w] = _to_uint8_hwc(gt[i])
        canvas[top : top + h, w + gap :] = _to_uint8_hwc(rec[i])
    return Image.fromarray(canvas, mode="RGB")


def as_image(image: Any) -> Image.Image:
    """A PIL image (a copy), from a PIL image or an (H, W) / (H, W, 3|4) array: uint8 as is, floats in
    [0, 1]. Raises ``ValueError`` for any other shape."""
    if isinstance(image, Image.Image):
        return image.copy()
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3|4) image, got shape {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr))


__all__ = ["as_image", "reconstruction_panel"]
