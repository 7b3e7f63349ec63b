"""A run that adopted a shared stage (one another run of the experiment trained on the same inputs) shows it in
MLflow: tags naming the run that trained it (``names.shared_stage_tags``), and that stage's metric series copied
into its own run at the same global steps, so its curves run from step 1 like a run that trained every stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .client import TrackingURI, mlflow_client

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's log_batch limit on metrics per call


def copy_stage_metrics(
    store: TrackingURI, source_run_id: str, target_run_id: str, first_step: int, last_step: int
) -> int:
    """Copy every metric point of run ``source_run_id`` logged at a global step in ``(first_step, last_step]``
    (one stage of it) into ``target_run_id``, timestamps kept; returns how many points were copied."""
    from mlflow.entities import Metric

    client = mlflow_client(store)
    keys = client.get_run(source_run_id).data.metrics.keys()
    points = [
        Metric(key, m.value, m.timestamp, m.step)
        for key in sorted(keys)
        for m in client.get_metric_history(source_run_id, key)
        if first_step < m.step <= last_step
    ]
    for start in range(0, len(points), _BATCH):
        client.log_batch(target_run_id, metrics=points[start : start + _BATCH])
    return len(points)


def link_shared_stage(
    store: TrackingURI,
    target_run_id: str,
    tags: Mapping[str, str],
    source_run_id: str | None,
    steps: tuple[int, int],
) -> int:
    """Tag ``target_run_id`` with the shared stage's ``tags`` and copy that stage's metrics (global steps
    ``steps`` = ``(first, last]``) from the run that trained it, when it was tracked; points copied."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(store)
    for key, value in tags.items():
        client.set_tag(target_run_id, key, value)
    if not source_run_id:
        return 0
    try:
        return copy_stage_metrics(store, source_run_id, target_run_id, *steps)
    except MlflowException as exc:  # trained under another tracking store: the tags still name it
        log.warning("could not copy the shared stage's metrics from run %s: %s", source_run_id, exc)
        return 0


__all__ = ["copy_stage_metrics", "link_shared_stage"]
