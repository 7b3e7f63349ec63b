"""The report's Table-3 table (``tracking/report/score_table.py``): benchmark scores (``eval/<task>/<metric>``)
of an ablation's variants and a sweep's trials in a real local MLflow store (as in test_report.py), one row per
variant, columns grouped by ability as the paper's §4.3 groups them, deltas against the baseline row."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlsa_platform.cli import main
from vlsa_platform.tracking import Tracker, TrackerOptions, TrackingStore, local_store, names
from vlsa_platform.tracking.report import (
    ABILITIES,
    BENCHMARKS,
    MISSING,
    REPORT_HTML,
    REPORT_MD,
    SCORES_HEADING,
    ReportError,
    collect,
    render_html,
    render_markdown,
    score_table,
    write_report,
)
from vlsa_platform.tracking.report.benchmarks import columns

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)
ABLATION = "table3-ablation"
SWEEP = "table3-sweep"
PLAIN = "table3-no-scores"
VARIANTS = {"anyres": "(1) anyres", "lowres": "(2) lowres", "sa": None}
"""The ablation's variants in its file's order, with their labels (``sa`` has none: its key is its label)."""
P, C = "eval/mme/mme_perception_score", "eval/mme/mme_cognition_score"
CHART, DOC, AI2D = "eval/chartqa/relaxed_overall", "eval/docvqa_val/anls", "eval/ai2d/exact_match"
VQA, CUSTOM = "eval/vlsa_synthetic_vqa/exact_match", "eval/my_task/b"
SCORES = {
    "anyres": {P: 1455.7, C: 298.9, CHART: 0.671, DOC: 0.737, AI2D: 0.695, VQA: 0.5, CUSTOM: 0.3},
    "lowres": {P: 1417.3, C: 322.1, CHART: 0.448, DOC: 0.454, VQA: 0.5, CUSTOM: 0.2},  # no AI2D
    "sa": {P: 1481.4, C: 329.9, CHART: 0.674, DOC: 0.755, AI2D: 0.682, VQA: 0.75, CUSTOM: 0.4},
}
"""Final scores per variant (Table 3's (1), (2), (4) for MME); ``my_task`` also logs ``a_stderr``."""
START_ORDER = ("sa", "anyres", "lowres")
"""The order the children start in: not the file's, which the table follows."""


@dataclass(frozen=True)
class Tracked:
    workdir: Path
    store: TrackingStore
    run_ids: dict[str, str]


def _ablation(store: TrackingStore) -> dict[str, str]:
    parent = Tracker.start_parent(ABLATION, "submission", store=store, options=FAST)
    variants = {key: {"label": label, "vision": key} for key, label in VARIANTS.items()}
    parent.log_config({"name": ABLATION, "ablation": {"variants": variants}})
    run_ids = {}
    for key in START_ORDER:
        child = Tracker.start_child(
            parent.run_id, key, names.run_tags(variant=key), store=store, options=FAST
        )
        child.log_params({"model": {"vision": key}})
        child.log_metrics({P: 1.0, names.LOSS_LLM: 2.0}, step=1)  # an earlier evaluation: not the final score
        child.log_metrics({**SCORES[key], "eval/my_task/a_stderr": 0.01}, step=2)
        assert child.close()
        run_ids[key] = child.run_id
    assert parent.close()
    return run_ids


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    """An ablation with scores (parent config naming the variants' order), a sweep of two trials with a
    synthetic score and no config, and an ablation-like experiment without any score."""
    workdir = tmp_path_factory.mktemp("table3") / "work"
    store = local_store(workdir)
    run_ids = _ablation(store)
    sweep = Tracker.start_parent(SWEEP, "submission", store=store, options=FAST)
    for i, value in enumerate((0.4, 0.6)):
        trial = Tracker.start_child(
            sweep.run_id, f"trial-{i}", names.run_tags(trial_id=f"t{i}"), store=store, options=FAST
        )
        trial.log_params({"loss": {"rec_weight": 0.1 * (i + 1)}})
        trial.log_metrics({VQA: value, names.VAL_LOSS_LLM: 1.0 + i}, step=1)
        assert trial.close()
    assert sweep.close()
    plain = Tracker.start_parent(PLAIN, "submission", store=store, options=FAST)
    for key in ("anyres", "lowres"):
        child = Tracker.start_child(plain.run_id, key, names.run_tags(variant=key), store=store, options=FAST)
        child.log_metrics({names.VAL_LOSS_LLM: 1.5}, step=1)
        assert child.close()
    assert plain.close()
    return Tracked(workdir, store, run_ids)


def _md_rows(text: str) -> list[list[str]]:
    """The cells of the Markdown table under the scores heading (header first), separator row left out."""
    section = text.split(f"## {SCORES_HEADING}", 1)[1]
    lines = [x for x in section.splitlines() if x.startswith("| ") and not x.startswith("| :-:")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


# ---------------------------------------------------------------------------------------------- benchmarks


def test_the_known_benchmarks_follow_the_papers_groups() -> None:
    """§4.3: ChartQA, DocVQA and MME-perception perceive; MME-cognition cognises; AI2D, SQA-I, SQA, VizWiz
    both; the groups in that order, each task's metric key unique."""
    by_group = {a: [b.label for b in BENCHMARKS if b.ability == a] for a in ABILITIES}
    assert by_group["perception"] == ["ChartQA", "DocVQA", "MME-P"]
    assert by_group["cognition"] == ["MME-C"]
    assert by_group["both"] == ["AI2D", "SQA-I", "SQA", "VizWiz"]
    assert [ABILITIES.index(b.ability) for b in BENCHMARKS] == sorted(
        ABILITIES.index(b.ability) for b in BENCHMARKS
    )
    assert len({b.key for b in BENCHMARKS}) == len(BENCHMARKS)
    assert next(b for b in BENCHMARKS if b.label == "MME-P").key == P


def test_columns_pick_the_logged_tasks_and_give_an_unknown_task_its_first_metric() -> None:
    keys = [AI2D, "eval/zz_task/acc_stderr", "eval/zz_task/acc", P, "loss/llm", "eval/broken"]
    picked = columns(keys)
    assert [b.label for b in picked] == ["MME-P", "MME-C", "AI2D", "zz_task"]  # mme brings both columns
    assert [b.ability for b in picked] == ["perception", "cognition", "both", "other"]
    assert (picked[-1].key, picked[-1].higher_is_better) == ("eval/zz_task/acc", None)
    assert columns(["val/loss_llm"]) == ()


# ------------------------------------------------------------------------------------------------- table


def test_one_row_per_variant_in_the_files_order_against_its_first_variant(tracked: Tracked) -> None:
    report = collect(ABLATION, tracked.store)
    assert [c.label for c in report.children] == list(START_ORDER)  # the runs' table keeps start order
    table = score_table(report)
    assert table is not None
    assert [r.label for r in table.rows] == ["(1) anyres", "(2) lowres", "sa"]
    assert [r.run_id for r in table.rows] == [tracked.run_ids[k] for k in VARIANTS]
    assert [r.is_baseline for r in table.rows] == [True, False, False]
    assert table.baseline == "(1) anyres" and "first variant" in table.baseline_rule
    labels = [c.label for c in table.columns]
    assert labels == ["ChartQA", "DocVQA", "MME-P", "MME-C", "AI2D", "synthetic VQA", "my_task"]
    assert [(a, len(cols)) for a, cols in table.groups()] == [
        ("perception", 3),
        ("cognition", 1),
        ("both", 1),
        ("local", 1),
        ("other", 1),
    ]
    assert table.columns[-1].key == CUSTOM  # its first metric that is not a standard error


def test_deltas_are_the_differences_from_the_baseline(tracked: Tracked) -> None:
    table = score_table(collect(ABLATION, tracked.store))
    assert table is not None
    base = SCORES["anyres"]
    assert [cell.value for cell in table.rows[0].cells] == [base[c.key] for c in table.columns]
    assert all(cell.delta is None for cell in table.rows[0].cells)
    for row, key in zip(table.rows[1:], ("lowres", "sa"), strict=True):
        for column, cell in zip(table.columns, row.cells, strict=True):
            value = SCORES[key].get(column.key)
            assert cell.value == value  # the last step's score, not step 1's
            if value is None:
                assert cell.delta is None and cell.text() == MISSING
            else:
                assert cell.delta == pytest.approx(value - base[column.key])
    lowres = dict(zip((c.label for c in table.columns), table.rows[1].cells, strict=True))
    assert (lowres["MME-P"].change, lowres["MME-C"].change) == ("worse", "better")
    assert lowres["synthetic VQA"].change == "same" and lowres["synthetic VQA"].text() == "0.5 (±0)"
    assert lowres["my_task"].change is None  # an unknown task's direction is unknown


def test_markdown_shows_values_deltas_and_missing_scores(tracked: Tracked) -> None:
    text = render_markdown(collect(ABLATION, tracked.store))
    rows = _md_rows(text)
    assert rows[0] == ["variant", "ChartQA", "DocVQA", "MME-P", "MME-C", "AI2D", "synthetic VQA", "my_task"]
    assert rows[1][:4] == ["(1) anyres (baseline)", "0.671", "0.737", "1456"]
    lowres = ["(2) lowres", "0.448 (-0.223)", "0.454 (-0.283)", "1417 (-38.4)", "322.1 (+23.2)", MISSING]
    assert rows[2] == [*lowres, "0.5 (±0)", "0.2 (-0.1)"]
    assert rows[3][0] == "sa" and rows[3][3] == "1481 (+25.7)"
    assert len(rows) == 4  # one row per variant
    assert "perception: ChartQA, DocVQA, MME-P; cognition: MME-C; perception & cognition: AI2D" in text
    assert "MME-P = eval/mme/mme_perception_score" in text


def test_html_groups_the_columns_and_marks_better_and_worse_by_direction(tracked: Tracked) -> None:
    page = render_html(collect(ABLATION, tracked.store))
    head = re.search(r'<table class="scores">\n<thead>(.*?)</thead>', page)
    assert head is not None
    groups = re.findall(r'<th class="group" colspan="(\d)">([^<]*)</th>', head.group(1))
    assert groups == [
        ("3", "perception"),
        ("1", "cognition"),
        ("1", "perception &amp; cognition"),
        ("1", "local synthetic tasks"),
        ("1", "other tasks"),
    ]
    assert f'<th title="{P}">MME-P</th>' in head.group(1)
    lowres = next(x for x in page.splitlines() if "<td>(2) lowres</td>" in x)  # not the runs' table's row
    assert f'title="{tracked.run_ids["lowres"]}"' in lowres
    assert '1417 <span class="delta worse" title="worse than the baseline">(-38.4)</span>' in lowres
    assert '322.1 <span class="delta better" title="better than the baseline">(+23.2)</span>' in lowres
    assert '<span class="delta same"' in lowres
    assert '<span class="delta" title="direction unknown">(-0.1)</span>' in lowres
    assert f'<td class="num">{MISSING}</td>' in lowres
    assert page.count('<tr class="baseline"') == 1


def test_a_sweep_takes_its_first_trial_or_the_named_baseline(tracked: Tracked) -> None:
    table = score_table(collect(SWEEP, tracked.store))
    assert table is not None and table.header == "trial"
    assert [r.label for r in table.rows] == ["trial-0", "trial-1"] and table.baseline_rule == "the first row"
    assert table.rows[1].cells[0].delta == pytest.approx(0.2)
    named = score_table(collect(SWEEP, tracked.store, baseline="t1"))  # a trial id names its row too
    assert named is not None and [r.is_baseline for r in named.rows] == [False, True]
    assert named.rows[0].cells[0].delta == pytest.approx(-0.2) and named.rows[0].cells[0].change == "worse"
    lowres = score_table(collect(ABLATION, tracked.store, baseline="(2) lowres"))
    assert lowres is not None and lowres.baseline == "(2) lowres"
    assert lowres.rows[0].cells[2].delta == pytest.approx(1455.7 - 1417.3)
    with pytest.raises(ReportError, match=r"--baseline 'nope' names no child run.*'\(1\) anyres'"):
        collect(ABLATION, tracked.store, baseline="nope")


def test_without_scores_the_report_is_as_before(tracked: Tracked, tmp_path: Path) -> None:
    report = collect(PLAIN, tracked.store)
    assert score_table(report) is None
    written = write_report(report, tmp_path)
    markdown, page = (written[name].read_text(encoding="utf-8") for name in (REPORT_MD, REPORT_HTML))
    assert SCORES_HEADING not in markdown and "eval/" not in markdown
    assert SCORES_HEADING not in page and 'class="scores"' not in page
    # With scores, everything before the new section is what the report without them shows.
    scored = collect(ABLATION, tracked.store)
    bare = dataclasses.replace(
        scored, children=tuple(dataclasses.replace(c, evals={}) for c in scored.children)
    )
    assert score_table(bare) is None
    assert render_markdown(scored).startswith(render_markdown(bare).rstrip("\n") + f"\n\n## {SCORES_HEADING}")
    assert render_html(scored).startswith(render_html(bare).split("</body>")[0])


def test_cli_writes_the_table_and_refuses_an_unknown_baseline(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    args = ["report", ABLATION, "--workdir", str(tracked.workdir), "--out", str(out)]
    assert main([*args, "--baseline", "sa"]) == 0
    printed = capsys.readouterr().out
    assert f"## {SCORES_HEADING}" in printed and "| sa (baseline) |" in printed
    assert "| (1) anyres | 0.671 (-0.003) |" in (out / REPORT_MD).read_text(encoding="utf-8")
    assert '<table class="scores">' in (out / REPORT_HTML).read_text(encoding="utf-8")
    assert main([*args, "--baseline", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "names no child run" in captured.err and captured.err.count("\n") == 1
