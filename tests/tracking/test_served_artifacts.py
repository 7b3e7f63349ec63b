"""A local SQLite store's artifacts that a submission's local server wrote (``mlflow-artifacts:/`` URIs) are
read from ``<store folder>/mlartifacts`` once the server is gone (``report``, ``evaluate RUN_ID``)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from vlsa_platform.tracking.client import download_artifact
from vlsa_platform.tracking.store import ARTIFACTS_DIR


def test_a_served_artifact_is_read_from_the_stores_folder(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.create_experiment("e", artifact_location="mlflow-artifacts:/1")
    run = client.create_run(experiment)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    with pytest.raises(MlflowException):  # what MLflow alone does without a server
        client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path))
    written = tmp_path / ARTIFACTS_DIR / run.info.artifact_uri.removeprefix("mlflow-artifacts:/") / "config"
    written.mkdir(parents=True)
    (written / "resolved.yaml").write_text("name: e\n")
    got = download_artifact(client, run.info.run_id, "config/resolved.yaml", tmp_path / "out")
    assert got == tmp_path / "out" / "config" / "resolved.yaml" and got.read_text() == "name: e\n"
    with pytest.raises(MlflowException):
        download_artifact(client, run.info.run_id, "config/absent.yaml", tmp_path / "out")
