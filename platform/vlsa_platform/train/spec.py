"""What orchestration hands every worker of a stage (:class:`StageSpec`), the names of what a stage leaves in
its checkpoints and the error of a diverged stage (:class:`DivergedError`) — kept apart from :mod:`.loop` so
the driver side imports them without torch.

The placement travels as the :class:`~vlsa_platform.cluster.ResolvedPlacement` the orchestration derived
(serialised with its own ``to_dict`` / ``from_dict``), so a worker never derives it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..cluster import ResolvedPlacement

#: DeepSpeed's checkpoint tag inside every checkpoint folder (each reported checkpoint is its own folder).
CHECKPOINT_TAG = "state"
#: Folder of the exported model inside a stage's final checkpoint.
EXPORT_DIR = "model"
#: File in a checkpoint folder with the stage's progress at that point (what the driver reads).
PROGRESS_FILE = "progress.json"


class DivergedError(RuntimeError):
    """A stage gave up after ``training.on_nonfinite.skip_limit`` micro-batches in a row had a non-finite loss
    (raised by the loop on every rank; the message names the stage, its step and the count, and rank 0 tagged
    the MLflow run with it). Here, not in :mod:`.loop`, so the driver recognises it without torch."""


@dataclass
class StageSpec:
    """What every worker of one stage needs to run it; JSON-able (:meth:`to_dict` / :meth:`from_dict`)."""

    config: dict[str, Any]
    """The run's resolved experiment config (``ExperimentConfig.resolved()``)."""
    stage: str
    """Name of the stage in ``config['stages']``."""
    stage_index: int
    """Its position (0-based): the ``stage`` metric."""
    placement: ResolvedPlacement
    """The resolved placement (accelerator class, workers, ZeRO stage, offload, micro-batch, accumulation), as
    the orchestration derived it for the plan (whose ``placement`` is its ``as_plan()``)."""
    steps: int | None = None
    """Optimizer steps; ``None`` = from the stage's ``epochs`` and the data's size."""
    step_offset: int = 0
    """Global step of this stage's step 0 (the steps of the stages before it)."""
    init_from: str | None = None
    """Exported model folder (local or ``s3://``) of the previous stage; ``None`` = the initial weights."""
    run_id: str | None = None
    """MLflow run that rank 0 logs to; ``None`` = no tracking."""
    tracking_uri: str | None = None
    """MLflow tracking URI of that run."""
    gpu_hours_before: float = 0.0
    """Device-hours the run's earlier stages used (``cost/gpu_hours`` continues from it)."""
    target_cache: str | None = None
    """Frozen-target cache root (local or ``s3://``): VQ grids for cognition turns, cached VAE latents."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, the placement as ``ResolvedPlacement.to_dict`` writes it."""
        return {**asdict(self), "placement": self.placement.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSpec:
        """The spec :meth:`to_dict` wrote, its placement a :class:`ResolvedPlacement` again."""
        return cls(**{**data, "placement": ResolvedPlacement.from_dict(data["placement"])})


__all__ = ["CHECKPOINT_TAG", "EXPORT_DIR", "PROGRESS_FILE", "DivergedError", "StageSpec"]
