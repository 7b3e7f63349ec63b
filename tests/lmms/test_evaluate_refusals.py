"""``vlsa-platform evaluate`` refuses bad input in the evaluation environment before any model loads (exit 2),
and creates no MLflow run: an unknown task name (named, with the close matches), an export of another model
(the differing field named).

The exports here have the model config of the experiment but weights that are not a safetensors file
(``fake_export``): a model load would fail on them with another error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform.exits import EXIT_CONFIG
from vlsa_platform.tracking.store import DB_FILE

from .evaluate_helpers import run_evaluate
from .helpers import eval_python, fake_export, tiny_experiment

pytestmark = [
    pytest.mark.e2e,  # each starts both environments' interpreters and indexes lmms-eval's tasks: tens of seconds
    pytest.mark.skipif(
        not eval_python().exists(),
        reason=f"no evaluation environment at {eval_python()}: `make install-eval` builds it (make test-e2e does)",
    ),
]


def test_an_unknown_task_is_refused_naming_it_before_any_model_loads(tmp_path):
    export, config = fake_export(tmp_path / "model", tiny_experiment())
    run = run_evaluate(
        tmp_path, str(export), "--config", str(config), "--tasks", "vlsa_synthetic_vqa", "vlsa_synthetic_vqq"
    )
    assert run.returncode == EXIT_CONFIG, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("vlsa-platform evaluate: unknown lmms-eval task: vlsa_synthetic_vqq")
    assert "did you mean vlsa_synthetic_vqa" in last
    assert "safetensors" not in run.stderr  # the weights were never read
    assert not list((tmp_path / "work" / "evaluations").rglob("results.json"))
    assert not (tmp_path / "work" / DB_FILE).exists()  # no MLflow run, nor store, was made


def test_an_export_of_another_model_is_refused_naming_the_field(tmp_path):
    export, _ = fake_export(tmp_path / "model", tiny_experiment("model.vision=lowres", "model.recon=false"))
    _, config = fake_export(tmp_path / "other", tiny_experiment())
    run = run_evaluate(tmp_path, str(export), "--config", str(config), "--tasks", "vlsa_synthetic_vqa")
    assert run.returncode == EXIT_CONFIG, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert "is not the model of the experiment config" in last
    assert "vision_mode: the export has 'lowres', the experiment gives 'sa_perceiver'" in last
    assert "safetensors" not in run.stderr
    assert not (tmp_path / "work" / DB_FILE).exists()  # no MLflow run, nor store, was made


def test_submit_refuses_an_unknown_evaluation_task_before_anything_trains(tmp_path, monkeypatch, capsys):
    """``evaluate.tasks`` is looked up in the evaluation environment by ``submit``'s pre-flight: a misspelt task
    stops the submission (exit 6, the name and its close matches on one line) before Ray, MLflow or a stage."""
    from vlsa_platform import cli
    from vlsa_platform.exits import EXIT_PREFLIGHT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "work"
    experiment = Path(__file__).resolve().parents[2] / "experiments" / "ablation.yaml"
    args = ["submit", str(experiment), "--scale", "tiny", "--workdir", str(workdir)]
    status = cli.main([*args, "--set", "evaluate.tasks=[vlsa_synthetic_vqa, vlsa_synthetic_vqq]"])
    assert status == EXIT_PREFLIGHT
    err = capsys.readouterr().err
    assert (
        "evaluate.tasks: unknown lmms-eval task: vlsa_synthetic_vqq (did you mean vlsa_synthetic_vqa" in err
    )
    assert not (workdir / DB_FILE).exists()  # no MLflow run
    assert not list((workdir / "storage").glob("runs/*/*/*/*.complete.json"))  # nothing trained
