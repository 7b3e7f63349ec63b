"""Which setting is best, or which settings tie: the one rule the report and a submission's summary share.

A *setting* is one combination of a sweep's values other than the seed; its :class:`Score` holds the metric's
final value for each of its runs (one per seed when ``sweep.seeds`` repeats it). :func:`judge` picks the best
mean and the settings tied with it (docs/tracking.md, "Ties"):

- the spread of a setting is the sample standard deviation of its values (``n - 1`` in the denominator);
- the *seed spread* of the sweep is the pooled sample standard deviation of every setting with two or more
  values, ``sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1))``: one estimate of seed noise from all the repeats;
- a setting ties with the best when its mean is within the seed spread of the best mean
  (``|mean - best mean| <= seed spread``), or when both means print alike to :data:`PRECISION` significant
  digits (the only rule without repeats);
- the best is starred only when nothing ties with it; otherwise every tied setting, the best included, is
  marked :data:`TIE_MARK` and there is no best.

:func:`format_change` writes a metric's change over a run (first -> last validation) for both.

Pure Python (``statistics``), importable without MLflow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["min", "max"]
MODES: tuple[Mode, ...] = ("min", "max")
PRECISION = 4
"""Significant digits a metric value is printed with; values equal at this precision are a tie."""
BEST_MARK = "★"
TIE_MARK = "tied"
SPREAD_NAME = "sample standard deviation"


def format_value(value: float | None) -> str:
    """A metric value to :data:`PRECISION` significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.{PRECISION}g}"


def format_spread(value: float) -> str:
    """A spread to 2 significant digits (it is itself an estimate from a few seeds)."""
    return f"{value:.2g}"


def format_change(first: float | None, last: float | None) -> str:
    """A metric's change over a run: ``6.912 -> 6.874 (-0.6%)`` (the relative change of the last value from
    the first); ``-`` when either is missing, no percentage when the first is 0 or a value is not finite."""
    if first is None or last is None:
        return "-"
    text = f"{format_value(first)} -> {format_value(last)}"
    if first == 0 or not (math.isfinite(first) and math.isfinite(last)):
        return text
    return f"{text} ({(last - first) / abs(first) * 100:+.1f}%)"


@dataclass(frozen=True)
class Score:
    """One setting's final metric values, one per run that has one (finite)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float | None:
        """Sample standard deviation of the values; ``None`` below two values."""
        return statistics.stdev(self.values) if self.n >= 2 else None

    def text(self) -> str:
        """``1.234`` for one value; ``1.234 ± 0.012 (3 seeds)`` for several."""
        if self.spread is None:
            return format_value(self.mean)
        return f"{format_value(self.mean)} ± {format_spread(self.spread)} ({self.n} seeds)"


def score(values: Sequence[float | None]) -> Score | None:
    """The :class:`Score` of the finite ``values``; ``None`` when there are none."""
    finite = tuple(v for v in values if v is not None and math.isfinite(v))
    return Score(finite) if finite else None


def seed_spread(scores: Sequence[Score | None]) -> float | None:
    """Pooled sample standard deviation over the scores with two or more values; ``None`` without repeats."""
    repeated = [s for s in scores if s is not None and s.n >= 2]
    dof = sum(s.n - 1 for s in repeated)
    if not dof:
        return None
    return math.sqrt(sum((s.n - 1) * (s.spread or 0.0) ** 2 for s in repeated) / dof)


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`judge` over a sequence of scores (indices into it)."""

    best: int | None
    """The best mean (the earliest of equal means); ``None`` when no score exists."""
    tied: tuple[int, ...]
    """Every score tied with the best, the best included, in order; empty when the best stands alone."""
    band: float | None
    """The seed spread the means were compared with (:func:`seed_spread`); ``None`` without repeats."""

    @property
    def starred(self) -> int | None:
        """The best, when nothing ties with it."""
        return None if self.tied else self.best

    def mark(self, index: int) -> str:
        """:data:`BEST_MARK`, :data:`TIE_MARK` or ``""`` for the score at ``index``."""
        if index == self.starred:
            return BEST_MARK
        return TIE_MARK if index in self.tied else ""


def judge(scores: Sequence[Score | None], mode: Mode) -> Verdict:
    """The best of ``scores`` by mean (``min`` or ``max``) and the scores tied with it (module docstring)."""
    present = [(i, s) for i, s in enumerate(scores) if s is not None]
    if not present:
        return Verdict(None, (), None)
    pick = min if mode == "min" else max
    best_index, best = pick(present, key=lambda pair: pair[1].mean)  # the first of equal means
    band = seed_spread(scores)
    tied = [
        i
        for i, s in present
        if i != best_index
        and (
            format_value(s.mean) == format_value(best.mean)
            or (band is not None and abs(s.mean - best.mean) <= band)
        )
    ]
    return Verdict(best_index, tuple(sorted([best_index, *tied])) if tied else (), band)


def ranks(values: Sequence[float | None], mode: Mode) -> list[int | None]:
    """Each value's rank by ``mode`` (1 = best); values the report shows alike (:func:`format_value`, the tie
    rule of :func:`judge`) share a rank and the next one skips: 1, 1, 3. ``None`` for a missing or non-finite
    value."""
    finite = [v if v is not None and math.isfinite(v) else None for v in values]
    known = [v for v in finite if v is not None]

    def beats(other: float, value: float) -> bool:
        better = other < value if mode == "min" else other > value
        return better and format_value(other) != format_value(value)

    return [None if v is None else 1 + sum(beats(other, v) for other in known) for v in finite]


def verdict_line(
    objective: str, labels: Sequence[str], scores: Sequence[Score | None], verdict: Verdict, noun: str
) -> str:
    """One sentence: ``Best by OBJECTIVE: LABEL = VALUE.``, or the tie and why, or that no ``noun`` (e.g.
    ``child``) has a value."""
    if verdict.best is None:
        return f"Best by {objective}: none (no {noun} has a value)."
    best = scores[verdict.best]
    assert best is not None
    if not verdict.tied:
        return f"Best by {objective}: {labels[verdict.best]} = {best.text()}."
    names = "; ".join(labels[i] for i in verdict.tied)
    if verdict.band is None:
        return (
            f"Tie by {objective}: {names} = {format_value(best.mean)} (equal to {PRECISION} significant "
            "digits); no best."
        )
    return (
        f"Tie by {objective}: {names} have means within the seed spread (pooled {SPREAD_NAME} "
        f"{format_spread(verdict.band)}) of the best mean {format_value(best.mean)}; no best."
    )


__all__ = [
    "BEST_MARK",
    "MODES",
    "PRECISION",
    "SPREAD_NAME",
    "TIE_MARK",
    "Mode",
    "Score",
    "Verdict",
    "format_change",
    "format_spread",
    "format_value",
    "judge",
    "ranks",
    "score",
    "seed_spread",
    "verdict_line",
]
