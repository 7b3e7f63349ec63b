"""The plan's estimated GPU-hours, logged on the parent run, beside each child's measured ``cost/gpu_hours`` in
the report (a real local MLflow store; no server, no Ray)."""

from __future__ import annotations

import pytest

from vlsa_platform.tracking import Tracker, TrackerOptions, local_store, names
from vlsa_platform.tracking.report import collect, render_markdown
from vlsa_platform.tracking.report.render import ESTIMATE_HEADER

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)


def test_estimate_params_round_trip():
    single = names.estimate_params({"trial": 124.58, "cpu": None}, per_variant=False)
    assert single == {names.ESTIMATE_GPU_HOURS: "124.58"}
    assert names.estimated_gpu_hours(single, None) == 124.58
    assert names.estimated_gpu_hours(single, "any_variant") == 124.58  # every child shares it
    per = names.estimate_params({"anyres": 900.0, "sa": 480.0, "tiny": None}, per_variant=True)
    assert set(per) == {f"{names.ESTIMATE_GPU_HOURS}.anyres", f"{names.ESTIMATE_GPU_HOURS}.sa"}
    assert (names.estimated_gpu_hours(per, "anyres"), names.estimated_gpu_hours(per, "tiny")) == (900.0, None)
    assert names.estimated_gpu_hours({}, None) is None


def test_report_sets_the_estimate_beside_the_measured_gpu_hours(tmp_path):
    store = local_store(tmp_path / "work")
    parent = Tracker.start_parent("estimated", "submission", store=store, options=FAST)
    parent.log_params(names.estimate_params({"anyres": 2.5, "sa": 1.25}, per_variant=True))
    for variant, measured in (("anyres", 3.0), ("sa", 1.5)):
        child = Tracker.start_child(
            parent.run_id, variant, names.run_tags(variant=variant), store=store, options=FAST
        )
        child.log_metrics({names.VAL_LOSS_LLM: measured, names.COST_GPU_HOURS: measured}, step=1)
        assert child.close()
    assert parent.close()

    report = collect("estimated", store)
    by_name = {c.name: c for c in report.children}
    assert by_name["anyres"].estimated_gpu_hours == pytest.approx(2.5)
    assert by_name["sa"].estimated_gpu_hours == pytest.approx(1.25)
    table = [line for line in render_markdown(report).splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header.index(ESTIMATE_HEADER) == header.index(names.COST_GPU_HOURS) + 1
    row = next(line for line in table if "| anyres |" in line or " anyres " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[header.index(ESTIMATE_HEADER)] == "2.5" and cells[header.index(names.COST_GPU_HOURS)] == "3"
