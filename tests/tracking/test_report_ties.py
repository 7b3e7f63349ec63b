"""Seed repeats and ties in ``report`` (a real local MLflow store, as in test_report.py) and in the summary that
``submit`` prints: each setting's mean ± sample standard deviation, ties marked as ties and never starred."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from vlsa_platform.cli.output import summary, table
from vlsa_platform.orchestration.submission_types import SubmissionResult, SubmissionSpec, TrialOutcome
from vlsa_platform.orchestration.sweep import describe_values
from vlsa_platform.tracking import Tracker, TrackerOptions, TrackingStore, local_store, names
from vlsa_platform.tracking.report import (
    BEST_MARK,
    REPORT_HTML,
    REPORT_MD,
    TIE_MARK,
    Score,
    collect,
    judge,
    objective_plot_name,
    plots,
    render_html,
    render_markdown,
    write_report,
)

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)
TIED = "seeded-tied"
CLEAR = "seeded-clear"
EQUAL = "equal-values"
SEEDS = (0, 1, 2)
TIED_VALUES = {0.1: (1.50, 1.52, 1.48), 0.3: (1.20, 1.23, 1.17), 1.0: (1.22, 1.25, 1.19)}
"""``loss.rec_weight`` -> ``val/loss_llm`` per seed. Pooled sd 0.027: 1.0 (mean 1.22) ties with 0.3 (1.20)."""
CLEAR_VALUES = {**TIED_VALUES, 1.0: (1.40, 1.43, 1.37)}
"""As :data:`TIED_VALUES`, but 1.0's mean 1.40 is far outside the seed spread: 0.3 is the one best."""
EQUAL_VALUES = {"trial-0": (0.1, 1.2340), "trial-1": (0.3, 1.23404), "trial-2": (1.0, 1.5)}
"""No repeats: trial-0 and trial-1 print alike to 4 significant digits (1.234)."""


@dataclass(frozen=True)
class Tracked:
    workdir: Path
    store: TrackingStore


def _sweep(store: TrackingStore, experiment: str, values: dict[float, tuple[float, ...]]) -> None:
    """A parent and one child per (weight, seed), the seed varying slowest (as Tune's grid orders them)."""
    parent = Tracker.start_parent(experiment, "submission", store=store, options=FAST)
    parent.log_params({"sweep": {"metric": names.VAL_LOSS_LLM, "mode": "min", "seeds": len(SEEDS)}})
    n = 0
    for index, seed in enumerate(SEEDS):
        for weight, per_seed in values.items():
            child = Tracker.start_child(
                parent.run_id, f"trial-{n:05d}", names.run_tags(trial_id=f"t{n}"), store=store, options=FAST
            )
            child.log_params({"loss": {"rec_weight": weight}, "seed": seed})
            child.log_metrics({names.LOSS_TOTAL: 2.0 + weight, names.VAL_LOSS_LLM: per_seed[index]}, step=1)
            assert child.close()
            n += 1
    assert parent.close()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    workdir = tmp_path_factory.mktemp("ties") / "work"
    store = local_store(workdir)
    _sweep(store, TIED, TIED_VALUES)
    _sweep(store, CLEAR, CLEAR_VALUES)
    parent = Tracker.start_parent(EQUAL, "submission", store=store, options=FAST)
    for name, (weight, value) in EQUAL_VALUES.items():
        child = Tracker.start_child(
            parent.run_id, name, names.run_tags(trial_id=name), store=store, options=FAST
        )
        child.log_params({"loss": {"rec_weight": weight}, "seed": 0})
        child.log_metrics({names.VAL_LOSS_LLM: value}, step=1)
        assert child.close()
    assert parent.close()
    return Tracked(workdir, store)


def _rows(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header starts with ``header_start``, as cells."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_seeded_sweep_groups_children_by_setting(tracked: Tracked) -> None:
    report = collect(TIED, tracked.store)
    assert report.repeated
    assert report.varied_params == ("loss.rec_weight", "seed")
    assert report.setting_params() == ("loss.rec_weight",)
    settings = report.settings()
    assert [s.describe() for s in settings] == [
        "loss.rec_weight=0.1",
        "loss.rec_weight=0.3",
        "loss.rec_weight=1.0",
    ]
    for setting, per_seed in zip(settings, TIED_VALUES.values(), strict=True):
        assert sorted(c.params["seed"] for c in setting.children) == ["0", "1", "2"]
        assert setting.score is not None and setting.score.n == 3
        assert setting.score.mean == pytest.approx(statistics.fmean(per_seed))
        assert setting.score.spread == pytest.approx(statistics.stdev(per_seed))
    verdict = report.verdict()
    assert verdict.band == pytest.approx(((2 * 0.02**2 + 4 * 0.03**2) / 6) ** 0.5)
    assert (verdict.best, verdict.tied, verdict.starred) == (1, (1, 2), None)
    assert report.best is None  # no child is starred in a seeded report


def test_seeded_report_shows_mean_and_spread_and_marks_ties(tracked: Tracked) -> None:
    text = render_markdown(collect(TIED, tracked.store))
    settings = _rows(text, f"| {BEST_MARK} | loss.rec_weight | seeds |")
    assert [row[:4] for row in settings] == [
        ["", "0.1", "3", "1.5 ± 0.02"],
        [TIE_MARK, "0.3", "3", "1.2 ± 0.03"],
        [TIE_MARK, "1.0", "3", "1.22 ± 0.03"],
    ]
    assert settings[1][4] == "trial-00001, trial-00004, trial-00007"
    assert BEST_MARK not in "".join(cell for row in settings for cell in row)
    assert (
        "Tie by val/loss_llm (min, parent run): loss.rec_weight=0.3; loss.rec_weight=1.0 have means within the "
        "seed spread (pooled sample standard deviation 0.027) of the best mean 1.2; no best."
    ) in text
    children = _rows(text, f"| {BEST_MARK} | run |")  # no rank: the settings' table judges
    assert len(children) == 9 and all(row[0] == "" for row in children)  # the marks go to the settings
    page = render_html(collect(TIED, tracked.store))
    assert page.count('<tr class="tied"') == 2 and '<tr class="best"' not in page


def test_seeded_report_stars_a_best_outside_the_spread(tracked: Tracked) -> None:
    report = collect(CLEAR, tracked.store)
    text = render_markdown(report)
    settings = _rows(text, f"| {BEST_MARK} | loss.rec_weight | seeds |")
    assert [row[0] for row in settings] == ["", BEST_MARK, ""]
    assert "Best by val/loss_llm (min, parent run): loss.rec_weight=0.3 = 1.2 ± 0.03 (3 seeds)." in text
    assert render_html(report).count('<tr class="best"') == 1


def test_seeded_objective_plot_has_error_bars_and_no_seed_plot(tracked: Tracked, tmp_path: Path) -> None:
    report = collect(TIED, tracked.store)
    points = plots._objective_points(report, "loss.rec_weight")
    assert [(x, round(y, 6), round(spread or 0, 6)) for x, y, spread, *_ in points] == [
        (0.1, 1.5, 0.02),
        (0.3, 1.2, 0.03),
        (1.0, 1.22, 0.03),
    ]
    assert [mark for *_, mark, _ in points] == ["", TIE_MARK, TIE_MARK]
    written = write_report(report, tmp_path)
    plot_name = objective_plot_name("loss.rec_weight")
    assert plot_name in written and objective_plot_name("seed") not in written
    with Image.open(written[plot_name]) as image:
        assert image.format == "PNG"
        image.verify()
    assert "## Runs" in written[REPORT_MD].read_text() and written[REPORT_HTML].is_file()
    legend = plots.curve_figure(report, names.VAL_LOSS_LLM).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"loss.rec_weight={w}" for w in TIED_VALUES]


def test_equal_values_without_repeats_are_a_tie_with_no_star(tracked: Tracked) -> None:
    report = collect(EQUAL, tracked.store)
    assert not report.repeated and report.best is None
    text = render_markdown(report)
    rows = _rows(text, f"| {BEST_MARK} | rank | run |")
    assert [row[0] for row in rows] == [TIE_MARK, TIE_MARK, ""]
    assert text.count(BEST_MARK) == 1  # the column's header only
    assert (
        "Tie by val/loss_llm (min, default): trial-0; trial-1 = 1.234 (equal to 4 significant digits); no best."
        in text
    )
    assert "## Runs" not in text  # the per-child table only, as without ties
    page = render_html(report)
    assert page.count('<tr class="tied"') == 2 and '<tr class="best"' not in page


def test_judge_rules() -> None:
    assert judge([], "min").best is None
    one = judge([Score((1.0,)), Score((1.00001,)), None, Score((0.9,))], "max")
    assert (one.best, one.tied, one.starred) == (1, (0, 1), None)  # equal to 4 digits: both tied
    assert judge([Score((1.0,)), Score((1.001,))], "min").starred == 0
    # with repeats the band is the pooled spread (here 0.1 / sqrt 2 = 0.0707): the mean 1.06 ties with the best
    # mean 1.0, the mean 1.1 does not, and a value alone counts against the band too
    spread = judge([Score((0.95, 1.05)), Score((1.01, 1.11)), Score((1.10,))], "min")
    assert spread.band == pytest.approx(0.1 / 2**0.5)
    assert (spread.best, spread.tied, spread.mark(0), spread.mark(2)) == (0, (0, 1), TIE_MARK, "")
    alone = judge([Score((0.95, 1.05)), Score((1.11, 1.21))], "min")
    assert (alone.starred, alone.mark(0), alone.mark(1)) == (0, BEST_MARK, "")


# ------------------------------------------------------------------------------------------ submit summary


def _result(trials: list[TrialOutcome]) -> SubmissionResult:
    spec = SubmissionSpec("s", "e", "sweep", "e.yaml", "tiny", [], {}, "/w", "/s")
    return SubmissionResult(spec, "p", "sqlite:///x", trials)


def _trial(n: int, values: dict, value: float | None, status: str = "finished") -> TrialOutcome:
    metrics = {} if value is None else {names.VAL_LOSS_LLM: value}
    return TrialOutcome(f"t{n}", f"trial-{n:05d}", values, status, metrics)


def test_summary_keeps_its_table_and_adds_the_verdict_line() -> None:
    trials = [
        _trial(n, {"loss.rec_weight": w, "seed": seed}, TIED_VALUES[w][seed])
        for n, (seed, w) in enumerate((s, w) for s in SEEDS for w in TIED_VALUES)
    ]
    lines = summary(_result(trials), names.VAL_LOSS_LLM, "min")
    rows = [["trial", "status", names.VAL_LOSS_LLM, "first -> last", "values"]]
    rows.extend(
        [t.name, t.status, f"{t.metrics[names.VAL_LOSS_LLM]:.4g}", "-", describe_values(t.values)]
        for t in trials
    )
    assert lines[:-1] == table(rows)  # the table (no first value known: no change), one line added
    assert lines[-1] == (
        "Tie by val/loss_llm (min): loss.rec_weight=0.3; loss.rec_weight=1 have means within the seed spread "
        "(pooled sample standard deviation 0.027) of the best mean 1.2; no best."
    )

    clear = [
        _trial(n, t.values, CLEAR_VALUES[t.values["loss.rec_weight"]][t.values["seed"]])
        for n, t in enumerate(trials)
    ]
    assert summary(_result(clear), names.VAL_LOSS_LLM, "min")[-1] == (
        "Best by val/loss_llm (min): loss.rec_weight=0.3 = 1.2 ± 0.03 (3 seeds)."
    )


def test_summary_without_repeats_names_the_best_trial_or_the_tie() -> None:
    trials = [_trial(n, {"loss.rec_weight": w}, v) for n, (w, v) in enumerate(EQUAL_VALUES.values())]
    assert summary(_result(trials), names.VAL_LOSS_LLM, "min")[-1] == (
        "Tie by val/loss_llm (min): trial-00000 (loss.rec_weight=0.1); trial-00001 (loss.rec_weight=0.3) = "
        "1.234 (equal to 4 significant digits); no best."
    )
    assert summary(_result(trials), names.VAL_LOSS_LLM, "max")[-1] == (
        "Best by val/loss_llm (max): trial-00002 (loss.rec_weight=1) = 1.5."
    )
    failed = [_trial(0, {"loss.rec_weight": 0.1}, None, "failed"), _trial(1, {"loss.rec_weight": 0.3}, None)]
    assert summary(_result(failed), names.VAL_LOSS_LLM, "min")[-1] == (
        "Best by val/loss_llm (min): none (no trial has a value)."
    )
    one = [_trial(0, {}, 1.0)]
    assert len(summary(_result(one), names.VAL_LOSS_LLM, "min")) == 2  # a single run: header and row only
    close = [_trial(0, {"w": 0.12341, "seed": 0}, 1.0), _trial(1, {"w": 0.12342, "seed": 0}, 1.1)]
    close += [_trial(2, {"w": 0.12341, "seed": 1}, 1.0), _trial(3, {"w": 0.12342, "seed": 1}, 1.1)]
    assert summary(_result(close), names.VAL_LOSS_LLM, "min")[-1] == (
        "Best by val/loss_llm (min): w=0.123 = 1 ± 0 (2 seeds)."  # settings apart by value, not by label
    )


def test_summary_shows_each_trials_change_and_calls_equal_finals_a_tie() -> None:
    firsts = {0.1: 6.92, 0.3: 6.95, 1.0: 6.9, 3.0: 6.874}
    trials = [_trial(n, {"loss.rec_weight": w}, 6.874) for n, w in enumerate(firsts)]
    trials[3].metrics[names.VAL_LOSS_LLM] = 6.87401  # prints as 6.874 too: equal to the printed precision
    for trial, first in zip(trials, firsts.values(), strict=True):
        trial.first = {names.VAL_LOSS_LLM: first}
    lines = summary(_result(trials), names.VAL_LOSS_LLM, "min")
    header = lines[0].split()
    assert header[:4] == ["trial", "status", names.VAL_LOSS_LLM, "first"]
    assert "6.92 -> 6.874 (-0.7%)" in lines[1] and "6.95 -> 6.874 (-1.1%)" in lines[2]
    assert "6.874 -> 6.874 (+0.0%)" in lines[4]
    assert lines[-1] == (
        "Tie by val/loss_llm (min): "
        + "; ".join(f"trial-{n:05d} (loss.rec_weight={w:g})" for n, w in enumerate(firsts))
        + " = 6.874 (equal to 4 significant digits); no best."
    )
    assert BEST_MARK not in "\n".join(lines)
    trials[1].metrics[names.VAL_LOSS_LLM] = 6.5
    assert summary(_result(trials), names.VAL_LOSS_LLM, "min")[-1] == (
        "Best by val/loss_llm (min): trial-00001 (loss.rec_weight=0.3) = 6.5."
    )


def test_trial_outcomes_of_older_records_load_without_first_values() -> None:
    old = {"trial_id": "t0", "name": "trial-0", "values": {}, "status": "finished", "metrics": {"m/x": 1.0}}
    assert TrialOutcome(**old).first == {}


def test_summary_takes_the_mode_from_the_submitted_sweep(tmp_path: Path) -> None:
    from tests.config.helpers import MINIMAL, write
    from vlsa_platform.config import load_experiment

    sweep = "sweep:\n  search_space:\n    loss.rec_weight: {grid: [0.1, 0.3]}\n  mode: max\n"
    config = load_experiment(write(tmp_path, "x.yaml", MINIMAL + sweep))
    trials = [_trial(0, {"loss.rec_weight": 0.1}, 1.0), _trial(1, {"loss.rec_weight": 0.3}, 2.0)]
    result = _result(trials)
    result.spec.config = config.raw
    assert summary(result, names.VAL_LOSS_LLM)[-1] == (
        "Best by val/loss_llm (max): trial-00001 (loss.rec_weight=0.3) = 2."
    )


def test_runs_of_one_setting_with_one_seed_are_not_seed_repeats() -> None:
    from vlsa_platform.tracking.report import ChildRun, Report

    def child(name: str, seed: str, value: float) -> ChildRun:
        params = {"loss.rec_weight": "0.3", "seed": seed}
        return ChildRun(name, name, "FINISHED", None, None, 0, params, {names.VAL_LOSS_LLM: value}, {})

    def report(*children: ChildRun) -> Report:
        varied = ("seed",) if len({c.params["seed"] for c in children}) > 1 else ()
        return Report("e", "1", "u", "p", "p", names.VAL_LOSS_LLM, "min", "default", children, varied, None)

    same_seed = report(child("a", "0", 1.0), child("b", "0", 1.0))  # a grid's num_samples: 2
    assert not same_seed.repeated and len(same_seed.settings()) == 1
    assert [same_seed.verdict().mark(i) for i in range(2)] == [TIE_MARK, TIE_MARK]
    two_seeds = report(child("a", "0", 1.0), child("b", "1", 1.1))
    assert two_seeds.repeated and two_seeds.settings()[0].score == Score((1.0, 1.1))
    assert two_seeds.verdict().starred == 0  # one setting: nothing to tie with
