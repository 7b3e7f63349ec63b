"""The submission verbs without a cluster: bad input is refused before anything starts (exit 2, the field
named, nothing recorded), ``--dry-run`` prints the plan, and submissions are found again by id, prefix or
experiment."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.config.loader import TINY_STAGE_STEPS
from vlsa_platform.orchestration.ledger import RecordError, SubmissionRecord, all_records, find
from vlsa_platform.orchestration.submission_types import SubmissionSpec

ROOT = Path(__file__).resolve().parents[1]
SWEEP = str(ROOT / "experiments" / "loss_ratio_sweep.yaml")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "work"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--set", "sweep.metric=val/nope"], "sweep.metric"),
        (["--set", "stages.stage9.steps=1"], "stage9"),
        (["--set", "sweep.search_space.loss.rec_weight.grid=[]"], "grid"),
        (["--address", "localhost"], "--address"),
        (["--address", "ftp://head:8265"], "--address"),
    ],
)
def test_bad_input_is_exit_2_naming_it_and_starts_nothing(workdir, capsys, extra, named):
    status = cli.main(["submit", SWEEP, "--scale", "tiny", "--workdir", str(workdir), *extra])
    assert status == exits.EXIT_CONFIG
    assert named in capsys.readouterr().err
    assert not workdir.exists(), "nothing is recorded or created for a refused submission"


def test_a_remote_cluster_needs_a_reachable_store(workdir, capsys):
    address = ["--address", "http://10.1.2.3:8265", "--insecure"]  # plain http: refused without --insecure
    status = cli.main(["submit", SWEEP, "--scale", "tiny", "--workdir", str(workdir), *address])
    assert status == exits.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "tracking.tracking_uri" in err and "storage.path" in err


def test_dry_run_prints_the_plan(workdir, capsys):
    assert (
        cli.main(["submit", SWEEP, "--scale", "tiny", "--dry-run", "--json", "--workdir", str(workdir)]) == 0
    )
    plan = json.loads(capsys.readouterr().out)
    assert plan["kind"] == "sweep" and plan["num_trials"] == 4
    assert [s["steps"] for s in plan["runs"][0]["stages"]] == [TINY_STAGE_STEPS] * 3  # --scale tiny
    assert not workdir.exists()


def _record(workdir: Path, sid: str, experiment: str, started: float) -> SubmissionRecord:
    spec = SubmissionSpec(
        submission_id=sid,
        experiment=experiment,
        kind="sweep",
        source="x.yaml",
        scale="tiny",
        overrides=[],
        config={},
        workdir=str(workdir),
        storage_root=str(workdir / "storage"),
    )
    record = SubmissionRecord(spec, started_at=started, state="FINISHED")
    record.save()
    return record


def test_records_are_found_by_id_prefix_or_experiment(workdir):
    with pytest.raises(RecordError, match="no submission"):
        find(workdir)
    now = time.time()
    _record(workdir, "exp-a-20260101-000000", "exp-a", now - 30)
    _record(workdir, "exp-a-20260101-000100", "exp-a", now - 20)
    _record(workdir, "exp-b-20260101-000000", "exp-b", now - 10)
    assert [r.id for r in all_records(workdir)][-1] == "exp-b-20260101-000000"
    assert find(workdir).id == "exp-b-20260101-000000"
    assert find(workdir, "exp-a").id == "exp-a-20260101-000100"  # the latest of the experiment
    assert find(workdir, "exp-b-2026").id == "exp-b-20260101-000000"
    with pytest.raises(RecordError, match="several"):
        find(workdir, "exp-a-2026")
    with pytest.raises(RecordError, match="no submission 'zzz'"):
        find(workdir, "zzz")


def test_a_driver_is_alive_only_while_its_process_is(workdir):
    record = _record(workdir, "exp-c-20260101-000000", "exp-c", time.time())
    record.mark_driver()
    assert record.driver_alive()
    record.pid_started = (record.pid_started or 0) - 100  # a later process that reused the id
    assert not record.driver_alive()
    record.pid, record.pid_started = os.getpid() + 10_000_000, None
    assert not record.driver_alive()


def test_status_lists_and_stop_leaves_ended_submissions_alone(workdir, capsys):
    _record(workdir, "exp-d-20260101-000000", "exp-d", time.time())
    assert cli.main(["status", "--workdir", str(workdir)]) == 0
    assert "exp-d-20260101-000000" in capsys.readouterr().out
    assert cli.main(["stop", "exp-d", "--workdir", str(workdir)]) == 0
    assert "is not running" in capsys.readouterr().out
    assert cli.main(["resume", "nope", "--workdir", str(workdir)]) == exits.EXIT_CONFIG
