"""The deployed configuration, run natively: the services ``docker-compose.yml`` and the AWS nodes define,
started on this machine by the same scripts (``infra/scripts/``) — a Ray head on 127.0.0.1 with token
authentication (``ray-node.sh head``), MLflow with basic auth on PostgreSQL with its artifacts proxied to S3
(``mlflow-server.sh``), S3 from SeaweedFS — and a tiny experiment submitted through ``--address``, as a user
would after ``infra/README.md``'s tunnel.

The nodes bring the credentials (the head's environment holds the MLflow account and the S3 keys); the job
carries none: the client holds them too, and its job's runtime environment, as the cluster's Jobs API shows it,
holds none of their values. Afterwards its runs, metrics and artifacts are in MLflow (the artifacts as objects in
the bucket), ``status`` reads the finished job back, and a request without the Ray token or without the MLflow
password is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from vlsa_platform import cli
from vlsa_platform.orchestration.jobs_api import connect
from vlsa_platform.orchestration.ledger import find
from vlsa_platform.tracking import names

from ..orchestration.ray_head import ray_head
from ..orchestration.test_submit_address_ray import FAST, PAPER
from .stack import mlflow_server, postgres, status_of

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def stack(s3_server, tmp_path_factory):
    """PostgreSQL, MLflow (``mlflow-server.sh``) and a Ray head (``ray-node.sh head``) whose environment is a
    node's: the MLflow account and the S3 keys."""
    work = tmp_path_factory.mktemp("stack")
    with postgres() as pg:
        artifacts = f"s3://{s3_server.bucket}/mlflow-artifacts"
        with mlflow_server(work / "mlflow", pg, artifacts, s3_server.env()) as mlflow:
            node_env = {**s3_server.env(), **mlflow.client_env(), "MLFLOW_TRACKING_URI": mlflow.url}
            with ray_head(work / "ray", env=node_env) as head:
                yield s3_server, mlflow, head


def test_a_submission_through_address_lands_in_the_deployed_mlflow_and_s3(
    stack, tmp_path, monkeypatch, capsys
):
    s3, mlflow, head = stack
    for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key, value in {**head.client_env(), **mlflow.client_env(), **s3.env()}.items():
        monkeypatch.setenv(key, value)
    workdir = tmp_path / "work"
    args = ["submit", str(PAPER), "--scale", "tiny", "--address", head.address, "--workdir", str(workdir)]
    for item in [*FAST, f"tracking.tracking_uri={mlflow.url}", f"storage.path=s3://{s3.bucket}/runs"]:
        args += ["--set", item]
    assert cli.main(args) == 0, capsys.readouterr()
    assert "parent run" in capsys.readouterr().out
    record = find(workdir)
    assert record.address == head.address and record.job_id
    assert record.state == "FINISHED"
    shipped = json.dumps(connect(record.address).get_job_info(record.job_id).runtime_env)
    assert "env_vars" in shipped  # the environment is there to be read…
    secrets = {**mlflow.client_env(), **s3.env()}
    leaked = [key for key in ("MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY") if secrets[key] in shipped]
    assert not leaked  # …and holds no credential of the client's
    assert cli.main(["status", record.id, "--workdir", str(workdir)]) == 0
    assert "state     FINISHED" in capsys.readouterr().out

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.url)
    experiment = client.get_experiment_by_name("vlsa-paper")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if names.TAG_PARENT_RUN not in r.data.tags]
    children = [r for r in runs if names.TAG_PARENT_RUN in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert children[0].data.tags[names.TAG_PARENT_RUN] == parents[0].info.run_id
    for key in (names.LOSS_TOTAL, names.LOSS_LLM, names.LOSS_REC, names.VAL_LOSS_LLM):
        assert key in children[0].data.metrics
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id, "config")}
    assert names.ARTIFACT_RESOLVED_CONFIG in artifacts
    resolved = Path(
        client.download_artifacts(children[0].info.run_id, names.ARTIFACT_RESOLVED_CONFIG, str(tmp_path))
    )
    assert mlflow.password not in resolved.read_text()
    stored = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="mlflow-artifacts/")
    keys = [item["Key"] for item in stored.get("Contents", [])]
    assert any(key.endswith(names.ARTIFACT_RESOLVED_CONFIG) for key in keys), keys
    checkpoints = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="runs/")
    assert checkpoints.get("KeyCount", 0) > 0


def test_requests_without_the_ray_token_or_the_mlflow_password_are_refused(stack):
    _, mlflow, head = stack
    search = f"{mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(search) == 401
    wrong = base64.b64encode(f"{mlflow.username}:not-the-password".encode()).decode()
    assert status_of(search, {"Authorization": f"Basic {wrong}"}) == 401
    right = base64.b64encode(f"{mlflow.username}:{mlflow.password}".encode()).decode()
    assert status_of(search, {"Authorization": f"Basic {right}"}) == 200
    jobs = f"{head.address}/api/jobs/"
    assert status_of(jobs) in (401, 403)
    assert status_of(jobs, {"Authorization": "Bearer not-the-token"}) in (401, 403)
    assert status_of(jobs, {"Authorization": f"Bearer {head.token}"}) == 200
