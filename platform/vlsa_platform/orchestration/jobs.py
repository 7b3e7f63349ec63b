"""``vlsa-platform submit --address``: a submission as a Ray job on a cluster, through Ray's Jobs SDK (the
cluster reached through :mod:`.jobs_api`).

The job's driver is :mod:`.entry` (``python -m vlsa_platform.orchestration.entry submission.json``): its
runtime environment carries ``submission.json`` (the :class:`~.submission_types.SubmissionSpec`) as the
working directory, this installed ``vlsa_platform`` package as a ``py_modules`` entry, and
:data:`.submission_types.WORKER_ENV` plus the non-secret tracking and S3 variables set here
(:data:`PASS_THROUGH_ENV`). The cluster brings the third-party dependencies (its image) and the credentials
(:data:`NODE_ENV`, from its nodes' own environment): a runtime environment is shown to anyone who can read the
cluster's dashboard.

A job is followed by polling its log (:func:`follow_job`); :attr:`JobState.exit_code` is the CLI's exit status
for a job that ended.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..exits import EXIT_FAILED, EXIT_OK, EXIT_RESOURCES
from ..redact import redact_text
from .jobs_api import ClusterUnreachableError, connect, parse_address
from .submission_types import WORKER_ENV, SubmissionSpec

LOST_CONTACT_S = 60.0
"""While following a job: how long the dashboard may stay unreachable before :func:`follow_job` gives up."""
PASS_THROUGH_ENV = (
    "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
"""Variables set here that the job's processes get too: where the tracking server and S3 are, never a
credential (``MLFLOW_TRACKING_URI`` only without a password in it)."""
NODE_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
"""Credentials a job never carries: the cluster's nodes provide them (their environment, an instance
profile; ``docs/submitting.md``, "Secrets")."""
SPEC_FILE = "submission.json"
ENTRY_MODULE = "vlsa_platform.orchestration.entry"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
META_EXPERIMENT = "vlsa.experiment"
META_SUBMISSION = "vlsa.submission"
META_RESUME = "vlsa.resume"

# --------------------------------------------------------------------------------------------------- jobs


def runtime_env(spec: SubmissionSpec, working_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The job's runtime environment: ``working_dir`` (holding ``submission.json``), this ``vlsa_platform``
    package as a ``py_modules`` entry, and :data:`WORKER_ENV` plus :data:`PASS_THROUGH_ENV` set here (a
    ``MLFLOW_TRACKING_URI`` holding a password is left out; :func:`.jobs_api.check_remote_settings` refuses
    such a URI for the submission itself). No credential: see :data:`NODE_ENV`."""
    import vlsa_platform

    env_vars = dict(WORKER_ENV)
    for key in PASS_THROUGH_ENV:
        value = os.environ.get(key)
        if value and not _has_password(value):
            env_vars[key] = value
    return {
        "working_dir": str(working_dir),
        "py_modules": [str(Path(vlsa_platform.__file__).resolve().parent)],
        "env_vars": env_vars,
        "excludes": ["__pycache__/", "*.pyc"],
    }


def _has_password(uri: str) -> bool:
    try:
        return bool(urlsplit(uri).password)
    except ValueError:
        return True  # unreadable: not sent


def job_id_for(spec: SubmissionSpec, *, resume: bool = False) -> str:
    """The Ray ``submission_id``: the spec's id (characters outside ``[A-Za-z0-9._-]`` as ``-``), with
    ``-resume-<time>-<random>`` when resuming (a cluster never reuses an id)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.submission_id).strip("-") or "vlsa"
    if resume:
        base += f"-resume-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return base


def submit_job(address: str, spec: SubmissionSpec, *, resume: bool = False, client: Any = None) -> str:
    """Submit ``spec`` as a Ray job on the cluster at ``address``; return the job id (its ``submission_id``).

    Call :func:`check_remote_settings` first. Raises :class:`AddressError`, :class:`ClusterUnreachableError`,
    :class:`ClusterAuthError` or :class:`JobsAPIError` (e.g. the id is taken).
    """
    client = client or connect(address)
    job_id = job_id_for(spec, resume=resume)
    entrypoint = f"python -m {ENTRY_MODULE} {SPEC_FILE}" + (" --resume" if resume else "")
    metadata = {
        META_EXPERIMENT: spec.experiment,
        META_SUBMISSION: spec.submission_id,
        META_RESUME: "true" if resume else "false",
    }
    with tempfile.TemporaryDirectory(prefix="vlsa-job-") as folder:
        (Path(folder) / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=1))
        # The SDK uploads the folder (zipped, content-addressed) before it returns: the folder can go.
        return str(
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env=runtime_env(spec, folder),
                metadata=metadata,
            )
        )


@dataclass
class JobState:
    """A job as the cluster reports it."""

    job_id: str
    status: str
    """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
    message: str | None = None
    driver_exit_code: int | None = None
    entrypoint: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    start_time: float | None = None
    """Seconds since the epoch."""
    end_time: float | None = None

    def __str__(self) -> str:
        return self.status

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def exit_code(self) -> int | None:
        """The CLI's exit status for this job (``None`` while it runs): 0 succeeded, 3 the driver found that
        the cluster cannot run a trial, 1 otherwise (failed, stopped)."""
        if not self.terminal:
            return None
        if self.status == "SUCCEEDED":
            return EXIT_OK
        if self.driver_exit_code == EXIT_RESOURCES:
            return EXIT_RESOURCES
        return EXIT_FAILED


def _state(job_id: str, info: Any) -> JobState:
    def seconds(ms: int | None) -> float | None:
        return None if not ms else ms / 1000.0

    return JobState(
        job_id=job_id,
        status=str(getattr(info.status, "value", info.status)),
        message=info.message,
        driver_exit_code=info.driver_exit_code,
        entrypoint=info.entrypoint,
        metadata=dict(info.metadata or {}),
        start_time=seconds(info.start_time),
        end_time=seconds(info.end_time),
    )


def job_status(address: str, job_id: str, *, client: Any = None) -> JobState:
    """The job's state. Raises :class:`JobNotFoundError` for an unknown id (and the connection errors)."""
    client = client or connect(address)
    return _state(job_id, client.get_job_info(job_id))


def job_logs(address: str, job_id: str, *, client: Any = None) -> str:
    """Everything the job's driver printed so far (secrets masked: :func:`vlsa_platform.redact.redact_text`)."""
    client = client or connect(address)
    return redact_text(str(client.get_job_logs(job_id)))


def stop_job(address: str, job_id: str, *, client: Any = None) -> bool:
    """Ask the cluster to stop the job (SIGTERM to its driver, then SIGKILL); ``True`` if it was running."""
    client = client or connect(address)
    return bool(client.stop_job(job_id))


def stop_hint(address: str, job_id: str, submission: str | None = None) -> str:
    """The command that stops a job: ``vlsa-platform stop SUBMISSION`` for a submission's job (its record
    knows the address), Ray's own ``ray job stop`` for any other."""
    if submission:
        return f"vlsa-platform stop {submission}"
    return f"ray job stop {job_id} --address {parse_address(address)}"


def follow_job(
    address: str,
    job_id: str,
    say: Callable[[str], None] = print,
    poll_s: float = 1.0,
    *,
    client: Any = None,
    lost_contact_s: float = LOST_CONTACT_S,
) -> str:
    """Print the job's log lines to ``say`` as they come (secrets masked) until the job ends; return its
    final status (``SUCCEEDED``, ``FAILED`` or ``STOPPED``).

    The log is polled (GET of the whole log every ``poll_s``; Ray's websocket tail has no timeout). A dashboard
    unreachable for longer than ``lost_contact_s`` raises :class:`ClusterUnreachableError` (the job itself
    may well go on). Ctrl-C (``KeyboardInterrupt``) stops following only: the job keeps running, ``say`` is
    told how to stop it (:func:`stop_hint`: ``vlsa-platform stop <submission id>`` for a submission's job),
    and the ``KeyboardInterrupt`` is raised again.
    """
    client = client or connect(address)
    seen = 0
    partial = ""
    lost_since: float | None = None
    told_pending = False
    submission: str | None = None
    try:
        while True:
            try:
                info = client.get_job_info(job_id)
                logs = str(
                    client.get_job_logs(job_id)
                )  # after the status: a terminal status has its full log
                lost_since = None
            except ClusterUnreachableError as err:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    say(f"lost contact with the cluster ({err}); retrying for {lost_contact_s:.0f}s")
                elif now - lost_since > lost_contact_s:
                    raise ClusterUnreachableError(
                        f"{err} — for {lost_contact_s:.0f}s while following job {job_id}, which may still be "
                        f"running: check later with `vlsa-platform status {job_id} --address {address}`"
                    ) from None
                time.sleep(poll_s)
                continue
            if len(logs) < seen:  # not expected (Ray appends to one file); start over rather than lose lines
                seen = 0
            chunk, seen = logs[seen:], len(logs)
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                say(redact_text(line))
            state = _state(job_id, info)
            submission = state.metadata.get(META_SUBMISSION)
            if state.status == "PENDING" and not told_pending:
                say(
                    f"job {job_id} is pending: the cluster is setting up its runtime environment (Ray fails it "
                    "after $RAY_JOB_START_TIMEOUT_SECONDS, 15 min by default)"
                )
                told_pending = True
            if state.terminal:
                if partial:
                    say(redact_text(partial))
                note = f": {' '.join(state.message.split())}" if state.message else ""
                say(f"job {job_id} {state.status.lower()}{note}")
                return state.status
            time.sleep(poll_s)
    except KeyboardInterrupt:
        say(
            f"stopped following job {job_id}; it keeps running on the cluster at {address}. Stop it with: "
            f"{stop_hint(address, job_id, submission)}"
        )
        raise


__all__ = [
    "NODE_ENV",
    "PASS_THROUGH_ENV",
    "JobState",
    "follow_job",
    "job_id_for",
    "job_logs",
    "job_status",
    "runtime_env",
    "stop_hint",
    "stop_job",
    "submit_job",
]
