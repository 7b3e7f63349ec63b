"""The tracker's sender never drops anything in silence: failed requests are logged (the first few in full,
the rest counted and summed up at close), a recovered server is announced, a full queue says so, an unread
metric history is named, and an unexpected error's items are counted as dropped."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from mlflow.entities import Metric

from vlsa_platform.tracking import sender as sender_module
from vlsa_platform.tracking.sender import LOGGED_FAILURES, Op, Sender, TrackerOptions

NO_RETRY = TrackerOptions(retries=1, backoff_s=0.0, load_history=False, close_timeout_s=10.0)


class FlakyClient:
    """A stand-in for ``MlflowClient``: ``log_batch`` raises ``ConnectionError`` for its first ``failures``
    calls, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def log_batch(self, run_id: str, **_: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"connection refused (call {self.calls})")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == sender_module.__name__ and r.levelno >= 30]


def _sender(client: object, options: TrackerOptions = NO_RETRY) -> Sender:
    return Sender("run0123456789", client, options)


def test_every_failed_request_is_logged_or_counted_in_the_close_summary(caplog):
    caplog.set_level(logging.WARNING, logger=sender_module.__name__)
    requests = LOGGED_FAILURES + 7
    sender = _sender(FlakyClient(failures=10**6))
    for i in range(requests):
        sender.put(Op("tags", {f"tag{i}": "x"}))
    assert sender.flush(timeout=10)
    logged = [m for m in _warnings(caplog) if "set_tags failed" in m]
    assert len(logged) == LOGGED_FAILURES, "the first few, in full"
    assert "connection refused" in logged[0]
    assert "summarised at close" in logged[-1]
    sender.close(None, timeout=5)
    summary = [m for m in _warnings(caplog) if "requests failed" in m]
    assert len(summary) == 1
    assert f"{requests} items dropped" in summary[0]
    assert f"{requests} requests failed ({requests - LOGGED_FAILURES} of them not logged above)" in summary[0]
    assert sender.stats()["failed_requests"] == requests


def test_a_failure_after_an_earlier_one_is_logged_too_and_recovery_is_announced(caplog):
    caplog.set_level(logging.WARNING, logger=sender_module.__name__)
    sender = _sender(FlakyClient(failures=2))
    for i in range(3):
        sender.put(Op("tags", {f"tag{i}": "x"}))
        assert sender.flush(timeout=10)
    warnings = _warnings(caplog)
    assert len([m for m in warnings if "set_tags failed" in m]) == 2, "not only the first"
    assert any("answers again" in m and "after 2 failed requests" in m for m in warnings)
    assert sender.close(None, timeout=5) is False


def test_a_full_queue_says_so_once_and_close_sums_it_up(caplog):
    caplog.set_level(logging.WARNING, logger=sender_module.__name__)

    class Blocking(FlakyClient):
        """Holds the sender thread in its first request until released, so the queue fills behind it."""

        def __init__(self) -> None:
            super().__init__(failures=0)
            self.entered, self.release = threading.Event(), threading.Event()

        def log_batch(self, run_id: str, **kwargs: object) -> None:
            self.entered.set()
            self.release.wait(10)
            super().log_batch(run_id, **kwargs)

    client = Blocking()
    sender = _sender(client, TrackerOptions(max_queued_metrics=2, retries=1, load_history=False))
    sender.put_metrics([Metric("m", 1.0, 0, 0)])
    assert client.entered.wait(10)
    sender.put_metrics([Metric("m", 1.0, 0, step) for step in range(1, 6)])  # 3 of 5 dropped
    sender.put_metrics([Metric("m", 1.0, 0, step) for step in range(6, 9)])  # 3 more
    client.release.set()
    sender.close(None, timeout=5)
    full = [m for m in _warnings(caplog) if "queue full" in m]
    assert len(full) == 1 and "max_queued_metrics=2" in full[0]
    assert [m for m in _warnings(caplog) if "6 items dropped in all" in m]


def test_an_unread_metric_history_is_named(caplog):
    caplog.set_level(logging.WARNING, logger=sender_module.__name__)

    class NoHistory(FlakyClient):
        def get_run(self, run_id: str) -> object:
            return SimpleNamespace(data=SimpleNamespace(metrics={"loss/total": 1.0}, params={}))

        def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
            raise RuntimeError("history endpoint broken")

    sender = _sender(NoHistory(failures=0), TrackerOptions(retries=1, load_history=True))
    assert sender.flush(timeout=10)
    sender.close(None, timeout=5)
    named = [m for m in _warnings(caplog) if "loss/total" in m]
    assert named and "history endpoint broken" in named[0]


def test_an_unexpected_error_counts_what_it_lost(caplog):
    caplog.set_level(logging.WARNING, logger=sender_module.__name__)
    sender = _sender(FlakyClient(failures=0))
    sender.put(Op("image", payload=object(), artifact_path="plots/x.png"))  # no .save(): AttributeError
    assert sender.flush(timeout=10)
    assert sender.stats()["dropped"] == 1
    assert any("unexpected error" in m and "1 items dropped" in m for m in _warnings(caplog))
    sender.close(None, timeout=5)
