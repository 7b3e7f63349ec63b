"""The deployed services, started natively on this machine for tests: PostgreSQL (``initdb`` + ``postgres`` from
PATH) and the MLflow server of ``infra/scripts/mlflow-server.sh`` on it — the same script the AWS head node and
the docker-compose ``mlflow`` service run. The Ray head is :mod:`tests.orchestration.ray_head` (which runs
``infra/scripts/ray-node.sh``) and S3 is the session's SeaweedFS (``tests/conftest.py``).

PostgreSQL refuses to run as root: on a machine where the tests are root (CI, this one) its processes run as the
``postgres`` user (``setpriv``), in a folder of their own under ``/tmp`` that user can reach.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..services import HOST, free_ports, spawn, started, stop_group, wait_ready

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_SCRIPT = ROOT / "infra" / "scripts" / "mlflow-server.sh"
STARTUP_TIMEOUT_S = 120.0
DATABASES = ("mlflow", "mlflow_auth")
"""The two databases of the MLflow server: runs and metrics, and its users (as infra/terraform and compose)."""


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL with one password-protected user owning :data:`DATABASES`."""

    port: int
    user: str
    password: str = field(repr=False)

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{HOST}:{self.port}/{database}"


def _as_postgres_user() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts (not root)."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("postgres")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def _psql_ready(server: Postgres) -> bool:
    import psycopg

    try:
        psycopg.connect(
            host=HOST, port=server.port, user=server.user, password=server.password, dbname="postgres"
        ).close()
        return True
    except psycopg.OperationalError:
        return False


def _create_databases(server: Postgres) -> None:
    import psycopg

    with psycopg.connect(
        host=HOST,
        port=server.port,
        user=server.user,
        password=server.password,
        dbname="postgres",
        autocommit=True,
    ) as connection:
        for name in DATABASES:
            connection.execute(f"CREATE DATABASE {name}")


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """``initdb`` a fresh cluster (SCRAM passwords, loopback only), start ``postgres``, create the databases,
    yield, stop it and remove its folder."""
    for program in ("initdb", "postgres"):
        if shutil.which(program) is None:
            raise RuntimeError(f"no `{program}` on PATH")
    folder = Path(tempfile.mkdtemp(prefix="vpg", dir="/tmp"))
    prefix = _as_postgres_user()
    user, password = "vlsa", secrets.token_hex(16)
    try:
        (folder / "pwfile").write_text(password)
        if prefix:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            os.chown(folder / "pwfile", owner.pw_uid, owner.pw_gid)
        init = subprocess.run(
            [*prefix, "initdb", "-D", str(folder / "data"), "-U", user, "--auth=scram-sha-256",
             f"--pwfile={folder / 'pwfile'}", "--no-sync"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S

        def start(attempt: int) -> tuple[subprocess.Popen[bytes], Postgres]:
            (port,) = free_ports(1)
            server = Postgres(port=port, user=user, password=password)
            cmd = [
                *prefix,
                "postgres",
                "-D",
                str(folder / "data"),
                "-h",
                HOST,
                "-p",
                str(port),
                "-k",
                str(folder),
            ]
            log = folder / f"postgres{attempt}.log"
            log.touch()
            if prefix:
                os.chown(log, pwd.getpwnam("postgres").pw_uid, -1)
            return spawn(cmd, cwd=folder, log_path=log, env=os.environ), server

        def ready(proc: subprocess.Popen[bytes], server: Postgres) -> str:
            return wait_ready(
                proc, lambda: _psql_ready(server), deadline, what="postgres",
                log_path=folder / "postgres0.log", poll_s=0.3,
            )  # fmt: skip

        with started(
            start, ready, lambda proc, _: stop_group(proc, 10), deadline=deadline, what="postgres"
        ) as pg:
            _create_databases(pg)
            yield pg
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    """The MLflow server of ``mlflow-server.sh``: basic auth, runs in PostgreSQL, artifacts proxied to S3."""

    url: str
    username: str
    password: str = field(repr=False)
    log_path: Path

    def client_env(self) -> dict[str, str]:
        """What an MLflow client (a training worker, the user's shell) sets to use it."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def status_of(url: str, headers: Mapping[str, str] | None = None) -> int:
    """The HTTP status a GET of ``url`` gets (0: no answer)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@contextlib.contextmanager
def mlflow_server(
    work: Path, pg: Postgres, artifacts: str, s3_env: Mapping[str, str]
) -> Iterator[MlflowServer]:
    """Run ``infra/scripts/mlflow-server.sh`` on 127.0.0.1 with a fresh admin, wait for it, yield, stop it."""
    work.mkdir(parents=True, exist_ok=True)
    username, password = "vlsa-admin", secrets.token_hex(16)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S

    def start(attempt: int) -> tuple[subprocess.Popen[bytes], MlflowServer]:
        (port,) = free_ports(1)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "VLSA_"))}
        env.update(s3_env)
        env.update(
            {
                "VLSA_MLFLOW_BACKEND_STORE_URI": pg.uri("mlflow"),
                "VLSA_MLFLOW_AUTH_DB_URI": pg.uri("mlflow_auth"),
                "VLSA_MLFLOW_ARTIFACTS": artifacts,
                "VLSA_MLFLOW_ALLOWED_HOSTS": f"{HOST}:{port},localhost:{port}",
                "VLSA_MLFLOW_HOST": HOST,
                "VLSA_MLFLOW_PORT": str(port),
                "VLSA_MLFLOW_WORKERS": "1",
                "VLSA_MLFLOW_WORK_DIR": str(work / f"server{attempt}"),
                "MLFLOW_AUTH_ADMIN_USERNAME": username,
                "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
                "MLFLOW_S3_ENDPOINT_URL": s3_env.get("AWS_ENDPOINT_URL", ""),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        log = work / f"mlflow{attempt}.log"
        proc = spawn(["bash", str(MLFLOW_SCRIPT)], cwd=work, log_path=log, env=env)
        return proc, MlflowServer(f"http://{HOST}:{port}", username, password, log)

    def ready(proc: subprocess.Popen[bytes], server: MlflowServer) -> str:
        return wait_ready(
            proc, lambda: status_of(f"{server.url}/health") == 200, deadline, what="mlflow-server.sh",
            log_path=server.log_path, poll_s=0.5,
        )  # fmt: skip

    with started(
        start, ready, lambda proc, _: stop_group(proc, 5), deadline=deadline, what="MLflow"
    ) as server:
        yield server
