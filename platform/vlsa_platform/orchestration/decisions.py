"""ASHA's decisions, from the scheduler to a trial's workers: every piece in one place.

- the Tune side: :func:`scheduler` (ASHA on the rung clock, or FIFO) builds a :class:`PostingASHAScheduler`,
  Tune's ASHA that posts each decision it takes at a rung to a :class:`DecisionBoard`, which writes it in the
  trial's run folder (:func:`decision_file`); :func:`worker_clock` is what the workers get to read the clock;
- the worker side: after each validation Tune sees (:func:`tune_report`, the rule ``ValidationReportCallback``
  forwards by) at which ASHA decides (a rung tick of :class:`.rungs.RungClock`), a trial's rank 0 waits for the
  decision on it (:func:`await_decision`): go on, or wait for Tune to end the trial. Tune acts on a decision by
  ending the trial's processes, which takes seconds while a stage trains on; a worker that waits trains no step
  past the rung that stopped it. At the other validations no rung can fall, and it does not wait.

ASHA's time is the rung clock (:data:`.rungs.RUNG_CLOCK`): rung points (validation points or stage ends)
counted from ``sweep.scheduler.rungs.from_stage`` on, 0 before it, which rank 0 writes into every report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from .. import storage
from ..config.schema import ExperimentConfig
from .plan import planned_rungs
from .rungs import RUNG_CLOCK, UNKNOWN_MAX_T, RungClock
from .sweep import trial_run

log = logging.getLogger(__name__)

DECISIONS_DIR = "decisions"
"""In a trial's run folder: ``<global step>.json`` (``{"decision": "continue" | "stop"}``) for each validation
the scheduler judged."""
DECISION_TIMEOUT_S = 120.0
"""How long a trial's rank 0 waits for the scheduler's decision on a validation before going on."""
DECISION_POLL_S = 0.2


def decision_file(run_directory: str, global_step: int) -> str:
    return storage.join(run_directory, DECISIONS_DIR, f"{int(global_step)}.json")


# ------------------------------------------------------------------------------------------ the worker side


def tune_report(latest: dict[str, Any], metrics: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    """What a trial tells Tune of a stage's report: at validation points only (reports with ``val/`` metrics),
    merged with the latest training metrics (kept in ``latest``, updated here), and only when that carries the
    sweep ``metric``; ``None`` for the other reports. The rule of ``progress.ValidationReportCallback``, and of
    the workers that wait for the scheduler's decision on what Tune saw."""
    latest.update({k: v for k, v in metrics.items() if not k.startswith("val/")})
    if not any(k.startswith("val/") for k in metrics):
        return None
    merged = {**latest, **metrics}
    return merged if metric in merged else None


def await_decision(
    directory: str,
    latest: dict[str, Any],
    metrics: Mapping[str, Any],
    metric: str,
    *,
    due: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """After a validation that reaches the sweep's scheduler (the reports ``ValidationReportCallback``
    forwards: with ``val/`` metrics and, merged with the latest training metrics in ``latest``, the sweep
    ``metric``) and is ``due`` (ASHA decides there: :meth:`.rungs.RungClock.waits_at`), wait for its
    decision in the run folder ``directory``: go on, or wait here for Tune to end this trial. The other ranks
    wait for rank 0 in the next collective. No decision within :data:`DECISION_TIMEOUT_S`: go on. ``sleep`` and
    ``clock`` are how it waits and tells the time."""
    if tune_report(latest, metrics, metric) is None or not due:
        return
    wait_for_decision(directory, int(metrics["global_step"]), sleep=sleep, clock=clock)


def wait_for_decision(
    directory: str,
    global_step: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait for the scheduler's decision on the result at ``global_step`` of the trial whose run folder is
    ``directory``: return on ``continue`` (or none within :data:`DECISION_TIMEOUT_S`); on ``stop``, wait for
    Tune to end this trial. A trial's rank 0 after a validation (:func:`await_decision`), its driver after an
    evaluation (:mod:`.eval_step`)."""
    path = decision_file(directory, global_step)
    timeout_s = DECISION_TIMEOUT_S
    deadline = clock() + timeout_s
    while not storage.exists(path):
        if clock() > deadline:
            log.warning("no scheduler decision on step %s within %ss; going on", global_step, timeout_s)
            return
        sleep(DECISION_POLL_S)
    decision = json.loads(storage.read_text(path)).get("decision")
    if decision != "stop":
        storage.delete(path)
        return
    log.info("the scheduler stopped this trial at step %s; waiting for Tune to end it", global_step)
    sleep(timeout_s * 10)
    raise RuntimeError("the scheduler stopped this trial, but Tune did not end it")


# -------------------------------------------------------------------------------------------- the Tune side


class DecisionBoard:
    """Where the scheduler's decision on each validation of a trial is posted for the trial's workers, which
    wait for it (:func:`await_decision`). ``run_folder`` gives the run folder of a run by its name
    (``functools.partial(training.run_dir, runs_root, experiment)``). Picklable: Tune keeps the scheduler in its
    experiment state."""

    def __init__(self, config: ExperimentConfig, run_folder: Callable[[str], str]) -> None:
        self.config = config
        self.run_folder = run_folder

    def post(self, trial: Any, result: dict[str, Any], decision: str) -> None:
        if "global_step" not in result:
            return
        try:
            name = trial_run(self.config, dict(trial.config), trial.trial_id).run.name
            verdict = "stop" if decision == TrialScheduler.STOP else "continue"
            storage.write_text(
                decision_file(self.run_folder(name), result["global_step"]), json.dumps({"decision": verdict})
            )
        except Exception as err:  # the worker gives up waiting after a while: never end the sweep for this
            log.warning("could not post the scheduler's decision for trial %s: %s", trial.trial_id, err)


class PostingASHAScheduler(ASHAScheduler):
    """Tune's ASHA, posting each decision it takes at a rung on a trial's result to a :class:`DecisionBoard`
    (at the other results it decides nothing, and no worker waits)."""

    def __init__(self, board: DecisionBoard | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board = board

    def _rungs_passed(self, trial: Any) -> int:
        return sum(trial.trial_id in seen for bracket in self._brackets for _, seen in bracket._rungs)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        before = self._rungs_passed(trial)
        decision = super().on_trial_result(tune_controller, trial, result)
        if self.board is not None and self._rungs_passed(trial) > before:
            self.board.post(trial, result, decision)
        return decision


def worker_clock(config: ExperimentConfig) -> RungClock | None:
    """What a trial's rank 0 needs to read the rung clock and know where ASHA decides; ``None`` without ASHA."""
    rungs = planned_rungs(config)
    return rungs.clock if rungs is not None else None


def scheduler(config: ExperimentConfig, run_folder: Callable[[str], str] | None = None) -> Any:
    """ASHA (``AsyncHyperBandScheduler`` on the rung clock: rung points from ``rungs.from_stage`` on) or FIFO
    (also for an ASHA sweep whose trials pass too few rung points for any rung: ``max_t`` below the grace
    period).

    With ``run_folder`` (a run's folder by its name, in the submission's run storage), ASHA also posts each
    decision to the trial's run folder, where the trial's rank 0 waits for it at the ticks where ASHA decides
    (:class:`DecisionBoard`): a trial ASHA stops trains no step past the rung that stopped it.
    """
    rungs = planned_rungs(config)
    if rungs is None or config.sweep is None:
        return FIFOScheduler()
    settings = config.sweep.scheduler
    if not rungs.clock.waits:
        log.warning(
            "ASHA has no rung (max_t %s rung points, grace_period %s): every trial runs to its end",
            rungs.max_t,
            settings.grace_period,
        )
        return FIFOScheduler()
    return PostingASHAScheduler(
        DecisionBoard(config, run_folder) if run_folder is not None else None,
        time_attr=RUNG_CLOCK,
        max_t=rungs.max_t,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
        brackets=settings.brackets,
        # max_t only places the rungs: a trial that reaches it trains on to its end.
        stop_last_trials=False,
    )


__all__ = [
    "DECISIONS_DIR",
    "DECISION_POLL_S",
    "DECISION_TIMEOUT_S",
    "UNKNOWN_MAX_T",
    "DecisionBoard",
    "PostingASHAScheduler",
    "await_decision",
    "decision_file",
    "scheduler",
    "tune_report",
    "wait_for_decision",
    "worker_clock",
]
