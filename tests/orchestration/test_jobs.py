"""``submit --address``'s Ray Jobs path (:mod:`vlsa_platform.orchestration.jobs`, the cluster reached through
:mod:`vlsa_platform.orchestration.jobs_api`).

Address and settings checks need nothing running. The rest talks to real things on 127.0.0.1: a port nobody
listens on, an HTTP server that is not Ray, and a Ray head started for the module (``ray start --head``,
token authentication with a token of the test's own; :mod:`.ray_head`).
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import vlsa_platform
from vlsa_platform import exits
from vlsa_platform.config.errors import ConfigError
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import jobs, jobs_api
from vlsa_platform.orchestration.submission_types import WORKER_ENV, SubmissionSpec
from vlsa_platform.tracking.store import free_port

from .ray_head import RayHead

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"


def spec_for(tmp_path: Path, *, tracking_uri: str | None = None, storage_root: str | None = None, **kw):
    config = load_experiment(PAPER, scale="tiny", overrides=kw.pop("overrides", ()))
    return SubmissionSpec(
        submission_id=kw.pop("submission_id", f"{config.name}-20260101-000000"),
        experiment=config.name,
        kind=config.kind,
        source=str(PAPER),
        scale="tiny",
        overrides=[],
        config=config.raw,
        workdir=str(tmp_path / "work"),
        storage_root=storage_root or str(tmp_path / "work" / "storage"),
        tracking_uri=tracking_uri,
        **kw,
    )


# ------------------------------------------------------------------------------------------------ address


@pytest.mark.parametrize(
    ("address", "url", "loopback"),
    [
        ("http://127.0.0.1:8265", "http://127.0.0.1:8265", True),
        (" http://localhost:9000/ ", "http://localhost:9000", True),
        ("http://[::1]:8265", "http://[::1]:8265", True),
        ("HTTP://Head.Example:8265", "http://head.example:8265", False),
        ("https://ray.example.com/cluster-a/", "https://ray.example.com/cluster-a", False),
        ("ray://10.0.0.5:10001", "http://10.0.0.5:8265", False),
        ("ray://head", "http://head:8265", False),
        ("ray://127.0.0.2", "http://127.0.0.2:8265", True),
    ],
)
def test_good_addresses(address, url, loopback):
    assert jobs_api.parse_address(address) == url
    assert jobs_api.is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("", "empty"),
        ("127.0.0.1:8265", "no scheme"),
        ("auto", "no scheme"),
        ("tcp://head:8265", "unsupported scheme"),
        ("http://:8265", "no host"),
        ("http://head", "no port"),
        ("http://head:0", "port 0"),
        ("http://head:99999", "out of range"),
        ("http://head:port", "integer"),
        ("http://user:secret@head:8265", "credentials"),
        ("http://head:8265/?x=1", "query"),
        ("ray://head:10001/path", "no path"),
    ],
)
def test_bad_addresses_name_the_option(address, why):
    with pytest.raises(jobs_api.AddressError) as caught:
        jobs_api.parse_address(address)
    message = str(caught.value)
    assert message.startswith("--address")
    assert why in message
    assert "http://HOST:PORT" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.exit_code == 2


# ------------------------------------------------------------------------------------------------ settings


def test_a_remote_cluster_cannot_use_the_local_store_or_folder(tmp_path):
    spec = spec_for(tmp_path)
    with pytest.raises(jobs_api.RemoteSettingsError) as caught:
        jobs_api.check_remote_settings(spec, "http://10.1.2.3:8265")
    problems = caught.value.problems
    assert [p.split(":", 1)[0] for p in problems] == ["tracking.tracking_uri", "storage.path"]
    assert spec.workdir in problems[0] and "MLFLOW_TRACKING_URI" in problems[0]
    assert spec.storage_root in problems[1] and "s3://" in problems[1]
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)  # the CLI's exit 2
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("uri", "what"),
    [
        ("sqlite:////tmp/mlruns.db", "a store on this machine"),
        ("file:///tmp/mlruns", "a store on this machine"),
        ("./mlruns", "a store on this machine"),
        ("http://127.0.0.1:5000", "loopback"),
        ("http://localhost:5000", "loopback"),
    ],
)
def test_a_remote_cluster_needs_a_tracking_server_it_can_reach(tmp_path, uri, what):
    spec = spec_for(tmp_path, tracking_uri=uri, storage_root="s3://bucket/runs")
    with pytest.raises(jobs_api.RemoteSettingsError) as caught:
        jobs_api.check_remote_settings(spec, "ray://head.example")
    (problem,) = caught.value.problems
    assert problem.startswith("tracking.tracking_uri:") and what in problem


def test_a_remote_cluster_cannot_reach_a_loopback_s3_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    spec = spec_for(tmp_path, tracking_uri="http://mlflow.example:5000", storage_root="s3://bucket/runs")
    with pytest.raises(jobs_api.RemoteSettingsError) as caught:
        jobs_api.check_remote_settings(spec, "http://head.example:8265")
    (problem,) = caught.value.problems
    assert problem.startswith("storage.path:") and "$AWS_ENDPOINT_URL=http://127.0.0.1:8333" in problem


def test_reachable_settings_pass_and_loopback_shares_everything(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    remote = spec_for(tmp_path, tracking_uri="https://mlflow.example", storage_root="s3://bucket/runs")
    jobs_api.check_remote_settings(remote, "http://head.example:8265")
    jobs_api.check_remote_settings(
        dataclasses.replace(remote, tracking_uri="databricks"), "ray://head.example"
    )
    local = spec_for(tmp_path)  # local SQLite store, local folder
    jobs_api.check_remote_settings(local, "http://127.0.0.1:8265")
    jobs_api.check_remote_settings(local, "ray://localhost")
    with pytest.raises(jobs_api.AddressError):
        jobs_api.check_remote_settings(local, "localhost:8265")


# ------------------------------------------------------------------------------------- job, env and token


def test_runtime_env_ships_the_spec_the_package_and_the_tracking_and_s3_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST")  # a credential: the cluster's nodes bring their own
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # a path here: not passed
    env = jobs.runtime_env(spec_for(tmp_path), tmp_path)
    assert env["working_dir"] == str(tmp_path)
    (package,) = env["py_modules"]
    assert Path(package) == Path(vlsa_platform.__file__).resolve().parent
    assert (Path(package) / "orchestration" / "entry.py").is_file()
    variables = env["env_vars"]
    assert {k: variables[k] for k in WORKER_ENV} == WORKER_ENV
    assert variables["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert variables["AWS_ENDPOINT_URL_S3"] == "https://s3.example"
    assert "AWS_ACCESS_KEY_ID" not in variables and "AWS_CA_BUNDLE" not in variables


def test_job_ids(tmp_path):
    spec = spec_for(tmp_path, submission_id="my exp/1-20260101-000000")
    assert jobs.job_id_for(spec) == "my-exp-1-20260101-000000"
    first, second = jobs.job_id_for(spec, resume=True), jobs.job_id_for(spec, resume=True)
    assert first.startswith("my-exp-1-20260101-000000-resume-") and first != second


def test_token_sources_in_rays_order(tmp_path, monkeypatch):
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jobs_api.resolve_token() == jobs_api.Token(None, "none")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs_api.resolve_token().value == "from-home"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs_api.resolve_token().value is None
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert jobs_api.resolve_token() == jobs_api.Token("from-file", f"$RAY_AUTH_TOKEN_PATH ({token_file})")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs_api.resolve_token() == jobs_api.Token("from-env", "$RAY_AUTH_TOKEN")
    assert "from-env" not in repr(jobs_api.resolve_token())
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(jobs_api.ClusterAuthError, match=r"RAY_AUTH_TOKEN_PATH=.*missing"):
        jobs_api.resolve_token()


# --------------------------------------------------------------------------------------------- no cluster


def test_an_address_nobody_listens_on_fails_fast_naming_it():
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(jobs_api.ClusterUnreachableError) as caught:
        jobs.job_status(address, "any")
    message = str(caught.value)
    assert address in message and "connection refused" in message and "3 tries" in message
    assert caught.value.exit_code == exits.EXIT_UNREACHABLE


def test_a_port_that_never_answers_times_out():
    with socket.socket() as listening:  # connections are queued, never accepted or answered
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        address = f"http://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(jobs_api.ClusterUnreachableError, match=r"timed out .* 2 tries"):
            jobs_api.connect(address, connect_timeout_s=1, read_timeout_s=1, attempts=2)


def test_an_unknown_host_is_unreachable():
    with pytest.raises(jobs_api.ClusterUnreachableError, match=r"nowhere\.invalid.*unknown host"):
        jobs_api.connect("ray://nowhere.invalid", attempts=1)


@pytest.fixture
def not_ray() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that is not a Ray dashboard (every path: 404)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_something_else_on_the_port_is_not_taken_for_a_cluster(not_ray):
    with pytest.raises(jobs_api.ClusterUnreachableError, match="not as a Ray dashboard"):
        jobs_api.connect(not_ray)


# ------------------------------------------------------------------------------------------ a real cluster


@pytest.mark.slow
def test_no_token_or_a_wrong_one_is_refused_with_where_the_token_comes_from(ray_client_env, monkeypatch):
    head: RayHead = ray_client_env
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    with pytest.raises(jobs_api.ClusterAuthError) as caught:
        jobs_api.connect(head.address)
    message = str(caught.value)
    assert (
        "$RAY_AUTH_TOKEN" in message and "$RAY_AUTH_TOKEN_PATH" in message and "~/.ray/auth_token" in message
    )
    assert caught.value.exit_code == exits.EXIT_AUTH

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-" + head.token)
    with pytest.raises(jobs_api.ClusterAuthError, match=r"rejected the token read from \$RAY_AUTH_TOKEN"):
        jobs.job_status(head.address, "any")

    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    with pytest.raises(jobs_api.JobNotFoundError, match="no-such-job"):
        jobs.job_status(head.address, "no-such-job")


@pytest.mark.slow
def test_a_submission_runs_the_shipped_entry_point_on_the_shipped_spec(ray_client_env, tmp_path):
    """submit_job end to end, kept fast: the spec's config is broken on purpose, so the real entry point
    (run from the uploaded package, reading the uploaded submission.json) fails at validation, before the
    driver would import torch to plan the trials."""
    head: RayHead = ray_client_env
    spec = spec_for(tmp_path)
    spec.config = {"name": spec.config["name"], "no_such_key": 1}
    jobs_api.check_remote_settings(spec, head.address)  # loopback: the local store and folder are fine
    client = jobs_api.connect(head.address)
    job_id = jobs.submit_job(head.address, spec, client=client)
    assert job_id == spec.submission_id

    lines: list[str] = []
    status = jobs.follow_job(head.address, job_id, lines.append, poll_s=0.5, client=client)
    assert status == "FAILED"
    text = "\n".join(lines)
    assert "ValidationError" in text and "no_such_key" in text
    # The traceback runs through the uploaded copy of the package, not the one installed here.
    assert "py_modules_files" in text and "vlsa_platform/orchestration/submission.py" in text
    assert lines[-1].startswith(f"job {job_id} failed")

    state = jobs.job_status(head.address, job_id)
    assert (state.status, state.driver_exit_code, state.exit_code) == ("FAILED", 1, exits.EXIT_FAILED)
    assert str(state) == "FAILED"
    assert state.metadata[jobs.META_SUBMISSION] == spec.submission_id
    assert state.metadata[jobs.META_EXPERIMENT] == spec.experiment
    assert state.entrypoint == f"python -m vlsa_platform.orchestration.entry {jobs.SPEC_FILE}"
    env_vars = client.get_job_info(job_id).runtime_env["env_vars"]
    assert {key: env_vars[key] for key in WORKER_ENV} == WORKER_ENV
    with pytest.raises(jobs_api.JobsAPIError, match="already exists"):  # a cluster never reuses an id
        jobs.submit_job(head.address, spec, client=client)
    resumed = jobs.submit_job(head.address, spec, resume=True, client=client)
    assert resumed.startswith(f"{job_id}-resume-")
    assert jobs.job_status(head.address, resumed).entrypoint.endswith(f"{jobs.SPEC_FILE} --resume")

    def interrupt(line: str) -> None:
        said.append(line)
        if len(said) == 1:
            raise KeyboardInterrupt

    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        jobs.follow_job(head.address, resumed, interrupt, client=client)
    assert said[-1].endswith(f"Stop it with: vlsa-platform stop {spec.submission_id}")  # the record's id
    jobs.stop_job(head.address, resumed)


@pytest.mark.slow
def test_a_driver_exiting_3_is_the_cli_exit_3(ray_client_env):
    """The entry point exits 3 when the cluster lacks the accelerator class or resources a trial needs."""
    head: RayHead = ray_client_env
    client = jobs_api.connect(head.address)
    job_id = client.submit_job(
        entrypoint="python -c \"import sys; print('no H100', flush=True); sys.exit(3)\""
    )
    lines: list[str] = []
    assert jobs.follow_job(head.address, job_id, lines.append, poll_s=0.3, client=client) == "FAILED"
    assert "no H100" in lines
    state = jobs.job_status(head.address, job_id, client=client)
    assert (state.driver_exit_code, state.exit_code) == (3, exits.EXIT_RESOURCES)


@pytest.mark.slow
def test_ctrl_c_while_following_leaves_the_job_running_and_says_how_to_stop_it(ray_client_env):
    head: RayHead = ray_client_env
    client = jobs_api.connect(head.address)
    job_id = client.submit_job(
        entrypoint="python -c \"import time; print('started', flush=True); time.sleep(120)\""
    )
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line == "started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs.follow_job(head.address, job_id, say, poll_s=0.3, client=client)
    assert f"ray job stop {job_id} --address {head.address}" in said[-1]  # not a submission's job
    assert jobs.job_status(head.address, job_id).status == "RUNNING"

    assert jobs.stop_job(head.address, job_id) is True
    deadline = time.monotonic() + 30
    while (state := jobs.job_status(head.address, job_id, client=client)).status == "RUNNING":
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.3)
    assert (state.status, state.exit_code) == ("STOPPED", exits.EXIT_FAILED)
    assert "started" in jobs.job_logs(head.address, job_id)
