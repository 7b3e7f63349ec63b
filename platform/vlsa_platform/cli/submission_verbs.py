"""The submission verbs of ``vlsa-platform``: ``submit``, ``resume``, ``status``, ``logs``, ``stop``, ``ui``.

Each parses, calls orchestration (:func:`~vlsa_platform.orchestration.local.run_local` on this machine,
:func:`~vlsa_platform.orchestration.remote.run_remote` on a cluster, the :mod:`~vlsa_platform.orchestration.ledger`
of submissions) and renders. Every problem with the experiment file, ``--set`` or ``--address`` is reported
before any Ray resource is requested (exit 2): the fields before anything starts, and what the model side
rejects (the plan, which imports the model stack) while a local submission's Ray and MLflow server start,
before any trial is launched. Orchestration beyond the ledger is imported by the verbs that use it, so that
every other verb starts light.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREFLIGHT, EXIT_RESOURCES
from ..orchestration.ledger import DEFAULT_WORKDIR, STOPPED, RecordError, SubmissionRecord, find, scan
from ..orchestration.submission_types import (
    ClusterResourceError,
    SubmissionResult,
    SubmissionSpec,
    new_submission,
)
from ..redact import redact_text, redact_uri
from .output import error, print_rows, problems, render_plan, summary
from .plan_verbs import scale_and_set

DEFAULT_UI_PORT = 5000
STOP_WAIT_S = 120.0


def _say(line: str) -> None:
    print(line, flush=True)


def _load(args: argparse.Namespace, verb: str) -> Any:
    """The experiment (every field checked), or ``None`` after printing the problem (exit 2)."""
    from ..config.errors import ConfigError
    from ..config.loader import load_experiment

    try:
        return load_experiment(args.file, scale=args.scale, overrides=args.set)
    except ConfigError as err:
        problems(err)
        return None
    except OSError as err:
        error(verb, err)
        return None


def _plan(config: Any) -> dict[str, Any] | None:
    """The plan (DESIGN.md §4), or ``None`` after printing what the model side rejects (exit 2). It imports
    the model stack to count parameters on the meta device: seconds, most of a first run's start."""
    from ..config.errors import ConfigError
    from ..orchestration.plan import build_plan

    try:
        return build_plan(config)
    except ConfigError as err:
        problems(err)
        return None


def _ui_hint(parent_run_id: str, tracking_uri: str, experiment: str, workdir: Path) -> list[str]:
    lines = [f"MLflow experiment {experiment!r}, parent run {parent_run_id}"]
    local = tracking_uri.startswith("sqlite:")
    if local:
        lines.append(
            f"  open it:  vlsa-platform ui{'' if workdir == Path(DEFAULT_WORKDIR).resolve() else f' --workdir {workdir}'}"
            f"   (then http://127.0.0.1:{DEFAULT_UI_PORT})"
        )
    else:
        lines.append(f"  open it:  {redact_uri(tracking_uri)}")
    report_args = "" if local and workdir == Path(DEFAULT_WORKDIR).resolve() else f" --workdir {workdir}"
    lines.append(f"  compare:  vlsa-platform report {experiment}{report_args if local else ''}")
    return lines


def _closing(spec: SubmissionSpec, result: SubmissionResult | None) -> list[str]:
    """What a local submission's driver says last: how to continue a stopped one (``result`` ``None``); else
    the trial summary, the failures, and where to look at the runs."""
    stopped = f"stopped; continue with:  vlsa-platform resume {spec.submission_id}"
    if result is None:
        return [stopped]
    config = spec.experiment_config()
    metric = config.sweep.metric if config.sweep is not None else "val/loss_llm"
    lines = ["", *summary(result, metric)]
    lines.extend(
        redact_text(f"{t.name} failed: {(t.error or '?').strip().splitlines()[-1]}") for t in result.failed
    )
    if result.interrupted:
        lines.append(stopped)
    lines.extend(_ui_hint(result.parent_run_id, result.tracking_uri, spec.experiment, Path(spec.workdir)))
    return lines


def _run_local(record: SubmissionRecord, *, resume: bool, check: bool = False) -> int:
    """Drive the submission on an embedded local Ray (:func:`~vlsa_platform.orchestration.local.run_local`),
    then say how it ended, on the terminal and in its log."""
    from ..orchestration.local import PlanRejected, run_local, tee

    try:
        result = run_local(record, resume=resume, check=check)
    except PlanRejected as err:
        problems(err)
        return EXIT_CONFIG
    except ClusterResourceError as err:
        error("submit", err)
        return EXIT_RESOURCES
    except KeyboardInterrupt:  # stopped before the submission existed: nothing to continue
        return EXIT_INTERRUPTED
    with tee(record.log_path) as say:
        for line in _closing(record.spec, result):
            say(line)
    if result is None or result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed else EXIT_OK


def _run_remote(record: SubmissionRecord, *, resume: bool, detach: bool = False) -> int:
    """Submit the submission as a Ray job and follow it (:func:`~vlsa_platform.orchestration.remote.run_remote`)."""
    from ..orchestration.jobs_api import ClusterAccessError
    from ..orchestration.remote import run_remote

    try:
        final = run_remote(record, resume=resume, detach=detach, say=_say)
    except KeyboardInterrupt:  # follow_job has said how to stop the job, which keeps running
        return EXIT_INTERRUPTED
    except ClusterAccessError as err:
        error("submit", err)
        return err.exit_code
    if final is None:
        return EXIT_OK
    return final.exit_code if final.exit_code is not None else EXIT_FAILED


def _preflight(spec: SubmissionSpec, verb: str, *, cluster: bool) -> bool:
    """The run storage takes a probe write and the tracking server answers
    (:mod:`~vlsa_platform.orchestration.preflight`); ``False`` after printing why on one line (exit 6)."""
    from ..orchestration.preflight import PreflightError, preflight

    try:
        skipped = preflight(spec, cluster=cluster)
    except PreflightError as err:
        error(verb, err)
        return False
    for line in skipped:
        _say(f"pre-flight: {line}")
    return True


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate, then run the experiment locally or as a Ray job."""
    config = _load(args, "submit")
    if config is None:
        return EXIT_CONFIG
    address = None
    if args.address:
        from ..orchestration.jobs_api import AddressError, check_transport

        try:
            address = check_transport(args.address, insecure=args.insecure)
        except AddressError as err:
            error("submit", err)
            return EXIT_CONFIG
    if args.dry_run:
        plan = _plan(config)
        if plan is None:
            return EXIT_CONFIG
        print(json.dumps(plan) if args.json else render_plan(plan, args.file))
        return EXIT_OK
    spec = new_submission(
        config,
        source=args.file,
        scale=args.scale,
        overrides=args.set,
        workdir=args.workdir,
        resource_timeout_s=args.resource_timeout,
    )
    record = SubmissionRecord(spec, address=address)
    if address is not None:
        from ..orchestration.jobs_api import check_remote_settings

        if _plan(config) is None:
            return EXIT_CONFIG
        try:
            check_remote_settings(spec, args.address)
        except ValueError as err:
            error("submit", err)
            return EXIT_CONFIG
        if not _preflight(spec, "submit", cluster=True):
            return EXIT_PREFLIGHT
        return _run_remote(record, resume=False, detach=args.detach)
    if not _preflight(spec, "submit", cluster=False):
        return EXIT_PREFLIGHT
    return _run_local(record, resume=False, check=True)


def _find(args: argparse.Namespace, verb: str) -> Any:
    wanted = getattr(args, "submission", None)
    if wanted and Path(wanted).is_file():  # an experiment file: its latest submission
        from ..config.errors import ConfigError
        from ..config.loader import load_experiment

        try:
            wanted = load_experiment(wanted).name
        except ConfigError as err:
            problems(err)
            return None
    try:
        return find(args.workdir, wanted)
    except RecordError as err:
        error(verb, err)
        return None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a stopped or failed submission: finished trials are kept, the others go on from their last
    checkpoint, into the same MLflow parent run."""
    record = _find(args, "resume")
    if record is None:
        return EXIT_CONFIG
    if record.driver_alive():
        error("resume", f"{record.id} is still running (driver pid {record.pid}); stop it first")
        return EXIT_CONFIG
    if not _preflight(record.spec, "resume", cluster=record.address is not None):
        return EXIT_PREFLIGHT
    if record.address is not None:
        return _run_remote(record, resume=True, detach=args.detach)
    return _run_local(record, resume=True)


def _state(record: SubmissionRecord) -> str:
    """A record's state, checked against the driver process or the cluster."""
    if record.address is not None and record.job_id and record.state == "RUNNING":
        from ..orchestration.jobs import job_status
        from ..orchestration.jobs_api import ClusterAccessError

        try:
            return str(job_status(record.address, record.job_id))
        except ClusterAccessError as err:
            return f"unknown ({type(err).__name__})"
    if record.state == "RUNNING" and not record.driver_alive():
        return "ENDED (driver gone; resume it)"
    return record.state


def _status_all(workdir: str) -> int:
    """Every recorded submission, one line each; a record that cannot be read is named on stderr."""
    records, unreadable = scan(workdir)
    for bad in unreadable:
        error("status", bad.describe())
    if not records:
        print(f"no{' readable' if unreadable else ''} submissions in {Path(workdir) / 'submissions'}")
        return EXIT_OK
    rows = [["submission", "kind", "where", "state", "trials", "started"]]
    for record in records:
        trials = record.trials()
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial["status"]] = counts.get(trial["status"], 0) + 1
        rows.append(
            [
                record.id,
                record.spec.kind,
                record.address or "local",
                _state(record),
                ", ".join(f"{n} {s}" for s, n in counts.items()) or "-",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at)),
            ]
        )
    print_rows(rows)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """All submissions (one line each), or one submission's trial table."""
    if not args.submission:
        return _status_all(args.workdir)
    record = _find(args, "status")
    if record is None:
        return EXIT_CONFIG
    print(f"{record.id}: {record.spec.kind} of {record.spec.experiment!r} ({record.spec.source})")
    print(f"  state     {_state(record)}")
    print(f"  where     {record.address or 'local'}{f' (job {record.job_id})' if record.job_id else ''}")
    print(
        f"  MLflow    {redact_uri(record.tracking_uri or '-')}, parent run {record.spec.parent_run_id or '-'}"
    )
    print(f"  storage   {record.spec.storage_root}")
    print(f"  log       {record.log_path if record.address is None else 'vlsa-platform logs ' + record.id}")
    trials = record.trials()
    if trials:
        from ..orchestration.sweep import describe_values

        rows = [["trial", "status", "stage", "step", "val/loss_llm", "loss/total", "values"]]
        for trial in trials:
            metrics = trial.get("metrics", {})
            rows.append(
                [
                    trial["name"],
                    trial["status"],
                    trial.get("stage") or "-",
                    str(trial.get("step") if trial.get("step") is not None else "-"),
                    *(f"{metrics[k]:.4g}" if k in metrics else "-" for k in ("val/loss_llm", "loss/total")),
                    describe_values(trial.get("values", {})),
                ]
            )
        print_rows(rows)
        for trial in trials:  # why each failed trial failed (e.g. a stage that diverged)
            if trial["status"] == "failed" and trial.get("error"):
                print(redact_text(f"{trial['name']} failed: {trial['error'].strip().splitlines()[-1]}"))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """The driver's output (local) or the job's logs (cluster); ``--follow`` until it ends."""
    record = _find(args, "logs")
    if record is None:
        return EXIT_CONFIG
    if record.address is not None:
        from ..orchestration.jobs import follow_job, job_logs
        from ..orchestration.jobs_api import ClusterAccessError

        try:
            if args.follow:
                follow_job(record.address, record.job_id, _say)
            else:
                print(job_logs(record.address, record.job_id), end="")
        except ClusterAccessError as err:
            error("logs", err)
            return err.exit_code
        return EXIT_OK
    if not record.log_path.is_file():
        error("logs", f"no log at {record.log_path}")
        return EXIT_CONFIG
    with open(record.log_path, encoding="utf-8", errors="replace") as log:
        sys.stdout.write(redact_text(log.read()))
        while args.follow and record.driver_alive():
            chunk = log.read()
            if chunk:
                sys.stdout.write(redact_text(chunk))
                sys.stdout.flush()
            else:
                time.sleep(0.5)
        sys.stdout.write(redact_text(log.read()))
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a running submission gracefully (Tune saves its state: ``resume`` continues it)."""
    record = _find(args, "stop")
    if record is None:
        return EXIT_CONFIG
    if record.address is not None:
        from ..orchestration.jobs import stop_job
        from ..orchestration.jobs_api import ClusterAccessError

        try:
            stop_job(record.address, record.job_id)
        except ClusterAccessError as err:
            error("stop", err)
            return err.exit_code
        record.state, record.ended_at = STOPPED, time.time()
        record.save()
        print(f"stopping job {record.job_id}; continue later with:  vlsa-platform resume {record.id}")
        return EXIT_OK
    if not record.driver_alive():
        print(f"{record.id} is not running ({record.state})")
        return EXIT_OK
    assert record.pid is not None
    os.kill(record.pid, signal.SIGINT)
    deadline = time.monotonic() + args.timeout
    while record.driver_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    if record.driver_alive():
        os.kill(record.pid, signal.SIGTERM)
        print(f"{record.id} did not stop within {args.timeout:.0f}s; sent SIGTERM", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped {record.id}; continue with:  vlsa-platform resume {record.id}")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the default store (the local one in ``--workdir``), until Ctrl-C."""
    from ..tracking.store import DB_FILE, TRACKING_URI_ENV, LocalTrackingServer, TrackingServerError

    remote = os.environ.get(TRACKING_URI_ENV, "").strip()
    if remote and not remote.startswith("sqlite:"):
        print(f"runs are tracked at {redact_uri(remote)} (${TRACKING_URI_ENV}); open it in a browser")
        return EXIT_OK
    workdir = Path(args.workdir).expanduser().resolve()
    if not (workdir / DB_FILE).is_file():
        error("ui", f"no local MLflow store at {workdir / DB_FILE}; submit something first or give --workdir")
        return EXIT_CONFIG
    server = LocalTrackingServer(workdir, port=args.port)
    try:
        server.start()
    except TrackingServerError as err:
        error("ui", err)
        return EXIT_FAILED
    print(f"MLflow UI: {server.url}   (store {workdir / DB_FILE}; Ctrl-C to stop)", flush=True)
    try:
        while server.running():
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK


def _workdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"work directory: local MLflow store, default run storage, submission records "
        f"(default: {DEFAULT_WORKDIR} in the current directory)",
    )


def _submission_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "submission",
        nargs=None if required else "?",
        metavar="SUBMISSION",
        help="submission id (or a unique prefix), experiment name or experiment file (its latest submission)"
        + ("" if required else "; default: the latest submission"),
    )


def _add_submit(verbs: Any) -> None:
    submit = verbs.add_parser(
        "submit",
        help="run an experiment: one run, an ablation or a sweep (Ray Tune), tracked in MLflow",
        description="Validate an experiment file, then run it: without --address on an embedded local Ray "
        "(local MLflow store and storage in --workdir unless the file or $MLFLOW_TRACKING_URI say otherwise), "
        "with --address as a Ray job on that cluster. Prints each trial's progress, then a summary, the MLflow "
        "experiment and parent run. Ctrl-C stops it gracefully (resume continues it). Exit 0 when every trial "
        "finished or was stopped early by ASHA, 1 when a trial failed, 2 for a bad file/--set/--address, "
        "3 when the cluster cannot run a trial, 4/5 when the cluster does not answer or refuses the token, "
        "6 when the pre-flight (a probe write to storage.path, the tracking server's answer) fails, "
        "130 when stopped.",
    )
    submit.add_argument("file", metavar="FILE", help="experiment YAML file")
    scale_and_set(submit)
    submit.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to submit to as a Ray job: http://HEAD:8265 (the dashboard), https://HEAD[:PORT] or "
        "ray://HEAD:10001; token authentication is read from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or "
        "~/.ray/auth_token. Plain http (and ray://) is refused for a host other than this machine (exit 2): "
        "tunnel (ssh -L 8265:localhost:8265 HEAD, then --address http://127.0.0.1:8265) or use https",
    )
    submit.add_argument(
        "--insecure",
        action="store_true",
        help="with --address: allow plain http to another machine (the Ray token and the job's files travel "
        "in clear; only on a network you trust)",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    submit.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON object")
    submit.add_argument(
        "--detach", action="store_true", help="with --address: return once the job is submitted"
    )
    submit.add_argument(
        "--resource-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds to wait for the cluster to offer what a trial needs (accelerator class, GPUs, CPUs) "
        "before failing with exit 3 (default 120)",
    )
    _workdir(submit)
    submit.set_defaults(func=cmd_submit)


def _add_resume_and_status(verbs: Any) -> None:
    resume = verbs.add_parser(
        "resume",
        help="continue a stopped or failed submission (finished trials are not rerun)",
        description="Continue a submission: its Tune experiment is restored, finished trials are kept, "
        "interrupted and failed ones continue from their last checkpoint, in the same MLflow parent run. "
        "The storage and tracking server are checked first, as for submit (exit 6 when they do not work).",
    )
    _submission_arg(resume)
    resume.add_argument("--detach", action="store_true", help="with a cluster job: return once submitted")
    _workdir(resume)
    resume.set_defaults(func=cmd_resume)

    status = verbs.add_parser(
        "status",
        help="list submissions, or show one submission's trials",
        description="Without SUBMISSION: every recorded submission, one line each. With it: where it runs, "
        "its MLflow parent run and its trial table.",
    )
    status.add_argument(
        "submission", nargs="?", metavar="SUBMISSION", help="submission id, prefix or experiment"
    )
    _workdir(status)
    status.set_defaults(func=cmd_status)


def _add_logs_stop_and_ui(verbs: Any) -> None:
    logs = verbs.add_parser("logs", help="a submission's output (the driver's, or the Ray job's)")
    _submission_arg(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    _workdir(logs)
    logs.set_defaults(func=cmd_logs)

    stop = verbs.add_parser(
        "stop",
        help="stop a running submission gracefully (resume continues it)",
        description="Interrupt a local submission's driver (SIGINT: Tune stops its trials and saves its "
        "state) or stop its Ray job.",
    )
    _submission_arg(stop)
    stop.add_argument(
        "--timeout", type=float, default=STOP_WAIT_S, metavar="S", help="seconds to wait for the local driver"
    )
    _workdir(stop)
    stop.set_defaults(func=cmd_stop)

    ui = verbs.add_parser(
        "ui",
        help="the MLflow UI on the local store",
        description="Serve the MLflow UI for the local store in --workdir on 127.0.0.1:PORT until Ctrl-C (with "
        "$MLFLOW_TRACKING_URI set to a server, print where the runs are instead).",
    )
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help=f"port (default {DEFAULT_UI_PORT})")
    _workdir(ui)
    ui.set_defaults(func=cmd_ui)


def add_verbs(verbs: Any) -> None:
    """Add the submission verbs to the ``vlsa-platform`` parser."""
    _add_submit(verbs)
    _add_resume_and_status(verbs)
    _add_logs_stop_and_ui(verbs)


__all__ = [
    "DEFAULT_UI_PORT",
    "add_verbs",
    "cmd_logs",
    "cmd_resume",
    "cmd_status",
    "cmd_stop",
    "cmd_submit",
    "cmd_ui",
]
