"""The local tracking server's process: started under a guard that ends it with its owner, recorded in the
workdir, and a leftover one found and ended.

:func:`guarded` wraps the server's command in :mod:`.server_guard`, so the server ends when the process that
started it dies, even by SIGKILL. :func:`write_record` leaves ``mlflow-server.<pid>.json`` in the workdir
for as long as the server runs; :func:`leftover_servers` reads those records back and names the servers
still alive whose owner is gone (a server from before the guard, or one whose guard was killed), which
:func:`end_leftover_servers` ends — ``submit``/``resume`` do so before they start another server on the
same store; a server whose owner still runs (another submission, ``vlsa-platform ui``) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from . import server_guard

log = logging.getLogger(__name__)

RECORD_PREFIX = "mlflow-server."
"""Records are ``<workdir>/mlflow-server.<pid>.json``, one per running server."""


def guarded(command: list[str], owner_pid: int | None = None) -> list[str]:
    """``command`` run under :mod:`.server_guard` on behalf of ``owner_pid`` (default: this process)."""
    owner = os.getpid() if owner_pid is None else owner_pid
    return [sys.executable, server_guard.__file__, str(owner), "--", *command]


@dataclass(frozen=True)
class ServerRecord:
    """What a workdir remembers of one server it runs."""

    pgid: int
    """The server's process group (the guard's pid: it leads the group of the server and its workers)."""
    owner_pid: int
    """The process that started it (a submission's driver, ``vlsa-platform ui``)."""
    owner_started_at: float
    """The owner's start time as the OS reports it (``psutil.Process.create_time``): a reused pid does not
    match."""
    url: str
    """Where it serves."""
    backend_uri: str
    """The store it owns."""

    def server_processes(self) -> list[psutil.Process]:
        """The processes of the recorded group that still run MLflow (the guard, ``mlflow server``, its uvicorn
        worker); none once the server has ended, even if its guard was killed first. Linux and macOS do not
        hand out a process-group id again while the group has a member, so a match is this server."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if os.getpgid(proc.pid) != self.pgid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
            except OSError:
                continue
            if any("mlflow" in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        return found

    def owner_alive(self) -> bool:
        """The recorded owner still runs (same pid, same start time)."""
        try:
            owner = psutil.Process(self.owner_pid)
            return owner.status() != psutil.STATUS_ZOMBIE and owner.create_time() == self.owner_started_at
        except psutil.Error:
            return False


def record_path(workdir: Path, pgid: int) -> Path:
    return workdir / f"{RECORD_PREFIX}{pgid}.json"


def write_record(workdir: Path, pgid: int, url: str, backend_uri: str) -> Path:
    """Record the server whose process group is ``pgid``, started by this process, in ``workdir``; the
    record's path."""
    record = ServerRecord(
        pgid=pgid,
        owner_pid=os.getpid(),
        owner_started_at=psutil.Process().create_time(),
        url=url,
        backend_uri=backend_uri,
    )
    path = record_path(workdir, pgid)
    path.write_text(json.dumps(asdict(record)), encoding="utf-8")
    return path


def read_records(workdir: Path) -> list[ServerRecord]:
    """The server records in ``workdir`` whose server still runs; the others are deleted on the way."""
    records = []
    for path in sorted(workdir.glob(f"{RECORD_PREFIX}*.json")):
        try:
            record = ServerRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            log.warning("ignoring unreadable server record %s: %s", path, err)
            continue
        if record.server_processes():
            records.append(record)
        else:
            path.unlink(missing_ok=True)
    return records


def leftover_servers(workdir: Path) -> list[ServerRecord]:
    """Servers recorded in ``workdir`` that still run although their owner is gone."""
    return [record for record in read_records(workdir) if not record.owner_alive()]


def end_leftover_servers(workdir: Path, timeout_s: float = 10.0) -> list[ServerRecord]:
    """End each of :func:`leftover_servers` (SIGTERM to its process group, SIGKILL after ``timeout_s``) and
    delete its record; the servers ended."""
    ended = leftover_servers(workdir)
    for record in ended:
        log.warning(
            "ending a leftover MLflow server (group %d, %s) whose owner is gone", record.pgid, record.url
        )
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, sig)
            _, alive = psutil.wait_procs(record.server_processes(), timeout=timeout_s)
            if not alive:
                break
        record_path(workdir, record.pgid).unlink(missing_ok=True)
    return ended


__all__ = [
    "ServerRecord",
    "end_leftover_servers",
    "guarded",
    "leftover_servers",
    "read_records",
    "record_path",
    "write_record",
]
