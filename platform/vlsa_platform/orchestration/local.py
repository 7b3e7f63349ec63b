"""The embedded local Ray of ``vlsa-platform submit`` without ``--address``.

One Ray instance on this machine for the duration of the submission, bound to 127.0.0.1 with its dashboard on
a free loopback port (Ray Train's placement-group cleanup asks the dashboard's state API whether a stage's
controller is still alive — without it, the workers' reservations of a trial that ASHA stopped would outlive
it). Workers inherit :data:`.submission.WORKER_ENV`; their output stays in Ray's session logs (the terminal
gets the submission's progress lines). A local ``ray.init`` turns Ray's token authentication on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from ..tracking.store import free_port
from .submission import WORKER_ENV

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[dict[str, float]]:
    """Start a local Ray (all CPUs unless ``num_cpus``) and yield its resources; shut it down after."""
    import ray

    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    # Without it Ray names the node by its outward address and some of its servers listen there.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
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
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()


__all__ = ["LOOPBACK", "local_ray"]
