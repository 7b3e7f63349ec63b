"""ASHA's decisions reach a trial's workers: the scheduler posts each one in the trial's run folder, and rank 0
waits for it after every validation Tune sees (no Ray here: the waiting alone, on a clock of the test's own)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlsa_platform import storage
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import decisions
from vlsa_platform.orchestration.decisions import DecisionBoard, decision_file
from vlsa_platform.orchestration.training import _RayWorkerContext, run_dir

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """Time that passes only when the waiting sleeps; ``then`` runs at the n-th sleep (a decision arriving)."""

    def __init__(self, then: dict[int, object] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.then = then or {}

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        action = self.then.get(len(self.sleeps))
        if action is not None:
            action()


def post(directory: Path, step: int, decision: str) -> None:
    storage.write_text(decision_file(str(directory), step), json.dumps({"decision": decision}))


def wait(directory: Path, metrics: dict, clock: Clock, metric: str = "val/loss_llm", latest=None) -> None:
    latest = {} if latest is None else latest
    decisions.await_decision(str(directory), latest, metrics, metric, sleep=clock.sleep, clock=clock)


def test_rank0_waits_for_the_decision_on_a_validation_then_goes_on(tmp_path):
    clock = Clock(then={3: functools.partial(post, tmp_path, 4, "continue")})
    wait(tmp_path, {"loss/total": 2.0, "val/loss_llm": 1.0, "global_step": 4.0}, clock)
    assert len(clock.sleeps) == 3, "it waited until the decision came, and no longer"
    assert not Path(decision_file(str(tmp_path), 4)).exists(), "a decision read is removed"


def test_the_worker_context_waits_through_the_decisions_module(tmp_path):
    ctx = object.__new__(_RayWorkerContext)  # what __init__ reads from Ray Train, set by hand
    ctx.directory, ctx.rank, ctx.await_decisions, ctx._latest = str(tmp_path), 0, "val/loss_llm", {}
    post(tmp_path, 4, "continue")
    ctx._await_decision({"loss/total": 2.0, "val/loss_llm": 1.0, "global_step": 4.0})
    assert not Path(decision_file(str(tmp_path), 4)).exists(), "a decision read is removed"


def test_only_validations_the_scheduler_sees_wait(tmp_path):
    clock = Clock()
    wait(tmp_path, {"loss/total": 2.0, "global_step": 2.0}, clock)  # training metrics only
    # the sweep metric is a training loss Tune has not seen yet: ValidationReportCallback forwards nothing
    latest: dict = {}
    wait(tmp_path, {"val/loss_llm": 1.0, "global_step": 2.0}, clock, "loss/total", latest)
    assert clock.sleeps == [], "nothing waited"
    post(tmp_path, 4, "continue")  # once seen, the next validation waits for its decision
    wait(tmp_path, {"loss/total": 2.0, "global_step": 3.0}, clock, "loss/total", latest)
    wait(tmp_path, {"val/loss_llm": 1.0, "global_step": 4.0}, clock, "loss/total", latest)
    assert not Path(decision_file(str(tmp_path), 4)).exists()


def test_a_stopped_trial_waits_for_tune_to_end_it(tmp_path):
    post(tmp_path, 6, "stop")
    clock = Clock()
    with pytest.raises(RuntimeError, match="did not end it"):
        wait(tmp_path, {"val/loss_llm": 1.0, "global_step": 6.0}, clock)
    assert clock.sleeps == [decisions.DECISION_TIMEOUT_S * 10], "it waited for Tune, long, before giving up"


def test_no_decision_in_time_goes_on(tmp_path, caplog):
    clock = Clock()
    with caplog.at_level("WARNING", logger=decisions.__name__):
        wait(tmp_path, {"val/loss_llm": 1.0, "global_step": 8.0}, clock)  # returns: it goes on
    assert (
        decisions.DECISION_TIMEOUT_S
        < clock.now
        <= decisions.DECISION_TIMEOUT_S + 2 * decisions.DECISION_POLL_S
    )
    assert "no scheduler decision on step 8 " in caplog.text


def test_the_board_posts_in_the_trials_run_folder(tmp_path):
    config = load_experiment(ROOT / "experiments" / "loss_ratio_sweep.yaml", scale="tiny")
    board = DecisionBoard(config, functools.partial(run_dir, str(tmp_path), config.name))
    trial = SimpleNamespace(config={"loss.rec_weight": 0.3}, trial_id="abc12_00001")
    board.post(trial, {"global_step": 8, "val/loss_llm": 1.0}, "STOP")
    board.post(trial, {"global_step": 4, "val/loss_llm": 1.0}, "CONTINUE")
    board.post(trial, {"val/loss_llm": 1.0}, "CONTINUE")  # no step: nothing a worker waits for
    folder = Path(run_dir(str(tmp_path), config.name, "trial-00001")) / decisions.DECISIONS_DIR
    assert {p.name: json.loads(p.read_text())["decision"] for p in folder.iterdir()} == {
        "8.json": "stop",
        "4.json": "continue",
    }
