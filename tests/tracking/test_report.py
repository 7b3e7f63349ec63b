"""``report``: the child runs of a real local MLflow store compared, rendered as Markdown and HTML, plotted,
and the ``vlsa-platform report`` verb (no server, no Ray)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from vlsa_platform.cli import main
from vlsa_platform.tracking import Tracker, TrackerOptions, TrackingStore, local_store, names
from vlsa_platform.tracking.report import (
    BEST_MARK,
    REPORT_HTML,
    REPORT_MD,
    ReportError,
    collect,
    curve_plot_name,
    first_values,
    objective_plot_name,
    plots,
    render_html,
    render_markdown,
    write_report,
)

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)
SWEEP = "loss-ratio-sweep"
ABLATION = "ablation-max"
LONELY = "no-children"
WEIGHTS = {"trial <0>": 0.1, "trial-1": 0.3, "trial-2": 1.0, "trial-3": 3.0}
"""Child name -> ``loss.rec_weight``. One name holds ``<`` so the HTML has something to escape."""
VAL = {0.1: (2.0, 1.5), 0.3: (1.9, 1.2), 1.0: (1.8, 1.4), 3.0: (1.0, 1.9)}
"""Weight -> ``val/loss_llm`` at steps 3 and 6: trial-1 is best at the end, trial-3 only mid-run."""
CURVES = [curve_plot_name(k) for k in (names.VAL_LOSS_LLM, names.VAL_LOSS_REC, names.VAL_EXACT_MATCH)]
"""The curve plots of the sweep: ``val/psnr`` is logged but NaN throughout, so it has none."""


def _loss_total(weight: float, step: int) -> float:
    return 3.0 - 0.2 * step + 0.1 * weight + 1e-5 * step


@dataclass(frozen=True)
class Tracked:
    """The store the fixture filled and the ids of what it created."""

    workdir: Path
    store: TrackingStore
    parent_id: str
    lone_id: str
    child_ids: dict[str, str]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    """A sweep (parent + 4 trials, then a later parent without children), an ablation whose parent asks for
    ``loss/total``/``max`` (one variant failed before logging), and an experiment with a lone parent."""
    workdir = tmp_path_factory.mktemp("report") / "work"
    store = local_store(workdir)
    parent = Tracker.start_parent(
        SWEEP, "submission", names.run_tags(scale="tiny"), store=store, options=FAST
    )
    parent.log_params({"sweep": {"metric": names.VAL_LOSS_LLM, "mode": "min"}})
    child_ids = {}
    for i, (name, weight) in enumerate(WEIGHTS.items()):
        child = Tracker.start_child(
            parent.run_id, name, names.run_tags(scale="tiny", trial_id=f"t{i}"), store=store, options=FAST
        )
        child.log_params(
            {
                "loss": {"rec_weight": weight, "llm_weight": 1.0},
                "model": {"vision": "sa_perceiver"},
                # each stage's resolved weight, as a run logs it: the same values under another key
                "stages": {"stage1": {"loss": {"rec_weight": weight}}},
            }
        )
        for step in range(1, 7):
            metrics = {
                names.LOSS_TOTAL: _loss_total(weight, step),
                names.LOSS_LLM: 2.5 - 0.1 * step,
                names.LOSS_REC: 0.5 + 0.01 * step,
                names.STAGE: 0 if step <= 3 else 1,
            }
            if step in (3, 6):
                metrics[names.VAL_LOSS_LLM] = VAL[weight][0 if step == 3 else 1]
                metrics[names.VAL_LOSS_REC] = 1.0 - 0.1 * weight - 0.01 * step
                metrics[names.VAL_EXACT_MATCH] = 0.1 * step
                metrics[names.VAL_PSNR] = float("nan")
            child.log_metrics(metrics, step=step)
        assert child.close()
        child_ids[name] = child.run_id
    assert parent.close()
    lone = Tracker.start_parent(SWEEP, "empty submission", store=store, options=FAST)
    assert lone.close()

    ablation = Tracker.start_parent(ABLATION, "submission", store=store, options=FAST)
    ablation.log_params({"sweep": {"metric": names.LOSS_TOTAL, "mode": "max"}})
    for variant, value in (("anyres", 2.0), ("sa_perceiver", 3.0)):
        child = Tracker.start_child(
            ablation.run_id, variant, names.run_tags(variant=variant), store=store, options=FAST
        )
        child.log_params({"model": {"vision": variant}})
        child.log_metrics({names.LOSS_TOTAL: value + 1.0}, step=1)
        child.log_metrics({names.LOSS_TOTAL: value}, step=2)
        assert child.close()
    failed = Tracker.start_child(
        ablation.run_id, "no_recon", names.run_tags(variant="no_recon"), store=store, options=FAST
    )
    assert failed.close(status="FAILED")
    assert ablation.close()

    assert Tracker.start_parent(LONELY, "alone", store=store, options=FAST).close()
    return Tracked(workdir, store, parent.run_id, lone.run_id, child_ids)


# ------------------------------------------------------------------------------------------------ collect


def test_collect_compares_the_children_of_the_latest_parent_with_children(tracked: Tracked) -> None:
    report = collect(SWEEP, tracked.store)
    assert report.parent_run_id == tracked.parent_id  # the later childless parent is passed over
    assert [c.name for c in report.children] == list(WEIGHTS)
    assert [c.run_id for c in report.children] == [tracked.child_ids[n] for n in WEIGHTS]
    assert report.varied_params == ("loss.rec_weight",)  # not its stage-level copy as well
    assert report.numeric_params() == ("loss.rec_weight",)
    assert (report.metric, report.mode, report.metric_source) == (names.VAL_LOSS_LLM, "min", "parent run")
    assert report.best is not None and report.best.name == "trial-1"
    assert report.label_header == "trial"

    first = report.children[0]
    assert (first.status, first.label, first.params["loss.rec_weight"]) == ("FINISHED", "t0", "0.1")
    assert set(first.final) == set(names.METRICS)
    assert first.final[names.VAL_LOSS_LLM] == 1.5  # the last step's value, not the lowest
    assert first.final[names.LOSS_TOTAL] == pytest.approx(_loss_total(0.1, 6))
    assert first.final[names.LR] is None
    assert first.history[names.STAGE].steps == (1, 2, 3, 4, 5, 6)
    assert first.history[names.VAL_LOSS_LLM].values == (2.0, 1.5)
    assert first.stage_changes() == [(4, 1.0)]
    assert first.stage_starts() == [(3.5, 2)]  # stage 2 (index 1) starts after step 3, the last of stage 1
    assert first.first_value(names.VAL_LOSS_LLM) == 2.0
    assert names.LOSS_TOTAL not in first.history  # read for no plot
    assert report.metric_columns()[0] == names.VAL_LOSS_LLM
    assert names.LR not in report.metric_columns()


def test_collect_options_override_the_parent(tracked: Tracked) -> None:
    report = collect(SWEEP, tracked.store.uri, tracked.parent_id, metric=names.VAL_LOSS_LLM, mode="max")
    assert report.metric_source == "option"
    assert report.best is not None and report.best.name == "trial-3"
    by_loss = collect(SWEEP, tracked.store, metric=names.LOSS_TOTAL)
    assert by_loss.mode == "min"  # the parent's mode belongs to its own metric
    assert by_loss.best is not None and by_loss.best.name == "trial <0>"


def test_collect_takes_metric_and_mode_from_the_parent_and_skips_children_without_a_value(
    tracked: Tracked,
) -> None:
    report = collect(ABLATION, tracked.store)
    assert (report.metric, report.mode) == (names.LOSS_TOTAL, "max")
    assert [c.name for c in report.children] == ["anyres", "sa_perceiver", "no_recon"]
    assert [c.status for c in report.children] == ["FINISHED", "FINISHED", "FAILED"]
    assert report.best is not None and report.best.name == "sa_perceiver"
    assert report.varied_params == ("model.vision",)
    assert report.numeric_params() == ()
    assert report.label_header == "variant"
    unlogged = collect(ABLATION, tracked.store, metric=names.VAL_LOSS_LLM)
    assert unlogged.best is None and unlogged.metric_columns()[0] == names.VAL_LOSS_LLM
    assert "Best by val/loss_llm (min, option): none (no child has a value)." in render_markdown(unlogged)


def test_collect_errors_name_the_problem(tracked: Tracked, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no experiment 'nope'.*known experiments:.*loss-ratio-sweep"):
        collect("nope", tracked.store)
    with pytest.raises(ReportError, match="has no child runs"):
        collect(SWEEP, tracked.store, tracked.lone_id)
    with pytest.raises(ReportError, match="no parent run with child runs"):
        collect(LONELY, tracked.store)
    with pytest.raises(ReportError, match="no run 0123"):
        collect(SWEEP, tracked.store, "0123456789abcdef0123456789abcdef")
    with pytest.raises(ReportError, match="not in experiment"):
        collect(ABLATION, tracked.store, tracked.parent_id)
    with pytest.raises(ReportError, match="no MLflow store"):
        collect(SWEEP, f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------------------------------------- render


def test_markdown_has_one_row_per_child_and_marks_the_best(tracked: Tracked) -> None:
    text = render_markdown(collect(SWEEP, tracked.store))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4
    for row, (name, weight) in zip(rows, WEIGHTS.items(), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[2] == name and str(weight) in cells
    assert [row.startswith(f"| {BEST_MARK} |") for row in rows] == [False, True, False, False]
    assert "Best by val/loss_llm (min, parent run): trial-1 = 1.2." in text
    lines = text.splitlines()
    header_line = next(x for x in lines if x.startswith(f"| {BEST_MARK} | rank | run"))
    header = [cell.strip() for cell in header_line.strip("|").split(" | ")]
    assert names.LOSS_TOTAL not in header  # a weighted sum whose weight is swept: never compared
    assert names.LOSS_LLM in header and names.VAL_LOSS_REC in header
    change = header.index("val/loss_llm first -> last")
    assert header[change - 1] == names.VAL_LOSS_LLM
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    assert [c[header.index("rank")] for c in cells] == ["3", "1", "2", "4"]  # final 1.5, 1.2, 1.4, 1.9 by min
    assert [c[change] for c in cells] == [
        "2 -> 1.5 (-25.0%)",
        "1.9 -> 1.2 (-36.8%)",
        "1.8 -> 1.4 (-22.2%)",
        "1 -> 1.9 (+90.0%)",
    ]


def test_html_escapes_and_marks_the_best(tracked: Tracked) -> None:
    page = render_html(collect(SWEEP, tracked.store))
    assert "trial &lt;0&gt;" in page and "trial <0>" not in page
    assert page.count('<tr class="best"') == 1
    best_row = next(line for line in page.splitlines() if line.startswith('<tr class="best"'))
    assert "trial-1" in best_row


def test_write_report_writes_markdown_html_and_valid_pngs(tracked: Tracked, tmp_path: Path) -> None:
    written = write_report(collect(SWEEP, tracked.store), tmp_path / "out")
    plot_name = objective_plot_name("loss.rec_weight")
    assert list(written) == [REPORT_MD, REPORT_HTML, *CURVES, plot_name]  # one PNG per logged val metric
    for name in (*CURVES, plot_name):
        with Image.open(written[name]) as image:
            assert image.format == "PNG" and image.size[0] > 200
            image.verify()
    assert f"![curves_val_loss_llm]({CURVES[0]})" in written[REPORT_MD].read_text()
    assert written[REPORT_HTML].read_text().count("data:image/png;base64,") == len(CURVES) + 1


def test_curves_colour_by_the_swept_value_and_label_the_stage_that_starts(tracked: Tracked) -> None:
    report = collect(SWEEP, tracked.store)
    figure = plots.curve_figure(report, names.VAL_LOSS_REC)
    (ax,) = figure.axes
    assert ax.get_ylabel() == names.VAL_LOSS_REC and ax.get_xlabel() == "global step"
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 0 and line.get_linestyle() == "-"]
    assert [list(line.get_xdata()) for line in curves] == [[3, 6]] * 4  # validation steps, not training
    assert [line.get_label() for line in curves] == [f"loss.rec_weight={w}" for w in WEIGHTS.values()]
    colours = [line.get_color() for line in curves]
    assert (
        len(set(colours)) == 4
    )  # a colormap over the weight, in the weights' order (viridis: darkest first)
    assert sum(colours[0][:3]) < sum(colours[-1][:3])
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in dashed] == [3.5]  # between step 3 (stage 1) and 4 (stage 2)
    assert [text.get_text() for text in ax.texts] == ["stage 2"]
    assert plots.curve_figure(report, names.VAL_PSNR) is None  # NaN throughout: nothing to draw
    assert plots.curve_figure(report, names.LOSS_TOTAL) is None  # never read, never drawn


def test_first_values_give_each_trial_its_first_validation(tracked: Tracked) -> None:
    first = first_values(tracked.store.uri, tracked.parent_id, names.VAL_LOSS_LLM)
    assert first == {f"t{i}": VAL[w][0] for i, w in enumerate(WEIGHTS.values())}
    assert first_values(tracked.store.uri, tracked.parent_id, names.VAL_PSNR) == {}  # NaN is no value


def test_a_submission_gives_its_trials_their_first_value(tracked: Tracked, tmp_path: Path) -> None:
    from vlsa_platform.orchestration.submission import _with_first_values
    from vlsa_platform.orchestration.submission_types import TrialOutcome

    def trials() -> list[TrialOutcome]:
        return [TrialOutcome("t1", "trial-1", {}, "finished"), TrialOutcome("t9", "unknown", {}, "not run")]

    filled = _with_first_values(trials(), tracked.store.uri, tracked.parent_id, names.VAL_LOSS_LLM)
    assert [t.first for t in filled] == [{names.VAL_LOSS_LLM: 1.9}, {}]
    missing = f"sqlite:///{tmp_path / 'missing.db'}"  # MLflow not answering: the summary shows no change
    assert [t.first for t in _with_first_values(trials(), missing, "p", names.VAL_LOSS_LLM)] == [{}, {}]
    assert not (tmp_path / "missing.db").exists()


def test_report_module_imports_no_training_stack() -> None:
    code = (
        "import sys\n"
        "from vlsa_platform.tracking.report import ChildRun, Report, Series, render_markdown\n"
        "child = ChildRun('a', 'a', 'FINISHED', None, None, 0, {'w': '1'}, {'loss/total': 1.0},\n"
        "                 {'loss/total': Series((1, 2), (2.0, 1.0))})\n"
        "render_markdown(Report('e', '1', 'u', 'p', 'p', 'loss/total', 'min', 'default', (child,), (), 'a'))\n"
        "print(sorted(m for m in ('torch', 'ray', 'deepspeed') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_report_plot_writes_into_the_given_folder(tmp_path: Path, tracked: Tracked) -> None:
    report = collect(ABLATION, tracked.store)
    written = write_report(report, tmp_path)
    assert list(written) == [REPORT_MD, REPORT_HTML]  # no validation metric; model.vision is not numeric
    assert names.LOSS_TOTAL in render_markdown(report)  # the report's own metric, chosen by the parent


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_prints_the_table_and_writes_the_report(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["report", SWEEP, "--workdir", str(tracked.workdir)]) == 0
    out = capsys.readouterr().out
    assert f"| {BEST_MARK} | 1 | trial-1 | t1 | FINISHED | 0.3 |" in out
    assert all(name in out for name in WEIGHTS)
    folder = Path("reports") / SWEEP
    for name in (REPORT_MD, REPORT_HTML, *CURVES, objective_plot_name("loss.rec_weight")):
        assert (tmp_path / folder / name).is_file()
        assert str(folder / name) in out

    assert (
        main(["report", SWEEP, "--tracking-uri", tracked.store.uri, "--out", "elsewhere", "--mode", "max"])
        == 0
    )
    assert f"| {BEST_MARK} | 1 | trial-3 |" in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / REPORT_MD).is_file()


def test_cli_errors_are_one_line_with_exit_2(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "nope", "--workdir", str(tracked.workdir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "no experiment 'nope'" in captured.err and SWEEP in captured.err

    assert main(["report", LONELY, "--workdir", str(tracked.workdir)]) == 2
    assert "no parent run with child runs" in capsys.readouterr().err

    assert main(["report", SWEEP]) == 2  # default work directory .vlsa: nothing tracked here
    assert "no local MLflow store at .vlsa/mlruns.db" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # and nothing created
