"""What a submission is and how it ends, as data: :class:`SubmissionSpec` (everything its driver needs, as
JSON), :class:`TrialOutcome` and :class:`SubmissionResult`, :class:`ClusterResourceError`, and the folder
names of its run storage.

Imported by the record (:mod:`.ledger`), the drivers (:mod:`.submission`, :mod:`.local`, :mod:`.remote`,
:mod:`.entry`) and the Jobs packaging (:mod:`.jobs`). Kept light (the config schema and tracking are imported
where used): the CLI's parser reads :data:`.ledger.DEFAULT_WORKDIR` through it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import storage

if TYPE_CHECKING:
    from ..config.schema import ExperimentConfig

TUNE_DIR = "tune"
RUNS_DIR = "runs"
DEFAULT_STORAGE_DIR = "storage"
"""The run storage in the work directory when the file sets no ``storage.path``."""
WORKER_ENV = {
    # A stage's controller polls its workers this often (Ray's default, 2 s, adds seconds to every stage).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Spot preemption is a cloud matter; a watcher actor per stage costs a process start on small machines.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
"""Environment of every Ray worker of a submission (``ray.init(runtime_env=...)`` locally, the job's
``runtime_env`` on a cluster)."""


@dataclass
class SubmissionSpec:
    """Everything a submission's driver needs, as JSON (written beside a Ray job, kept in the record)."""

    submission_id: str
    """``<experiment>-<YYYYmmdd-HHMMSS>``: the Tune experiment's name and the parent run's name."""
    experiment: str
    kind: str
    """``sweep``, ``ablation`` or ``single``."""
    source: str
    """The experiment file as given."""
    scale: str | None
    overrides: list[str]
    config: dict[str, Any]
    """The experiment as loaded (``ExperimentConfig.raw``: after ``extends``, ``--scale`` and ``--set``)."""
    workdir: str
    """Absolute work directory of the driver (local MLflow store, records)."""
    storage_root: str
    """Absolute local folder or ``s3://`` of the run storage."""
    tracking_uri: str | None = None
    """The MLflow tracking URI; ``None`` = the local store in ``workdir``."""
    parent_run_id: str | None = None
    """Set once the parent run exists (a resume re-attaches to it)."""
    resource_timeout_s: float = 120.0
    """How long to wait for the cluster to offer what the trials need before giving up."""

    def experiment_config(self) -> ExperimentConfig:
        from ..config.schema import ExperimentConfig

        return ExperimentConfig.model_validate(self.config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmissionSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def tune_root(self) -> str:
        return storage.join(self.storage_root, TUNE_DIR)

    @property
    def tune_path(self) -> str:
        """Tune's experiment folder of this submission."""
        return storage.join(self.tune_root, self.submission_id)

    @property
    def runs_root(self) -> str:
        """``storage_root`` of every trial's :func:`~.training.run_training`."""
        return storage.join(self.storage_root, RUNS_DIR, self.submission_id)


def new_submission(
    config: ExperimentConfig,
    *,
    source: str,
    scale: str | None,
    overrides: list[str],
    workdir: str | os.PathLike[str],
    resource_timeout_s: float,
) -> SubmissionSpec:
    """A new submission of ``config``: its id from the experiment's name and the time, the work directory and
    run storage as absolute locations (the storage ``storage.path`` or ``<workdir>/storage``), the tracking
    URI from the file or ``$MLFLOW_TRACKING_URI`` (``None``: the local store)."""
    from ..tracking import names
    from ..tracking.store import TRACKING_URI_ENV

    root = Path(workdir).expanduser().resolve()
    storage_root = config.storage.path or str(root / DEFAULT_STORAGE_DIR)
    if not storage_root.startswith("s3://"):
        storage_root = str(Path(storage_root).expanduser().resolve())
    return SubmissionSpec(
        submission_id=f"{names.path_part(config.name)}-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment=config.name,
        kind=config.kind,
        source=source,
        scale=scale,
        overrides=list(overrides),
        config=config.raw,
        workdir=str(root),
        storage_root=storage_root,
        tracking_uri=config.tracking.tracking_uri or os.environ.get(TRACKING_URI_ENV, "").strip() or None,
        resource_timeout_s=resource_timeout_s,
    )


@dataclass
class TrialOutcome:
    """One trial at the end of a submission."""

    trial_id: str
    name: str
    values: dict[str, Any]
    status: str
    """``finished``, ``stopped early`` (ASHA), ``failed``, ``interrupted`` (the submission was stopped while
    it ran) or ``not run``."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The metrics of the trial's last report."""
    error: str | None = None
    first: dict[str, float] = field(default_factory=dict)
    """The sweep metric's value at the trial's first validation (read back from its MLflow run at the end of
    the submission), by metric key; empty when unknown (a record from before, MLflow not answering)."""


@dataclass
class SubmissionResult:
    spec: SubmissionSpec
    parent_run_id: str
    tracking_uri: str
    trials: list[TrialOutcome]
    interrupted: bool = False

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "failed"]


class ClusterResourceError(RuntimeError):
    """The cluster cannot run a trial's stages (no node of the accelerator class, too few GPUs/CPUs)."""


__all__ = [
    "DEFAULT_STORAGE_DIR",
    "RUNS_DIR",
    "TUNE_DIR",
    "WORKER_ENV",
    "ClusterResourceError",
    "SubmissionResult",
    "SubmissionSpec",
    "TrialOutcome",
    "new_submission",
]
