"""``vlsa-platform evaluate`` end to end through the real lmms-eval in the evaluation environment: a tiny export
scored on the local VQA and multiple-choice tasks (8 documents each), the scores in results.json and in the MLflow
run alike; a task that fails midway (between the two) is recorded failed, with its error, while the scores of the
others — the one evaluated after it too — are logged.

One evaluation serves every test here (the model loads once for the three tasks, as the command does it).
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from vlsa_platform.exits import EXIT_FAILED
from vlsa_platform.lmms.results import FAILED, FINISHED, EvalResults
from vlsa_platform.tracking import local_store, names

from .evaluate_helpers import BROKEN_MESSAGE, BROKEN_TASK, broken_tasks, run_evaluate
from .helpers import eval_python, export_tiny, tiny_experiment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not eval_python().exists(),
        reason=f"no evaluation environment at {eval_python()}: `make install-eval` builds it (make test-e2e does)",
    ),
]
TASKS = ("vlsa_synthetic_vqa", BROKEN_TASK, "vlsa_synthetic_mc")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    export, config = export_tiny(tmp / "run")
    out = tmp / "out"
    args = [str(export), "--config", str(config), "--tasks", *TASKS, "--limit", "8", "--batch-size", "4"]
    run = run_evaluate(tmp, *args, "--include-path", str(broken_tasks(tmp / "tasks")), "--out", str(out))
    client = MlflowClient(local_store(tmp / "work").uri)
    experiment = client.get_experiment_by_name(tiny_experiment().name)
    runs = client.search_runs([experiment.experiment_id]) if experiment is not None else []
    return run, EvalResults.read(out) if (out / "results.json").is_file() else None, client, runs


def test_the_scores_land_in_mlflow_as_in_results_json(evaluated):
    run, results, client, runs = evaluated
    assert results is not None, run.stderr[-4000:]
    assert run.returncode == EXIT_FAILED, run.stderr[-4000:]  # one task failed
    assert {"vlsa_synthetic_vqa/exact_match", "vlsa_synthetic_mc/acc"} <= set(results.scores)
    assert all(
        0.0 <= results.scores[k] <= 1.0 for k in ("vlsa_synthetic_vqa/exact_match", "vlsa_synthetic_mc/acc")
    )
    assert not any(key.startswith(BROKEN_TASK) for key in results.scores)
    (tracked,) = runs
    assert tracked.data.metrics == {names.eval_metric(k): v for k, v in results.scores.items()}
    history = client.get_metric_history(tracked.info.run_id, "eval/vlsa_synthetic_vqa/exact_match")
    assert [m.step for m in history] == [0]  # the export's global step
    assert "vlsa_synthetic_vqa/exact_match" in run.stdout  # the printed table
    raw = {a.path for a in client.list_artifacts(tracked.info.run_id, "eval/test/raw")}
    assert {"eval/test/raw/vlsa_synthetic_vqa.json", "eval/test/raw/vlsa_synthetic_mc.json"} <= raw


def test_a_task_that_fails_midway_is_recorded_and_the_others_keep_their_scores(evaluated):
    run, results, client, runs = evaluated
    assert results is not None, run.stderr[-4000:]
    assert [results.tasks[t].status for t in TASKS] == [FINISHED, FAILED, FINISHED]
    assert BROKEN_MESSAGE in results.tasks[BROKEN_TASK].error
    (tracked,) = runs
    assert tracked.info.status == "FAILED"
    tags = tracked.data.tags
    assert tags[names.eval_status_tag(BROKEN_TASK)] == FAILED
    assert BROKEN_MESSAGE in tags[names.eval_error_tag(BROKEN_TASK)]
    assert tags[names.eval_status_tag("vlsa_synthetic_mc")] == FINISHED
    path = client.download_artifacts(tracked.info.run_id, f"eval/test/errors/{BROKEN_TASK}.txt")
    with open(path) as traceback_file:
        text = traceback_file.read()
    assert "Traceback" in text and BROKEN_MESSAGE in text
    assert f"{BROKEN_TASK}: failed" in run.stdout
