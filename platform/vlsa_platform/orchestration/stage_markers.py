"""A run's stage markers in run storage: ``<run directory>/<stage>.complete.json``, written when a stage
finished (:class:`StageOutcome`: its final checkpoint, steps, device-hours, or the run it adopted the stage
from). The training driver (:mod:`.training`) writes and reads them; the evaluation step finds a run's export
through them (:mod:`.run_exports`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..train.spec import EXPORT_DIR


@dataclass
class StageOutcome:
    """How a stage ended (the content of ``<stage>.complete.json``)."""

    stage: str
    checkpoint: str
    """Its final checkpoint (local folder or ``s3://``); the exported model is in ``<checkpoint>/model``."""
    global_step: int
    stage_steps: int
    gpu_hours: float
    metrics: dict[str, float] = field(default_factory=dict)
    """The last metrics rank 0 reported."""
    shared_from: dict[str, Any] | None = None
    """When this run adopted the stage instead of training it (a shared prefix, :mod:`.prefixes`): the run that
    trained it (``run``: its ``name``, ``directory``, ``run_id``) and the prefix folder (``prefix``)."""

    @property
    def model(self) -> str:
        return storage.join(self.checkpoint, EXPORT_DIR)


def complete_marker(directory: str, stage: str) -> str:
    """Where the marker of ``stage`` of the run in ``directory`` is."""
    return storage.join(directory, f"{stage}.complete.json")


def read_marker(directory: str, stage: str) -> StageOutcome:
    """The marker of ``stage`` (it must exist)."""
    return StageOutcome(**json.loads(storage.read_text(complete_marker(directory, stage))))


def completed_stage(directory: str, stage: str) -> StageOutcome | None:
    """How ``stage`` of the run in ``directory`` ended, or ``None`` while it has not (no marker)."""
    return read_marker(directory, stage) if storage.exists(complete_marker(directory, stage)) else None


__all__ = ["StageOutcome", "complete_marker", "completed_stage", "read_marker"]
