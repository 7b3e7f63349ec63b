"""Where runs are tracked: resolving the MLflow tracking URI, and a local tracking server for many writers.

Resolution order (DESIGN.md §4, "Defaults that work with nothing running"):

1. the experiment file's ``tracking.tracking_uri``;
2. ``$MLFLOW_TRACKING_URI``;
3. a local SQLite store ``sqlite:///<workdir>/mlruns.db`` with artifacts under ``<workdir>/mlartifacts``.

One process writing the SQLite file directly is fine. Several processes (parallel trials, each rank 0 of its
own TorchTrainer) writing it directly can hit "database is locked", so ``submit`` wraps the run in a
:class:`LocalTrackingServer`: one ``mlflow server`` process on 127.0.0.1 that owns the file and serves the
artifacts, and every writer talks HTTP to it. That server runs under a guard that ends it when the process
that started it dies, and is recorded in the workdir so that a leftover one is ended before another starts
(:mod:`.server_process`). With :class:`BasicAuth` it requires a user name and password (MLflow's
``basic-auth`` app; SECURITY.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .server_process import end_leftover_servers, guarded, record_path, write_record

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DB_FILE = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
_HOST = "127.0.0.1"
AUTH_CONFIG_FILE = "basic_auth.ini"
AUTH_DB_FILE = "basic_auth.db"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


@dataclass(frozen=True)
class TrackingStore:
    """A resolved tracking location."""

    uri: str
    """The MLflow tracking URI (``sqlite:///…``, ``http://…``, ``databricks``…)."""
    artifact_location: str | None = None
    """Artifact root for experiments created here; ``None`` = the server's default (``mlflow-artifacts:``)."""
    source: str = "explicit"
    """Where the URI came from: ``explicit`` (experiment file), ``env`` or ``local``."""

    @property
    def is_local_sqlite(self) -> bool:
        """A SQLite file written directly (no server in between)."""
        return self.uri.startswith("sqlite:")

    @property
    def is_http(self) -> bool:
        return self.uri.startswith(("http://", "https://"))


def local_store(workdir: str | os.PathLike[str]) -> TrackingStore:
    """The local default: ``sqlite:///<workdir>/mlruns.db``, artifacts in ``<workdir>/mlartifacts``
    (both created on demand; the folder is made here so SQLite can create its file)."""
    root = Path(workdir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return TrackingStore(
        uri=f"sqlite:///{root / DB_FILE}",
        artifact_location=(root / ARTIFACTS_DIR).as_uri(),
        source="local",
    )


def resolve_store(explicit: str | None, workdir: str | os.PathLike[str]) -> TrackingStore:
    """The tracking location for a submission: ``explicit`` (``tracking.tracking_uri``) >
    ``$MLFLOW_TRACKING_URI`` > :func:`local_store` under ``workdir``."""
    if explicit:
        return TrackingStore(uri=explicit, source="explicit")
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return TrackingStore(uri=from_env, source="env")
    return local_store(workdir)


def free_port(host: str = _HOST) -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BasicAuth:
    """The admin account of a tracking server run with MLflow's ``basic-auth`` app: every request but
    ``/health`` then needs these credentials (HTTP basic auth), which MLflow clients send when
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` are set (:meth:`client_env`).

    MLflow creates the admin the first time the server starts on an empty user store
    (``<workdir>/basic_auth.db``); later starts on that workdir must be given the same password (MLflow
    ignores the bootstrap settings once the user exists).
    """

    username: str
    """The admin user's name."""
    password: str = field(repr=False)
    """Its password (never printed)."""

    @classmethod
    def from_env(cls) -> BasicAuth:
        """The credentials in ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (what the clients
        will use). Raises ``ValueError`` naming the variable that is missing or empty."""
        values = {name: os.environ.get(name, "") for name in (USERNAME_ENV, PASSWORD_ENV)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ValueError(f"MLflow basic auth needs {' and '.join(missing)} set (the admin's credentials)")
        return cls(values[USERNAME_ENV], values[PASSWORD_ENV])

    def client_env(self) -> dict[str, str]:
        """The variables with which MLflow clients (the driver, Ray workers) authenticate."""
        return {USERNAME_ENV: self.username, PASSWORD_ENV: self.password}

    def server_env(self, workdir: Path) -> dict[str, str]:
        """The variables that make ``mlflow server --app-name basic-auth`` keep its users in
        ``workdir/basic_auth.db`` (config written to ``workdir/basic_auth.ini``: no password in it) and
        bootstrap this admin; unknown users get no permission. MLflow also requires a secret key for the
        CSRF protection of its UI."""
        config = workdir / AUTH_CONFIG_FILE
        config.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{workdir / AUTH_DB_FILE}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
            encoding="utf-8",
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            # The key of the UI's CSRF tokens: the one in the environment, else one for this server's life.
            SECRET_KEY_ENV: os.environ.get(SECRET_KEY_ENV) or secrets.token_urlsafe(32),
        }


class TrackingServerError(RuntimeError):
    """The local tracking server did not come up (the message carries the end of its log)."""


class LocalTrackingServer:
    """One ``mlflow server`` process on 127.0.0.1 that owns a SQLite store and serves its artifacts.

    Use as a context manager::

        with LocalTrackingServer(workdir) as server:
            os.environ["MLFLOW_TRACKING_URI"] = server.url   # what the workers are given
            ...

    ``workdir`` holds ``mlruns.db`` and ``mlartifacts/`` (the same files :func:`local_store` writes, so runs
    logged with or without the server end up in one store) and the server's log, ``mlflow-server.log``.
    The server runs in its own process group, which :meth:`stop` ends (SIGTERM, then SIGKILL after
    ``stop_timeout_s``) so no uvicorn worker is left behind. One worker process by default: SQLite takes one
    writer at a time anyway, and one process is what removes "database is locked".

    The process group is led by a guard (:mod:`.server_guard`) that ends it when the process that launched
    the server dies, and each running server is recorded as ``mlflow-server.<pgid>.json`` in ``workdir``;
    :meth:`launch` first ends a recorded server whose owner is gone (:func:`.server_process.end_leftover_servers`).

    ``basic_auth``: run MLflow's ``basic-auth`` app with this admin (:class:`BasicAuth`); ``None`` (the
    default) serves without authentication — to 127.0.0.1 only.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        backend_uri: str | None = None,
        artifacts_destination: str | None = None,
        workers: int = 1,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        basic_auth: BasicAuth | None = None,
    ) -> None:
        self.workdir = Path(workdir).expanduser().resolve()
        self.basic_auth = basic_auth
        self._backend_uri = backend_uri
        self._artifacts_destination = artifacts_destination
        self.port = port
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = self.workdir / "mlflow-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawned_port: int | None = None
        self._healthy = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the tracking URI to hand to clients)."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{_HOST}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The store the server owns (default ``sqlite:///<workdir>/mlruns.db``)."""
        return self._backend_uri or f"sqlite:///{self.workdir / DB_FILE}"

    @property
    def artifacts_destination(self) -> str:
        """Where served artifacts are written (default ``<workdir>/mlartifacts``)."""
        return self._artifacts_destination or (self.workdir / ARTIFACTS_DIR).as_uri()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> LocalTrackingServer:
        """Start the server's process and return at once (a no-op when already launched); :meth:`start` waits
        for it. The process takes seconds to come up: launched first, it does so while the caller goes on."""
        if self._proc is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self._artifacts_destination is None:
                (self.workdir / ARTIFACTS_DIR).mkdir(exist_ok=True)
            end_leftover_servers(self.workdir, timeout_s=self.stop_timeout_s)
            self._spawn(self.port if self.port is not None else free_port())
        return self

    def start(self) -> LocalTrackingServer:
        """Start the server (or take the one :meth:`launch` started) and wait, at most ``startup_timeout_s``
        per try, until ``/health`` answers."""
        if self.running() and self._healthy:
            return self
        # A port picked here may be taken before the server binds it; try a few.
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            self.launch()
            if self._wait_healthy():
                self.port = self._spawned_port
                self._healthy = True
                log.info("MLflow tracking server on %s (store %s)", self.url, self.backend_uri)
                return self
            if attempt + 1 < attempts:
                log.warning(
                    "MLflow server did not start on port %d; retrying on another port", self._spawned_port
                )
        raise TrackingServerError(
            f"MLflow tracking server did not become healthy in {self.startup_timeout_s:.0f}s; "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def _spawn(self, port: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            _HOST,
            "--port",
            str(port),
            "--workers",
            str(self.workers),
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            self.artifacts_destination,
        ]
        if self.basic_auth is not None:
            cmd += ["--app-name", "basic-auth"]
        env = dict(os.environ)
        env.pop(TRACKING_URI_ENV, None)
        # Server-side jobs (huey consumers: prompt optimisation, trace roll-ups) are not used here; they cost
        # seven extra processes and tens of seconds of startup on a small machine.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        if self.basic_auth is not None:
            env.update(self.basic_auth.server_env(self.workdir))
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                guarded(cmd),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() ends the uvicorn workers too
            )
        self._spawned_port = port
        self._healthy = False
        write_record(self.workdir, self._proc.pid, f"http://{_HOST}:{port}", self.backend_uri)

    def _wait_healthy(self) -> bool:
        """Wait for the launched process to answer ``/health``; ``False`` (and the process ended) if it exits
        or does not answer within ``startup_timeout_s``."""
        deadline = time.monotonic() + self.startup_timeout_s
        health = f"http://{_HOST}:{self._spawned_port}/health"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                with urllib.request.urlopen(health, timeout=1.0) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def stop(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL); a no-op when not running."""
        proc, self._proc = self._proc, None
        self._healthy = False
        if proc is None:
            return
        record_path(self.workdir, proc.pid).unlink(missing_ok=True)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout_s)
        # Workers that outlived the leader are still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalTrackingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_for(store: TrackingStore, **server_options: Any) -> LocalTrackingServer | None:
    """The :class:`LocalTrackingServer` (not started) that serves a local SQLite ``store`` to many writers;
    ``None`` for any other store."""
    if not store.is_local_sqlite:
        return None
    db_path = Path(store.uri.removeprefix("sqlite:///"))
    return LocalTrackingServer(
        db_path.parent, backend_uri=store.uri, artifacts_destination=store.artifact_location, **server_options
    )


@contextlib.contextmanager
def shared_store(
    store: TrackingStore, server: LocalTrackingServer | None = None, **server_options: Any
) -> Iterator[TrackingStore]:
    """``store`` made safe for many writing processes: a local SQLite store is served by a
    :class:`LocalTrackingServer` for the duration of the ``with`` block (the yielded store points at it);
    any other store (a remote server, ``databricks``...) is yielded as it is.

    ``server``: the store's server (:func:`server_for`), already launched by the caller, who also stops it;
    this waits for it instead of starting one.
    """
    if not store.is_local_sqlite:
        yield store
        return
    if server is not None:
        if server.backend_uri != store.uri:
            raise ValueError(f"the server given serves {server.backend_uri}, not {store.uri}")
        yield TrackingStore(uri=server.start().url, source=f"{store.source}-served")
        return
    with server_for(store, **server_options) as started:
        yield TrackingStore(uri=started.url, source=f"{store.source}-served")


__all__ = [
    "ARTIFACTS_DIR",
    "DB_FILE",
    "TRACKING_URI_ENV",
    "BasicAuth",
    "LocalTrackingServer",
    "TrackingServerError",
    "TrackingStore",
    "free_port",
    "local_store",
    "resolve_store",
    "server_for",
    "shared_store",
]
