"""The tracker's background sender: bounded queues and the one thread that sends them to MLflow.

A :class:`Sender` belongs to one :class:`~vlsa_platform.tracking.tracker.Tracker` (one run). Callers only
append to its queues (:meth:`Sender.put_metrics`, :meth:`Sender.put`); the thread sends metrics batched with
``log_batch`` (≤ 1000 values per request), then one param/tag/artifact/status request at a time. Queues are
bounded by :class:`TrackerOptions` (the oldest metric values, or the oldest artifact, are dropped and counted);
each request gets ``retries`` tries with exponential backoff, a single try while the server is unreachable;
what cannot be sent is dropped and counted, never raised, and never unsaid: the first :data:`LOGGED_FAILURES`
failed requests of a run are logged in full, later ones counted, a full queue says so the first time it drops,
and :meth:`Sender.close` logs a summary of everything dropped. A (key, step) is sent once: steps not above the
last one sent for a key (or read from the run's history on attach) are skipped and counted as duplicates.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import is_permanent

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
MAX_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
_NO_STEP = -(2**62)
LOGGED_FAILURES = 5
"""Failed requests of one run logged one by one; the ones after are counted and summarised at close."""


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


@dataclass
class Op:
    """One queued request other than metrics."""

    kind: str  # "params" | "tags" | "file" | "bytes" | "image" | "terminate" | "reopen"
    payload: Any
    artifact_path: str | None = None

    @property
    def droppable(self) -> bool:
        """Artifacts may be dropped to make room; params, tags and status changes only when nothing else can."""
        return self.kind in {"file", "bytes", "image"}


class Sender:
    """The queues and sender thread of one run (see the module docstring); thread-safe."""

    def __init__(self, run_id: str, client: Any, options: TrackerOptions) -> None:
        self.run_id = run_id
        self.client = client
        self.options = options
        self._cond = threading.Condition()
        self._metrics: deque[Any] = deque()
        self._ops: deque[Op] = deque()
        self._in_flight = 0
        self._closing = False
        self._closed = False
        self._abandon = False
        self._server_down = False
        self._deadline: float | None = None
        # Sender-thread state (read by callers only through stats()).
        self._last_step: dict[str, int] = {}
        self._params: dict[str, str] = {}
        self._counts = {"sent": 0, "dropped": 0, "duplicates": 0, "failed_requests": 0}
        self._logged_failures = 0
        self._unlogged_failures = 0
        self._failed_since_up = 0
        self._overflow_said: set[str] = set()
        self._thread = threading.Thread(target=self._work, name=f"mlflow-tracker-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- the callers' side --------------------------------------------------------------------------------

    def put_metrics(self, metrics: list[Any], invalid: int = 0) -> None:
        """Queue MLflow ``Metric`` objects; ``invalid`` values the caller could not convert count as dropped."""
        with self._cond:
            if self._closing:
                self._counts["dropped"] += len(metrics) + invalid
                return
            self._counts["dropped"] += invalid
            for metric in metrics:
                if len(self._metrics) >= self.options.max_queued_metrics:
                    self._metrics.popleft()  # the oldest go first: the latest values matter most
                    self._counts["dropped"] += 1
                    self._say_overflow("metric values (the oldest first)", "max_queued_metrics")
                self._metrics.append(metric)
            self._cond.notify_all()

    def put(self, op: Op) -> None:
        """Queue a request; when the queue is full the oldest artifact makes room (or ``op`` is dropped)."""
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
                    self._say_overflow("requests (artifacts first)", "max_queued_ops")
                    return
                self._ops.remove(victim)
                self._counts["dropped"] += 1
                self._say_overflow("requests (artifacts first)", "max_queued_ops")
            self._ops.append(op)
            self._cond.notify_all()

    def count_dropped(self, count: int = 1) -> None:
        """Count ``count`` items the caller gave up before queueing them."""
        with self._cond:
            self._counts["dropped"] += count

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

    def close(self, end: str | None, timeout: float) -> bool:
        """Send what is queued, then end the run with status ``end`` (unless ``None``), within ``timeout``.

        Returns ``True`` when everything was sent. Never waits past the deadline: a request still in flight
        then is abandoned (the thread is a daemon) and what is left counts as dropped. Closing again only
        reports whether anything is left.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:
                return not self._metrics and not self._ops
            self._closed = True
            if end is not None:
                self._ops.append(Op("terminate", end))
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
            counts, unlogged = dict(self._counts), self._unlogged_failures
        if left:
            log.warning("tracking: run %s closed with %d items unsent", self.run_id, left)
        if counts["dropped"] or counts["failed_requests"]:
            log.warning(
                "tracking: run %s: %d items dropped in all, %d requests failed (%d of them not logged above)",
                self.run_id,
                counts["dropped"],
                counts["failed_requests"],
                unlogged,
            )
        return ok

    def stats(self) -> dict[str, int]:
        """``sent``, ``dropped``, ``duplicates``, ``failed_requests`` and what is still ``queued``."""
        with self._cond:
            return {**self._counts, "queued": len(self._metrics) + len(self._ops)}

    def _say_overflow(self, what: str, option: str) -> None:
        """Log the first time a queue drops something (under ``self._cond``); close() sums up the rest."""
        if option not in self._overflow_said:
            self._overflow_said.add(option)
            log.warning(
                "tracking: run %s: queue full (%s=%d); dropping %s, counted and summarised at close",
                self.run_id,
                option,
                getattr(self.options, option),
                what,
            )

    def _report_failure(self, message: str, *args: Any) -> None:
        """Log a failed request in full while fewer than :data:`LOGGED_FAILURES` were; count it after that."""
        with self._cond:
            if self._logged_failures >= LOGGED_FAILURES:
                self._unlogged_failures += 1
                return
            self._logged_failures += 1
            last = self._logged_failures == LOGGED_FAILURES
        log.warning(
            "tracking: "
            + message
            + ("; further failures are counted and summarised at close" if last else ""),
            *args,
        )

    # -- the sender thread --------------------------------------------------------------------------------

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
                count = min(len(self._metrics), MAX_METRICS_PER_BATCH)
                metrics = [self._metrics.popleft() for _ in range(count)]
                op = self._ops.popleft() if self._ops else None
                self._in_flight = 1
            sending_metrics = True
            try:
                if metrics:
                    self._send_metrics(metrics)
                sending_metrics = False
                if op is not None:
                    self._send_op(op)
            except Exception:  # never let the sender die: a dead sender would make every flush wait
                lost = (len(metrics) if sending_metrics else 0) + (op is not None)
                with self._cond:
                    self._counts["dropped"] += lost
                log.exception("tracking: unexpected error in the sender; %d items dropped", lost)
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
                if self._server_down:
                    log.warning(
                        "tracking: MLflow answers again for run %s, after %d failed requests",
                        self.run_id,
                        self._failed_since_up,
                    )
                self._server_down, self._failed_since_up = False, 0
                return True
            except Exception as err:
                if is_permanent(err):
                    self._report_failure("%s rejected by MLflow (dropped): %s", what, err)
                    return False
                if attempt + 1 == tries:
                    with self._cond:
                        self._counts["failed_requests"] += 1
                    self._report_failure("%s failed after %d tries (dropped): %s", what, tries, err)
                    self._server_down = True
                    self._failed_since_up += 1
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
            if metric.step <= self._last_step.get(metric.key, _NO_STEP):
                duplicates += 1
                continue
            self._last_step[metric.key] = metric.step
            fresh.append(metric)
        ok = not fresh or self._call(
            lambda: self.client.log_batch(self.run_id, metrics=fresh, synchronous=True), "log_batch"
        )
        with self._cond:
            self._counts["duplicates"] += duplicates
            self._counts["sent" if ok else "dropped"] += len(fresh)

    def _send_op(self, op: Op) -> None:
        if op.kind == "params":
            ok = self._send_params(op.payload)
        elif op.kind == "tags":
            ok = self._send_tags(op.payload)
        elif op.kind == "terminate":
            ok = self._call(lambda: self._terminate(op.payload), "set_terminated")
        elif op.kind == "reopen":
            ok = self._call(lambda: self.client.update_run(self.run_id, status="RUNNING"), "reopen")
        else:
            ok = self._send_artifact(op)
        with self._cond:
            self._counts["sent" if ok else "dropped"] += 1

    def _send_tags(self, payload: dict[str, str]) -> bool:
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in payload.items()]
        return all(
            self._call(
                lambda chunk=tags[i : i + MAX_PARAMS_PER_BATCH]: self.client.log_batch(
                    self.run_id, tags=chunk, synchronous=True
                ),
                "set_tags",
            )
            for i in range(0, len(tags), MAX_PARAMS_PER_BATCH)
        )

    def _terminate(self, status: str) -> None:
        """End the run, unless something else ended it first: a sweep's driver marks the run of a trial ASHA
        stopped ``KILLED`` while the trial's process may still be on its way out (and would end it ``FAILED``)."""
        current = self.client.get_run(self.run_id).info.status
        if current != "RUNNING":
            log.info(
                "tracking: run %s was already ended (%s); not marking it %s", self.run_id, current, status
            )
            return
        self.client.set_terminated(self.run_id, status=status)

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
        for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
            chunk = new[i : i + MAX_PARAMS_PER_BATCH]
            if self._call(
                lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk, synchronous=True),
                "log_params",
            ):
                self._params.update((p.key, p.value) for p in chunk)
            else:
                ok = False
        return ok

    def _send_artifact(self, op: Op) -> bool:
        if op.kind == "file":
            path = Path(op.payload)
            if not path.is_file():
                log.warning("tracking: artifact file %s is gone; not logged", path)
                return False
            return self._call(
                lambda: self.client.log_artifact(self.run_id, str(path), op.artifact_path),
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
                lambda: self.client.log_artifact(self.run_id, str(local), folder or None),
                f"artifact {op.artifact_path}",
            )

    def _load_history(self) -> None:
        """The run's latest step per metric and its params, so nothing already logged is logged again."""
        run: Any = None

        def get() -> None:
            nonlocal run
            run = self.client.get_run(self.run_id)

        if not self._call(get, f"get_run {self.run_id}") or run is None:
            log.warning("tracking: history of run %s not read; steps are not checked against it", self.run_id)
            return
        # ``_metric_objs`` holds each key's latest Metric (the highest step), which is all dedup needs;
        # fall back to the history when an MLflow version stops providing it.
        latest = getattr(run.data, "_metric_objs", None)
        if latest is None:
            latest = []
            for key in run.data.metrics:
                try:
                    latest.extend(self.client.get_metric_history(self.run_id, key))
                except Exception as err:  # dedup of this key is then off: say so, do not stop attaching
                    self._report_failure(
                        "history of metric %s of run %s not read (its steps are not checked): %s",
                        key,
                        self.run_id,
                        err,
                    )
        for metric in latest:
            self._last_step[metric.key] = max(metric.step, self._last_step.get(metric.key, _NO_STEP))
        self._params.update(run.data.params)


__all__ = ["MAX_METRICS_PER_BATCH", "MAX_PARAMS_PER_BATCH", "Op", "Sender", "TrackerOptions"]
