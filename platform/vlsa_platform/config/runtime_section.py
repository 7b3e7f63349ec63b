"""The ``cluster``, ``tracking``, ``storage`` and ``training`` sections: what the planner knows of the
accelerators, the MLflow settings, where checkpoints and artifacts go, and what a diverging run does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, field_validator

from .keys import OPEN_MAPPING
from .vocabulary import MAX_COUNT, AcceleratorName, Count, Section, Steps


class AcceleratorSpec(Section):
    """An accelerator class in the planning table (overrides or extends the built-in entry of that name)."""

    memory_gb: PositiveFloat | None = None
    """Memory per device in GiB."""
    bf16_tflops: PositiveFloat | None = None
    """Dense bf16 peak in TFLOP/s (for MFU and time estimates)."""
    hourly_usd: NonNegativeFloat | None = None
    """Price per device-hour (for ``cost/gpu_hours`` and estimates)."""
    mfu: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Model FLOPs utilisation the plan's cost estimate assumes on this class (model FLOPs per second over
    ``bf16_tflops``; a measured figure, e.g. from the GPU benchmark); ``null`` = ``cluster.cost.DEFAULT_MFU``
    (0.40)."""


class ClusterConfig(Section):
    """What the planner knows about the cluster."""

    accelerators: dict[AcceleratorName, AcceleratorSpec] = Field(
        default_factory=dict, json_schema_extra={OPEN_MAPPING: True}
    )
    """Accelerator-table overrides by Ray accelerator type (``A10G``, ``A100-80G``, ``H100``...)."""


class TrackingConfig(Section):
    """MLflow tracking."""

    tracking_uri: str | None = None
    """MLflow tracking URI; ``null`` = ``$MLFLOW_TRACKING_URI``, else a local SQLite store in the work directory."""
    log_every: Steps = 10
    """Log training metrics every this many optimizer steps."""
    recon_every: Steps | None = 500
    """Log a reconstruction panel (ground truth beside the decoded denoised latent, PNG) every this many
    optimizer steps, at the first micro-batch with images from then on; ``null`` = never. Needs ``model.recon``."""
    recon_samples: Count = 2
    """Images per reconstruction panel (at most the micro-batch's)."""


class StorageConfig(Section):
    """Where checkpoints and run artifacts go."""

    path: str | None = None
    """A local directory or ``s3://bucket/prefix``; ``null`` = a folder under the local work directory."""
    keep_checkpoints: Count = 2
    """Checkpoints kept besides every stage's final one (the newest; Ray Train's ``CheckpointConfig``): the
    final checkpoint of each stage stays, as the next stage starts from its export."""
    max_failures: Annotated[int, Field(ge=-1, le=MAX_COUNT)] = 3
    """Worker failures a stage survives by restarting its workers from the latest checkpoint (Ray Train's
    ``FailureConfig``); ``-1`` = no limit, ``0`` = the first failure ends the run."""
    share_prefixes: bool = True
    """Runs of the experiment whose first stages have the same inputs (model, seed, data, each stage's settings,
    steps, placement, code) train those stages once: the first run to reach one trains and publishes it under
    ``<path>/<experiment>/prefixes/``, the others wait for it and start from its export (a sweep whose keys act
    from a later stage saves the earlier ones). Never a run's last stage, nor one where an ASHA sweep's rungs
    count. ``false`` = every run trains every stage."""


NONFINITE_ACTIONS_NOT_BUILT = {
    "rollback": "rolling back to the last good checkpoint with a lower learning rate is not built yet; "
    "use action: stop (the run fails with the reason, its last good checkpoint intact) and re-launch with a "
    "lower learning rate",
}
"""``training.on_nonfinite.action`` values the issue names but the platform does not implement (refused)."""


class NonFiniteConfig(Section):
    """What a run does when its loss keeps being non-finite (NaN or infinite): each such micro-batch is skipped
    on every rank (no backward, no step, counted as ``train/skipped_nonfinite``); this many in a row end it."""

    skip_limit: Count = 20
    """Consecutive micro-batches with a non-finite loss after which the stage gives up (``action``); a finite
    micro-batch resets the count, so isolated bad batches are only skipped."""
    action: Literal["stop"] = "stop"
    """``stop``: the stage fails with the reason (its stage, step, count and last good checkpoint: one a finite
    loss followed; MLflow tag ``vlsa.failure``), the run ends ``FAILED``, and nothing is written on the way out.
    (``rollback`` is not built and is refused.)"""

    @field_validator("action", mode="before")
    @classmethod
    def _not_built(cls, value: Any) -> Any:
        if isinstance(value, str) and value in NONFINITE_ACTIONS_NOT_BUILT:
            raise ValueError(f"{value!r} is not supported: {NONFINITE_ACTIONS_NOT_BUILT[value]}")
        return value


class TrainingConfig(Section):
    """Run-wide training behaviour (the same for every stage)."""

    on_nonfinite: NonFiniteConfig = Field(default_factory=NonFiniteConfig)
    """The divergence policy: how many non-finite micro-batches in a row a stage skips, and what then."""


__all__ = [
    "NONFINITE_ACTIONS_NOT_BUILT",
    "AcceleratorSpec",
    "ClusterConfig",
    "NonFiniteConfig",
    "StorageConfig",
    "TrackingConfig",
    "TrainingConfig",
]
