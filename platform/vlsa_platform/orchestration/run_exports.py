"""The export and experiment config of a trained run, found from its MLflow run id (``vlsa-platform evaluate
RUN_ID``).

A trial's or variant's MLflow run holds its resolved config (the artifact ``config/resolved.yaml``), its name
(the name of its folder in the run storage) and the tag ``vlsa.submission``; the submission's record in the work
directory (:mod:`.ledger`) gives the run storage of its trials (``SubmissionSpec.runs_root``). In the run's folder
(:func:`.training.run_dir`) each finished stage's marker names its final checkpoint, whose ``model/`` is the
export: the last stage of the config that finished is evaluated (an ``s3://`` one is mirrored to the local
cache first, :func:`vlsa_platform.storage.materialize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import storage
from ..config.errors import ConfigError
from ..config.loader import load_experiment
from ..tracking import names
from ..tracking.client import download_artifact, mlflow_client
from ..tracking.store import TrackingStore
from .evaluation import EvaluationInputError
from .ledger import RecordError, find
from .stage_markers import completed_stage
from .submission import TAG_SUBMISSION
from .training import run_dir


@dataclass(frozen=True)
class RunExport:
    """What evaluating a run needs."""

    export: Path
    """The last finished stage's export (local)."""
    config: Path
    """The run's ``config/resolved.yaml``, downloaded."""
    stage: str


def export_of_run(run_id: str, store: TrackingStore, workdir: str | Path, into: Path) -> RunExport:
    """The export of the last finished stage of MLflow run ``run_id`` and its config (downloaded into
    ``into``). Raises :class:`EvaluationInputError` naming what is missing."""
    client = mlflow_client(store)
    try:
        run = client.get_run(run_id)
    except Exception as err:  # MLflow's own exception types (unknown id, bad store)
        raise EvaluationInputError(f"no MLflow run {run_id} in {store.uri}: {err}") from None
    submission = run.data.tags.get(TAG_SUBMISSION)
    if not submission:
        raise EvaluationInputError(
            f"run {run_id} is not a trial or variant run of a submission (no {TAG_SUBMISSION} tag; a parent "
            "run has no export of its own): give a child run's id, or an export folder with --config"
        )
    into.mkdir(parents=True, exist_ok=True)
    try:
        config_path = download_artifact(client, run_id, names.ARTIFACT_RESOLVED_CONFIG, into)
        config = load_experiment(config_path)
        record = find(workdir, submission)
    except (ConfigError, RecordError) as err:
        raise EvaluationInputError(f"run {run_id}: {err}") from None
    except Exception as err:  # the artifact is missing or unreadable
        raise EvaluationInputError(
            f"run {run_id} has no readable {names.ARTIFACT_RESOLVED_CONFIG}: {err}"
        ) from None
    directory = run_dir(record.spec.runs_root, config.name, run.info.run_name)
    for stage in reversed(list(config.stages)):
        outcome = completed_stage(directory, stage)
        if outcome is not None:
            local = storage.materialize(outcome.model)
            return RunExport(export=Path(local), config=config_path, stage=stage)
    raise EvaluationInputError(f"run {run_id} has no finished stage yet (its folder: {directory})")


__all__ = ["RunExport", "export_of_run"]
