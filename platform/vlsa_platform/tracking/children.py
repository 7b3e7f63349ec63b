"""The child runs of a submission's parent run, closed from the driver: a trial whose process was ended
(ASHA stopped it early, the submission was interrupted) could not close its own MLflow run.

Used by orchestration's progress callback; MLflow is reached through :func:`.client.mlflow_client`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from . import names
from .client import mlflow_client

TAG_EARLY_STOPPED = "vlsa.early_stopped"
"""On the child run of a trial ASHA stopped early (its status is ``KILLED``)."""


def _children(client: Any, parent_run_id: str, extra: str = "") -> list[Any]:
    parent = client.get_run(parent_run_id)
    query = f"tags.`{names.TAG_PARENT_RUN}` = '{parent_run_id}'" + extra
    return list(client.search_runs([parent.info.experiment_id], query, max_results=10_000))


def close_trial_run(
    tracking_uri: str, parent_run_id: str, trial_id: str, status: str, *, early: bool = False
) -> None:
    """End the child run of trial ``trial_id`` with ``status`` if it is still ``RUNNING`` (tagged
    :data:`TAG_EARLY_STOPPED` when ``early``). MLflow's errors are raised."""
    client = mlflow_client(tracking_uri)
    for run in _children(client, parent_run_id, f" and tags.`{names.TAG_TRIAL_ID}` = '{trial_id}'"):
        if run.info.status == "RUNNING":
            if early:
                client.set_tag(run.info.run_id, TAG_EARLY_STOPPED, "true")
            client.set_terminated(run.info.run_id, status)


def close_stopped_children(tracking_uri: str, parent_run_id: str, early: Collection[str]) -> None:
    """At the end of a submission no trial runs: a child run still ``RUNNING`` was ended from outside
    (interrupt, early stop) and is marked ``KILLED``. The child of a trial in ``early`` (trial ids ASHA stopped)
    is ``KILLED`` and tagged whatever its process did on the way out (Tune stops a trial's process after
    telling its callbacks, so the process may still have ended its run ``FAILED``). MLflow's errors are
    raised."""
    client = mlflow_client(tracking_uri)
    for run in _children(client, parent_run_id):
        stopped = run.data.tags.get(names.TAG_TRIAL_ID) in early
        if stopped and run.data.tags.get(TAG_EARLY_STOPPED) != "true":
            client.set_tag(run.info.run_id, TAG_EARLY_STOPPED, "true")
        if run.info.status == "RUNNING" or (stopped and run.info.status != "KILLED"):
            client.set_terminated(run.info.run_id, "KILLED")


__all__ = ["TAG_EARLY_STOPPED", "close_stopped_children", "close_trial_run"]
