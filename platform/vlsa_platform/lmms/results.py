"""``results.json``: what one evaluation of an export found, written by :mod:`.run` (in the evaluation
environment) and read by ``orchestration.evaluation`` (in the training one). No lmms-eval import.

Score names (:func:`flat_scores`): lmms-eval keys a task's aggregated metrics ``"<metric>,<filter>"``
(``"exact_match,none"``). A score here is ``"<task>/<metric>"`` for the filter ``none`` (what almost every task
uses) and ``"<task>/<metric>/<filter>"`` for another filter (``"gsm8k/exact_match/flexible-extract"``); standard
errors (``*_stderr*``), aliases and sample counts are left out, as are values that are not numbers (lmms-eval
writes ``"N/A"`` where a metric has none). A group (``vlsa_synthetic``) gives its own aggregate scores beside
those of its tasks. MLflow gets each as ``eval/<name>`` (``tracking.names.eval_metric``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The file :mod:`.run` writes into its output folder (rewritten after each task).
RESULTS_FILE = "results.json"
#: Sub-folder of the output folder: lmms-eval's results of each task (``<task>.json``) and its logged samples
#: (``<task>.samples.json``).
RAW_DIR = "raw"
#: Sub-folder of the output folder: the traceback of each failed task (``<task>.txt``).
ERRORS_DIR = "errors"
#: Written instead of ``results.json`` when :mod:`.run` refuses its input (unknown task, bad export or config).
REFUSAL_FILE = "refused.txt"

FINISHED, FAILED, PENDING = "finished", "failed", "pending"
"""A task's status: its scores are in; it raised (its error kept); not evaluated yet (or never, when the
process ended first)."""
_NO_FILTER = "none"


@dataclass
class TaskOutcome:
    """How one task (or group) of an evaluation ended."""

    status: str = PENDING
    """:data:`FINISHED`, :data:`FAILED` or :data:`PENDING`."""
    error: str | None = None
    """For a failed task: the exception, one line (the traceback is ``errors/<task>.txt``)."""
    seconds: float | None = None
    """Wall time of its ``simple_evaluate`` call."""


@dataclass
class EvalResults:
    """The content of ``results.json``."""

    export: str
    """The evaluated export folder."""
    tasks: dict[str, TaskOutcome]
    """Each task asked for, in the order asked."""
    scores: dict[str, float] = field(default_factory=dict)
    """``{"<task>/<metric>": value}`` of the finished tasks (:func:`flat_scores`)."""
    limit: int | None = None
    """Documents per task (``None``: all)."""
    lmms_eval_version: str | None = None

    @property
    def failed(self) -> list[str]:
        """The tasks that did not finish (failed, or never reached)."""
        return [name for name, outcome in self.tasks.items() if outcome.status != FINISHED]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EvalResults:
        data = json.loads(text)
        data["tasks"] = {name: TaskOutcome(**outcome) for name, outcome in data["tasks"].items()}
        return cls(**data)

    def write(self, folder: Path) -> None:
        """Write ``folder/results.json`` atomically (a reader never sees half a file)."""
        tmp = folder / f".{RESULTS_FILE}.tmp"
        tmp.write_text(self.to_json())
        os.replace(tmp, folder / RESULTS_FILE)

    @classmethod
    def read(cls, folder: Path) -> EvalResults:
        return cls.from_json((folder / RESULTS_FILE).read_text())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def flat_scores(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` from lmms-eval's ``results["results"]`` (module docstring)."""
    out: dict[str, float] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, comma, filter_name = key.partition(",")
            number = _number(value)
            if not comma or "_stderr" in metric or number is None:
                continue
            name = f"{task}/{metric}" if filter_name == _NO_FILTER else f"{task}/{metric}/{filter_name}"
            out[name] = number
    return out


__all__ = [
    "ERRORS_DIR",
    "FAILED",
    "FINISHED",
    "PENDING",
    "RAW_DIR",
    "REFUSAL_FILE",
    "RESULTS_FILE",
    "EvalResults",
    "TaskOutcome",
    "flat_scores",
]
