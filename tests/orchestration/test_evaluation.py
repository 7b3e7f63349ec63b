"""The training-environment side of ``vlsa-platform evaluate`` without lmms-eval: the evaluation environment's
interpreter found or refused by name, the verb's arguments, and a ``results.json`` (written by a stand-in for
the evaluation environment's interpreter) logged into a local SQLite MLflow store — scores, status tags and the
output folder as artifacts, the finished tasks' scores kept beside a failed or never-reached task; and a run's
export found from its MLflow run id (its config artifact, its submission's record, its stages' markers)."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from vlsa_platform.cli import build_parser, main
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.exits import EXIT_CONFIG, EXIT_FAILED
from vlsa_platform.lmms.results import FAILED, FINISHED, EvalResults
from vlsa_platform.orchestration.evaluation import (
    EVAL_PYTHON_ENV,
    EvalRequest,
    EvaluationError,
    EvaluationInputError,
    eval_python,
    log_results,
    run_lmms_eval,
)
from vlsa_platform.orchestration.ledger import SubmissionRecord
from vlsa_platform.orchestration.run_exports import export_of_run
from vlsa_platform.orchestration.submission import TAG_SUBMISSION
from vlsa_platform.orchestration.submission_types import SubmissionSpec
from vlsa_platform.orchestration.training import StageOutcome, run_dir
from vlsa_platform.tracking import Tracker, TrackerOptions, local_store, names
from vlsa_platform.tracking.store import DB_FILE

from ..lmms.helpers import fake_export, tiny_experiment

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)

#: results.json as the evaluation environment writes it: one task finished, one failed.
RESULTS = {
    "export": "/runs/x/checkpoint_3/model",
    "tasks": {
        "vlsa_synthetic_vqa": {"status": "finished", "error": None, "seconds": 3.5},
        "vlsa_broken": {"status": "failed", "error": "RuntimeError: broken on purpose", "seconds": 1.0},
    },
    "scores": {"vlsa_synthetic_vqa/exact_match": 0.375, "vlsa_synthetic_mc/acc": 0.5},
    "limit": 8,
    "lmms_eval_version": "0.7.3",
}

#: A stand-in for the evaluation environment's python: it writes the files (and exits with the status) that
#: ``behaviour.json`` beside it gives, into the ``--out`` folder, and records its arguments.
STUB = """#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(args))
behaviour = json.loads((Path(__file__).parent / "behaviour.json").read_text())
for name, text in behaviour.get("files", {{}}).items():
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(text)
print("stub: evaluating", flush=True)
sys.exit(behaviour.get("exit", 0))
"""


def stub_python(folder: Path, files: dict[str, str], exit_status: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "behaviour.json").write_text(json.dumps({"files": files, "exit": exit_status}))
    python = folder / "python"
    python.write_text(STUB.format(python=sys.executable))
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def request(tmp_path: Path, **kwargs) -> EvalRequest:
    return EvalRequest(
        export=tmp_path / "model", config=tmp_path / "resolved.yaml", tasks=("a", "b"), **kwargs
    )


def test_the_evaluation_interpreter_is_found_or_refused_naming_make_install_eval(tmp_path, monkeypatch):
    monkeypatch.setenv(EVAL_PYTHON_ENV, str(tmp_path / "absent" / "python"))
    with pytest.raises(EvaluationInputError, match="make install-eval") as err:
        eval_python()
    assert str(tmp_path / "absent" / "python") in str(err.value)
    monkeypatch.delenv(EVAL_PYTHON_ENV)
    default = Path(sys.prefix) / "eval" / "bin" / "python"
    if default.exists():
        assert eval_python() == default
    else:
        with pytest.raises(EvaluationInputError, match=re.escape(str(default))):
            eval_python()
    python = stub_python(tmp_path / "env", {})
    monkeypatch.setenv(EVAL_PYTHON_ENV, str(python))
    assert eval_python() == python


def test_the_verb_without_an_evaluation_environment_exits_2_naming_make_install_eval(
    tmp_path, monkeypatch, capsys
):
    export, config = fake_export(tmp_path / "model", tiny_experiment())
    monkeypatch.setenv(EVAL_PYTHON_ENV, str(tmp_path / "absent"))
    status = main(
        ["evaluate", str(export), "--config", str(config), "--tasks", "a", "--workdir", str(tmp_path)]
    )
    assert status == EXIT_CONFIG
    assert "make install-eval" in capsys.readouterr().err
    assert not (tmp_path / DB_FILE).exists()  # nothing tracked


def test_arguments(tmp_path):
    args = build_parser().parse_args(
        ["evaluate", "x", "--tasks", "t1", "t2", "--limit", "8", "--batch-size", "4", "--include-path", "d"]
    )
    assert (args.tasks, args.limit, args.batch_size, args.device, args.include_path) == (
        ["t1", "t2"],
        8,
        4,
        "cpu",
        ["d"],
    )
    for bad in (["--tasks", "t", "--limit", "0"], ["--tasks", "t", "--device", "tpu"], []):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["evaluate", "x", *bad])
        assert exit_.value.code == EXIT_CONFIG


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--config is required with an export folder"),
        (["--config", "c.yaml"], "drop --config and --scale"),
    ],
)
def test_bad_combinations_exit_2(tmp_path, capsys, extra, message):
    target = str(tmp_path) if not extra else "0123abcd"
    status = main(["evaluate", target, "--tasks", "t", "--workdir", str(tmp_path), *extra])
    assert status == EXIT_CONFIG
    assert message in capsys.readouterr().err


def test_a_run_id_needs_an_existing_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    status = main(["evaluate", "0123abcd", "--tasks", "t", "--workdir", str(tmp_path / "w")])
    assert status == EXIT_CONFIG
    assert "no local MLflow store" in capsys.readouterr().err


def test_results_json_is_logged_as_scores_tags_and_artifacts(tmp_path):
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    (out / "errors").mkdir()
    (out / "results.json").write_text(json.dumps(RESULTS))
    (out / "raw" / "vlsa_synthetic_vqa.json").write_text("{}")
    (out / "errors" / "vlsa_broken.txt").write_text("Traceback ...\nRuntimeError: broken on purpose\n")
    results = EvalResults.read(out)
    assert results.failed == ["vlsa_broken"]

    store = local_store(tmp_path / "work")
    tracker = Tracker.start_parent("eval-exp", "evaluate", store=store, options=FAST)
    log_results(tracker, results, out, step=120, artifact_dir=names.eval_artifact_dir("stage3"))
    assert tracker.close()
    client = MlflowClient(store.uri)
    run = client.get_run(tracker.run_id)
    assert run.data.metrics == {
        "eval/vlsa_synthetic_vqa/exact_match": 0.375,
        "eval/vlsa_synthetic_mc/acc": 0.5,
    }
    assert [m.step for m in client.get_metric_history(tracker.run_id, "eval/vlsa_synthetic_mc/acc")] == [120]
    assert run.data.tags["vlsa.eval.vlsa_synthetic_vqa.status"] == FINISHED
    assert run.data.tags["vlsa.eval.vlsa_broken.status"] == FAILED
    assert run.data.tags["vlsa.eval.vlsa_broken.error"] == "RuntimeError: broken on purpose"
    assert "vlsa.eval.vlsa_synthetic_vqa.error" not in run.data.tags
    listed = {a.path for a in client.list_artifacts(tracker.run_id, "eval/stage3")}
    assert listed == {"eval/stage3/results.json", "eval/stage3/raw", "eval/stage3/errors"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "eval/stage3/errors")] == [
        "eval/stage3/errors/vlsa_broken.txt"
    ]


def test_a_refusal_is_an_input_error_and_nothing_else_is_read(tmp_path):
    python = stub_python(tmp_path / "env", {"refused.txt": "unknown lmms-eval task: nope"}, exit_status=2)
    with pytest.raises(EvaluationInputError, match="unknown lmms-eval task: nope"):
        run_lmms_eval(request(tmp_path), tmp_path / "out", python=python)


def test_a_process_that_dies_keeps_the_finished_tasks_and_fails_the_rest(tmp_path):
    partial = {**RESULTS, "tasks": {**RESULTS["tasks"], "vlsa_broken": {"status": "pending"}}}
    python = stub_python(tmp_path / "env", {"results.json": json.dumps(partial)}, exit_status=137)
    lines: list[str] = []
    out = tmp_path / "out"
    results = run_lmms_eval(request(tmp_path, limit=8, batch_size=4), out, python=python, echo=lines.append)
    assert results.tasks["vlsa_synthetic_vqa"].status == FINISHED
    assert results.tasks["vlsa_broken"].status == FAILED
    assert "exited with status 137" in results.tasks["vlsa_broken"].error
    assert EvalResults.read(out) == results  # rewritten so
    assert results.scores == RESULTS["scores"]
    assert lines == ["stub: evaluating"] and "stub: evaluating" in (out / "lmms_eval.log").read_text()
    argv = json.loads((out / "argv.json").read_text())
    assert argv[:2] == ["-m", "vlsa_platform.lmms.run"]
    assert argv[argv.index("--tasks") + 1 : argv.index("--tasks") + 3] == ["a", "b"]
    assert argv[argv.index("--limit") + 1] == "8" and argv[argv.index("--batch-size") + 1] == "4"


def test_a_process_that_writes_nothing_is_an_error_with_its_log(tmp_path):
    python = stub_python(tmp_path / "env", {}, exit_status=1)
    with pytest.raises(EvaluationError, match="exited with status 1 before evaluating anything") as err:
        run_lmms_eval(request(tmp_path), tmp_path / "out", python=python)
    assert "stub: evaluating" in str(err.value)


def test_the_verb_logs_a_new_run_and_exits_1_for_a_failed_task(tmp_path, monkeypatch, capsys):
    experiment = tiny_experiment()
    export, config = fake_export(tmp_path / "model", experiment)
    (export / "export.json").write_text(json.dumps({"stage": "stage3", "global_step": 120}))
    monkeypatch.setenv(
        EVAL_PYTHON_ENV, str(stub_python(tmp_path / "env", {"results.json": json.dumps(RESULTS)}, 1))
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "work"
    argv = ["evaluate", str(export), "--config", str(config), "--tasks", "vlsa_synthetic_vqa", "vlsa_broken"]
    status = main([*argv, "--workdir", str(workdir), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == EXIT_FAILED
    printed = capsys.readouterr().out
    assert "vlsa_synthetic_vqa/exact_match  0.375" in printed
    assert "vlsa_broken: failed — RuntimeError: broken on purpose" in printed
    client = MlflowClient(local_store(workdir).uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment.name).experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.metrics == {names.eval_metric(k): v for k, v in RESULTS["scores"].items()}
    assert run.data.params["name"] == experiment.name  # the config, as params
    assert run.data.tags["vlsa.eval.vlsa_broken.status"] == FAILED
    assert f"MLflow run: {run.info.run_id} (eval/... at step 120)" in printed
    assert os.path.isfile(tmp_path / "out" / "lmms_eval.log")


def test_an_output_folder_in_use_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(json.dumps(RESULTS))
    python = stub_python(tmp_path / "env", {})
    with pytest.raises(EvaluationInputError, match="is not empty"):
        run_lmms_eval(request(tmp_path), tmp_path / "out", python=python)
    assert not (tmp_path / "out" / "argv.json").exists()  # not run


def _trained_run(tmp_path: Path, experiment, tags: dict[str, str]) -> tuple[str, Path, Path]:
    """An MLflow run as a submission's trial leaves it (its resolved config as an artifact), its submission's
    record in the work directory; ``(run id, work directory, the run's folder in the run storage)``."""
    workdir = tmp_path / "work"
    store = local_store(workdir)
    tracker = Tracker.start_parent(experiment.name, "trial-0", tags, store=store, options=FAST)
    tracker.log_config(experiment.resolved())
    assert tracker.close()
    spec = SubmissionSpec(
        submission_id="sub-1",
        experiment=experiment.name,
        kind="single",
        source="x.yaml",
        scale="tiny",
        overrides=[],
        config={},
        workdir=str(workdir),
        storage_root=str(tmp_path / "storage"),
    )
    SubmissionRecord(spec).save()
    return tracker.run_id, workdir, Path(run_dir(spec.runs_root, experiment.name, "trial-0"))


def _finish(directory: Path, stage: str, step: int) -> Path:
    """Stage ``stage``'s marker as training writes it; its export folder."""
    checkpoint = directory / stage / f"checkpoint_{step}"
    (checkpoint / "model").mkdir(parents=True)
    outcome = StageOutcome(stage, str(checkpoint), global_step=step, stage_steps=step, gpu_hours=0.0)
    (directory / f"{stage}.complete.json").write_text(json.dumps(outcome.__dict__))
    return checkpoint / "model"


def test_a_runs_last_finished_stage_is_found_from_its_run_id(tmp_path):
    experiment = tiny_experiment()
    run_id, workdir, directory = _trained_run(tmp_path, experiment, {TAG_SUBMISSION: "sub-1"})
    store = local_store(workdir)
    with pytest.raises(EvaluationInputError, match="has no finished stage yet"):
        export_of_run(run_id, store, workdir, tmp_path / "dl0")
    first, *_, last = list(experiment.stages)
    _finish(directory, first, 2)
    found = export_of_run(run_id, store, workdir, tmp_path / "dl1")
    assert (found.export, found.stage) == (directory / first / "checkpoint_2" / "model", first)
    assert load_experiment(found.config).resolved() == experiment.resolved()
    export = _finish(directory, last, 9)
    assert export_of_run(run_id, store, workdir, tmp_path / "dl2").export == export


def test_a_run_that_is_no_trial_is_refused(tmp_path):
    run_id, workdir, _ = _trained_run(tmp_path, tiny_experiment(), {})
    with pytest.raises(EvaluationInputError, match=r"no vlsa\.submission tag"):
        export_of_run(run_id, local_store(workdir), workdir, tmp_path / "dl")
    with pytest.raises(EvaluationInputError, match="no MLflow run 0123abcd"):
        export_of_run("0123abcd", local_store(workdir), workdir, tmp_path / "dl")
