"""``vlsa-platform submit --address http://127.0.0.1:PORT`` to a Ray head started with token authentication
(``infra/scripts/ray-node.sh head``, :mod:`.ray_head`): a submission asking for an accelerator class the head
lacks ends with exit 3, naming it, within its ``--resource-timeout``.

A submission that trains and tracks through ``--address`` — its runs in MLflow, its job's runtime environment
free of the client's credentials, ``status`` reading it back — is ``tests/infra/test_native_stack.py``'s, against
the deployed services; ``FAST`` and ``PAPER`` here are its settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform import cli, exits

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"
FAST = [
    *(f"stages.{s}.{k}" for s in ("stage1", "stage2", "stage3") for k in ("steps=1", "epochs=null")),
    "data.validation.sampling=random:2",
    "tracking.recon_every=null",
]


def submit(workdir: Path, address: str, *extra: str) -> int:
    args = ["submit", str(PAPER), "--scale", "tiny", "--address", address, "--workdir", str(workdir)]
    for item in FAST:
        args += ["--set", item]
    return cli.main([*args, *extra])


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
