"""The driver's side of a diverged stage (``training.on_nonfinite``), without Ray: the workers end the segment
and leave the reason in ``<stage>.diverged.json``; the driver raises it as ``DivergedError`` (one line, for the
trial's error and ``status``), and a later launch that trains the stage again starts without the old marker."""

from __future__ import annotations

import json

import pytest

from vlsa_platform import cli, storage
from vlsa_platform.orchestration.divergence import marker_path
from vlsa_platform.orchestration.ledger import SubmissionRecord
from vlsa_platform.orchestration.submission_types import SubmissionSpec
from vlsa_platform.orchestration.training import (
    StageOutcome,
    _complete_marker,
    _run_segments,
)
from vlsa_platform.train.spec import DivergedError

STAGES = [{"name": "stage1"}, {"name": "stage2"}]
REASON = "stage stage2 diverged: 3 consecutive micro-batches had a non-finite loss"


def _fit(directory: str, diverge: set[str], seen_markers: list[bool], launch: str | None = None):
    """A segment's workers: each stage completes, except those in ``diverge`` (marker written, segment ended,
    no error: what ``_train_worker`` does on ``DivergedError``)."""

    def fit(specs, previous, publish):
        for spec in specs:
            if storage.exists(_complete_marker(directory, spec.stage)):
                continue  # as _train_worker skips a stage marked complete
            seen_markers.append(storage.exists(marker_path(directory, spec.stage)))
            if spec.stage in diverge:
                marker = {"reason": REASON, "launch": launch}
                storage.write_text(marker_path(directory, spec.stage), json.dumps(marker))
                break
            outcome = StageOutcome(spec.stage, f"{directory}/ckpt_{spec.stage}", 2, 2, 0.0)
            storage.write_text(_complete_marker(directory, spec.stage), json.dumps(outcome.__dict__))

        class Result:
            error = None

        return Result()

    return fit


def _run(directory: str, fit, launch: str | None = None):
    spec = lambda i: type("Spec", (), {"stage": STAGES[i]["name"]})()  # noqa: E731
    return _run_segments("r", directory, [[0, 1]], STAGES, spec, fit, launch=launch)


def test_a_diverged_stage_is_raised_by_the_driver_with_its_reason(tmp_path):
    directory = str(tmp_path / "run")
    seen: list[bool] = []
    with pytest.raises(DivergedError) as raised:
        _run(directory, _fit(directory, {"stage2"}, seen))
    assert str(raised.value) == f"run r: {REASON}"
    assert "\n" not in str(raised.value)  # the last line of the trial's traceback is the reason
    assert storage.exists(_complete_marker(directory, "stage1"))
    assert not storage.exists(_complete_marker(directory, "stage2"))

    # A re-launch trains stage2 again without the old marker, and completes.
    seen.clear()
    outcomes = _run(directory, _fit(directory, set(), seen))
    assert seen == [False]  # stage1 was skipped (complete); stage2 started with no stale marker
    assert [o.stage for o in outcomes] == ["stage1", "stage2"]
    assert not storage.exists(marker_path(directory, "stage2"))


def test_tunes_retry_in_the_same_launch_does_not_train_a_diverged_stage_again(tmp_path):
    """Tune retries a failed trial up to ``max_failures`` times; a diverged stage would diverge again each time.
    In the launch that saw it diverge the retry ends at once with the same reason; a ``resume`` (a new launch)
    trains it again."""
    directory = str(tmp_path / "run")
    seen: list[bool] = []
    with pytest.raises(DivergedError):
        _run(directory, _fit(directory, {"stage2"}, seen, launch="first"), launch="first")
    assert seen == [False, False]  # stage1 and stage2 trained

    seen.clear()
    with pytest.raises(DivergedError) as raised:
        _run(directory, _fit(directory, {"stage2"}, seen, launch="first"), launch="first")
    assert seen == []  # Tune's retry: nothing trained
    assert str(raised.value) == f"run r: {REASON}"

    outcomes = _run(directory, _fit(directory, set(), seen, launch="resumed"), launch="resumed")
    assert seen == [False]  # the new launch trained stage2 again, without the old marker
    assert [o.stage for o in outcomes] == ["stage1", "stage2"]


def test_status_prints_why_a_trial_failed(tmp_path, capsys):
    workdir = tmp_path / "work"
    spec = SubmissionSpec(
        submission_id="exp-20260101-000000",
        experiment="exp",
        kind="single",
        source="x.yaml",
        scale="tiny",
        overrides=[],
        config={},
        workdir=str(workdir),
        storage_root=str(workdir / "storage"),
    )
    record = SubmissionRecord(spec, started_at=0.0, state="FINISHED")
    record.save()
    error = f"Traceback (most recent call last):\n  ...\nvlsa_platform.train.spec.DivergedError: run t0: {REASON}\n"
    rows = [
        {"name": "t0", "status": "failed", "stage": "stage2", "step": 2, "metrics": {}, "error": error},
        {"name": "t1", "status": "finished", "stage": "stage2", "step": 4, "metrics": {}, "error": None},
    ]
    record.trials_path.write_text(json.dumps(rows))
    assert cli.main(["status", record.id, "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert f"t0 failed: vlsa_platform.train.spec.DivergedError: run t0: {REASON}" in out
    assert "t1 failed" not in out
