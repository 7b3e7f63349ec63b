"""ASHA's rungs in stage terms: the clock is Tune's time, its rungs sit where Tune's ASHA puts them, each
named as ``(stage, step)``, and a trial's rank 0 writes the clock into its reports and waits for a decision only
where ASHA takes one (no Ray cluster: Tune's scheduler objects and a stand-in for ``ray.train.report``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import decisions
from vlsa_platform.orchestration.plan import planned_rungs
from vlsa_platform.orchestration.rungs import RUNG_CLOCK, RungClock, decision_ticks, milestones

pytest.importorskip("ray.tune")

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SHORT = [f"stages.{s}.{k}" for s in ("stage1", "stage2", "stage3") for k in ("steps=5", "epochs=null")]


def test_milestones_are_tunes():
    from ray.tune.schedulers.async_hyperband import _Bracket

    for grace, rf, max_t, bracket in itertools.product((1, 2, 3), (2, 2.5, 3, 4), range(1, 70), (0, 1, 2)):
        if max_t < grace:
            assert milestones(grace, rf, max_t, bracket) == []
            continue
        ray_rungs = [m for m, _ in _Bracket(grace, max_t, rf, bracket)._rungs]
        assert milestones(grace, rf, max_t, bracket) == ray_rungs, (grace, rf, max_t, bracket)


@pytest.mark.parametrize(("grace", "rf", "max_t"), [(1, 2, 9), (2, 3, 30), (1, 1.2, 5), (2, 2.5, 40)])
def test_decision_ticks_are_where_tunes_asha_decides(grace, rf, max_t):
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(
        time_attr=RUNG_CLOCK,
        metric="m",
        mode="min",
        max_t=max_t,
        grace_period=grace,
        reduction_factor=rf,
        stop_last_trials=False,
    )
    trial = Trial("__fake", stub=True)
    asha.on_trial_add(None, trial)
    decided = []
    for tick in range(0, max_t + 3):
        before = sum(trial.trial_id in recorded for _, recorded in asha._brackets[0]._rungs)
        asha.on_trial_result(None, trial, {RUNG_CLOCK: tick, "m": 1.0})
        if sum(trial.trial_id in recorded for _, recorded in asha._brackets[0]._rungs) > before:
            decided.append(tick)
    assert decision_ticks(milestones(grace, rf, max_t), max_t + 2) == decided


def test_the_clock_counts_rung_points_from_the_named_stage():
    stages = ("stage1", "stage2", "stage3")
    clock = RungClock(stages, "stage2", "validations", 2)
    assert clock.reading("stage1", 5, True, []) == (0, False), "nothing counts before from_stage"
    # stage2 of 5 steps: validations at steps 2, 4, 5 -> ticks 1, 2, 3
    assert [clock.reading("stage2", step, step == 5, [])[0] for step in (2, 4, 5)] == [1, 2, 3]
    assert [clock.reading("stage3", step, step == 3, [5])[0] for step in (2, 3)] == [4, 5]
    ends = RungClock(stages, "stage2", "stage_ends", 2)
    assert ends.reading("stage2", 4, False, []) == (0, False), "a validation inside a stage is no rung point"
    assert ends.reading("stage2", 5, True, []) == (1, True)
    assert ends.reading("stage3", 2, False, [5]) == (1, False)
    assert ends.reading("stage3", 3, True, [5]) == (2, True)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        # from stage1 (loss/total: the LLM may be frozen), 5 steps a stage, every 2: 3 points a stage, 9 in
        # all, max_t 8; grace 2, reduction 2: rungs at ticks 2, 4, 8
        (
            ["sweep.metric=loss/total", "sweep.scheduler.rungs.from_stage=stage1"],
            [("stage1", 4), ("stage2", 2), ("stage3", 4)],
        ),
        # the file's own: from stage3, 3 points, max_t 2: one rung at tick 2
        ([], [("stage3", 4)]),
        # stage ends from stage1: 3 points, max_t 2, grace 1: rungs at the ends of stage1 and stage2
        (
            [
                "sweep.metric=loss/total",
                "sweep.scheduler.rungs.from_stage=stage1",
                "sweep.scheduler.rungs.at=stage_ends",
                "sweep.scheduler.grace_period=1",
            ],
            [("stage1", 5), ("stage2", 5)],
        ),
    ],
)
def test_the_plans_rungs_are_where_the_clock_meets_asha(sets, expected):
    config = load_experiment(
        EXPERIMENTS / "loss_ratio_sweep.yaml",
        scale="tiny",
        overrides=[*SHORT, "data.validation.every_steps=2", *sets],
    )
    schedule = planned_rungs(config)
    assert [(r["stage"], r["step"]) for r in schedule.rungs()] == expected
    # the same ticks from the clock the workers read, walking a trial's validations
    clock, seen, lengths = schedule.clock, [], []
    stages = list(config.stages)
    for index, stage in enumerate(stages):
        for step in (2, 4, 5):  # the validations of a 5-step stage
            tick, point = clock.reading(stage, step, step == 5, lengths)
            if clock.waits_at(tick, point):
                seen.append((stage, step))
        if index >= stages.index(clock.from_stage):
            lengths.append(5)
    assert seen == expected


class _Reports:
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def __call__(self, metrics, checkpoint=None):
        self.seen.append(dict(metrics))


def test_rank0_writes_the_clock_and_waits_only_at_rungs(tmp_path, monkeypatch):
    import ray.train

    from vlsa_platform.orchestration.training import _RayWorkerContext

    config = load_experiment(
        EXPERIMENTS / "loss_ratio_sweep.yaml",
        scale="tiny",
        overrides=[*SHORT, "data.validation.every_steps=2"],
    )
    clock = decisions.worker_clock(config)
    assert clock is not None and clock.waits == (2,)
    reports = _Reports()
    monkeypatch.setattr(ray.train, "report", reports)
    waited: list[bool] = []
    ctx = object.__new__(_RayWorkerContext)  # what __init__ reads from Ray Train, set by hand
    ctx.__dict__.update(
        directory=str(tmp_path),
        rank=0,
        await_decisions="val/loss_llm",
        _latest={},
        _stage_steps={},
        rung_clock=clock,
        stage="stage3",
        step_offset=10,
        last_metrics={},
    )
    monkeypatch.setattr(ctx, "_await_decision", lambda metrics, due=True: waited.append(due))
    for step in (2, 4):  # stage3's validations before its last (a checkpoint report)
        ctx.report({"val/loss_llm": 1.0, "global_step": float(10 + step)})
    assert [r[RUNG_CLOCK] for r in reports.seen] == [1.0, 2.0]
    assert waited == [False, True], "rank 0 waits at the rung (tick 2), not at tick 1"
    ctx.stage, ctx.step_offset = "stage1", 0
    ctx.report({"val/loss_llm": 1.0, "global_step": 2.0})
    assert reports.seen[-1][RUNG_CLOCK] == 0.0 and waited[-1] is False, "no rung before from_stage"


def test_a_report_that_is_not_due_does_not_wait(tmp_path):
    slept: list[float] = []
    decisions.await_decision(
        str(tmp_path),
        {},
        {"val/loss_llm": 1.0, "global_step": 4.0},
        "val/loss_llm",
        due=False,
        sleep=slept.append,
        clock=lambda: 0.0,
    )
    assert slept == [], "no decision awaited where no rung can fall"


def test_a_recorded_curve_reads_as_the_workers_clock():
    clock = RungClock(("stage1", "stage2", "stage3"), "stage2", "validations", 2)
    lengths = {"stage1": 3, "stage2": 5, "stage3": 4}
    # global steps of the validations: stage1 2, 3; stage2 5, 7, 8; stage3 10, 12
    assert [clock.at_global_step(g, lengths)[0] for g in (2, 3, 5, 7, 8, 10, 12)] == [0, 0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="past the run"):
        clock.at_global_step(13, lengths)


def test_asha_posts_a_decision_only_at_a_rung(tmp_path):
    import functools
    from types import SimpleNamespace

    from vlsa_platform.orchestration.training import run_dir

    config = load_experiment(
        EXPERIMENTS / "loss_ratio_sweep.yaml",
        scale="tiny",
        overrides=[*SHORT, "data.validation.every_steps=2"],
    )
    sched = decisions.scheduler(config, functools.partial(run_dir, str(tmp_path), config.name))
    sched.set_search_properties("val/loss_llm", "min")
    trial = SimpleNamespace(config={"loss.rec_weight": 0.3}, trial_id="abc12_00001")
    sched.on_trial_add(None, trial)
    # stage1..3 of 5 steps, rungs from stage3: ticks 0 before it, then 1, 2 (the rung), 3
    for global_step, tick in ((2, 0), (5, 0), (12, 1), (14, 2), (15, 3)):
        sched.on_trial_result(
            None, trial, {"global_step": global_step, RUNG_CLOCK: tick, "val/loss_llm": 1.0}
        )
    folder = Path(run_dir(str(tmp_path), config.name, "trial-00001")) / decisions.DECISIONS_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["14.json"], "posted at the rung only"
