"""A password in the tracking URI, a value under a secret-named key or a secret variable's value reaches no
MLflow param, tag or artifact (a local SQLite store, read back with MLflow's own client)."""

from __future__ import annotations

import copy
from pathlib import Path

from mlflow import MlflowClient

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.tracking import Tracker, TrackerOptions, local_store, names

ROOT = Path(__file__).resolve().parents[2]
FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)
URI = "http://alice:s3cret-pw@mlflow.example:5000"
SECRETS = ("s3cret-pw", "hunter2-api-key", "env-secret-value", "tag-token-value")


def _everything(client: MlflowClient, run_id: str, folder: Path) -> str:
    """Every param, tag and artifact of the run, as one text."""
    run = client.get_run(run_id)
    parts = [*run.data.params.items(), *run.data.tags.items()]
    local = Path(client.download_artifacts(run_id, "", str(folder)))
    files = sorted(p for p in local.rglob("*") if p.is_file())
    assert files, "the run has no artifacts to search"
    return "\n".join([*map(str, parts), *(p.read_text() for p in files)])


def test_no_secret_reaches_params_tags_or_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    config = load_experiment(
        ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=[f"tracking.tracking_uri={URI}"]
    )
    resolved = config.resolved()
    before = copy.deepcopy(resolved)
    store = local_store(tmp_path / "work")
    with Tracker.start_parent(
        config.name,
        "submission",
        {names.TAG_SCALE: "tiny", "vlsa.endpoint": URI},
        params={"service": {"api_key": "hunter2-api-key"}},
        store=store,
        options=FAST,
    ) as tracker:
        tracker.log_config(resolved)
        tracker.set_tags({"vlsa.auth_token": "tag-token-value", "vlsa.note": f"reached {URI}"})
        tracker.log_text("login failed with env-secret-value\n", "notes/log.txt")
        tracker.log_dict({"uri": URI}, "notes/where.json")
        assert tracker.close()
    assert resolved == before  # the config the run uses (and its digest) is the caller's, as given

    client = MlflowClient(store.uri)
    text = _everything(client, tracker.run_id, tmp_path / "artifacts")
    assert not [secret for secret in SECRETS if secret in text]
    run = client.get_run(tracker.run_id)
    assert run.data.params["tracking.tracking_uri"] == "http://alice:***@mlflow.example:5000"
    assert run.data.params["service.api_key"] == "***"
    assert run.data.tags["vlsa.auth_token"] == "***"
    assert "tracking_uri: http://alice:***@mlflow.example:5000" in text  # resolved.yaml, masked
