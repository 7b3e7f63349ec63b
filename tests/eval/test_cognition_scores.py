"""VQ-window and pixel accuracy of generated cognition answers (eval/cognition_scores.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vlsa_platform.data.cognition import format_px_answer, format_vq_answer
from vlsa_platform.eval.cognition_scores import PX_TOLERANCE, px_counts, vq_counts

WINDOW = np.array([[12, 405, 3, 99], [0, 7, 4095, 18], [5, 5, 5, 5], [1, 22, 333, 4000]])
CELLS = np.array([[[228, 171, 171], [175, 120, 200]], [[231, 231, 231], [9, 173, 255]]])


@pytest.mark.parametrize("vq_format", ["text", "special"])
def test_vq_perfect_partial_and_unparsable(vq_format):
    reference = format_vq_answer(WINDOW, vq_format)
    assert vq_counts(reference, reference, vq_format) == (16, 16)
    wrong = WINDOW.copy()
    wrong[0, 0], wrong[2, 3], wrong[3, 1] = 13, 6, 21
    assert vq_counts(format_vq_answer(wrong, vq_format), reference, vq_format) == (13, 16)
    # A missing last row: its cells are wrong, the others still count.
    assert vq_counts(format_vq_answer(WINDOW[:3], vq_format), reference, vq_format) == (12, 16)
    # Unparsable answers count as all wrong: free text, an empty answer, a ragged grid (ran on past the window).
    ragged = format_vq_answer(WINDOW, vq_format) + "\n" + format_vq_answer(WINDOW[:1, :2], vq_format)
    for answer in ("I cannot tell.", "", ragged):
        assert vq_counts(answer, reference, vq_format) == (0, 16)


def test_vq_text_answer_in_special_format_is_unparsable():
    assert vq_counts(format_vq_answer(WINDOW, "text"), format_vq_answer(WINDOW, "special"), "special") == (
        0,
        16,
    )


def test_px_tolerance_edges():
    reference = format_px_answer(CELLS)
    assert px_counts(reference, reference) == (12, 12)
    assert px_counts(format_px_answer(CELLS + PX_TOLERANCE), reference) == (12, 12)
    assert px_counts(format_px_answer(CELLS - PX_TOLERANCE), reference) == (12, 12)
    off = CELLS.copy()
    off[0, 0, 0] += PX_TOLERANCE + 1
    off[1, 1, 2] -= PX_TOLERANCE + 1
    assert px_counts(format_px_answer(off), reference) == (10, 12)
    assert px_counts(format_px_answer(CELLS + 3), reference, tolerance=2) == (0, 12)


def test_px_unparsable_counts_as_all_wrong():
    reference = format_px_answer(CELLS)
    for answer in ("grey", "", "(1, 2, 3) (4, 5, 6)\n(7, 8, 9)", "(1, 2) (3, 4)"):
        assert px_counts(answer, reference) == (0, 12)


def test_a_reference_that_is_not_a_grid_is_an_error():
    with pytest.raises(ValueError):
        px_counts("(1, 2, 3)", "no numbers")
    with pytest.raises(ValueError):
        vq_counts("1 2", "no numbers")


@pytest.mark.parametrize("vq_format", ["text", "special"])
def test_a_generated_index_beyond_int64_counts_as_wrong(vq_format):
    huge = "9" * 30  # a generated answer may hold any digits
    predicted = f"{huge} 1 2 3" if vq_format == "text" else f"<vq_{huge}><vq_1><vq_2><vq_3>"
    assert vq_counts(predicted, format_vq_answer(WINDOW[:1], vq_format), vq_format) == (0, 4)
    assert px_counts(f"({huge}, 1, 2)", format_px_answer(CELLS[:1, :1])) == (0, 3)
