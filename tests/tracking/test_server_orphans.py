"""The local tracking server never outlives its owner: killed with SIGKILL, a driver's server ends with it,
and a leftover server of a workdir (its owner gone) is ended before another one starts there.

Each test starts a real ``mlflow server`` from a driver subprocess (seconds each), hence ``e2e``. The polling
bounds only keep a broken build from hanging the test; they are not performance claims.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from vlsa_platform.tracking.server_process import leftover_servers, read_records
from vlsa_platform.tracking.store import LocalTrackingServer

pytestmark = pytest.mark.e2e

BOUND_S = 120.0
"""How long a test waits for something before failing (a bound against hanging, not a timing claim)."""

DRIVER = """
import json, sys, time
from vlsa_platform.tracking.store import LocalTrackingServer
server = LocalTrackingServer(sys.argv[1], startup_timeout_s=180.0).start()
print(json.dumps({"pgid": server.pid, "url": server.url}), flush=True)
time.sleep(3600)
"""


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {BOUND_S:.0f}s: {what}"
        time.sleep(0.2)


def _group(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) members of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except OSError:
            continue
    return members


def _start_driver(workdir: Path) -> tuple[subprocess.Popen[str], dict]:
    """A driver process that starts the workdir's server and then waits; its server's group and URL."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert driver.stdout is not None
    line = driver.stdout.readline()
    assert line, f"the driver did not start its server; log:\n{(workdir / 'mlflow-server.log').read_text()}"
    return driver, json.loads(line)


def _kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the driver's whole process group, as a crash or `kill -9 -PGID`
    proc.wait()


def test_a_killed_drivers_server_ends_with_it(tmp_path):
    driver, server = _start_driver(tmp_path)
    try:
        members = _group(server["pgid"])
        assert len(members) >= 2  # the guard and `mlflow server` (and its uvicorn worker)
        assert [record.url for record in read_records(tmp_path)] == [server["url"]]
        assert leftover_servers(tmp_path) == []  # its owner runs: not a leftover
    finally:
        _kill(driver)
    _until(lambda: not _group(server["pgid"]), f"the server group {server['pgid']} to end")
    assert read_records(tmp_path) == []
    assert not list(tmp_path.glob("mlflow-server.*.json"))  # the stale record went with it


def test_a_leftover_server_is_ended_before_another_starts(tmp_path):
    """A server whose guard is gone (as one started before there was a guard) outlives its driver; the next
    launch on that workdir, as ``resume`` does, ends it first."""
    driver, server = _start_driver(tmp_path)
    guard = psutil.Process(server["pgid"])
    left = [proc for proc in _group(server["pgid"]) if proc.pid != guard.pid]
    try:
        guard.kill()
    finally:
        _kill(driver)  # which reaps the guard
    _until(lambda: not guard.is_running(), "the killed guard to be gone")
    assert left and all(proc.is_running() for proc in left)  # orphaned: nothing ends it on its own
    assert [record.pgid for record in leftover_servers(tmp_path)] == [server["pgid"]]

    again = LocalTrackingServer(tmp_path).launch()
    try:
        assert not any(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in left)
        assert [record.pgid for record in read_records(tmp_path)] == [again.pid]
        assert leftover_servers(tmp_path) == []
    finally:
        again.stop()
    assert read_records(tmp_path) == []
