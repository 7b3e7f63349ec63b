"""The submission verbs of ``vlsa-platform``: ``submit``, ``resume``, ``status``, ``logs``, ``stop``, ``ui``.

Kept apart from :mod:`vlsa_platform.cli` (the parser and the other verbs) because they share the record and
output helpers below. Every problem with the experiment file, ``--set`` or ``--address`` is reported before
any Ray resource is requested (exit 2): the fields before anything starts, and what the model side rejects
(the plan, which imports the model stack) while a local submission's Ray and MLflow server start, before any
trial is launched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .cli import (
    DEFAULT_WORKDIR,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RESOURCES,
    _table,
)

DEFAULT_UI_PORT = 5000
STOP_WAIT_S = 120.0


def _err(verb: str, message: Any) -> None:
    print(f"vlsa-platform {verb}: {' '.join(str(message).split())}", file=sys.stderr)


def _submission_id(experiment: str) -> str:
    from .tracking import names

    return f"{names.path_part(experiment)}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def _tee(path: Path) -> Iterator[Callable[[str], None]]:
    """``say``: a line to the terminal and to the submission's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:

        def say(line: str) -> None:
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

        yield say


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``vlsa-platform stop`` sends SIGINT (Tune stops gracefully, saving its state); a SIGTERM is treated the
    same way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _load(args: argparse.Namespace, verb: str) -> Any:
    """The experiment (every field checked), or ``None`` after printing the problem (exit 2)."""
    from .config.errors import ConfigError
    from .config.loader import load_experiment

    try:
        return load_experiment(args.file, scale=args.scale, overrides=args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None
    except OSError as err:
        _err(verb, err)
        return None


def _plan(config: Any) -> dict[str, Any] | None:
    """The plan (DESIGN.md §4), or ``None`` after printing what the model side rejects (exit 2). It imports
    the model stack to count parameters on the meta device: seconds, most of a first run's start."""
    from .config.errors import ConfigError
    from .orchestration.plan import build_plan

    try:
        return build_plan(config)
    except ConfigError as err:
        print(err, file=sys.stderr)
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
        lines.append(f"  open it:  {tracking_uri}")
    report_args = "" if local and workdir == Path(DEFAULT_WORKDIR).resolve() else f" --workdir {workdir}"
    lines.append(f"  compare:  vlsa-platform report {experiment}{report_args if local else ''}")
    return lines


def _summary(result: Any, metric: str) -> list[str]:
    from .orchestration.sweep import describe_values

    rows = [["trial", "status", metric, "values"]]
    for trial in result.trials:
        value = trial.metrics.get(metric)
        rows.append(
            [
                trial.name,
                trial.status,
                "-" if value is None else f"{value:.4g}",
                describe_values(trial.values),
            ]
        )
    return _table(rows)


def _run_local(record: Any, *, resume: bool, check: bool = False) -> int:
    """Drive a submission on an embedded local Ray in this process.

    ``check``: check the plan of a new submission first (``orchestration.plan.check_plan``). It runs in a
    child process while the local MLflow server and Ray start, which take seconds each, and the record is
    written only once it has passed; a refused plan shuts both down before any trial asks Ray for
    resources, and exits 2.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .orchestration.local import local_ray
    from .orchestration.plan import check_plan, remember_planned
    from .orchestration.records import FAILED, FINISHED, STOPPED
    from .orchestration.submission import ClusterResourceError, run_submission
    from .tracking.store import resolve_store, server_for

    spec = record.spec
    config = spec.experiment_config()
    metric = config.sweep.metric if config.sweep is not None else "val/loss_llm"
    store = resolve_store(spec.tracking_uri, spec.workdir)
    workdir = Path(spec.workdir)
    server = server_for(store)
    checked = not check
    try:
        with _sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            if check:  # the child ends as soon as it has answered
                pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                stack.callback(pool.shutdown, cancel_futures=True)
                planned = pool.submit(check_plan, config)
            if server is not None:
                stack.callback(server.stop)
                server.launch()
            stack.enter_context(local_ray())
            if check:
                problems, numbers = planned.result()
                pool.shutdown()
                if problems:
                    print("\n".join(problems), file=sys.stderr)
                    return EXIT_CONFIG
                remember_planned(numbers)
            checked = True
            record.mark_driver()
            record.state = "RUNNING"
            record.history.append(
                {"at": time.time(), "action": "resume" if resume else "submit", "pid": os.getpid()}
            )
            record.tracking_uri = store.uri
            record.save()
            say = stack.enter_context(_tee(record.log_path))
            say(f"submission {spec.submission_id}: {config.kind} of {spec.experiment!r} from {spec.source}")
            say(f"  storage {spec.storage_root}")
            say(f"  MLflow  {record.tracking_uri}")

            def on_parent(run_id: str, uri: str) -> None:
                record.save()
                say(f"  parent run {run_id}")

            result = run_submission(spec, resume=resume, say=say, on_parent=on_parent, tracking_server=server)
    except ClusterResourceError as err:
        record.state, record.ended_at, record.pid = FAILED, time.time(), None
        record.save()
        _err("submit", err)
        return EXIT_RESOURCES
    except KeyboardInterrupt:
        if not checked:  # stopped before the submission existed: nothing to continue
            return EXIT_INTERRUPTED
        record.state, record.ended_at, record.pid = STOPPED, time.time(), None
        record.save()
        with _tee(record.log_path) as say:
            say(f"stopped; continue with:  vlsa-platform resume {spec.submission_id}")
        return EXIT_INTERRUPTED
    record.pid, record.ended_at = None, time.time()
    record.state = STOPPED if result.interrupted else FAILED if result.failed else FINISHED
    record.save()
    with _tee(record.log_path) as say:
        say("")
        for line in _summary(result, metric):
            say(line)
        for trial in result.failed:
            say(f"{trial.name} failed: {(trial.error or '?').strip().splitlines()[-1]}")
        if result.interrupted:
            say(f"stopped; continue with:  vlsa-platform resume {spec.submission_id}")
        for line in _ui_hint(result.parent_run_id, result.tracking_uri, spec.experiment, workdir):
            say(line)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed else EXIT_OK


def _run_remote(record: Any, *, resume: bool, detach: bool = False) -> int:
    from .orchestration import jobs
    from .orchestration.records import FAILED, FINISHED, STOPPED

    spec = record.spec
    try:
        job_id = jobs.submit_job(record.address, spec, resume=resume)
    except jobs.ClusterAccessError as err:
        _err("submit", err)
        return err.exit_code
    record.job_id = job_id
    record.history.append({"at": time.time(), "action": "resume" if resume else "submit", "job_id": job_id})
    record.save()
    print(f"submission {spec.submission_id}: Ray job {job_id} on {record.address}", flush=True)
    print(f"  follow it:  vlsa-platform logs {spec.submission_id} --follow", flush=True)
    if detach:
        return EXIT_OK
    try:
        jobs.follow_job(record.address, job_id, lambda line: print(line, flush=True))
        final = jobs.job_status(record.address, job_id)
    except KeyboardInterrupt:  # follow_job has said how to stop the job, which keeps running
        return EXIT_INTERRUPTED
    except jobs.ClusterAccessError as err:
        _err("submit", err)
        return err.exit_code
    record.state = {"SUCCEEDED": FINISHED, "STOPPED": STOPPED}.get(final.status, FAILED)
    record.ended_at = time.time()
    record.save()
    return final.exit_code if final.exit_code is not None else EXIT_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate, then run the experiment locally or as a Ray job."""
    from .orchestration.records import SubmissionRecord
    from .orchestration.submission import DEFAULT_STORAGE_DIR, SubmissionSpec
    from .tracking.store import TRACKING_URI_ENV

    config = _load(args, "submit")
    if config is None:
        return EXIT_CONFIG
    address = None
    if args.address:
        from .orchestration import jobs

        try:
            address = jobs.parse_address(args.address)
        except jobs.AddressError as err:
            _err("submit", err)
            return EXIT_CONFIG
    if args.dry_run:
        from .cli import render_plan

        plan = _plan(config)
        if plan is None:
            return EXIT_CONFIG
        print(json.dumps(plan) if args.json else render_plan(plan, args.file))
        return EXIT_OK
    workdir = Path(args.workdir).expanduser().resolve()
    storage_root = config.storage.path or str(workdir / DEFAULT_STORAGE_DIR)
    if not storage_root.startswith("s3://"):
        storage_root = str(Path(storage_root).expanduser().resolve())
    spec = SubmissionSpec(
        submission_id=_submission_id(config.name),
        experiment=config.name,
        kind=config.kind,
        source=args.file,
        scale=args.scale,
        overrides=list(args.set),
        config=config.raw,
        workdir=str(workdir),
        storage_root=storage_root,
        tracking_uri=config.tracking.tracking_uri or os.environ.get(TRACKING_URI_ENV, "").strip() or None,
        resource_timeout_s=args.resource_timeout,
    )
    record = SubmissionRecord(spec, address=address)
    if address is not None:
        from .orchestration import jobs

        if _plan(config) is None:
            return EXIT_CONFIG
        try:
            jobs.check_remote_settings(spec, args.address)
        except ValueError as err:
            _err("submit", err)
            return EXIT_CONFIG
        return _run_remote(record, resume=False, detach=args.detach)
    return _run_local(record, resume=False, check=True)


def _find(args: argparse.Namespace, verb: str) -> Any:
    from .orchestration.records import RecordError, find

    wanted = getattr(args, "submission", None)
    if wanted and Path(wanted).is_file():  # an experiment file: its latest submission
        from .config.errors import ConfigError
        from .config.loader import load_experiment

        try:
            wanted = load_experiment(wanted).name
        except ConfigError as err:
            print(err, file=sys.stderr)
            return None
    try:
        return find(args.workdir, wanted)
    except RecordError as err:
        _err(verb, err)
        return None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a stopped or failed submission: finished trials are kept, the others go on from their last
    checkpoint, into the same MLflow parent run."""
    record = _find(args, "resume")
    if record is None:
        return EXIT_CONFIG
    if record.driver_alive():
        _err("resume", f"{record.id} is still running (driver pid {record.pid}); stop it first")
        return EXIT_CONFIG
    if record.address is not None:
        return _run_remote(record, resume=True, detach=args.detach)
    return _run_local(record, resume=True)


def _state(record: Any) -> str:
    """A record's state, checked against the driver process or the cluster."""
    if record.address is not None and record.job_id and record.state == "RUNNING":
        from .orchestration import jobs

        try:
            return str(jobs.job_status(record.address, record.job_id))
        except jobs.ClusterAccessError as err:
            return f"unknown ({type(err).__name__})"
    if record.state == "RUNNING" and not record.driver_alive():
        return "ENDED (driver gone; resume it)"
    return record.state


def cmd_status(args: argparse.Namespace) -> int:
    """All submissions (one line each), or one submission's trial table."""
    from .orchestration.records import all_records

    if not args.submission:
        records = all_records(args.workdir)
        if not records:
            print(f"no submissions in {Path(args.workdir) / 'submissions'}")
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
        _print_rows(rows)
        return EXIT_OK
    record = _find(args, "status")
    if record is None:
        return EXIT_CONFIG
    print(f"{record.id}: {record.spec.kind} of {record.spec.experiment!r} ({record.spec.source})")
    print(f"  state     {_state(record)}")
    print(f"  where     {record.address or 'local'}{f' (job {record.job_id})' if record.job_id else ''}")
    print(f"  MLflow    {record.tracking_uri or '-'}, parent run {record.spec.parent_run_id or '-'}")
    print(f"  storage   {record.spec.storage_root}")
    print(f"  log       {record.log_path if record.address is None else 'vlsa-platform logs ' + record.id}")
    trials = record.trials()
    if trials:
        from .orchestration.sweep import describe_values

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
        _print_rows(rows)
    return EXIT_OK


def _print_rows(rows: list[list[str]]) -> None:
    print("\n".join(_table(rows, indent="")))


def cmd_logs(args: argparse.Namespace) -> int:
    """The driver's output (local) or the job's logs (cluster); ``--follow`` until it ends."""
    record = _find(args, "logs")
    if record is None:
        return EXIT_CONFIG
    if record.address is not None:
        from .orchestration import jobs

        try:
            if args.follow:
                jobs.follow_job(record.address, record.job_id, lambda line: print(line, flush=True))
            else:
                print(jobs.job_logs(record.address, record.job_id), end="")
        except jobs.ClusterAccessError as err:
            _err("logs", err)
            return err.exit_code
        return EXIT_OK
    if not record.log_path.is_file():
        _err("logs", f"no log at {record.log_path}")
        return EXIT_CONFIG
    with open(record.log_path, encoding="utf-8", errors="replace") as log:
        sys.stdout.write(log.read())
        while args.follow and record.driver_alive():
            chunk = log.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.5)
        sys.stdout.write(log.read())
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a running submission gracefully (Tune saves its state: ``resume`` continues it)."""
    from .orchestration.records import STOPPED

    record = _find(args, "stop")
    if record is None:
        return EXIT_CONFIG
    if record.address is not None:
        from .orchestration import jobs

        try:
            jobs.stop_job(record.address, record.job_id)
        except jobs.ClusterAccessError as err:
            _err("stop", err)
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
    from .tracking.store import DB_FILE, TRACKING_URI_ENV, LocalTrackingServer, TrackingServerError

    remote = os.environ.get(TRACKING_URI_ENV, "").strip()
    if remote and not remote.startswith("sqlite:"):
        print(f"runs are tracked at {remote} (${TRACKING_URI_ENV}); open it in a browser")
        return EXIT_OK
    workdir = Path(args.workdir).expanduser().resolve()
    if not (workdir / DB_FILE).is_file():
        _err("ui", f"no local MLflow store at {workdir / DB_FILE}; submit something first or give --workdir")
        return EXIT_CONFIG
    server = LocalTrackingServer(workdir, port=args.port)
    try:
        server.start()
    except TrackingServerError as err:
        _err("ui", err)
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


# ------------------------------------------------------------------------------------------------ parser


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


def add_verbs(verbs: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the submission verbs to the ``vlsa-platform`` parser (``common`` adds ``--scale`` and ``--set``)."""
    submit = verbs.add_parser(
        "submit",
        help="run an experiment: one run, an ablation or a sweep (Ray Tune), tracked in MLflow",
        description="Validate an experiment file, then run it: without --address on an embedded local Ray "
        "(local MLflow store and storage in --workdir unless the file or $MLFLOW_TRACKING_URI say otherwise), "
        "with --address as a Ray job on that cluster. Prints each trial's progress, then a summary, the MLflow "
        "experiment and parent run. Ctrl-C stops it gracefully (resume continues it). Exit 0 when every trial "
        "finished or was stopped early by ASHA, 1 when a trial failed, 2 for a bad file/--set/--address, "
        "3 when the cluster cannot run a trial, 130 when stopped.",
    )
    submit.add_argument("file", metavar="FILE", help="experiment YAML file")
    common(submit)
    submit.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to submit to as a Ray job: http://HEAD:8265 (the dashboard) or ray://HEAD:10001; "
        "token authentication is read from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token",
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

    resume = verbs.add_parser(
        "resume",
        help="continue a stopped or failed submission (finished trials are not rerun)",
        description="Continue a submission: its Tune experiment is restored, finished trials are kept, "
        "interrupted and failed ones continue from their last checkpoint, in the same MLflow parent run.",
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


__all__ = ["add_verbs"]
