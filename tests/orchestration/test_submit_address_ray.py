"""``vlsa-platform submit --address http://127.0.0.1:PORT`` to a Ray head started with ``ray start --head`` and
token authentication: the job runs the submission on that cluster and its runs land in MLflow.

The head is on this machine (loopback), so it shares the client's work directory: the job's driver serves the
same local MLflow store, and the test reads the runs back from it. A second submission asks for an accelerator
class the head lacks and must end with exit 3, naming it, within its ``--resource-timeout``.

The first submits with credentials set on this machine: the job's runtime environment, as the cluster's Jobs
API shows it, holds none of them (the head brings its own environment, :mod:`.ray_head`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.orchestration.jobs_api import connect
from vlsa_platform.orchestration.ledger import find
from vlsa_platform.tracking import names

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"
FAST = [
    *(f"stages.{s}.{k}" for s in ("stage1", "stage2", "stage3") for k in ("steps=1", "epochs=null")),
    "data.validation.sampling=random:2",
    "tracking.recon_every=null",
]
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIA-E2E-ID-VALUE",
    "AWS_SECRET_ACCESS_KEY": "e2e-aws-secret-value",
    "AWS_SESSION_TOKEN": "e2e-aws-session-value",
    "MLFLOW_TRACKING_USERNAME": "e2e-mlflow-user",
    "MLFLOW_TRACKING_PASSWORD": "e2e-mlflow-password",
    "MLFLOW_TRACKING_TOKEN": "e2e-mlflow-token",
}
"""Set on this (the submitting) machine only; the local store and folder of the test need none of them."""


def submit(workdir: Path, address: str, *extra: str) -> int:
    args = ["submit", str(PAPER), "--scale", "tiny", "--address", address, "--workdir", str(workdir)]
    for item in FAST:
        args += ["--set", item]
    return cli.main([*args, *extra])


def test_a_job_on_a_token_protected_head_trains_and_tracks(ray_client_env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    workdir = tmp_path / "work"
    assert submit(workdir, ray_client_env.address) == 0
    out = capsys.readouterr().out
    record = find(workdir)
    assert record.address == ray_client_env.address and record.job_id
    assert record.state == "FINISHED"
    assert "parent run" in out
    shipped = json.dumps(connect(record.address).get_job_info(record.job_id).runtime_env)
    assert "env_vars" in shipped  # the environment is there to be read…
    assert not [key for key, value in CREDENTIALS.items() if value in shipped]  # …and holds no credential

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("vlsa-paper")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if names.TAG_PARENT_RUN not in r.data.tags]
    children = [r for r in runs if names.TAG_PARENT_RUN in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert children[0].data.tags[names.TAG_PARENT_RUN] == parents[0].info.run_id
    for key in (names.LOSS_TOTAL, names.LOSS_LLM, names.LOSS_REC, names.VAL_LOSS_LLM):
        assert key in children[0].data.metrics

    assert cli.main(["status", record.id, "--workdir", str(workdir)]) == 0
    assert "state     FINISHED" in capsys.readouterr().out


def test_a_missing_accelerator_class_is_exit_3_not_a_hang(ray_client_env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    status = submit(
        tmp_path / "work",
        ray_client_env.address,
        "--set",
        "stages.stage1.placement.accelerator_type=H100",
        "--resource-timeout",
        "5",
    )
    assert status == exits.EXIT_RESOURCES
    assert "accelerator class H100" in capsys.readouterr().out
