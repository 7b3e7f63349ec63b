"""A submission record that cannot be read is reported, not hidden: ``status`` names its file and the parse
error, and ``status``/``stop``/``resume`` that name it (or ask for the latest when it is the latest) say why
they cannot use it (exit 2) instead of picking another submission or saying there is none."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.orchestration.ledger import RECORD_FILE, RECORDS_DIR, SubmissionRecord, find, scan
from vlsa_platform.orchestration.ledger import RecordError as LedgerRecordError
from vlsa_platform.orchestration.submission_types import SubmissionSpec

GOOD = "exp-a-20260101-000000"
BAD = "exp-a-20260101-000100"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """One readable record, and a later one of the same experiment truncated mid-write."""
    spec = SubmissionSpec(
        submission_id=GOOD,
        experiment="exp-a",
        kind="single",
        source="x.yaml",
        scale="tiny",
        overrides=[],
        config={},
        workdir=str(tmp_path),
        storage_root=str(tmp_path / "storage"),
    )
    SubmissionRecord(spec, started_at=time.time() - 60, state="FINISHED").save()
    bad = tmp_path / RECORDS_DIR / BAD / RECORD_FILE
    bad.parent.mkdir(parents=True)
    bad.write_text('{"spec": {"submission_id": "exp-a-2026')
    return tmp_path


def _bad_path(workdir: Path) -> str:
    return str(workdir / RECORDS_DIR / BAD / RECORD_FILE)


def test_scan_returns_the_unreadable_record_with_its_parse_error(workdir):
    records, unreadable = scan(workdir)
    assert [r.id for r in records] == [GOOD]
    assert [(u.id, str(u.path)) for u in unreadable] == [(BAD, _bad_path(workdir))]
    assert "JSONDecodeError" in unreadable[0].error


def test_status_lists_the_readable_and_names_the_unreadable(workdir, capsys):
    assert cli.main(["status", "--workdir", str(workdir)]) == exits.EXIT_OK
    out, err = capsys.readouterr()
    assert GOOD in out
    assert _bad_path(workdir) in err and "JSONDecodeError" in err and "unreadable" in err


@pytest.mark.parametrize(
    ("verb", "wanted"),
    [  # `status` alone lists everything (above)
        (verb, wanted)
        for verb in ("status", "stop", "resume")
        for wanted in (BAD, "exp-a-20260101-0001", "exp-a", None)
        if (verb, wanted) != ("status", None)
    ],
)
def test_naming_it_or_asking_for_the_latest_says_why_it_cannot_be_used(workdir, capsys, verb, wanted):
    argv = [verb, *([wanted] if wanted else []), "--workdir", str(workdir)]
    assert cli.main(argv) == exits.EXIT_CONFIG
    err = capsys.readouterr().err
    assert _bad_path(workdir) in err and "JSONDecodeError" in err
    assert "Traceback" not in err


def test_a_record_with_a_missing_field_is_named_too(workdir):
    other = workdir / RECORDS_DIR / "exp-b-20260101-000000" / RECORD_FILE
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    with pytest.raises(LedgerRecordError, match="KeyError") as err:
        find(workdir, "exp-b-20260101-000000")
    assert str(other) in str(err.value)


def test_an_older_unreadable_record_does_not_hide_the_latest(workdir):
    bad = workdir / RECORDS_DIR / BAD / RECORD_FILE
    long_ago = time.time() - 3600
    os.utime(bad, (long_ago, long_ago))
    assert find(workdir).id == GOOD
