"""The MLflow client the platform talks to MLflow through, with bounded HTTP retries and timeout.

:func:`mlflow_client` is the one factory: the tracker, the report and orchestration's run bookkeeping all use it.
For an HTTP tracking server it turns MLflow's own HTTP retries off and lowers its request timeout for this
process (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, ``MLFLOW_HTTP_REQUEST_TIMEOUT=5`` unless already set), so one
request costs seconds, not MLflow's default minutes; callers retry with their own bounded policy.
:func:`is_permanent` says which MLflow errors no retry can fix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .store import ARTIFACTS_DIR, TrackingStore

TrackingURI = TrackingStore | str | None
"""A resolved :class:`TrackingStore`, a tracking URI, or ``None`` for MLflow's own resolution."""

HTTP_ENV_DEFAULTS = {
    # Our callers retry with their own bounded policy; MLflow's default (7 retries, 120 s timeout) could hold
    # one request for minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
"""Environment set (unless already set) before a client for an HTTP tracking server is made."""

PERMANENT_ERRORS = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "BAD_REQUEST",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)
"""MLflow error codes that no retry can fix (a bad value, a param logged before with another value...)."""


def tracking_uri(store: TrackingURI) -> str | None:
    """The tracking URI of ``store`` (``None``: MLflow's own resolution)."""
    return store.uri if isinstance(store, TrackingStore) else store


def _set_http_env(uri: str | None) -> None:
    target = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if target.startswith(("http://", "https://")):
        for key, value in HTTP_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)


def mlflow_client(store: TrackingURI) -> Any:
    """An ``mlflow.MlflowClient`` for ``store``, with bounded HTTP retries and timeout (module docstring)."""
    from mlflow import MlflowClient

    uri = tracking_uri(store)
    _set_http_env(uri)
    return MlflowClient(tracking_uri=uri)


SERVED_PREFIX = "mlflow-artifacts:/"
"""How a run's artifact URI starts when a tracking server serves its artifacts."""


def download_artifact(client: Any, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
    """Artifact ``path`` of run ``run_id`` downloaded into ``dst``: ``client.download_artifacts``, except for a
    run of a local SQLite store whose artifacts a submission's local server wrote (``mlflow-artifacts:/...``,
    which MLflow downloads only through a server): that file is copied from ``<store folder>/mlartifacts``.
    Raises MLflow's exception when neither has it."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except MlflowException:
        uri = str(client.tracking_uri)
        artifact_uri = client.get_run(run_id).info.artifact_uri or ""
        if not (uri.startswith("sqlite:///") and artifact_uri.startswith(SERVED_PREFIX)):
            raise
        served = Path(uri[len("sqlite:///") :]).parent / ARTIFACTS_DIR / artifact_uri[len(SERVED_PREFIX) :]
        source = served / path
        if not source.exists():
            raise
        target = Path(dst) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
        return target


def is_permanent(err: BaseException) -> bool:
    """Whether ``err`` is an MLflow error that a retry cannot fix (:data:`PERMANENT_ERRORS`)."""
    return getattr(err, "error_code", None) in PERMANENT_ERRORS


__all__ = [
    "HTTP_ENV_DEFAULTS",
    "PERMANENT_ERRORS",
    "SERVED_PREFIX",
    "TrackingURI",
    "download_artifact",
    "is_permanent",
    "mlflow_client",
    "tracking_uri",
]
