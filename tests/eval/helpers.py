"""Helpers of the validation-metric tests (``tests/eval``, and ``tests/train/test_validation_metrics.py``, which
needs ``tests/train``'s process group): the tiny recipe with a short validation set, and cognition turns in
every image sample without a VQ-VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.data.cognition import CognitionHook, CognitionSettings

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"


def tiny_experiment(*overrides: str):
    """The tiny paper recipe with a short validation set, on random weights (the tests here teach the model
    what to answer, or check what a model that knows nothing answers)."""
    return load_experiment(
        PAPER,
        scale="tiny",
        overrides=["data.validation.sampling=first:6", "model.tiny_weights=random", *overrides],
    )


def fake_vq_grid(record, image) -> np.ndarray:
    """A fixed 8x8 'VQ grid' (no VQ-VAE needed): VQ questions in every image sample."""
    return (np.arange(64).reshape(8, 8) * 7) % 97


def cognition_everywhere(seed: int, vq_window: int = 4, px_grid: int = 2) -> CognitionHook:
    """A VQ and a pixel question in every image sample (smaller windows and grids give shorter answers)."""
    settings = CognitionSettings(p_vq=1.0, p_px=1.0, vq_window=vq_window, px_grid=px_grid)
    return CognitionHook(settings, seed, vq_lookup=fake_vq_grid)
