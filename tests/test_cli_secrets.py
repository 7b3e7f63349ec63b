"""A password in the tracking URI, or a secret variable's value, is masked in what the CLI shows and the
submission's log keeps: a config error echoing the value, ``status``, the driver's opening and closing lines,
``logs``. The record itself keeps the URI as given (``resume`` connects with it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.cli.submission_verbs import _ui_hint
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.ledger import RECORD_FILE, SubmissionRecord
from vlsa_platform.orchestration.local import _start, tee
from vlsa_platform.orchestration.submission_types import new_submission

ROOT = Path(__file__).resolve().parents[1]
PAPER = str(ROOT / "experiments" / "vlsa_paper.yaml")
URI = "http://alice:s3cret-pw@mlflow.example:5000"
SHOWN = "http://alice:***@mlflow.example:5000"


@pytest.fixture
def record(tmp_path, monkeypatch) -> SubmissionRecord:
    """A local submission whose tracking URI holds a password, started (its opening lines in its log)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = [f"tracking.tracking_uri={URI}"]
    config = load_experiment(PAPER, scale="tiny", overrides=overrides)
    spec = new_submission(
        config, source=PAPER, scale="tiny", overrides=overrides, workdir=tmp_path, resource_timeout_s=1.0
    )
    record = SubmissionRecord(spec)
    with tee(record.log_path) as say:
        _start(record, False, URI, say)
    return record


@pytest.mark.parametrize("verb", ["submit", "validate"])
def test_a_config_error_echoing_the_uri_masks_its_password(verb, tmp_path, capsys):
    args = [verb, PAPER, "--scale", "tiny", "--set", f"tracking.tracking_url={URI}"]
    status = cli.main([*args, *(["--workdir", str(tmp_path)] if verb == "submit" else [])])
    assert status == exits.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "tracking.tracking_url: unknown key" in err and SHOWN in err and "s3cret" not in err


def test_the_opening_lines_and_status_mask_the_password_the_record_keeps_it(record, capsys):
    log = record.log_path.read_text()  # tee's lines: the terminal got the same
    assert f"MLflow  {SHOWN}" in log and "s3cret" not in log
    assert cli.main(["status", record.id, "--workdir", record.spec.workdir]) == exits.EXIT_OK
    shown = capsys.readouterr().out
    assert f"MLflow    {SHOWN}" in shown and "s3cret" not in shown
    saved = json.loads((record.folder / RECORD_FILE).read_text())
    assert saved["spec"]["tracking_uri"] == URI  # resume connects with it: the user's own file keeps it


def test_logs_mask_what_the_log_holds(record, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "tracking-pw-value")
    with open(record.log_path, "a", encoding="utf-8") as log:
        log.write(f"trial 0 failed: 401 from {URI} (login tracking-pw-value)\n")
    capsys.readouterr()
    assert cli.main(["logs", record.id, "--workdir", record.spec.workdir]) == exits.EXIT_OK
    shown = capsys.readouterr().out
    assert f"401 from {SHOWN} (login ***)" in shown
    assert "s3cret" not in shown and "tracking-pw-value" not in shown


def test_the_closing_lines_mask_the_password(tmp_path):
    lines = _ui_hint("abc123", URI, "vlsa-paper", tmp_path)
    assert f"  open it:  {SHOWN}" in lines and "s3cret" not in "\n".join(lines)
