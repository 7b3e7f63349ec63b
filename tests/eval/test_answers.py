"""Exact match after normalisation (eval/answers.py)."""

from __future__ import annotations

import pytest

from vlsa_platform.eval.answers import exact_match, normalize_answer


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("red", "red"),
        ("  Red.  ", "red"),
        ("Two   shapes!", "two shapes"),
        ("A red circle\non the left.", "a red circle on the left"),
        ("yes ?!", "Yes"),
        ("STRASSE", "straße"),  # case folding, not lower-casing
        ("top。", "top"),  # any Unicode punctuation at the end
    ],
)
def test_equal_after_normalisation(prediction, reference):
    assert exact_match(prediction, reference)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("red circle", "red"),
        ("", "red"),
        ("3.5", "35"),  # inner punctuation stays
        ("(red)", "red"),  # so does leading punctuation
        ("re d", "red"),
    ],
)
def test_different_after_normalisation(prediction, reference):
    assert not exact_match(prediction, reference)


def test_normalised_form():
    assert normalize_answer(" \tA  Red\nCircle . \n") == "a red circle"
    assert normalize_answer("...") == ""
