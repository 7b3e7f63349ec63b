"""What a submission's trials tell Tune, and what the submission tells its user.

- :class:`ValidationReportCallback` (a Ray Train callback, subclass of Tune's ``TuneReportCallback``) forwards
  a stage's reports to Tune only at validation points (every ``data.validation.every_steps`` and at stage
  ends), each merged with the latest training metrics (stage, step, losses) and only when it then carries the
  sweep metric, so Optuna always sees its metric; ASHA reads its time from the rung clock rank 0 writes into
  each report (:mod:`.rungs`, :mod:`.decisions`).
- :class:`ProgressCallback` (a Tune callback) prints one line per event — a trial starting, validating,
  finishing, stopped early by ASHA, failing — instead of Tune's full table, keeps a JSON snapshot of the trials
  for ``vlsa-platform status`` and marks early-stopped trials' MLflow runs ``KILLED`` (their process was ended,
  so they could not close their runs themselves; :mod:`vlsa_platform.tracking.children`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from .. import storage
from ..config.schema import ExperimentConfig
from ..tracking import children, names
from .decisions import tune_report
from .ledger import RECORDS_DIR, TRIALS_FILE
from .submission_types import SubmissionSpec, TrialOutcome
from .sweep import describe_values, trial_run
from .training import run_dir

log = logging.getLogger(__name__)

_SHOWN = (names.LOSS_TOTAL, names.LOSS_LLM, names.LOSS_REC)


class ValidationReportCallback(TuneReportCallback):
    """Forward a stage's validation reports to Tune, merged with the latest training metrics, when they carry
    ``metric``; the other reports are kept for the merge."""

    def __init__(self, metric: str) -> None:
        super().__init__()
        self._metric = metric
        self._latest: dict[str, Any] = {}

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        merged = tune_report(self._latest, metrics[0], self._metric)
        if merged is not None:
            super().after_report(run_context, [merged], checkpoint)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


class ProgressCallback(Callback):
    """One line per trial event on the terminal, a trial table on disk, early-stopped runs closed."""

    def __init__(
        self,
        config: ExperimentConfig,
        sub: SubmissionSpec,
        tracking_uri: str,
        parent_run_id: str,
        *,
        metric: str,
        mode: str,
        say: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.sub = sub
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.mode = mode
        self.say = say
        self.started = time.monotonic()
        self.trials: dict[str, dict[str, Any]] = {}
        self.last_stage = list(config.stages)[-1]
        self.snapshot = (
            Path(sub.workdir) / RECORDS_DIR / sub.submission_id / TRIALS_FILE
        )  # the ledger's layout

    # -- pickling: Tune keeps its callbacks in the experiment state; a resumed submission gives new ones

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["say"] = print
        return state

    # -- helpers

    def _row(self, trial: Any) -> dict[str, Any]:
        row = self.trials.get(trial.trial_id)
        if row is None:
            chosen = trial_run(self.config, dict(trial.config), trial.trial_id)
            row = {
                "trial_id": trial.trial_id,
                "name": chosen.run.name,
                "values": chosen.values,
                "status": "pending",
                "stage": None,
                "step": None,
                "metrics": {},
                "error": None,
            }
            self.trials[trial.trial_id] = row
        return row

    def _line(self, row: dict[str, Any], what: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.say(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {row['name']:<14} {what}")
        self._write()

    def _write(self) -> None:
        try:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.snapshot.with_suffix(".tmp")
            tmp.write_text(json.dumps(list(self.trials.values()), default=str, indent=1))
            tmp.replace(self.snapshot)
        except OSError as err:  # a status snapshot must never end a sweep
            log.warning("could not write %s: %s", self.snapshot, err)

    def _finished(self, name: str) -> bool:
        directory = run_dir(self.sub.runs_root, self.config.name, name)
        return storage.exists(storage.join(directory, f"{self.last_stage}.complete.json"))

    # -- Tune's callback interface

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row["status"] = "running"
        self._line(row, f"started   {describe_values(row['values'])}".rstrip())

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        row = self._row(trial)
        stage_index = result.get(names.STAGE)
        stages = list(self.config.stages)
        if isinstance(stage_index, int | float) and 0 <= int(stage_index) < len(stages):
            row["stage"] = stages[int(stage_index)]
        row["step"] = int(result["global_step"]) if "global_step" in result else row["step"]
        row["metrics"] = {
            k: float(v)
            for k, v in result.items()
            if isinstance(v, int | float) and "/" in k and not k.startswith(("config/", "lr/"))
        }
        keys = dict.fromkeys((*_SHOWN, self.metric))  # ordered, the metric once
        shown = "  ".join(f"{k} {_number(result[k])}" for k in keys if k in result)
        self._line(row, f"{row['stage'] or '':<8} step {row['step']:<6} {shown}")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        row = self._row(trial)
        if self._finished(row["name"]):
            row["status"] = "finished"
        else:
            row["status"] = "stopped early"
            self._close_child(trial.trial_id, "KILLED", early=True)
        value = row["metrics"].get(self.metric)
        self._line(row, f"{row['status']:<13} {self.metric} {_number(value) if value is not None else '-'}")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row["status"] = "failed"
        row["error"] = _error_text(trial)
        self._close_child(trial.trial_id, "FAILED")
        self._line(row, f"failed: {row['error'].splitlines()[-1] if row['error'] else '?'}")

    # -- the end

    def outcomes(self, results: Any) -> list[TrialOutcome]:
        """The trials at the end of ``Tuner.fit``: each as its events left it, or (trials that ended before a
        resume) as Tune's result says; a trial never started is ``not run``, one cut off ``interrupted``."""
        out = []
        for result in results:
            metrics = dict(result.metrics or {})
            trial_id = str(metrics.get("trial_id", ""))
            row = self.trials.get(trial_id)
            if row is None and trial_id and result.config and "global_step" in metrics:
                # a trial that ended before this launch resumed the submission: Tune's result tells
                try:
                    chosen = trial_run(self.config, dict(result.config), trial_id)
                except KeyError:
                    chosen = None
                if chosen is not None:
                    name = chosen.run.name
                    ended = "finished" if self._finished(name) else "stopped early"
                    row = {
                        "trial_id": trial_id,
                        "name": name,
                        "values": chosen.values,
                        "status": "failed" if result.error else ended,
                        "metrics": {},
                        "error": str(result.error) if result.error else None,
                    }
            if row is None:  # never started (still pending when the submission stopped)
                out.append(TrialOutcome(trial_id, "-", dict(result.config or {}), "not run"))
                continue
            status = row["status"]
            if status not in ("finished", "stopped early", "failed"):
                status = "interrupted" if status == "running" else "not run"
                row["status"] = status
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and "/" in k}
            out.append(
                TrialOutcome(
                    trial_id=row["trial_id"],
                    name=row["name"],
                    values=row["values"],
                    status=status,
                    metrics={**row["metrics"], **numbers},
                    error=row["error"],
                )
            )
        self._write()
        return out

    def _close_child(self, trial_id: str, status: str, early: bool = False) -> None:
        try:
            children.close_trial_run(self.tracking_uri, self.parent_run_id, trial_id, status, early=early)
        except Exception as err:  # tracking must never end a sweep
            log.warning("could not close the MLflow run of trial %s: %s", trial_id, err)

    def close_stopped_children(self) -> None:
        """At the end of the submission: the child runs still ``RUNNING`` marked ``KILLED``, and those of the
        trials ASHA stopped ``KILLED`` and tagged (:func:`vlsa_platform.tracking.children.close_stopped_children`)."""
        early = {row["trial_id"] for row in self.trials.values() if row["status"] == "stopped early"}
        try:
            children.close_stopped_children(self.tracking_uri, self.parent_run_id, early)
        except Exception as err:
            log.warning("could not close the child runs of %s: %s", self.parent_run_id, err)


def _error_text(trial: Any) -> str | None:
    """The end of a failed trial's error file (Tune writes the traceback there)."""
    path = getattr(trial, "error_file", None)
    if not path:
        return None
    try:
        return storage.read_text(str(path)).strip()[-4000:]
    except (OSError, ValueError):
        return str(path)


__all__ = [
    "ProgressCallback",
    "ValidationReportCallback",
]
