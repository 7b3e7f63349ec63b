"""The evaluation step of a run, without Ray or lmms-eval: where a run's segments end for it, when the driver
calls it, what a recorded evaluation gives back, what it reports to Tune and when it waits for ASHA, what the
Ray task asks of the cluster, and the submission's pre-flight look-up of the task names."""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlsa_platform import storage
from vlsa_platform.config import ConfigError
from vlsa_platform.config.loader import TINY_EVAL_METRIC, load_experiment
from vlsa_platform.orchestration import decisions, eval_step
from vlsa_platform.orchestration.eval_step import EvaluationStep, StageEvaluation, eval_marker
from vlsa_platform.orchestration.evaluation import EVAL_PYTHON_ENV
from vlsa_platform.orchestration.plan import expand_runs, plan_run, planned_rungs, stage_placements
from vlsa_platform.orchestration.preflight import PreflightError, check_evaluation
from vlsa_platform.orchestration.rungs import RUNG_CLOCK
from vlsa_platform.orchestration.training import StageOutcome, _complete_marker, _run_segments, _segments

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "experiments" / "loss_ratio_mme_sweep.yaml"


def sweep(*sets: str):
    return load_experiment(SWEEP, scale="tiny", overrides=list(sets))


def outcome(stage: str, step: int) -> StageOutcome:
    return StageOutcome(stage, f"/ckpt/{stage}", step, 8, 0.0)


def record(directory: str, stage: str, step: int, score: float) -> None:
    done = StageEvaluation(stage, step, {TINY_EVAL_METRIC.removeprefix("eval/"): score})
    storage.write_text(eval_marker(directory, stage), json.dumps(done.__dict__))


def test_an_evaluated_stage_ends_its_segment():
    config = sweep()
    run = expand_runs(config)[0]
    stages, placements = plan_run(run)["stages"], stage_placements(run)
    assert _segments(stages, placements) == [[0, 1, 2]]
    assert _segments(stages, placements, ["stage2", "stage3"]) == [[0, 1], [2]]
    assert _segments(stages, placements, ["stage1"]) == [[0], [1, 2]]


def test_the_driver_calls_the_step_after_every_stage_in_order_finished_or_found(tmp_path):
    directory = str(tmp_path / "run")
    names = [{"name": s} for s in ("stage1", "stage2", "stage3")]
    storage.write_text(_complete_marker(directory, "stage1"), json.dumps(outcome("stage1", 8).__dict__))

    def fit(specs, previous, publish):
        for spec in specs:
            step = (previous.global_step if previous else 0) + 8
            storage.write_text(
                _complete_marker(directory, spec.stage), json.dumps(outcome(spec.stage, step).__dict__)
            )
            previous = outcome(spec.stage, step)
        return SimpleNamespace(error=None)

    called: list[tuple[str, int]] = []
    spec = lambda i: SimpleNamespace(stage=names[i]["name"])  # noqa: E731
    after = lambda done: called.append((done.stage, done.global_step))  # noqa: E731
    _run_segments("r", directory, [[0], [1], [2]], names, spec, fit, after=after)
    assert called == [("stage1", 8), ("stage2", 16), ("stage3", 24)]


def test_a_recorded_evaluation_is_reported_to_tune_with_ashas_clock(tmp_path, monkeypatch):
    config = sweep()
    clock = planned_rungs(config).clock
    assert clock.evaluated == ("stage2", "stage3") and clock.waits == (1,)
    directory = str(tmp_path / "run")
    record(directory, "stage2", 16, 0.25)
    record(directory, "stage3", 24, 0.5)
    reported: list[dict] = []
    waited: list[int] = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reported.append(metrics))
    monkeypatch.setattr(decisions, "wait_for_decision", lambda folder, step: waited.append(step))
    step = eval_step.for_trial(config.trial({"loss.rec_weight": 0.1}), None, config.sweep.metric, clock)
    for stage, at in (("stage1", 8), ("stage2", 16), ("stage3", 24)):
        step(outcome(stage, at), directory=directory, run_id=None)  # recorded: no Ray task
    assert reported == [
        {TINY_EVAL_METRIC: 0.25, "global_step": 16, RUNG_CLOCK: 1.0},
        {TINY_EVAL_METRIC: 0.5, "global_step": 24, RUNG_CLOCK: 2.0},
    ]
    assert waited == [16]  # ASHA decides at tick 1 only (the stage3 evaluation is each trial's last)


def test_a_stopped_trial_waits_for_tune_after_its_evaluation(tmp_path, monkeypatch):
    config = sweep()
    directory = str(tmp_path / "run")
    record(directory, "stage2", 16, 0.0)
    storage.write_text(decisions.decision_file(directory, 16), json.dumps({"decision": "stop"}))
    slept: list[float] = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: None)
    wait = functools.partial(decisions.wait_for_decision, sleep=slept.append)
    monkeypatch.setattr(decisions, "wait_for_decision", wait)
    step = EvaluationStep(config, None, config.sweep.metric, planned_rungs(config).clock)
    with pytest.raises(RuntimeError, match="did not end it"):
        step(outcome("stage2", 16), directory=directory, run_id=None)
    assert slept == [decisions.DECISION_TIMEOUT_S * 10]


def test_without_a_score_objective_nothing_goes_to_tune(tmp_path, monkeypatch):
    config = load_experiment(ROOT / "experiments" / "ablation.yaml", scale="tiny")
    variant = config.variant("anyres")
    step = eval_step.for_trial(variant, None, "val/loss_llm", None)
    assert step is not None and step.metric is None and step.points() == ["stage3"]
    directory = str(tmp_path / "run")
    record(directory, "stage3", 16, 0.5)
    monkeypatch.setattr("ray.tune.report", lambda metrics: pytest.fail("reported to Tune"))
    step(outcome("stage3", 16), directory=directory, run_id=None)
    assert (
        eval_step.for_trial(load_experiment(ROOT / "experiments" / "vlsa_paper.yaml"), None, "x", None)
        is None
    )


def test_the_ray_task_asks_for_the_named_class():
    config = sweep()
    assert eval_step.evaluation_resources(config.evaluate, config) == {
        "num_cpus": 1,
        "num_gpus": 0,
        "resources": {},
    }
    paper = load_experiment(SWEEP)
    options = eval_step.evaluation_resources(paper.evaluate, paper)
    assert options["num_gpus"] == 1 and list(options["resources"]) == ["accelerator_type:A100-80G"]
    bad = sweep("evaluate.accelerator_type=B300X")
    with pytest.raises(ConfigError, match=r"evaluate\.accelerator_type"):
        eval_step.evaluation_resources(bad.evaluate, bad)
    with pytest.raises(ConfigError, match=r"evaluate\.accelerator_type"):
        plan_run(expand_runs(bad)[0])  # validate and submit refuse it before anything runs


def _fake_python(tmp_path: Path, code: int, stderr: str) -> Path:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\necho 'noise' >&2\necho '{stderr}' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_preflight_refuses_an_unknown_task_or_a_missing_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(
        EVAL_PYTHON_ENV, str(_fake_python(tmp_path, 2, "unknown lmms-eval task: mmee (did you mean mme?)"))
    )
    with pytest.raises(
        PreflightError, match=r"^evaluate.tasks: unknown lmms-eval task: mmee \(did you mean mme\?\)$"
    ):
        check_evaluation({"tasks": ["mmee"]})
    monkeypatch.setenv(EVAL_PYTHON_ENV, str(_fake_python(tmp_path, 0, "")))
    assert check_evaluation({"tasks": ["mme"]}) == []
    monkeypatch.setenv(EVAL_PYTHON_ENV, str(tmp_path / "absent"))
    with pytest.raises(PreflightError, match="no evaluation environment"):
        check_evaluation({"tasks": ["mme"]})
    (skipped,) = check_evaluation({"tasks": ["mme"]}, cluster=True)  # the nodes' environment evaluates
    assert skipped.startswith("evaluate.tasks not checked") and os.fspath(tmp_path / "absent") in skipped
