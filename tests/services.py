"""What the tests that start real services share: free loopback ports, a process started in its own session
with its output in a log file, a bounded wait for it to answer, a stop of its whole process group, and the
start-wait-retry loop around them (a port picked free here may be taken before the service binds it).

Used by the S3 server fixture (``tests/conftest.py``) and the Ray head (``tests/orchestration/ray_head.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"

T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def log_tail(path: Path, chars: int = 4000) -> str:
    """The end of a service's log, for an error message."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def spawn(
    cmd: Sequence[str], *, cwd: Path, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session (so :func:`stop_group` reaches every process it starts), stdout and
    stderr to ``log_path``, no stdin."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace_s`` seconds if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_ready(
    proc: subprocess.Popen[bytes],
    answers: Callable[[], bool],
    deadline: float,
    *,
    what: str,
    log_path: Path,
    poll_s: float = 0.2,
) -> str:
    """Poll ``answers`` until it is true (``""``) or the process exits or ``deadline`` (``time.monotonic``)
    passes (then why, with the log's tail)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"{what} exited with {proc.returncode}:\n{log_tail(log_path)}"
        if answers():
            return ""
        time.sleep(poll_s)
    return f"{what} did not answer in time:\n{log_tail(log_path)}"


@contextlib.contextmanager
def started(
    start: Callable[[int], tuple[subprocess.Popen[bytes], T]],
    ready: Callable[[subprocess.Popen[bytes], T], str],
    finish: Callable[[subprocess.Popen[bytes], T], None],
    *,
    deadline: float,
    what: str,
    attempts: int = 2,
) -> Iterator[T]:
    """Start a service (``start(attempt)``), wait until ``ready`` returns ``""``, yield it, ``finish`` it; a
    start that does not come up is finished and tried again (at most ``attempts`` times, within
    ``deadline``)."""
    error = ""
    for attempt in range(attempts):
        proc, service = start(attempt)
        try:
            error = ready(proc, service)
        except BaseException:
            finish(proc, service)
            raise
        if error:
            finish(proc, service)
            if time.monotonic() >= deadline:
                break
            continue
        try:
            yield service
        finally:
            finish(proc, service)
        return
    raise RuntimeError(f"could not start {what}: {error}")
