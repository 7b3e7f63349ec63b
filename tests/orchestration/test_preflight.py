"""Pre-flight of ``submit``/``resume``: a run storage or tracking server that does not work is one line naming it
and why, exit 6, before Ray or any server starts; a working setup passes and leaves nothing behind.

Storage is tried against a real S3 server (SeaweedFS, keys enforced: ``tests/conftest.py``) and local folders;
tracking against a real MLflow server, a port nothing listens on, and a small HTTP server on 127.0.0.1 that
answers ``/health`` but refuses every API call with 401 (what an authenticating proxy or MLflow's basic-auth
app answers to a wrong password)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlsa_platform import cli, exits, storage
from vlsa_platform.orchestration.preflight import (
    PROBE_DIR,
    PreflightError,
    check_storage,
    check_tracking,
    preflight,
)
from vlsa_platform.orchestration.submission_types import SubmissionSpec

ROOT = Path(__file__).resolve().parents[2]
SWEEP = str(ROOT / "experiments" / "loss_ratio_sweep.yaml")

# Runs the CLI in a fresh interpreter and says afterwards whether Ray was imported at all.
_CLI = """
import sys
from vlsa_platform import cli
rc = cli.main(sys.argv[1:])
print("ray imported:", "ray" in sys.modules)
sys.exit(rc)
"""


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS_* variables for the test server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "work"


def _dead_port() -> int:
    with socket.socket() as sock:  # bound, never listening, closed: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _submit(workdir: Path, *sets: str) -> list[str]:
    argv = ["submit", SWEEP, "--scale", "tiny", "--workdir", str(workdir)]
    for item in sets:
        argv += ["--set", item]
    return argv


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_wrong_s3_secret_is_one_line_exit_6_and_ray_never_starts(s3_env, workdir, tmp_path):
    uri = f"s3://{s3_env.bucket}/preflight-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **s3_env.env(), "AWS_SECRET_ACCESS_KEY": s3_env.secret_key + "-wrong"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, *_submit(workdir, f"storage.path={uri}")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == exits.EXIT_PREFLIGHT, proc.stderr
    line = _one_error_line(proc.stderr)
    assert line.startswith(f"vlsa-platform submit: storage.path {uri}: ")
    assert "access denied" in line and "SignatureDoesNotMatch" in line
    assert "ray imported: False" in proc.stdout
    assert not (workdir / "submissions").exists(), "nothing recorded"


def test_an_unwritable_local_storage_path_is_exit_6_naming_it(workdir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "runs"
    assert cli.main(_submit(workdir, f"storage.path={target}")) == exits.EXIT_PREFLIGHT
    line = _one_error_line(capsys.readouterr().err)
    assert f"storage.path {target}: writing a probe object failed: not a directory" in line
    assert not (workdir / "submissions").exists()


def test_a_tracking_uri_nobody_answers_is_exit_6_naming_it(workdir, capsys):
    uri = f"http://127.0.0.1:{_dead_port()}"
    status = cli.main(_submit(workdir, f"tracking.tracking_uri={uri}"))
    assert status == exits.EXIT_PREFLIGHT
    line = _one_error_line(capsys.readouterr().err)
    assert f"tracking.tracking_uri {uri}: no answer" in line and "Connection refused" in line


def test_the_environment_s_tracking_uri_is_named_as_such(monkeypatch):
    uri = f"http://127.0.0.1:{_dead_port()}"
    with pytest.raises(PreflightError, match=rf"^\$MLFLOW_TRACKING_URI {uri}: no answer"):
        check_tracking(uri, "$MLFLOW_TRACKING_URI")


class _Refusing(http.server.BaseHTTPRequestHandler):
    """``/health`` answers OK; every other path wants credentials it never accepts."""

    def _answer(self) -> None:
        ok = self.path.split("?")[0] == "/health"
        body = b"OK" if ok else b"You are not authenticated."
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_refused_tracking_credentials_say_so(refusing_server):
    with pytest.raises(PreflightError) as err:
        check_tracking(refusing_server)
    message = str(err.value)
    assert message.startswith(
        f"tracking.tracking_uri {refusing_server}: credentials refused (UNAUTHENTICATED)"
    )
    assert "MLFLOW_TRACKING_PASSWORD" in message and "\n" not in message


class _Slow(http.server.BaseHTTPRequestHandler):
    """``/health`` answers at once; the API answers an empty search after ``delay_s`` (a cold server's first
    authenticated request)."""

    delay_s = 0.0

    def _answer(self) -> None:
        if self.path.split("?")[0] != "/health":
            time.sleep(self.delay_s)
        body = b"OK" if self.path.split("?")[0] == "/health" else b'{"experiments": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_a_live_server_slower_than_the_per_request_timeout_passes_once_it_answers(monkeypatch):
    """The first API call waits ``SEARCH_TIMEOUT_S``, not the clients' per-request timeout (here 1 s and 1.5 s
    instead of 5 s and 30 s); the per-request timeout is as before afterwards."""
    from vlsa_platform.orchestration import preflight
    from vlsa_platform.tracking import client

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setitem(client.HTTP_ENV_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setattr(_Slow, "delay_s", 1.5)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        monkeypatch.setattr(preflight, "SEARCH_TIMEOUT_S", 5.0)
        check_tracking(uri)
        assert os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") in (None, "1")
        monkeypatch.setattr(preflight, "SEARCH_TIMEOUT_S", 1.0)  # the same server, the old wait: refused
        with pytest.raises(PreflightError, match="searching experiments failed"):
            check_tracking(uri)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    from vlsa_platform.tracking.store import LocalTrackingServer

    with LocalTrackingServer(tmp_path_factory.mktemp("mlflow"), startup_timeout_s=120.0) as server:
        yield server.url


def test_a_working_storage_passes_and_leaves_no_probe_behind(s3_env, tmp_path):
    uri = f"s3://{s3_env.bucket}/preflight-ok-{uuid.uuid4().hex[:8]}"
    check_storage(uri)
    listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix=uri.split("/", 3)[3])
    assert listed.get("KeyCount", 0) == 0, "no probe object left"
    local = tmp_path / "new" / "storage"
    check_storage(str(local))
    assert not (tmp_path / "new").exists(), "the folders made for the probe are removed again"
    kept = tmp_path / "kept"
    (kept / "runs").mkdir(parents=True)
    check_storage(str(kept))
    assert [p.name for p in kept.iterdir()] == ["runs"]


@pytest.mark.e2e  # starting an MLflow server takes from seconds to a minute on a busy 2-core machine
def test_a_working_tracking_server_passes(mlflow_server):
    check_tracking(mlflow_server)


def test_a_probe_that_reads_back_wrong_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "read_text", lambda *a, **k: json.dumps("something else"))
    with pytest.raises(PreflightError, match=r"read back differs"):
        check_storage(str(tmp_path))
    assert not (tmp_path / PROBE_DIR).exists()


def _spec(tmp_path: Path, storage_root: str, tracking_uri: str | None) -> SubmissionSpec:
    return SubmissionSpec(
        submission_id="exp-20260101-000000",
        experiment="exp",
        kind="single",
        source="x.yaml",
        scale="tiny",
        overrides=[],
        config={"tracking": {"tracking_uri": tracking_uri}},
        workdir=str(tmp_path),
        storage_root=storage_root,
        tracking_uri=tracking_uri,
    )


def test_a_cluster_submission_leaves_credentials_to_the_nodes(tmp_path, monkeypatch, refusing_server):
    """The nodes bring their own credentials: without any here, S3 is not probed (and says so) and a refusal of
    no credentials passes; with some here, they are checked."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    spec = _spec(tmp_path, "s3://some-bucket/runs", refusing_server)
    skipped = preflight(spec, cluster=True)
    assert skipped == [
        "storage.path s3://some-bucket/runs not probed: no AWS credentials here (the nodes' are used)"
    ]
    with pytest.raises(
        PreflightError, match=r"storage\.path s3://some-bucket/runs: .*no usable AWS credentials"
    ):
        preflight(spec, cluster=False)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(PreflightError, match="credentials refused"):
        preflight(_spec(tmp_path, str(tmp_path / "storage"), refusing_server), cluster=True)
