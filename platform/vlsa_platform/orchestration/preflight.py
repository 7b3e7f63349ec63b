"""Pre-flight: before a submission starts Ray or any server, check the two places it will write to.

- Run storage (``storage.path``, local folder or ``s3://``): a small probe object is written under
  ``<storage root>/.vlsa-preflight/``, read back and deleted (with a bounded S3 client: a few seconds to connect,
  two tries).
- The tracking server, when the tracking URI is ``http(s)://``: ``GET /health`` must answer, then an
  authenticated call (searching experiments, one result) must be accepted, so a wrong password shows as such.
  A server that answered ``/health`` is alive: its first API call gets :data:`SEARCH_TIMEOUT_S` (a cold
  server's first authenticated request hashes the password and imports its handlers: seconds on a busy node),
  not the 5 s the platform's MLflow clients wait per request otherwise.

A failure is a :class:`PreflightError` whose message is one line naming the location and the reason; the CLI
prints it and exits with :data:`~vlsa_platform.exits.EXIT_PREFLIGHT`. A cluster submission's trials use the
nodes' credentials, so there only the credentials this machine has are held to account (:func:`preflight`).
- The ``evaluate`` section's task names, looked up by lmms-eval in the evaluation environment
  (:func:`check_evaluation`).

Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import storage
from .submission_types import SubmissionSpec

PROBE_DIR = ".vlsa-preflight"
"""Folder under the storage root that holds the probe object while it exists."""
S3_CONNECT_TIMEOUT_S = 3.0
"""Seconds to connect to the S3 endpoint, per try."""
S3_READ_TIMEOUT_S = 10.0
"""Seconds to wait for an S3 answer, per try."""
S3_MAX_ATTEMPTS = 2
"""Tries per S3 request (``$AWS_MAX_ATTEMPTS`` wins when set)."""
HTTP_TIMEOUT_S = 5.0
"""Seconds to wait for the tracking server's ``/health``."""
SEARCH_TIMEOUT_S = 30.0
"""Seconds to wait for the authenticated call once ``/health`` answered (``$MLFLOW_HTTP_REQUEST_TIMEOUT`` wins
when set)."""

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


class PreflightError(RuntimeError):
    """A location the submission needs does not work; the message is one line naming it and why."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(err: BaseException, probe: str) -> str:
    """Why a storage operation failed, without repeating the probe's location."""
    if isinstance(err, storage.StorageError):
        message = str(err)
        return message[len(probe) + 2 :] if message.startswith(f"{probe}: ") else message
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror.lower()} ({err.filename})" if err.filename else err.strerror.lower()
    return f"{type(err).__name__}: {err}"


def _missing_dirs(root: str) -> list[Path]:
    """The probe folder and the folders above it up to the first that exists, deepest first: what the probe
    creates locally, and removes again (a run creates them when it needs them)."""
    missing = [Path(root, PROBE_DIR)]
    for folder in [Path(root), *Path(root).parents]:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def check_storage(root: str) -> None:
    """Write, read back and delete a probe object under ``root``; :class:`PreflightError` if any step fails.
    Nothing is left behind: not the object, nor (local) the folders made for it."""
    created = [] if storage.is_s3(root) else _missing_dirs(root)
    probe = storage.join(root, PROBE_DIR, f"{uuid.uuid4().hex}.txt")
    text = f"vlsa-platform pre-flight probe {probe}\n"
    step = "connecting"
    written = False
    try:
        client = (
            storage.s3_client(
                connect_timeout=S3_CONNECT_TIMEOUT_S,
                read_timeout=S3_READ_TIMEOUT_S,
                max_attempts=S3_MAX_ATTEMPTS,
            )
            if storage.is_s3(root)
            else None
        )
        step = "writing a probe object"
        storage.write_text(probe, text, client=client)
        written = True
        step = "reading the probe object back"
        back = storage.read_text(probe, client=client)
        step = "deleting the probe object"
        storage.delete(probe, client=client)
        written = False
        if back != text:
            raise PreflightError(
                f"storage.path {root}: the probe object read back differs from what was written"
            )
    except PreflightError:
        raise
    except Exception as err:  # any failure of the probe is the answer: reported on one line, never raised raw
        left = ""
        if written:
            try:
                storage.delete(probe, client=client)
            except Exception:  # the first error is the one to report; say what stays behind
                left = f"; the probe object {probe} was left behind"
        raise PreflightError(
            _one_line(f"storage.path {root}: {step} failed: {_reason(err, probe)}{left}")
        ) from err
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # only an empty folder goes: one in use (or not made) stays
                folder.rmdir()


def _connection_reason(err: BaseException) -> str:
    import requests

    if isinstance(err, requests.Timeout):
        return f"no answer within {HTTP_TIMEOUT_S:g} s"
    found = _ERRNO.search(str(err))
    return found.group(0).strip() if found else f"{type(err).__name__}: {err}"


def _verify() -> bool | str:
    """TLS verification as MLflow's client does it (``$MLFLOW_TRACKING_INSECURE_TLS``,
    ``$MLFLOW_TRACKING_SERVER_CERT_PATH``)."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() in ("1", "true", "yes"):
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


@contextlib.contextmanager
def _request_timeout(seconds: float) -> Iterator[None]:
    """MLflow's per-request timeout (read at each request) set to ``seconds`` inside, unless the user set one
    (a value other than the platform's default, :data:`~vlsa_platform.tracking.client.HTTP_ENV_DEFAULTS`)."""
    from ..tracking.client import HTTP_ENV_DEFAULTS

    key = "MLFLOW_HTTP_REQUEST_TIMEOUT"
    previous = os.environ.get(key)
    if previous not in (None, HTTP_ENV_DEFAULTS[key]):
        yield
        return
    os.environ[key] = f"{seconds:g}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def check_tracking(
    uri: str | None, name: str = "tracking.tracking_uri", *, require_auth: bool = True
) -> None:
    """For an ``http(s)://`` tracking URI: ``/health`` answers and an authenticated API call is accepted;
    :class:`PreflightError` naming ``name`` and ``uri`` if not. Other URIs (a local store) are not checked.
    ``require_auth=False``: a refusal of the credentials passes (they are the cluster nodes', not this
    machine's); any other failure does not."""
    if not uri or not uri.startswith(("http://", "https://")):
        return
    import requests

    where = f"{name} {uri}"
    try:
        health = requests.get(f"{uri.rstrip('/')}/health", timeout=HTTP_TIMEOUT_S, verify=_verify())
    except requests.RequestException as err:
        raise PreflightError(_one_line(f"{where}: no answer ({_connection_reason(err)})")) from err
    if health.status_code not in (200, 401, 403):  # a proxy may want credentials even here
        raise PreflightError(
            f"{where}: GET /health answered HTTP {health.status_code}; is this an MLflow server?"
        )
    from mlflow.exceptions import MlflowException  # imported once the server answers: seconds of import

    from ..tracking.client import mlflow_client

    try:
        with _request_timeout(SEARCH_TIMEOUT_S):
            mlflow_client(uri).search_experiments(max_results=1)
    except MlflowException as err:
        code = getattr(err, "error_code", "")
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") and not require_auth:
            return
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise PreflightError(
                f"{where}: credentials refused ({code}); check MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
            ) from err
        first = str(err.message).strip().splitlines()[0] if str(err.message).strip() else "?"
        raise PreflightError(_one_line(f"{where}: searching experiments failed ({code}: {first})")) from err
    except Exception as err:  # a transport error MLflow did not wrap: still one line
        raise PreflightError(
            _one_line(f"{where}: searching experiments failed ({type(err).__name__}: {err})")
        ) from err


def _has_aws_credentials() -> bool:
    import boto3

    return boto3.session.Session().get_credentials() is not None


def check_evaluation(evaluate: dict[str, Any], *, cluster: bool = False) -> list[str]:
    """The ``evaluate`` section's tasks, looked up in lmms-eval's task index by the evaluation environment
    (:func:`.evaluation.check_tasks`: seconds, no model loaded), so an unknown name is refused before
    anything trains. On a cluster the nodes' environment evaluates: without one here, nothing is checked
    (the returned line says so)."""
    from .evaluation import EvaluationError, EvaluationInputError, check_tasks, eval_python

    try:
        python = eval_python()
    except EvaluationInputError as err:
        if cluster:
            return [f"evaluate.tasks not checked: {err}"]
        raise PreflightError(_one_line(f"evaluate: {err}")) from None
    try:
        check_tasks(evaluate["tasks"], evaluate.get("include_paths") or (), python=python)
    except EvaluationInputError as err:
        raise PreflightError(_one_line(f"evaluate.tasks: {err}")) from None
    except EvaluationError as err:
        raise PreflightError(_one_line(f"evaluate.tasks: {err}")[:2000]) from None
    return []


def preflight(spec: SubmissionSpec, *, cluster: bool = False) -> list[str]:
    """Check a submission's run storage and tracking server before anything starts (module docstring).

    For a cluster submission (``cluster``) the trials use the nodes' credentials, not this machine's: an
    ``s3://`` storage is probed only when this machine has AWS credentials, and the tracking server's refusal
    of this machine's credentials (or of none) passes when none of ``$MLFLOW_TRACKING_USERNAME``,
    ``_PASSWORD``, ``_TOKEN`` is set here. Returns what was not checked, one line each, for the CLI to say.
    """
    skipped = []
    if cluster and storage.is_s3(spec.storage_root) and not _has_aws_credentials():
        skipped.append(
            f"storage.path {spec.storage_root} not probed: no AWS credentials here (the nodes' are used)"
        )
    else:
        check_storage(spec.storage_root)
    from_file = (spec.config.get("tracking") or {}).get("tracking_uri")
    local_auth = any(os.environ.get(f"MLFLOW_TRACKING_{key}") for key in ("USERNAME", "PASSWORD", "TOKEN"))
    check_tracking(
        spec.tracking_uri,
        "tracking.tracking_uri" if from_file else "$MLFLOW_TRACKING_URI",
        require_auth=not cluster or local_auth,
    )
    if spec.config.get("evaluate"):
        skipped += check_evaluation(spec.config["evaluate"], cluster=cluster)
    return skipped


__all__ = [
    "HTTP_TIMEOUT_S",
    "PROBE_DIR",
    "PreflightError",
    "check_evaluation",
    "check_storage",
    "check_tracking",
    "preflight",
]
