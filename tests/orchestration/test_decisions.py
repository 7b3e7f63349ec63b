"""ASHA's decisions reach a trial's workers: the scheduler posts each one in the trial's run folder, and rank 0
waits for it after every validation Tune sees (no Ray here: the worker context's waiting alone)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlsa_platform import storage
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import training
from vlsa_platform.orchestration.reporting import DecisionBoard
from vlsa_platform.orchestration.training import _RayWorkerContext, decision_file, run_dir

ROOT = Path(__file__).resolve().parents[2]


def context(directory: Path, metric: str = "val/loss_llm") -> _RayWorkerContext:
    ctx = object.__new__(_RayWorkerContext)  # what __init__ reads from Ray Train, set by hand
    ctx.directory, ctx.rank, ctx.await_decisions, ctx._latest = str(directory), 0, metric, {}
    return ctx


def post(directory: Path, step: int, decision: str, after: float = 0.0) -> None:
    threading.Timer(
        after, storage.write_text, (decision_file(str(directory), step), json.dumps({"decision": decision}))
    ).start()


def test_rank0_waits_for_the_decision_on_a_validation_then_goes_on(tmp_path):
    ctx = context(tmp_path)
    post(tmp_path, 4, "continue", after=0.5)
    started = time.monotonic()
    ctx._await_decision({"loss/total": 2.0, "val/loss_llm": 1.0, "global_step": 4.0})
    assert time.monotonic() - started >= 0.45
    assert not Path(decision_file(str(tmp_path), 4)).exists(), "a decision read is removed"


def test_only_validations_the_scheduler_sees_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "DECISION_TIMEOUT_S", 30.0)
    started = time.monotonic()
    context(tmp_path)._await_decision({"loss/total": 2.0, "global_step": 2.0})  # training metrics only
    # the sweep metric is a training loss Tune has not seen yet: ValidationReportCallback forwards nothing
    ctx = context(tmp_path, metric="loss/total")
    ctx._await_decision({"val/loss_llm": 1.0, "global_step": 2.0})
    assert time.monotonic() - started < 5
    post(tmp_path, 4, "continue")  # once seen, the next validation waits for its decision
    ctx._await_decision({"loss/total": 2.0, "global_step": 3.0})
    ctx._await_decision({"val/loss_llm": 1.0, "global_step": 4.0})
    assert not Path(decision_file(str(tmp_path), 4)).exists()


def test_a_stopped_trial_waits_for_tune_to_end_it(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "DECISION_TIMEOUT_S", 0.05)
    post(tmp_path, 6, "stop")
    time.sleep(0.2)
    with pytest.raises(RuntimeError, match="did not end its workers"):
        context(tmp_path)._await_decision({"val/loss_llm": 1.0, "global_step": 6.0})


def test_no_decision_in_time_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "DECISION_TIMEOUT_S", 0.3)
    context(tmp_path)._await_decision({"val/loss_llm": 1.0, "global_step": 8.0})


def test_the_board_posts_in_the_trials_run_folder(tmp_path):
    config = load_experiment(ROOT / "experiments" / "loss_ratio_sweep.yaml", scale="tiny")
    board = DecisionBoard(config, str(tmp_path))
    trial = SimpleNamespace(config={"loss.rec_weight": 0.3}, trial_id="abc12_00001")
    board.post(trial, {"global_step": 8, "val/loss_llm": 1.0}, "STOP")
    board.post(trial, {"global_step": 4, "val/loss_llm": 1.0}, "CONTINUE")
    board.post(trial, {"val/loss_llm": 1.0}, "CONTINUE")  # no step: nothing a worker waits for
    folder = Path(run_dir(str(tmp_path), config.name, "trial-00001")) / training.DECISIONS_DIR
    assert {p.name: json.loads(p.read_text())["decision"] for p in folder.iterdir()} == {
        "8.json": "stop",
        "4.json": "continue",
    }
