"""A run folder's divergence markers: ``<stage>.diverged.json``, written by rank 0 when a stage stopped for
non-finite losses (``training.on_nonfinite``), holding the reason and the launch that saw it.

The driver raises the reason as ``DivergedError`` (Ray Train does not retry it: the stage would diverge again).
A launch is one driver of a submission (``submit``, each ``resume``): when Tune retries a trial in the launch that
saw its stage diverge, the retry ends at once with the same error instead of training again ``max_failures``
times over; a new launch (or one without an identity) trains the stage again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .. import storage
from ..train.spec import DivergedError


def marker_path(directory: str, stage: str) -> str:
    """``<stage>.diverged.json`` in the run folder ``directory``."""
    return storage.join(directory, f"{stage}.diverged.json")


def record(directory: str, stage: str, reason: str, launch: str | None) -> None:
    """Leave ``reason`` for the driver (rank 0 only)."""
    storage.write_text(marker_path(directory, stage), json.dumps({"reason": reason, "launch": launch}))


def raise_recorded(name: str, directory: str, stage: str) -> None:
    """Raise the recorded divergence of ``stage`` of run ``name`` as ``DivergedError``, if there is one."""
    path = marker_path(directory, stage)
    if storage.exists(path):
        raise DivergedError(f"run {name}: {json.loads(storage.read_text(path))['reason']}")


def clear_before_training(name: str, directory: str, stages: Sequence[str], launch: str | None) -> None:
    """Before training ``stages`` again: an earlier launch's marker goes (this launch tries again); one this
    same launch wrote means Tune is retrying a diverged trial, which ends with the same error."""
    for stage in stages:
        path = marker_path(directory, stage)
        if not storage.exists(path):
            continue
        if launch is not None and json.loads(storage.read_text(path)).get("launch") == launch:
            raise_recorded(name, directory, stage)
        storage.delete(path)


__all__ = ["clear_before_training", "marker_path", "raise_recorded", "record"]
