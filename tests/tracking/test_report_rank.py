"""The report's ``rank`` column: :func:`~vlsa_platform.tracking.report.verdict.ranks` (1 = best by the mode,
equal values share a rank and the next one skips, missing or non-finite values unranked) and the runs table of a
sweep whose parent asks for a benchmark score with ``max`` (a real local MLflow store, as in test_report.py)."""

from __future__ import annotations

import math

import pytest

from vlsa_platform.tracking import Tracker, TrackerOptions, TrackingStore, local_store, names
from vlsa_platform.tracking.report import BEST_MARK, collect, render_markdown
from vlsa_platform.tracking.report.render import RANK_HEADER
from vlsa_platform.tracking.report.verdict import Mode, ranks

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)
SWEEP = "rank-sweep"
VQA = "eval/vlsa_synthetic_vqa/exact_match"
TRIALS = {"trial-0": 0.4, "trial-1": None, "trial-2": 0.7}
"""Child name -> its final synthetic-VQA exact match (``None``: the child never logged it). The best is last,
so neither the order of the rows nor of the children decides the rank."""


# ------------------------------------------------------------------------------------------------- ranks


def test_ranks_put_the_smallest_first_in_min_mode() -> None:
    assert ranks([3.0, 1.0, 2.0], "min") == [3, 1, 2]


def test_ranks_put_the_largest_first_in_max_mode() -> None:
    assert ranks([3.0, 1.0, 2.0], "max") == [1, 3, 2]


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        ([1.0, 1.0, 2.0], "min", [1, 1, 3]),
        ([0.5, 0.7, 0.7, 0.2], "max", [3, 1, 1, 4]),
        ([2.0, 1.0, 2.0, 3.0], "min", [2, 1, 2, 4]),
        ([0.3, 0.3, 0.3], "max", [1, 1, 1]),
    ],
)
def test_equal_values_share_a_rank_and_the_next_one_skips(
    values: list[float], mode: Mode, expected: list[int]
) -> None:
    assert ranks(values, mode) == expected


@pytest.mark.parametrize(
    ("mode", "expected"), [("min", [None, None, 2, None, 1, None]), ("max", [None, None, 1, None, 2, None])]
)
def test_missing_and_non_finite_values_are_unranked_and_push_no_other_down(
    mode: Mode, expected: list[int | None]
) -> None:
    assert ranks([None, math.nan, 2.0, math.inf, 1.0, -math.inf], mode) == expected
    assert ranks([None, math.nan], mode) == [None, None]
    assert ranks([], mode) == []


# ------------------------------------------------------------------------------------------------ report


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrackingStore:
    """A sweep whose parent asks for the synthetic-VQA exact match, ``max``; one trial never logged it."""
    store = local_store(tmp_path_factory.mktemp("rank") / "work")
    parent = Tracker.start_parent(SWEEP, "submission", store=store, options=FAST)
    parent.log_params({"sweep": {"metric": VQA, "mode": "max"}})
    for i, (name, value) in enumerate(TRIALS.items()):
        child = Tracker.start_child(
            parent.run_id, name, names.run_tags(trial_id=f"t{i}"), store=store, options=FAST
        )
        child.log_params({"loss": {"rec_weight": 0.1 * (i + 1)}})
        metrics = {names.VAL_LOSS_LLM: 1.0 + i}  # lowest on trial-0: the rank must not follow it
        if value is not None:
            metrics[VQA] = value
        child.log_metrics(metrics, step=1)
        assert child.close()
    assert parent.close()
    return store


def _runs_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows (as cells) of the Markdown runs table."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"| {BEST_MARK} | {RANK_HEADER} |"))
    table = []
    for line in [lines[first], *lines[first + 2 :]]:
        if not line.startswith("| "):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return table[0], table[1:]


def test_a_sweep_by_a_benchmark_score_ranks_its_trials_by_it(store: TrackingStore) -> None:
    report = collect(SWEEP, store)
    assert (report.metric, report.mode, report.metric_source) == (VQA, "max", "parent run")
    text = render_markdown(report)
    header, rows = _runs_table(text)
    assert header[:3] == [BEST_MARK, RANK_HEADER, "run"]
    metric = header.index(VQA)
    assert header[metric + 1] == f"{VQA} first -> last"
    by_name = {row[header.index("run")]: row for row in rows}
    assert list(by_name) == list(TRIALS)
    assert [by_name[n][metric] for n in TRIALS] == ["0.4", "-", "0.7"]
    assert [by_name[n][header.index(RANK_HEADER)] for n in TRIALS] == ["2", "-", "1"]
    assert [by_name[n][0] for n in TRIALS] == ["", "", BEST_MARK]
    assert f"Best by {VQA} (max, parent run): trial-2 = 0.7." in text
