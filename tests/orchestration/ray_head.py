"""A real Ray head for tests: ``infra/scripts/ray-node.sh head`` (``ray start --head --block``, as every deployed
node runs it) on 127.0.0.1, token authentication on.

Everything is the test's own: a random token in a file of the test (``RAY_AUTH_TOKEN_PATH`` in the head's
environment, so Ray never reads or writes ``~/.ray/auth_token``), every port picked free here (the head, the
dashboard with its Jobs API, the Ray Client server, the agents, metrics), and a temporary root folder
(``--temp-dir``), so the ``ray_current_cluster`` file that makes a plain ``ray.init()`` join an existing
cluster is written there, not in ``/tmp/ray`` where other Ray users on the machine would find it.

:func:`ray_head` starts it and stops it: SIGTERM to the ``ray start --block`` process group (``ray start
--block`` and its Ray processes share it), SIGKILL after a short grace period, then SIGKILL to any process
left whose command line names this head's temporary folder (all of them started by it). Never ``ray stop``:
that ends every Ray instance on the machine.

The head's ``PATH`` starts with this interpreter's folder, so a job's ``python`` is this virtual environment's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..services import HOST, free_ports, spawn, started, stop_group, wait_ready

NODE_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "scripts" / "ray-node.sh"
"""The start-up script every deployed node runs (the AWS nodes, the docker-compose services): the head here is
started by it, so what the tests exercise is what is deployed."""
STARTUP_TIMEOUT_S = 120.0
"""Bound on the head coming up (the Jobs API answering); a loaded 2-core machine takes 10-30 s."""
STARTED_LINE = "Ray runtime started."
"""What ``ray start`` prints once its node is up (its raylet registered). The dashboard answers before that, and a
raylet that then fails (on a loaded machine: "Timed out waiting for file …dashboard_agent_listen_port…") makes
``ray start`` give up and take the dashboard with it: such a head is not ready, and is started again."""


@dataclass(frozen=True)
class RayHead:
    """A running head."""

    address: str
    """The dashboard, ``http://127.0.0.1:PORT``: what ``--address`` takes."""
    gcs_address: str
    """``127.0.0.1:PORT`` (``ray.init(address=...)``)."""
    token: str
    token_path: Path
    temp_dir: Path
    log_path: Path
    """Output of ``ray start``."""
    pid: int

    def client_env(self) -> dict[str, str]:
        """Variables that make a client on this machine send the head's token (what a user would set)."""
        return {"RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def logs_dir(self) -> Path | None:
        """The session's log folder (``job-driver-<id>.log``, ``dashboard.log``…), once it exists."""
        found = sorted(self.temp_dir.glob("session_*/logs"))
        return found[-1] if found else None


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            json.loads(response.read() or b"[]")
            return response.status == 200
    except (OSError, ValueError):
        return False


def _started(log_path: Path) -> bool:
    try:
        return STARTED_LINE in log_path.read_text(errors="replace")
    except OSError:
        return False


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (this head's unique temporary folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen[bytes], temp_dir: Path, grace_s: float = 3.0) -> None:
    """SIGTERM to the ``ray start --block`` group, SIGKILL after ``grace_s`` (a graceful Ray teardown takes
    15 s or more and nothing here needs it), then SIGKILL to any process of this head left outside the group
    (one whose command line names its temporary folder)."""
    stop_group(proc, grace_s)
    deadline = time.monotonic() + 10
    while (left := _pids_naming(str(temp_dir))) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _start(
    root: Path, token: str, num_cpus: int, resources: Mapping[str, float] | None, env: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], RayHead]:
    token_path = root / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    # Short: Ray puts Unix sockets under it (107-byte path limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="vrh", dir="/tmp"))
    ports = dict(
        zip(
            (
                "VLSA_RAY_PORT",
                "VLSA_DASHBOARD_PORT",
                "VLSA_CLIENT_PORT",
                "VLSA_DASHBOARD_AGENT_PORT",
                "VLSA_DASHBOARD_AGENT_GRPC_PORT",
                "VLSA_RUNTIME_ENV_AGENT_PORT",
                "VLSA_METRICS_PORT",
                "VLSA_NODE_MANAGER_PORT",
                "VLSA_OBJECT_MANAGER_PORT",
            ),
            map(str, free_ports(9)),
            strict=True,
        )
    )
    head_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")
        and not key.startswith("VLSA_")
    }
    head_env.update(
        {
            **ports,
            "VLSA_RAY_TOKEN_FILE": str(token_path),
            "VLSA_NODE_IP": HOST,
            "VLSA_NUM_CPUS": str(num_cpus),
            "VLSA_NUM_GPUS": "0",
            "VLSA_OBJECT_STORE_BYTES": str(256 * 1024**2),
            "VLSA_RAY_TEMP_DIR": str(temp_dir),
            "VLSA_RAY_BIN": str(Path(sys.executable).parent / "ray"),
            # SIGTERM to `ray start --block` first drains the node for up to 30 s; nothing here needs it.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if resources:
        head_env["VLSA_RESOURCES"] = json.dumps(dict(resources))
    head_env.update(env)
    log_path = root / "ray-start.log"
    proc = spawn(["bash", str(NODE_SCRIPT), "head"], cwd=root, log_path=log_path, env=head_env)
    head = RayHead(
        address=f"http://{HOST}:{ports['VLSA_DASHBOARD_PORT']}",
        gcs_address=f"{HOST}:{ports['VLSA_RAY_PORT']}",
        token=token,
        token_path=token_path,
        temp_dir=temp_dir,
        log_path=log_path,
        pid=proc.pid,
    )
    return proc, head


@contextlib.contextmanager
def ray_head(
    root: Path,
    *,
    num_cpus: int = 2,
    resources: Mapping[str, float] | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[RayHead]:
    """Start a Ray head (files under ``root``), wait (bounded) for its Jobs API, yield it, stop it.

    ``resources``: custom node resources (e.g. ``accelerator_type:H100``); ``env``: more variables for the
    head and hence its jobs — the place for S3 or MLflow credentials, which a submitted job never carries
    (``jobs.NODE_ENV``: the nodes bring their own). The head also inherits this process's environment as it is
    when it starts (less the Ray address and token variables).
    """
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        raise RuntimeError(f"no `ray` beside {sys.executable}")
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    deadline = time.monotonic() + startup_timeout_s

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], RayHead]:
        folder = root / f"head{attempt}"
        folder.mkdir(exist_ok=True)
        return _start(folder, token, num_cpus, resources, env or {})

    def ready(proc: subprocess.Popen[bytes], head: RayHead) -> str:
        """Until ``ray start`` says its node is up and the Jobs API answers an authenticated request."""
        return wait_ready(
            proc,
            lambda: _started(head.log_path) and _answers(head.address, head.token),
            deadline,
            what="`ray start` (its Jobs API)",
            log_path=head.log_path,
            poll_s=0.5,
        )

    with started(start, ready, _finish, deadline=deadline, what="a Ray head") as head:
        yield head


def _finish(proc: subprocess.Popen[bytes], head: RayHead) -> None:
    """Stop the head, keep its session logs beside the test's files, remove its temporary folder."""
    folder = head.log_path.parent
    try:
        _stop(proc, head.temp_dir)
    finally:
        logs = head.logs_dir()
        if logs is not None:
            with contextlib.suppress(OSError):
                shutil.copytree(logs, folder / "ray-logs", dirs_exist_ok=True)
        shutil.rmtree(head.temp_dir, ignore_errors=True)
