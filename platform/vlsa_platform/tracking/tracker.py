"""The one small interface training uses to talk to MLflow (DESIGN.md §3: rank 0 only).

:class:`Tracker` is bound to one MLflow run. Orchestration creates the runs (:meth:`Tracker.start_parent`,
:meth:`Tracker.start_child`); a worker attaches to its run by id (:meth:`Tracker.for_run`, or
:func:`tracker_for_rank`, which gives every rank but 0 a :class:`NullTracker` with the same methods).

Logging never blocks training and never ends it:

- every ``log_*``/``set_tags`` call only appends to an in-memory queue and returns (microseconds); one
  background thread sends, metrics batched with ``log_batch`` (≤ 1000 values per request);
- the queues are bounded: when full, the oldest metric values (and, for the artifact/param queue, the oldest
  artifact) are dropped and counted in :attr:`Tracker.dropped`;
- each request is tried ``retries`` times with exponential backoff; MLflow's own HTTP retries are turned off
  and its request timeout lowered for this process (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``,
  ``MLFLOW_HTTP_REQUEST_TIMEOUT=5`` unless already set) so one request costs seconds, not MLflow's default
  minutes. While the server is unreachable, later requests get a single try each so a backlog drains fast;
- what cannot be sent after its tries is dropped and counted; no exception reaches the caller;
- :meth:`Tracker.close` flushes with a deadline and returns by it whatever the server does.

Metric steps are the trainer's global step. A (key, step) is never logged twice: a value whose step is not
above the last step logged for that key is skipped (:attr:`Tracker.duplicates`). On attach, the run's latest
step per key is read first, so a run resumed from an earlier checkpoint replays no steps into MLflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from . import names
from .store import TrackingStore

log = logging.getLogger(__name__)

TrackingURI = TrackingStore | str | None
"""A resolved :class:`TrackingStore`, a tracking URI, or ``None`` for MLflow's own resolution."""

_HTTP_ENV_DEFAULTS = {
    # Our worker retries with its own bounded policy; MLflow's default (7 retries, 120 s timeout) could hold
    # one request for minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
# MLflow error codes that no retry can fix (a bad value, a param logged before with another value...).
_PERMANENT_ERRORS = frozenset(
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
_MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
_MAX_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH


class TrackingError(RuntimeError):
    """A run could not be created or found (raised only by the ``start_*``/``for_run`` constructors)."""


@dataclass(frozen=True)
class TrackerOptions:
    """Bounds of the background sender."""

    max_queued_metrics: int = 20_000
    """Metric values waiting to be sent; beyond this the oldest are dropped."""
    max_queued_ops: int = 256
    """Params/tags/artifact requests waiting to be sent; beyond this the oldest artifact is dropped."""
    retries: int = 3
    """Tries per request (the first included)."""
    backoff_s: float = 0.2
    """Wait before the second try; doubled for each further one."""
    close_timeout_s: float = 10.0
    """Default deadline of :meth:`Tracker.close` (flushing included)."""
    load_history: bool = True
    """On attach, read the run's latest step per metric and its params (resume without duplicates)."""


def _set_http_env(uri: str | None) -> None:
    target = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if target.startswith(("http://", "https://")):
        for key, value in _HTTP_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)


def _uri(store: TrackingURI) -> str | None:
    return store.uri if isinstance(store, TrackingStore) else store


def _client(store: TrackingURI) -> Any:
    from mlflow import MlflowClient

    uri = _uri(store)
    _set_http_env(uri)
    return MlflowClient(tracking_uri=uri)


def _permanent(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in _PERMANENT_ERRORS


def _retry(fn: Callable[[], Any], what: str, retries: int, backoff_s: float) -> Any:
    """``fn()`` with ``retries`` tries (for the synchronous constructors); raises :class:`TrackingError`."""
    for attempt in range(retries):
        try:
            return fn()
        except Exception as err:
            if _permanent(err) or attempt + 1 == retries:
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


# ------------------------------------------------------------------------------------------------- images


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (tracking does not import torch)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _to_uint8_hwc(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return (np.clip((chw + 1.0) * 127.5, 0, 255) + 0.5).astype(np.uint8).transpose(1, 2, 0)


def reconstruction_panel(ground_truth: Any, reconstruction: Any, gap: int = 2) -> Image.Image:
    """A grid of N rows, each the ground-truth image beside its reconstruction.

    Args:
        ground_truth: (N, 3, H, W) in [-1, 1] (numpy or torch; the VAE's input range).
        reconstruction: (N, 3, H, W) in [-1, 1] — the decoded denoised latent (clipped to the range).
        gap: white pixels between panels.

    Returns:
        An RGB image of size (2W + gap, N·H + (N-1)·gap).
    """
    gt, rec = _to_numpy(ground_truth), _to_numpy(reconstruction)
    if gt.ndim == 3:
        gt, rec = gt[None], rec[None]
    if gt.shape != rec.shape or gt.ndim != 4 or gt.shape[1] != 3:
        raise ValueError(f"expected two (N, 3, H, W) arrays of one shape, got {gt.shape} and {rec.shape}")
    n, _, h, w = gt.shape
    canvas = np.full((n * h + (n - 1) * gap, 2 * w + gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        top = i * (h + gap)
        canvas[top : top + h, :w] = _to_uint8_hwc(gt[i])
        canvas[top : top + h, w + gap :] = _to_uint8_hwc(rec[i])
    return Image.fromarray(canvas, mode="RGB")


def _as_image(image: Any) -> Image.Image:
    """A PIL image, or an (H, W) / (H, W, 3|4) array: uint8 as is, floats in [0, 1]."""
    if isinstance(image, Image.Image):
        return image.copy()
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3|4) image, got shape {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr))


# ------------------------------------------------------------------------------------------------ tracker


@dataclass
class _Op:
    kind: str  # "params" | "tags" | "file" | "bytes" | "image" | "terminate" | "reopen"
    payload: Any
    artifact_path: str | None = None

    @property
    def droppable(self) -> bool:
        return self.kind in {"file", "bytes", "image"}


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
        self.tracking_uri = _uri(store)
        self.owns_run = owns_run
        self.options = options or TrackerOptions()
        self._client = client if client is not None else _client(store)
        self._cond = threading.Condition()
        self._metrics: deque[Any] = deque()
        self._ops: deque[_Op] = deque()
        self._in_flight = 0
        self._closing = False
        self._closed = False
        self._abandon = False
        self._server_down = False
        self._deadline: float | None = None
        # Worker-thread state (read by callers only through stats()).
        self._last_step: dict[str, int] = {}
        self._params: dict[str, str] = {}
        self._counts = {"sent": 0, "dropped": 0, "duplicates": 0, "failed_requests": 0}
        self._thread = threading.Thread(target=self._work, name=f"mlflow-tracker-{run_id[:8]}", daemon=True)
        self._thread.start()

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
        client = _client(store)
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
        client = _client(store)
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
                experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name
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
        with self._cond:
            if self._closing:
                self._counts["dropped"] += len(batch) + bad
                return
            self._counts["dropped"] += bad
            for metric in batch:
                if len(self._metrics) >= self.options.max_queued_metrics:
                    self._metrics.popleft()  # the oldest go first: the latest values matter most
                    self._counts["dropped"] += 1
                self._metrics.append(metric)
            self._cond.notify_all()

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queue params; nested mappings are flattened (:func:`~.names.flatten_params`). A key already logged
        with the same value is skipped; with another value it is dropped (MLflow params are immutable)."""
        flat = names.flatten_params(params)
        if flat:
            self._put(_Op("params", flat))

    def log_config(self, resolved: Mapping[str, Any]) -> None:
        """The resolved config as ``config/resolved.yaml`` and as flattened params."""
        self.log_dict(dict(resolved), names.ARTIFACT_RESOLVED_CONFIG)
        self.log_params(resolved)

    def reopen(self) -> None:
        """Mark an ended run ``RUNNING`` again (a resumed run or submission): queued before anything later,
        so that :meth:`close` then ends it as this launch ended."""
        self._put(_Op("reopen", None))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Queue tags (values as strings)."""
        if tags:
            self._put(_Op("tags", {names.clean_key(k): str(v) for k, v in tags.items()}))

    def log_artifact_file(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Queue a local file for upload under ``artifact_path`` (a folder in the run's artifacts). The file
        is read when the request is sent: keep it until :meth:`flush` or :meth:`close`."""
        self._put(_Op("file", str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue ``text`` as the artifact ``artifact_file`` (a path inside the run's artifacts)."""
        self._put(_Op("bytes", text.encode(), artifact_file))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Queue ``data`` as YAML (``.yaml``/``.yml``) or JSON (anything else) at ``artifact_file``."""
        if artifact_file.endswith((".yaml", ".yml")):
            text = yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(_plain(data), indent=2, sort_keys=False, default=str)
        self.log_text(text, artifact_file)

    def log_deepspeed_config(self, stage: str, config: Mapping[str, Any]) -> None:
        """A stage's DeepSpeed config as ``deepspeed/<stage>.json``."""
        self.log_dict(config, names.deepspeed_artifact(stage))

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Queue an image (PIL, or an (H, W[, C]) array: uint8, or floats in [0, 1]) as PNG at
        ``artifact_file``. Converted here (a copy the caller may reuse), encoded by the sender."""
        try:
            picture = _as_image(image)
        except (TypeError, ValueError) as err:
            log.warning("tracking: image %s not logged: %s", artifact_file, err)
            with self._cond:
                self._counts["dropped"] += 1
            return
        self._put(_Op("image", picture, artifact_file))

    def log_reconstruction(
        self, ground_truth: Any, reconstruction: Any, step: int, stage: str | None = None
    ) -> None:
        """:func:`reconstruction_panel` logged as ``recon/step_000100.png``."""
        try:
            panel = reconstruction_panel(ground_truth, reconstruction)
        except (TypeError, ValueError) as err:
            log.warning("tracking: reconstruction at step %d not logged: %s", step, err)
            with self._cond:
                self._counts["dropped"] += 1
            return
        self._put(_Op("image", panel, names.recon_artifact(step, stage)))

    def log_skipped(self, counts: Mapping[str, int], step: int) -> None:
        """Skipped-sample counts by reason as ``data/skipped/<reason>``, plus ``data/skipped/total``."""
        metrics: dict[str, float] = {names.skipped_metric(r): float(n) for r, n in counts.items()}
        metrics[names.SKIPPED_TOTAL] = float(sum(counts.values()))
        self.log_metrics(metrics, step)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent or dropped; ``False`` if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._metrics or self._ops or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._cond.wait(timeout=0.1 if left is None else min(left, 0.1))
        return True

    def close(self, status: str | None = None, timeout: float | None = None) -> bool:
        """Flush (within ``timeout``, default ``options.close_timeout_s``) and, for a run this tracker
        created or when ``status`` is given, end the run (``FINISHED``, ``FAILED``, ``KILLED``).

        Returns ``True`` when everything was sent. Never raises and never waits past the deadline: a request
        still in flight then is abandoned (the sender is a daemon thread) and what is left counts as dropped.
        """
        timeout = self.options.close_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:
                return not self._metrics and not self._ops
            self._closed = True
            end = status or ("FINISHED" if self.owns_run else None)
            if end is not None:
                self._ops.append(_Op("terminate", end))
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._abandon = True
            left = len(self._metrics) + sum(1 for op in self._ops if op.kind != "terminate")
            self._counts["dropped"] += left
            self._metrics.clear()
            self._ops.clear()
            self._cond.notify_all()
            ok = left == 0 and not self._thread.is_alive() and self._counts["dropped"] == 0
        if left:
            log.warning("tracking: run %s closed with %d items unsent", self.run_id, left)
        return ok

    @property
    def dropped(self) -> int:
        """Metric values and requests given up (queue overflow, failed sends, invalid values)."""
        with self._cond:
            return self._counts["dropped"]

    @property
    def duplicates(self) -> int:
        """Metric values skipped because their (key, step) was logged before."""
        with self._cond:
            return self._counts["duplicates"]

    def stats(self) -> dict[str, int]:
        """``sent``, ``dropped``, ``duplicates``, ``failed_requests`` and what is still ``queued``."""
        with self._cond:
            return {**self._counts, "queued": len(self._metrics) + len(self._ops)}

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # An attached worker that fails leaves the run's status to its owner (the stage may be retried).
        self.close(status="FAILED" if exc_type is not None and self.owns_run else None)

    # -- queueing -----------------------------------------------------------------------------------------

    def _put(self, op: _Op) -> None:
        with self._cond:
            if self._closing:
                self._counts["dropped"] += 1
                return
            if len(self._ops) >= self.options.max_queued_ops:
                victim = next((o for o in self._ops if o.droppable), None)
                if victim is None and not op.droppable:
                    victim = self._ops[0]
                if victim is None:  # only params/tags queued: the new artifact is the one to go
                    self._counts["dropped"] += 1
                    return
                self._ops.remove(victim)
                self._counts["dropped"] += 1
            self._ops.append(op)
            self._cond.notify_all()

    # -- the sender thread ----------------------------------------------------------------------------------

    def _work(self) -> None:
        if self.options.load_history:
            self._load_history()
        while True:
            with self._cond:
                while not (self._metrics or self._ops or self._closing):
                    self._cond.wait()
                if self._abandon or (self._closing and not self._metrics and not self._ops):
                    self._cond.notify_all()
                    return
                count = min(len(self._metrics), _MAX_METRICS_PER_BATCH)
                metrics = [self._metrics.popleft() for _ in range(count)]
                op = self._ops.popleft() if self._ops else None
                self._in_flight = 1
            try:
                if metrics:
                    self._send_metrics(metrics)
                if op is not None:
                    self._send_op(op)
            except Exception:  # never let the sender die: a dead sender would make every flush wait
                log.exception("tracking: unexpected error in the sender")
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _call(self, fn: Callable[[], Any], what: str) -> bool:
        """``fn()`` with bounded tries; ``False`` (logged, never raised) when it could not be done."""
        tries = 1 if self._server_down else self.options.retries
        for attempt in range(tries):
            if self._abandon:
                return False
            try:
                fn()
                self._server_down = False
                return True
            except Exception as err:
                if _permanent(err):
                    log.warning("tracking: %s rejected by MLflow: %s", what, err)
                    return False
                if attempt + 1 == tries:
                    with self._cond:
                        self._counts["failed_requests"] += 1
                    if not self._server_down:
                        log.warning("tracking: %s failed after %d tries (dropped): %s", what, tries, err)
                    self._server_down = True
                    return False
                pause = self.options.backoff_s * 2**attempt
                if self._deadline is not None:
                    pause = min(pause, max(0.0, self._deadline - time.monotonic()))
                time.sleep(pause)
        return False

    def _send_metrics(self, metrics: list[Any]) -> None:
        fresh = []
        duplicates = 0
        for metric in metrics:
            if metric.step <= self._last_step.get(metric.key, -(2**62)):
                duplicates += 1
                continue
            self._last_step[metric.key] = metric.step
            fresh.append(metric)
        ok = not fresh or self._call(
            lambda: self._client.log_batch(self.run_id, metrics=fresh, synchronous=True), "log_batch"
        )
        with self._cond:
            self._counts["duplicates"] += duplicates
            self._counts["sent" if ok else "dropped"] += len(fresh)

    def _send_op(self, op: _Op) -> None:
        if op.kind == "params":
            ok = self._send_params(op.payload)
        elif op.kind == "tags":
            from mlflow.entities import RunTag

            tags = [RunTag(k, v) for k, v in op.payload.items()]
            ok = all(
                self._call(
                    lambda chunk=tags[i : i + _MAX_PARAMS_PER_BATCH]: self._client.log_batch(
                        self.run_id, tags=chunk, synchronous=True
                    ),
                    "set_tags",
                )
                for i in range(0, len(tags), _MAX_PARAMS_PER_BATCH)
            )
        elif op.kind == "terminate":
            ok = self._call(lambda: self._terminate(op.payload), "set_terminated")
        elif op.kind == "reopen":
            ok = self._call(lambda: self._client.update_run(self.run_id, status="RUNNING"), "reopen")
        else:
            ok = self._send_artifact(op)
        with self._cond:
            self._counts["sent" if ok else "dropped"] += 1

    def _terminate(self, status: str) -> None:
        """End the run, unless something else ended it first: a sweep's driver marks the run of a trial ASHA
        stopped ``KILLED`` while the trial's process may still be on its way out (and would end it ``FAILED``)."""
        current = self._client.get_run(self.run_id).info.status
        if current != "RUNNING":
            log.info(
                "tracking: run %s was already ended (%s); not marking it %s", self.run_id, current, status
            )
            return
        self._client.set_terminated(self.run_id, status=status)

    def _send_params(self, params: dict[str, str]) -> bool:
        from mlflow.entities import Param

        new = []
        for key, value in params.items():
            old = self._params.get(key)
            if old is None:
                new.append(Param(key, value))
            elif old != value:
                log.warning("tracking: param %s already logged as %r; %r not logged", key, old, value)
        ok = True
        for i in range(0, len(new), _MAX_PARAMS_PER_BATCH):
            chunk = new[i : i + _MAX_PARAMS_PER_BATCH]
            if self._call(
                lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk, synchronous=True),
                "log_params",
            ):
                self._params.update((p.key, p.value) for p in chunk)
            else:
                ok = False
        return ok

    def _send_artifact(self, op: _Op) -> bool:
        if op.kind == "file":
            path = Path(op.payload)
            if not path.is_file():
                log.warning("tracking: artifact file %s is gone; not logged", path)
                return False
            return self._call(
                lambda: self._client.log_artifact(self.run_id, str(path), op.artifact_path),
                f"artifact {path.name}",
            )
        folder, _, name = (op.artifact_path or "artifact").rpartition("/")
        with tempfile.TemporaryDirectory(prefix="vlsa-tracking-") as tmp:
            local = Path(tmp) / name
            if op.kind == "image":
                buffer = io.BytesIO()
                op.payload.save(buffer, format="PNG")
                local.write_bytes(buffer.getvalue())
            else:
                local.write_bytes(op.payload)
            return self._call(
                lambda: self._client.log_artifact(self.run_id, str(local), folder or None),
                f"artifact {op.artifact_path}",
            )

    def _load_history(self) -> None:
        """The run's latest step per metric and its params, so nothing already logged is logged again."""
        run: Any = None

        def get() -> None:
            nonlocal run
            run = self._client.get_run(self.run_id)

        if not self._call(get, f"get_run {self.run_id}") or run is None:
            log.warning("tracking: history of run %s not read; steps are not checked against it", self.run_id)
            return
        # ``_metric_objs`` holds each key's latest Metric (the highest step), which is all dedup needs;
        # fall back to the history when an MLflow version stops providing it.
        latest = getattr(run.data, "_metric_objs", None)
        if latest is None:
            latest = []
            for key in run.data.metrics:
                with contextlib.suppress(Exception):
                    latest.extend(self._client.get_metric_history(self.run_id, key))
        for metric in latest:
            self._last_step[metric.key] = max(metric.step, self._last_step.get(metric.key, -(2**62)))
        self._params.update(run.data.params)


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


__all__ = [
    "NullTracker",
    "Tracker",
    "TrackerOptions",
    "TrackingError",
    "git_commit",
    "reconstruction_panel",
    "tracker_for_rank",
]
