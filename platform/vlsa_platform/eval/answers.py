"""Exact match of a generated answer with the reference answer (``val/exact_match``).

Both texts are normalised the same way before comparing: surrounding whitespace stripped, inner runs of
whitespace collapsed to one space, case folded (``str.casefold``), and trailing punctuation (any Unicode
punctuation character, with whitespace between them) removed. So ``"Red."`` matches ``"red"`` and
``"two  shapes"`` matches ``"Two shapes"``, but ``"red circle"`` does not match ``"red"``.
"""

from __future__ import annotations

import unicodedata


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """``text`` stripped, whitespace collapsed, case folded, trailing punctuation removed."""
    out = " ".join(text.split()).casefold()
    end = len(out)
    while end and (_is_punctuation(out[end - 1]) or out[end - 1].isspace()):
        end -= 1
    return out[:end]


def exact_match(prediction: str, reference: str) -> bool:
    """Whether the normalised prediction equals the normalised reference."""
    return normalize_answer(prediction) == normalize_answer(reference)


__all__ = ["exact_match", "normalize_answer"]
