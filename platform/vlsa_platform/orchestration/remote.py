"""The remote driver of ``vlsa-platform submit --address`` (and ``resume`` of such a submission): the
submission as a Ray job on the cluster (:mod:`.jobs`), followed until it ends, its record kept up to date."""

from __future__ import annotations

import time
from collections.abc import Callable

from .jobs import JobState, follow_job, job_status, submit_job
from .ledger import FAILED, FINISHED, STOPPED, SubmissionRecord


def run_remote(
    record: SubmissionRecord, *, resume: bool, detach: bool = False, say: Callable[[str], None] = print
) -> JobState | None:
    """Submit the record's submission as a Ray job on ``record.address`` and (unless ``detach``) print its log
    lines to ``say`` until it ends. Returns the job's final state, ``None`` when detached.

    Raises:
        jobs_api.ClusterAccessError: the cluster could not be reached or refused (``exit_code`` says the
            CLI's exit status).
        KeyboardInterrupt: Ctrl-C while following (the job keeps running; ``say`` was told how to stop it).
    """
    assert record.address is not None
    spec = record.spec
    job_id = submit_job(record.address, spec, resume=resume)
    record.job_id = job_id
    record.history.append({"at": time.time(), "action": "resume" if resume else "submit", "job_id": job_id})
    record.save()
    say(f"submission {spec.submission_id}: Ray job {job_id} on {record.address}")
    say(f"  follow it:  vlsa-platform logs {spec.submission_id} --follow")
    if detach:
        return None
    follow_job(record.address, job_id, say)
    final = job_status(record.address, job_id)
    record.state = {"SUCCEEDED": FINISHED, "STOPPED": STOPPED}.get(final.status, FAILED)
    record.ended_at = time.time()
    record.save()
    return final


__all__ = ["run_remote"]
