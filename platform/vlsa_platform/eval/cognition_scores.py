"""Accuracy of generated cognition answers (paper §3.2): ``val/vq_accuracy`` and ``val/px_accuracy``.

Both parse the generated text with the parsers of the format the cognition turns are written in
(``data.cognition.parse_vq_answer`` / ``parse_px_answer``), and the reference answer the same way.

- VQ: the reference is a ``k x k`` window of codebook indices. Cell ``(i, j)`` is correct when the prediction
  has a cell ``(i, j)`` holding the same index; cells the prediction lacks are wrong, cells beyond the window
  are ignored. Score: correct cells / ``k * k``.
- Pixels: the reference is a ``g x g`` grid of mean ``(r, g, b)`` values (0-255). Each of the ``3 g^2`` values
  is correct when the predicted value of the same cell and channel is within :data:`PX_TOLERANCE` of it.
- An answer that does not parse as a rectangular grid (free text, a ragged last row because the answer ran on
  past the grid, an empty answer) counts as all wrong: 0 correct out of the reference's size.

Scores come as ``(correct, total)`` counts, so they add up over answers, batches and ranks.
"""

from __future__ import annotations

import numpy as np

from ..data.cognition import VQFormat, parse_px_answer, parse_vq_answer

#: Largest ``|predicted - true|`` (on the 0-255 scale) at which a pixel value counts as correct: 8 is about 3 %
#: of the range, a shade the eye barely tells apart, and coarser than the rounding of the targets (0.5), so
#: the metric rewards a model that knows the colour, not only one that reproduces the exact integers.
PX_TOLERANCE = 8


def _overlap_counts(predicted: np.ndarray | None, truth: np.ndarray, correct_fn) -> tuple[int, int]:
    total = int(truth.size)
    if predicted is None:
        return 0, total
    rows, cols = min(predicted.shape[0], truth.shape[0]), min(predicted.shape[1], truth.shape[1])
    correct = correct_fn(predicted[:rows, :cols], truth[:rows, :cols])
    return int(np.count_nonzero(correct)), total


def vq_counts(predicted: str, reference: str, vq_format: VQFormat = "text") -> tuple[int, int]:
    """``(correct indices, indices in the reference window)`` of one generated VQ answer.

    Raises:
        ValueError: the reference itself does not parse (not a VQ answer).
    """
    truth = parse_vq_answer(reference, vq_format)
    try:
        guess = parse_vq_answer(predicted, vq_format)
    except ValueError:
        guess = None
    return _overlap_counts(guess, truth, np.equal)


def px_counts(predicted: str, reference: str, tolerance: int = PX_TOLERANCE) -> tuple[int, int]:
    """``(values within tolerance, values in the reference grid)`` of one generated pixel answer.

    Raises:
        ValueError: the reference itself does not parse (not a pixel answer).
    """
    truth = parse_px_answer(reference)
    try:
        guess = parse_px_answer(predicted)
    except ValueError:
        guess = None
    return _overlap_counts(guess, truth, lambda p, t: np.abs(p - t) <= tolerance)


__all__ = ["PX_TOLERANCE", "px_counts", "vq_counts"]
