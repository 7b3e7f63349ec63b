"""The local tracking server with MLflow's ``basic-auth`` app: requests without (or with wrong) credentials
are refused, a client with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` logs a run.

Starts a real ``mlflow server`` (seconds), hence ``e2e``.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest
from mlflow import MlflowClient

from vlsa_platform.tracking.store import BasicAuth, LocalTrackingServer

pytestmark = pytest.mark.e2e

AUTH = BasicAuth("vlsa-admin", "a-test-password-0123")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalTrackingServer(
        tmp_path_factory.mktemp("mlflow-auth"), basic_auth=AUTH, startup_timeout_s=180.0
    ) as started:
        yield started


def _status(url: str, credentials: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_requests_without_the_admins_credentials_are_refused(server):
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(search) == 401
    assert _status(search, (AUTH.username, "wrong")) == 401
    assert _status(search, (AUTH.username, AUTH.password)) == 200
    assert _status(f"{server.url}/health") == 200  # what start() waits on stays open
    assert AUTH.password not in repr(AUTH)
    assert AUTH.password not in (server.workdir / "basic_auth.ini").read_text()


def test_a_client_with_the_credentials_logs_a_run(server, monkeypatch):
    for key, value in AUTH.client_env().items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(server.url)
    experiment = client.create_experiment("auth-test")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


def test_credentials_come_from_the_client_variables(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD"):
        BasicAuth.from_env()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    assert BasicAuth.from_env() == BasicAuth("someone", "secret")
