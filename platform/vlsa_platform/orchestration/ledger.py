"""The ledger of submissions: where ``status``, ``logs``, ``stop`` and ``resume`` find a submission, one folder
per submission in the work directory (:data:`DEFAULT_WORKDIR` unless given).

    <workdir>/submissions/<submission id>/
        submission.json     this record: the spec, where it runs (local pid or cluster job), its state
        driver.log          what the local driver printed (a cluster job's log is the job's)
        trials.json         the trial table, rewritten at each trial event (local submissions)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .submission_types import SubmissionSpec

DEFAULT_WORKDIR = ".vlsa"
"""Local work directory when none is given: the local MLflow store (``mlruns.db``, ``mlartifacts/``), the
default run storage (``storage/``) and the submission records (``submissions/``); relative to the current
directory."""
RECORDS_DIR = "submissions"
RECORD_FILE = "submission.json"
LOG_FILE = "driver.log"
TRIALS_FILE = "trials.json"

RUNNING, FINISHED, FAILED, STOPPED = "RUNNING", "FINISHED", "FAILED", "STOPPED"


class RecordError(LookupError):
    """No submission matches (or several do)."""


@dataclass
class SubmissionRecord:
    spec: SubmissionSpec
    address: str | None = None
    """``None`` for a local submission; the cluster's address for a Ray job."""
    job_id: str | None = None
    """The Ray job of a cluster submission (the latest, when resumed)."""
    pid: int | None = None
    """The local driver's process id while it runs."""
    pid_started: float | None = None
    """That process's start time (so a later process reusing the id is not taken for the driver)."""
    state: str = RUNNING
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    tracking_uri: str | None = None
    """The tracking URI the parent run lives in (the served local store shows as its SQLite file)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Each launch (submit, resume) with its time and pid or job id."""

    @property
    def id(self) -> str:
        return self.spec.submission_id

    @property
    def folder(self) -> Path:
        return Path(self.spec.workdir) / RECORDS_DIR / self.id

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    @property
    def trials_path(self) -> Path:
        return self.folder / TRIALS_FILE

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        tmp = self.folder / (RECORD_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(self.folder / RECORD_FILE)

    @classmethod
    def load(cls, path: Path) -> SubmissionRecord:
        data = json.loads(path.read_text())
        data["spec"] = SubmissionSpec.from_dict(data["spec"])
        return cls(**data)

    def trials(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self.trials_path.read_text()))
        except (OSError, ValueError):
            return []

    def driver_alive(self) -> bool:
        """Whether the local driver process still runs (always ``False`` for a cluster job)."""
        if self.address is not None or self.pid is None:
            return False
        import psutil

        try:
            started = psutil.Process(self.pid).create_time()
        except psutil.Error:
            return False
        return self.pid_started is None or abs(started - self.pid_started) < 1e-3

    def mark_driver(self) -> None:
        """Record this process as the submission's driver."""
        import psutil

        self.pid = os.getpid()
        self.pid_started = psutil.Process(self.pid).create_time()


def all_records(workdir: str | os.PathLike[str]) -> list[SubmissionRecord]:
    """Every submission recorded in ``workdir``, oldest first."""
    root = Path(workdir) / RECORDS_DIR
    records = []
    for path in sorted(root.glob(f"*/{RECORD_FILE}")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            records.append(SubmissionRecord.load(path))
    return sorted(records, key=lambda r: r.started_at)


def find(workdir: str | os.PathLike[str], wanted: str | None = None) -> SubmissionRecord:
    """The submission whose id is ``wanted`` (or starts with it, or whose experiment it names — the latest
    of those); the latest submission when ``wanted`` is ``None``."""
    records = all_records(workdir)
    if not records:
        raise RecordError(f"no submission recorded in {Path(workdir) / RECORDS_DIR}")
    if wanted is None:
        return records[-1]
    exact = [r for r in records if r.id == wanted]
    if exact:
        return exact[0]
    by_experiment = [r for r in records if r.spec.experiment == wanted]
    if by_experiment:
        return by_experiment[-1]
    prefixed = [r for r in records if r.id.startswith(wanted)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise RecordError(f"{wanted!r} matches several submissions: {', '.join(r.id for r in prefixed)}")
    known = ", ".join(r.id for r in records[-5:])
    raise RecordError(f"no submission {wanted!r} in {Path(workdir) / RECORDS_DIR} (latest: {known})")


__all__ = [
    "DEFAULT_WORKDIR",
    "FAILED",
    "FINISHED",
    "RUNNING",
    "STOPPED",
    "RecordError",
    "SubmissionRecord",
    "all_records",
    "find",
]
