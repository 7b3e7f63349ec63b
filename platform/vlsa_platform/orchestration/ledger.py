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
    """No submission matches (or several do, or the one named cannot be read)."""


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


@dataclass(frozen=True)
class UnreadableRecord:
    """A ``submission.json`` that cannot be read back (not JSON, a field missing or unknown...)."""

    path: Path
    """The record file."""
    error: str
    """Why it cannot be read: the parse error's type and message."""

    @property
    def id(self) -> str:
        """The submission id its folder is named after."""
        return self.path.parent.name

    def describe(self) -> str:
        return f"{self.path}: unreadable submission record ({self.error})"


def scan(workdir: str | os.PathLike[str]) -> tuple[list[SubmissionRecord], list[UnreadableRecord]]:
    """Every submission recorded in ``workdir`` (oldest first), and the record files that cannot be read."""
    root = Path(workdir) / RECORDS_DIR
    records, unreadable = [], []
    for path in sorted(root.glob(f"*/{RECORD_FILE}")):
        try:
            records.append(SubmissionRecord.load(path))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            unreadable.append(UnreadableRecord(path, " ".join(f"{type(err).__name__}: {err}".split())))
    return sorted(records, key=lambda r: r.started_at), unreadable


def all_records(workdir: str | os.PathLike[str]) -> list[SubmissionRecord]:
    """Every readable submission recorded in ``workdir``, oldest first (:func:`scan` also says which are not)."""
    return scan(workdir)[0]


def _newer_than(unreadable: list[UnreadableRecord], started_at: float) -> list[UnreadableRecord]:
    newer = []
    for bad in unreadable:
        with contextlib.suppress(OSError):  # gone since the scan: nothing to report
            if bad.path.stat().st_mtime > started_at:
                newer.append(bad)
    return newer


def find(workdir: str | os.PathLike[str], wanted: str | None = None) -> SubmissionRecord:
    """The submission whose id is ``wanted`` (or starts with it, or whose experiment it names — the latest
    of those); the latest submission when ``wanted`` is ``None``.

    A record that cannot be read is never passed over in silence: naming it (its id or a prefix of it only it
    has), or asking for the latest when it was written after every readable one, raises :class:`RecordError`
    naming its file and the parse error."""
    records, unreadable = scan(workdir)
    if wanted is None:
        newer = _newer_than(unreadable, records[-1].started_at if records else float("-inf"))
        if newer:
            after = f" (after {records[-1].id})" if records else ""
            raise RecordError(
                f"a submission record written last{after} is unreadable: {newer[-1].describe()}"
            )
    if not records and not unreadable:
        raise RecordError(f"no submission recorded in {Path(workdir) / RECORDS_DIR}")
    if wanted is None:
        return records[-1]
    exact = [r for r in records if r.id == wanted]
    if exact:
        return exact[0]
    bad_exact = [u for u in unreadable if u.id == wanted]
    if bad_exact:
        raise RecordError(bad_exact[0].describe())
    by_experiment = [r for r in records if r.spec.experiment == wanted]
    if by_experiment:  # ids are "<experiment>-<time>": an unreadable later one of it is not passed over
        later = [u for u in unreadable if u.id.startswith(f"{wanted}-") and u.id > by_experiment[-1].id]
        if later:
            raise RecordError(f"the latest submission of {wanted!r} is unreadable: {later[-1].describe()}")
        return by_experiment[-1]
    prefixed = [r for r in records if r.id.startswith(wanted)]
    bad_prefixed = [u for u in unreadable if u.id.startswith(wanted)]
    if len(prefixed) == 1 and not bad_prefixed:
        return prefixed[0]
    if prefixed or len(bad_prefixed) > 1:
        ids = ", ".join(sorted([r.id for r in prefixed] + [u.id for u in bad_prefixed]))
        raise RecordError(f"{wanted!r} matches several submissions: {ids}")
    if bad_prefixed:
        raise RecordError(bad_prefixed[0].describe())
    known = ", ".join(r.id for r in records[-5:]) or "none readable"
    raise RecordError(f"no submission {wanted!r} in {Path(workdir) / RECORDS_DIR} (latest: {known})")


__all__ = [
    "DEFAULT_WORKDIR",
    "FAILED",
    "FINISHED",
    "RUNNING",
    "STOPPED",
    "RecordError",
    "SubmissionRecord",
    "UnreadableRecord",
    "all_records",
    "find",
    "scan",
]
