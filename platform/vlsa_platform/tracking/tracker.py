"""The one small interface training uses to talk to MLflow (DESIGN.md §3: rank 0 only).

:class:`Tracker` is bound to one MLflow run. Orchestration creates the runs (:meth:`Tracker.start_parent`,
:meth:`Tracker.start_child`); a worker attaches to its run by id (:meth:`Tracker.for_run`, or
:func:`tracker_for_rank`, which gives every rank but 0 a :class:`NullTracker` with the same methods).

Logging never blocks training and never ends it:

- every ``log_*``/``set_tags`` call only appends to an in-memory queue and returns (microseconds); one
  background thread sends (:mod:`.sender`), metrics batched with ``log_batch`` (≤ 1000 values per request);
- the queues are bounded: when full, the oldest metric values (and, for the artifact/param queue, the oldest
  artifact) are dropped and counted in :attr:`Tracker.dropped`;
- each request is tried ``retries`` times with exponential backoff; MLflow's own HTTP retries are turned off
  and its request timeout lowered for this process (:func:`.client.mlflow_client`) so one request costs
  seconds, not MLflow's default minutes. While the server is unreachable, later requests get a single try
  each so a backlog drains fast;
- what cannot be sent after its tries is dropped and counted; no exception reaches the caller;
- :meth:`Tracker.close` flushes with a deadline and returns by it whatever the server does.

Metric steps are the trainer's global step. A (key, step) is never logged twice: a value whose step is not
above the last step logged for that key is skipped (:attr:`Tracker.duplicates`). On attach, the run's latest
step per key is read first, so a run resumed from an earlier checkpoint replays no steps into MLflow.
Images (reconstruction panels) are drawn by :mod:`.panels`.

Params, tags, dict and text artifacts (the resolved config as params and as ``config/resolved.yaml``) pass
through :func:`vlsa_platform.redact.redact` / :func:`~vlsa_platform.redact.redact_text` on their way in: a
password in a URI, a value under a key named like a secret, the value of a secret variable of this process are
recorded as ``***``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..redact import redact, redact_text
from . import names
from .client import TrackingURI, is_permanent, mlflow_client, tracking_uri
from .panels import as_image, reconstruction_panel
from .sender import Op, Sender, TrackerOptions
from .store import TrackingStore

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """A run could not be created or found (raised only by the ``start_*``/``for_run`` constructors)."""


def _retry(fn: Callable[[], Any], what: str, retries: int, backoff_s: float) -> Any:
    """``fn()`` with ``retries`` tries (for the synchronous constructors); raises :class:`TrackingError`."""
    for attempt in range(retries):
        try:
            return fn()
        except Exception as err:
            if is_permanent(err) or attempt + 1 == retries:
                raise TrackingError(f"MLflow: {what} failed: {err}") from err
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def git_commit(path: str | os.PathLike[str] | None = None) -> str:
    """The commit checked out at ``path`` (default: this package's checkout), or ``unknown``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Logs one MLflow run from a background thread; see the module docstring for the guarantees.

    Construct with :meth:`start_parent`, :meth:`start_child` or :meth:`for_run`. A tracker that created its
    run ends it in :meth:`close` (``FINISHED`` unless told otherwise); one attached with :meth:`for_run`
    leaves the run's status to its owner unless :meth:`close` is given one.
    """

    def __init__(
        self,
        run_id: str,
        *,
        store: TrackingURI = None,
        owns_run: bool = False,
        options: TrackerOptions | None = None,
        client: Any = None,
    ) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri(store)
        self.owns_run = owns_run
        self.options = options or TrackerOptions()
        self._sender = Sender(run_id, client if client is not None else mlflow_client(store), self.options)

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def start_parent(
        cls,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        store: TrackingURI = None,
        options: TrackerOptions | None = None,
    ) -> Tracker:
        """Create the submission's parent run in ``experiment`` (created if missing, with the store's
        artifact location) and return a tracker owning it. ``params`` are sent in the background."""
        opts = options or TrackerOptions()
        client = mlflow_client(store)
        location = store.artifact_location if isinstance(store, TrackingStore) else None
        experiment_id = _retry(
            lambda: _experiment_id(client, experiment, location),
            f"experiment {experiment!r}",
            opts.retries,
            opts.backoff_s,
        )
        return cls._create(client, experiment_id, run_name, dict(tags or {}), params, store, opts)

    @classmethod
    def start_child(
        cls,
        parent_id: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        store: TrackingURI = None,
        options: TrackerOptions | None = None,
    ) -> Tracker:
        """Create a child run (one per variant or trial) under ``parent_id``, in the parent's experiment."""
        opts = options or TrackerOptions()
        client = mlflow_client(store)
        parent = _retry(
            lambda: client.get_run(parent_id), f"parent run {parent_id}", opts.retries, opts.backoff_s
        )
        all_tags = {**dict(tags or {}), names.TAG_PARENT_RUN: parent_id}
        return cls._create(client, parent.info.experiment_id, run_name, all_tags, params, store, opts)

    @classmethod
    def _create(
        cls,
        client: Any,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        params: Mapping[str, Any] | None,
        store: TrackingURI,
        options: TrackerOptions,
    ) -> Tracker:
        run = _retry(
            lambda: client.create_run(
                experiment_id, tags=redact({k: str(v) for k, v in tags.items()}), run_name=run_name
            ),
            f"create run {run_name!r}",
            options.retries,
            options.backoff_s,
        )
        # A new run has no history to read back.
        tracker = cls(
            run.info.run_id,
            store=store,
            owns_run=True,
            options=dataclasses.replace(options, load_history=False),
            client=client,
        )
        if params:
            tracker.log_params(params)
        return tracker

    @classmethod
    def for_run(
        cls, run_id: str, *, store: TrackingURI = None, options: TrackerOptions | None = None
    ) -> Tracker:
        """Attach to an existing run (a worker given its run id by orchestration). Never blocks: the run's
        history is read by the background thread before anything is sent."""
        return cls(run_id, store=store, owns_run=False, options=options)

    # -- the interface ------------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue ``metrics`` at global ``step`` (non-numeric values are counted as dropped)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = []
        bad = 0
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                bad += 1
                continue
            batch.append(Metric(names.clean_key(key), number, timestamp, int(step)))
        self._sender.put_metrics(batch, invalid=bad)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queue params; nested mappings are flattened (:func:`~.names.flatten_params`). A key already logged
        with the same value is skipped; with another value it is dropped (MLflow params are immutable)."""
        flat = names.flatten_params(redact(dict(params)))
        if flat:
            self._sender.put(Op("params", flat))

    def log_config(self, resolved: Mapping[str, Any]) -> None:
        """The resolved config as ``config/resolved.yaml`` and as flattened params, secrets masked (the
        module docstring); the config the run uses, and its digest, are the caller's, unchanged."""
        self.log_dict(dict(resolved), names.ARTIFACT_RESOLVED_CONFIG)
        self.log_params(resolved)

    def reopen(self) -> None:
        """Mark an ended run ``RUNNING`` again (a resumed run or submission): queued before anything later,
        so that :meth:`close` then ends it as this launch ended."""
        self._sender.put(Op("reopen", None))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Queue tags (values as strings, secrets masked)."""
        if tags:
            masked = redact({str(k): str(v) for k, v in tags.items()})
            self._sender.put(Op("tags", {names.clean_key(k): v for k, v in masked.items()}))

    def log_artifact_file(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Queue a local file for upload under ``artifact_path`` (a folder in the run's artifacts). The file
        is read when the request is sent: keep it until :meth:`flush` or :meth:`close`."""
        self._sender.put(Op("file", str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue ``text`` (secrets masked) as the artifact ``artifact_file`` (a path inside the run's
        artifacts)."""
        self._sender.put(Op("bytes", redact_text(text).encode(), artifact_file))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Queue ``data`` (secrets masked) as YAML (``.yaml``/``.yml``) or JSON (anything else) at
        ``artifact_file``."""
        plain = redact(_plain(data))
        if artifact_file.endswith((".yaml", ".yml")):
            text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(plain, indent=2, sort_keys=False, default=str)
        self.log_text(text, artifact_file)

    def log_deepspeed_config(self, stage: str, config: Mapping[str, Any]) -> None:
        """A stage's DeepSpeed config as ``deepspeed/<stage>.json``."""
        self.log_dict(config, names.deepspeed_artifact(stage))

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Queue an image (PIL, or an (H, W[, C]) array: uint8, or floats in [0, 1]) as PNG at
        ``artifact_file``. Converted here (a copy the caller may reuse), encoded by the sender."""
        try:
            picture = as_image(image)
        except (TypeError, ValueError) as err:
            log.warning("tracking: image %s not logged: %s", artifact_file, err)
            self._sender.count_dropped()
            return
        self._sender.put(Op("image", picture, artifact_file))

    def log_reconstruction(
        self, ground_truth: Any, reconstruction: Any, step: int, stage: str | None = None
    ) -> None:
        """:func:`reconstruction_panel` logged as ``recon/step_000100.png``."""
        try:
            panel = reconstruction_panel(ground_truth, reconstruction)
        except (TypeError, ValueError) as err:
            log.warning("tracking: reconstruction at step %d not logged: %s", step, err)
            self._sender.count_dropped()
            return
        self._sender.put(Op("image", panel, names.recon_artifact(step, stage)))

    def log_skipped(self, counts: Mapping[str, int], step: int) -> None:
        """Skipped-sample counts by reason as ``data/skipped/<reason>``, plus ``data/skipped/total``."""
        metrics: dict[str, float] = {names.skipped_metric(r): float(n) for r, n in counts.items()}
        metrics[names.SKIPPED_TOTAL] = float(sum(counts.values()))
        self.log_metrics(metrics, step)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent or dropped; ``False`` if ``timeout`` ran out first."""
        return self._sender.flush(timeout)

    def close(self, status: str | None = None, timeout: float | None = None) -> bool:
        """Flush (within ``timeout``, default ``options.close_timeout_s``) and, for a run this tracker
        created or when ``status`` is given, end the run (``FINISHED``, ``FAILED``, ``KILLED``).

        Returns ``True`` when everything was sent. Never raises and never waits past the deadline: a request
        still in flight then is abandoned (the sender is a daemon thread) and what is left counts as dropped.
        """
        timeout = self.options.close_timeout_s if timeout is None else timeout
        return self._sender.close(status or ("FINISHED" if self.owns_run else None), timeout)

    @property
    def dropped(self) -> int:
        """Metric values and requests given up (queue overflow, failed sends, invalid values)."""
        return self._sender.stats()["dropped"]

    @property
    def duplicates(self) -> int:
        """Metric values skipped because their (key, step) was logged before."""
        return self._sender.stats()["duplicates"]

    def stats(self) -> dict[str, int]:
        """``sent``, ``dropped``, ``duplicates``, ``failed_requests`` and what is still ``queued``."""
        return self._sender.stats()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # An attached worker that fails leaves the run's status to its owner (the stage may be retried).
        self.close(status="FAILED" if exc_type is not None and self.owns_run else None)


def _plain(data: Any) -> Any:
    """Mappings/sequences/scalars only (YAML ``safe_dump`` refuses other types)."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple | set | frozenset):
        return [_plain(v) for v in data]
    if data is None or isinstance(data, bool | int | str):
        return data
    if isinstance(data, float):
        return data if math.isfinite(data) else str(data)
    if isinstance(data, Path):
        return str(data)
    return str(data) if not hasattr(data, "item") else _plain(data.item())


class NullTracker:
    """What every rank but 0 gets: the :class:`Tracker` methods, doing nothing."""

    run_id: str | None = None
    tracking_uri: str | None = None
    owns_run = False
    dropped = 0
    duplicates = 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_config(self, resolved: Mapping[str, Any]) -> None:
        pass

    def reopen(self) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact_file(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        pass

    def log_deepspeed_config(self, stage: str, config: Mapping[str, Any]) -> None:
        pass

    def log_image(self, image: Any, artifact_file: str) -> None:
        pass

    def log_reconstruction(
        self, ground_truth: Any, reconstruction: Any, step: int, stage: str | None = None
    ) -> None:
        pass

    def log_skipped(self, counts: Mapping[str, int], step: int) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, status: str | None = None, timeout: float | None = None) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {"sent": 0, "dropped": 0, "duplicates": 0, "failed_requests": 0, "queued": 0}

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        pass


def tracker_for_rank(
    rank: int, run_id: str | None, *, store: TrackingURI = None, options: TrackerOptions | None = None
) -> Tracker | NullTracker:
    """Rank 0 with a run id attaches to the run; every other rank (or no run) gets a :class:`NullTracker`."""
    if rank != 0 or not run_id:
        return NullTracker()
    return Tracker.for_run(run_id, store=store, options=options)


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (or restored from the bin) when needed; safe against another
    process creating it at the same moment."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception as err:
        if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


__all__ = ["NullTracker", "Tracker", "TrackingError", "git_commit", "tracker_for_rank"]
