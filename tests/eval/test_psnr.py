"""PSNR of reconstructions (eval/psnr.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlsa_platform.eval.psnr import psnr, to_unit_range


def test_known_values():
    target = torch.zeros(2, 3, 4, 4)
    prediction = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.5)])
    assert psnr(prediction, target).tolist() == pytest.approx([20.0, 10 * math.log10(4)])


def test_matches_the_formula_on_random_images():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 8, 8, generator=gen), torch.rand(3, 3, 8, 8, generator=gen)
    mse = ((a.numpy().astype(np.float64) - b.numpy()) ** 2).reshape(3, -1).mean(1)
    assert psnr(a, b).numpy() == pytest.approx(10 * np.log10(1.0 / mse))
    # On [-1, 1] pixels the range is 2: the same as on [0, 1] after to_unit_range.
    assert psnr(a * 2 - 1, b * 2 - 1, data_range=2.0).numpy() == pytest.approx(
        psnr(to_unit_range(a * 2 - 1), to_unit_range(b * 2 - 1)).numpy()
    )


def test_identical_images_are_infinite_and_closer_is_higher():
    image = torch.rand(1, 3, 8, 8)
    assert psnr(image, image.clone()).item() == math.inf
    noise = torch.randn(1, 3, 8, 8)
    assert psnr(image + 0.01 * noise, image).item() > psnr(image + 0.1 * noise, image).item() > 0


def test_unit_range_and_shapes():
    assert to_unit_range(torch.tensor([-1.0, 0.0, 1.0, 1.5])).tolist() == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
