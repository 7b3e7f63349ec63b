"""The local driver of ``vlsa-platform submit`` without ``--address``: the submission on an embedded local Ray
in this process (:func:`run_local`), and that Ray (:func:`local_ray`).

One Ray instance on this machine for the duration of the submission, bound to 127.0.0.1 with its dashboard on
a free loopback port (Ray Train's placement-group cleanup asks the dashboard's state API whether a stage's
controller is still alive — without it, the workers' reservations of a trial that ASHA stopped would outlive
it). Workers inherit :data:`.submission_types.WORKER_ENV`; their output stays in Ray's session logs (the
terminal gets the submission's progress lines, which :func:`tee` also appends to the record's log). A local
``ray.init`` turns Ray's token authentication on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..redact import redact_uri
from ..tracking.store import free_port, resolve_store, server_for
from .ledger import FAILED, FINISHED, STOPPED, SubmissionRecord
from .submission_types import WORKER_ENV, ClusterResourceError, SubmissionResult

LOOPBACK = "127.0.0.1"


class PlanRejected(ValueError):
    """The model side refused the plan of a new submission (``plan.check_plan``): one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[dict[str, float]]:
    """Start a local Ray (all CPUs unless ``num_cpus``) and yield its resources; shut it down after.

    Every server of that Ray (GCS, raylet, workers, agents, dashboard) listens on 127.0.0.1 only, and it
    requires Ray's token (``~/.ray/auth_token``, made on first use) whatever ``RAY_AUTH_MODE`` says: see
    :func:`_loopback_token_settings` and SECURITY.md. Raises ``RuntimeError`` (Ray shut down again) when Ray
    came up otherwise.
    """
    import ray

    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    with _loopback_token_settings():
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=free_port(LOOPBACK),
            _node_ip_address=LOOPBACK,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": dict(WORKER_ENV)},
        )
        try:
            _check_local_ray()
            _restrict_default_token_file()
            yield dict(ray.cluster_resources())
        finally:
            ray.shutdown()


LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""What :func:`local_ray` sets while its Ray runs (the Ray processes it starts inherit them).
``RAY_AUTH_MODE=token``: every gRPC and HTTP server of that Ray requires the token, explicitly rather than
by Ray's default. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray names a node started at 127.0.0.1 by that
address instead of the machine's outward one, which is what makes its servers bind loopback."""


@contextlib.contextmanager
def _loopback_token_settings() -> Iterator[None]:
    """:data:`LOCAL_RAY_ENV` for the duration of the block, restored after.

    A ``RAY_AUTH_MODE`` other than ``token`` in the environment is overridden with a warning rather than
    refused: it is meant for a cluster elsewhere, and this Ray is private to the submission. Ray reads
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is imported (``ray_constants.ENABLE_RAY_CLUSTER``),
    and caches ``RAY_AUTH_MODE`` in its config object; both are refreshed here, then restored.
    """
    from ray._private import ray_constants
    from ray._raylet import Config

    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        logging.getLogger(__name__).warning(
            "RAY_AUTH_MODE=%s in the environment is ignored: the local Ray always requires its token", mode
        )
    old_env = {key: os.environ.get(key) for key in LOCAL_RAY_ENV}
    old_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOCAL_RAY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    Config.initialize("")
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_cluster
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")


def _check_local_ray() -> None:
    """Raise ``RuntimeError`` unless the Ray just started is named by the loopback address (so its servers
    bind there) and requires its token: a Ray release that changed either would otherwise go unnoticed."""
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        raise RuntimeError(f"the local Ray came up on {node_ip}, not {LOOPBACK}; its servers are reachable")
    if not is_token_auth_enabled():
        raise RuntimeError("the local Ray came up without token authentication")


def _restrict_default_token_file() -> None:
    """Make Ray's default token file (``~/.ray/auth_token``, which ``ray.init`` writes with the umask's mode,
    often 0644) readable by its owner only; a token given by ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` is
    the user's to protect."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    token_file = Path.home() / ".ray" / "auth_token"
    with contextlib.suppress(OSError):
        if token_file.stat().st_mode & 0o077:
            token_file.chmod(0o600)


@contextlib.contextmanager
def tee(path: Path) -> Iterator[Callable[[str], None]]:
    """``say``: a line to the terminal and to the submission's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:

        def say(line: str) -> None:
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

        yield say


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``vlsa-platform stop`` sends SIGINT (Tune stops gracefully, saving its state); a SIGTERM is treated the
    same way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _checked_plan(stack: contextlib.ExitStack, config: Any) -> Callable[[], None]:
    """Start checking the plan of ``config`` in a child process (it ends as soon as it has answered); the
    returned function waits for the answer and raises :class:`PlanRejected` for a refused plan."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .plan import check_plan, remember_planned

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    stack.callback(pool.shutdown, cancel_futures=True)
    planned = pool.submit(check_plan, config)

    def answer() -> None:
        problems, numbers = planned.result()
        pool.shutdown()
        if problems:
            raise PlanRejected(problems)
        remember_planned(numbers)

    return answer


def _start(record: SubmissionRecord, resume: bool, tracking_uri: str, say: Callable[[str], None]) -> None:
    """Record this process as the running driver, and say what runs where (the tracking URI's password
    masked: :func:`vlsa_platform.redact.redact_uri`; the record keeps the URI as given)."""
    spec = record.spec
    record.mark_driver()
    record.state = "RUNNING"
    record.history.append({"at": time.time(), "action": "resume" if resume else "submit", "pid": os.getpid()})
    record.tracking_uri = tracking_uri
    record.save()
    say(f"submission {spec.submission_id}: {spec.kind} of {spec.experiment!r} from {spec.source}")
    say(f"  storage {spec.storage_root}")
    say(f"  MLflow  {redact_uri(tracking_uri)}")


def run_local(record: SubmissionRecord, *, resume: bool, check: bool = False) -> SubmissionResult | None:
    """Drive a submission on an embedded local Ray in this process: the local MLflow server and Ray up, the
    record's state changes, progress lines to the terminal and the record's log (:func:`tee`), SIGTERM taken
    as Ctrl-C. Returns the result, or ``None`` when it was stopped (the record then says ``STOPPED``).

    ``check``: check the plan of a new submission first (``orchestration.plan.check_plan``). It runs in a
    child process while the local MLflow server and Ray start, which take seconds each, and the record is
    written only once it has passed; a refused plan shuts both down before any trial asks Ray for
    resources and raises :class:`PlanRejected`.

    Raises:
        PlanRejected: the plan was refused (nothing recorded).
        ClusterResourceError: the cluster cannot run a trial (the record says ``FAILED``).
        KeyboardInterrupt: interrupted before the plan was checked (nothing recorded, nothing to continue).
    """
    from .submission import run_submission  # Ray Tune: imported when a submission runs, not by the CLI

    spec = record.spec
    config = spec.experiment_config()
    store = resolve_store(spec.tracking_uri, spec.workdir)
    server = server_for(store)
    checked = not check
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            answer = _checked_plan(stack, config) if check else None
            if server is not None:
                stack.callback(server.stop)
                server.launch()
            stack.enter_context(local_ray())
            if answer is not None:
                answer()
            checked = True
            say = stack.enter_context(tee(record.log_path))
            _start(record, resume, store.uri, say)

            def on_parent(run_id: str, uri: str) -> None:
                record.save()
                say(f"  parent run {run_id}")

            result = run_submission(spec, resume=resume, say=say, on_parent=on_parent, tracking_server=server)
    except ClusterResourceError:
        record.state, record.ended_at, record.pid = FAILED, time.time(), None
        record.save()
        raise
    except KeyboardInterrupt:
        if not checked:  # stopped before the submission existed: nothing to continue
            raise
        record.state, record.ended_at, record.pid = STOPPED, time.time(), None
        record.save()
        return None
    record.pid, record.ended_at = None, time.time()
    record.state = STOPPED if result.interrupted else FAILED if result.failed else FINISHED
    record.save()
    return result


__all__ = ["LOOPBACK", "PlanRejected", "local_ray", "run_local", "sigterm_as_interrupt", "tee"]
