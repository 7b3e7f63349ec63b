"""How long the platform takes to give up on something that is not there: the bounds that the tests state as
behaviour (an error naming the place, the number of tries) measured as time, which a loaded machine would make
flaky in a test.

Three cases, each ``--repeats`` times:

- ``s3_refused``: ``storage.materialize`` of an ``s3://`` location whose endpoint refuses connections;
- ``jobs_refused``: ``jobs.job_status`` at a Ray address nothing listens on (the client's retries included);
- ``jobs_silent``: ``jobs_api.connect`` to a port that accepts connections into its backlog and never answers,
  with 1 s connect and read timeouts and 2 tries.

Goals (what the tests used to assert): ``s3_refused`` under 10 s, ``jobs_refused`` under 30 s, ``jobs_silent``
under 10 s — each the slowest of its repeats.

    .venv/bin/python benchmarks/fail_fast.py [--repeats 3]

Prints one JSON line on stdout, then one human-readable line per case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator

from vlsa_platform import storage
from vlsa_platform.orchestration import jobs, jobs_api

GOALS_S = {"s3_refused": 10.0, "jobs_refused": 30.0, "jobs_silent": 10.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _silent_port() -> Iterator[int]:
    """A port that queues connections and never accepts or answers them."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield int(listening.getsockname()[1])


def _s3_refused() -> None:
    port = _free_port()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    with tempfile.TemporaryDirectory() as folder, contextlib.suppress(storage.StorageError):
        storage.materialize("s3://bucket/data", folder)


def _jobs_refused() -> None:
    with contextlib.suppress(jobs_api.ClusterUnreachableError):
        jobs.job_status(f"http://127.0.0.1:{_free_port()}", "any")


def _jobs_silent() -> None:
    with _silent_port() as port, contextlib.suppress(jobs_api.ClusterUnreachableError):
        jobs_api.connect(f"http://127.0.0.1:{port}", connect_timeout_s=1, read_timeout_s=1, attempts=2)


CASES: dict[str, Callable[[], None]] = {
    "s3_refused": _s3_refused,
    "jobs_refused": _jobs_refused,
    "jobs_silent": _jobs_silent,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name, case in CASES.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            case()
            times.append(time.perf_counter() - start)
        results[name] = {"seconds": times, "slowest_s": max(times), "goal_s": GOALS_S[name]}
    print(json.dumps({"benchmark": "fail_fast", "repeats": args.repeats, "cases": results}))
    for name, result in results.items():
        met = "met" if result["slowest_s"] < result["goal_s"] else "MISSED"
        print(f"{name:<13} slowest {result['slowest_s']:.2f} s (goal < {result['goal_s']:g} s: {met})")


if __name__ == "__main__":
    main()
