"""Tracker latency: what one ``log_*`` call and ``close`` cost the training loop while MLflow is up, gone or
silent.

The :class:`~vlsa_platform.tracking.tracker.Tracker` promises that a log call only queues (microseconds) and
that ``close`` returns by its deadline whatever the server does. Three scenarios, each a fresh run:

- ``up``: a local ``mlflow server`` (SQLite in a temp folder) answering;
- ``killed``: the same server stopped after the first step (the run keeps logging into the void);
- ``silent``: a socket that listens and never accepts (every request hangs until MLflow's lowered timeout).

Per step: every §4 metric (``names.METRICS``), and every ``--artifact-every`` steps a 64x64 image and a tag
(``up``, ``killed``) or a small text artifact every step (``silent``); a ``--step-ms`` pause stands for the
training step. Reported per scenario: the median, 99th percentile and slowest log call (one step's calls
together), the ``close`` time against its deadline (``--close-timeout``) and the tracker's counters.

    .venv/bin/python benchmarks/tracking_latency.py [--steps 300] [--step-ms 2] [--close-timeout 3]

Prints one JSON line on stdout, then one human-readable line per scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlsa_platform.tracking import Tracker, TrackerOptions, local_store, names, server_for, shared_store

EXPERIMENT = "vlsa-tracking-latency"


def _drive(
    tracker: Tracker, steps: int, step_s: float, extra: Callable[[Tracker, int], None]
) -> dict[str, Any]:
    """Log ``steps`` steps, timing each step's calls, then close; the timings and the tracker's counters."""
    calls = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        tracker.log_metrics({key: float(step) for key in names.METRICS}, step=step)
        extra(tracker, step)
        calls.append(time.perf_counter() - start)
        time.sleep(step_s)
    start = time.perf_counter()
    finished = tracker.close()
    closing = time.perf_counter() - start
    calls.sort()
    return {
        "log_call_ms_p50": round(statistics.median(calls) * 1e3, 3),
        "log_call_ms_p99": round(calls[min(len(calls) - 1, int(0.99 * len(calls)))] * 1e3, 3),
        "log_call_ms_max": round(calls[-1] * 1e3, 3),
        "close_s": round(closing, 3),
        "close_finished": finished,
        **tracker.stats(),
    }


def _served(args: argparse.Namespace, kill: bool) -> dict[str, Any]:
    image = np.zeros((64, 64, 3), np.uint8)

    def extra(tracker: Tracker, step: int) -> None:
        if step % args.artifact_every == 0:
            tracker.log_image(image, names.recon_artifact(step))
            tracker.set_tags({"vlsa.note": f"step {step}"})

    options = TrackerOptions(backoff_s=0.05, close_timeout_s=args.close_timeout)
    with tempfile.TemporaryDirectory(prefix="vlsa-tracking-latency-") as tmp:
        local = local_store(Path(tmp))
        server = server_for(local, startup_timeout_s=120.0).launch()
        try:
            with shared_store(local, server) as store:
                tracker = Tracker.start_parent(
                    EXPERIMENT, "kill" if kill else "up", store=store, options=options
                )
                tracker.log_metrics({names.LOSS_TOTAL: 0.0}, step=0)
                tracker.flush(30)
                if kill:
                    server.stop()
                return _drive(tracker, args.steps, args.step_ms / 1e3, extra)
        finally:
            server.stop()


def _silent(args: argparse.Namespace) -> dict[str, Any]:
    options = TrackerOptions(backoff_s=0.05, close_timeout_s=args.close_timeout)
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(1)
        uri = f"http://127.0.0.1:{hole.getsockname()[1]}"
        tracker = Tracker.for_run("0" * 32, store=uri, options=options)
        return _drive(tracker, args.steps, args.step_ms / 1e3, lambda t, _: t.log_text("x", "notes/x.txt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="logged steps per scenario")
    parser.add_argument("--step-ms", type=float, default=2.0, help="pause between steps (a training step)")
    parser.add_argument("--artifact-every", type=int, default=50, help="steps between image+tag requests")
    parser.add_argument("--close-timeout", type=float, default=3.0, help="deadline given to close (s)")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links when a run ends
        results = {
            "up": _served(args, kill=False),
            "killed": _served(args, kill=True),
            "silent": _silent(args),
        }
    print(json.dumps({"steps": args.steps, "close_timeout_s": args.close_timeout, "scenarios": results}))
    for name, r in results.items():
        print(
            f"{name}: log call p50 {r['log_call_ms_p50']:.3f} ms, p99 {r['log_call_ms_p99']:.3f} ms, "
            f"max {r['log_call_ms_max']:.3f} ms; close {r['close_s']:.2f} s of {args.close_timeout:g} s "
            f"({'all sent' if r['close_finished'] else 'gave up'}); sent {r['sent']}, dropped {r['dropped']}"
        )


if __name__ == "__main__":
    main()
