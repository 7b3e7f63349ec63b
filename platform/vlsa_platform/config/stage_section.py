"""The ``stages`` and ``loss`` sections: what each training stage trains, on which mixture, how long, at which
learning rates and loss weights, and where (its ``placement``).

``LossDefaults`` is the top-level ``loss``; a stage's ``StageLoss`` takes its missing fields from it (filled by
``ExperimentConfig``), and ``StageLoss.effective`` gives the weights training applies as an ``EffectiveLoss``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

from .data_section import MixtureEntry
from .errors import FieldIssue
from .vocabulary import (
    MAX_STEPS,
    TRAINABLE_PARTS,
    BatchSize,
    PartOrAll,
    Section,
    Steps,
    Workers,
    derive_grad_accum,
)


class ScheduleConfig(Section):
    """How one loss weight moves inside a stage: ``weight x factor(t)``, ``t`` = step / stage steps in [0, 1].

    ``constant``: ``start_factor``; ``linear``: from ``start_factor`` to ``end_factor``; ``cosine``: the same
    ends along half a cosine. Factors multiply the weight, so sweeping the weight scales the whole schedule.
    """

    kind: Literal["constant", "linear", "cosine"] = "constant"
    """Shape of the schedule."""
    target: Literal["rec_weight", "llm_weight"] = "rec_weight"
    """Which weight the schedule moves (the other stays constant)."""
    start_factor: NonNegativeFloat = 1.0
    """Factor at the first step of the stage (the whole stage for ``constant``)."""
    end_factor: NonNegativeFloat = 1.0
    """Factor at the last step of the stage (ignored by ``constant``)."""

    def factor(self, progress: float) -> float:
        """The multiplier at ``progress`` = step / total steps of the stage, clipped to [0, 1]."""
        t = min(max(progress, 0.0), 1.0)
        if self.kind == "constant":
            return self.start_factor
        if self.kind == "linear":
            return self.start_factor + (self.end_factor - self.start_factor) * t
        return self.end_factor + (self.start_factor - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class LossDefaults(Section):
    """Loss weights shared by every stage that does not set its own (``total = w_llm L_llm + w_rec L_rec``)."""

    llm_weight: NonNegativeFloat = 1.0
    """``w_llm``, weight of the autoregressive LLM loss (paper: 1)."""
    rec_weight: NonNegativeFloat = 1.0
    """``w_rec``, weight of the reconstruction loss L_rec (paper: 1); counts as 0 when ``model.recon`` is off."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """In-stage schedule of one of the weights."""


class StageLoss(Section):
    """A stage's loss weights; a field left out takes the top-level ``loss`` value."""

    llm_weight: NonNegativeFloat | None = None
    """``w_llm`` in this stage; ``null`` = ``loss.llm_weight``."""
    rec_weight: NonNegativeFloat | None = None
    """``w_rec`` in this stage; ``null`` = ``loss.rec_weight``."""
    schedule: ScheduleConfig | None = None
    """In-stage schedule; ``null`` = ``loss.schedule``."""

    def effective(self, recon: bool) -> EffectiveLoss:
        """The weights training applies: this stage's (filled from the top-level ``loss`` by
        :class:`ExperimentConfig`), with ``w_rec`` counted as 0 when ``recon`` is off — the one place that rule
        is written."""
        if self.llm_weight is None or self.rec_weight is None:
            raise ValueError(
                "loss weights are not resolved (take the stage's loss from a validated ExperimentConfig)"
            )
        return EffectiveLoss(
            llm_weight=float(self.llm_weight),
            rec_weight=float(self.rec_weight) if recon else 0.0,
            schedule=self.schedule or ScheduleConfig(),
        )


@dataclasses.dataclass(frozen=True)
class EffectiveLoss:
    """A stage's loss as training applies it: ``total = w_llm L_llm + w_rec L_rec`` with one weight moved by
    ``schedule``; no field is optional (:meth:`StageLoss.effective`)."""

    llm_weight: float
    """``w_llm`` before the schedule."""
    rec_weight: float
    """``w_rec`` before the schedule; 0 when the model has no reconstruction branch."""
    schedule: ScheduleConfig
    """The in-stage schedule of one of the two weights."""

    def as_applied(self) -> dict[str, Any]:
        """This loss as JSON-able data in which two losses that train alike are equal: the schedule of a zero
        weight is left out (``null``: it moves nothing), and so is ``end_factor`` under ``constant``."""
        scheduled = self.rec_weight if self.schedule.target == "rec_weight" else self.llm_weight
        schedule: dict[str, Any] | None = None
        if scheduled != 0:
            schedule = self.schedule.model_dump(mode="json")
            if self.schedule.kind == "constant":
                del schedule["end_factor"]
        return {"llm_weight": self.llm_weight, "rec_weight": self.rec_weight, "schedule": schedule}

    def weights(self, progress: float) -> tuple[float, float]:
        """``(w_llm, w_rec)`` at ``progress`` = step / stage steps in [0, 1] (clipped): the schedule multiplies
        its ``target`` weight."""
        factor = self.schedule.factor(progress)
        if self.schedule.target == "llm_weight":
            return self.llm_weight * factor, self.rec_weight
        return self.llm_weight, self.rec_weight * factor


class LearningRates(Section):
    """Peak learning rate per part group; a trainable part without its own entry uses ``default``."""

    default: PositiveFloat
    """Learning rate of every trainable part not listed here."""
    vision_encoder: PositiveFloat | None = None
    """CLIP vision tower (LLaVA-NeXT: 2e-6)."""
    sa_perceiver: PositiveFloat | None = None
    """SA-Perceiver."""
    projector: PositiveFloat | None = None
    """MLP projector (and the anyres newline embedding)."""
    llm: PositiveFloat | None = None
    """LLM (or its LoRA adapters)."""
    epigone: PositiveFloat | None = None
    """Epigone (the reconstruction condition head)."""
    denoiser: PositiveFloat | None = None
    """SD3 MMDiT denoiser."""

    def for_part(self, part: str) -> float:
        """The learning rate of ``part``."""
        value = getattr(self, part)
        return self.default if value is None else value


class Placement(Section):
    """Where and how wide a stage runs. ``null`` fields are derived by the plan (``vlsa_platform.cluster``): on an
    accelerator class, the lowest ZeRO stage (then offload) whose per-GPU memory estimate fits, then the largest
    power-of-two micro-batch that fits; with no class (CPU), ZeRO-2 and micro-batch 1. In every case
    ``grad_accum = global_batch / (micro_batch x num_workers)``, which must be whole, so the optimisation is the
    same on any class."""

    accelerator_type: str | None = None
    """Ray accelerator type of the workers (``A10G``, ``A100-80G``, ``H100``...); ``null`` = any (or CPU)."""
    use_gpu: bool | None = None
    """Workers use a GPU; ``null`` = yes exactly when ``accelerator_type`` is set."""
    num_workers: Workers = 1
    """Data-parallel workers (one GPU each)."""
    zero_stage: Literal[0, 1, 2, 3] | None = None
    """DeepSpeed ZeRO stage; ``null`` = derived from the memory the stage needs (2 on CPU)."""
    offload: Literal["none", "optimizer", "optimizer_and_params"] | None = None
    """DeepSpeed CPU offload; ``null`` = derived (``none`` unless nothing fits without it). Parameter offload
    needs ZeRO-3, optimizer offload ZeRO >= 1."""
    micro_batch: BatchSize | None = None
    """Samples per worker per forward pass; ``null`` = the largest power of two that fits (1 on CPU)."""
    grad_accum: BatchSize | None = None
    """Gradient-accumulation steps; ``null`` = derived from the other three."""
    global_batch: BatchSize
    """Samples per optimizer step over all workers."""

    @model_validator(mode="after")
    def _check(self) -> Placement:
        if self.micro_batch is not None:
            derive_grad_accum(self.global_batch, self.micro_batch, self.num_workers, self.grad_accum)
        elif self.global_batch % (self.num_workers * (self.grad_accum or 1)):
            given = f"num_workers {self.num_workers}" + (
                f" x grad_accum {self.grad_accum}" if self.grad_accum else ""
            )
            raise FieldIssue(
                ("global_batch",),
                f"global_batch {self.global_batch} is not a multiple of {given}, so no whole micro-batch gives it",
            )
        if self.zero_stage is not None:
            if self.offload == "optimizer_and_params" and self.zero_stage != 3:
                raise FieldIssue(("offload",), "parameter offload needs zero_stage 3")
            if self.offload == "optimizer" and self.zero_stage == 0:
                raise FieldIssue(("offload",), "optimizer offload needs zero_stage 1, 2 or 3")
        return self


class StageConfig(Section):
    """One training stage: what trains, on which data, how long, at which learning rates, where.
    Each stage starts from the previous stage's checkpoint."""

    trainable: list[PartOrAll] = Field(min_length=1)
    """Parts to train (``all`` = every part); parts a variant lacks are skipped (e.g. ``sa_perceiver`` in anyres)."""
    steps: Steps | None = None
    """Optimizer steps; give either this or ``epochs``."""
    epochs: Annotated[float, Field(gt=0.0, le=MAX_STEPS)] | None = None
    """Passes over the stage's mixture; give either this or ``steps``."""
    lr: LearningRates
    """Peak learning rates per part group."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup (LLaVA-NeXT: cosine)."""
    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.03
    """Fraction of the stage's steps spent in linear warmup."""
    weight_decay: NonNegativeFloat = 0.0
    """AdamW weight decay."""
    max_grad_norm: PositiveFloat | None = 1.0
    """Gradient clipping norm; ``null`` = no clipping."""
    loss: StageLoss = Field(default_factory=StageLoss)
    """Loss weights (missing fields come from the top-level ``loss``)."""
    mixture: list[MixtureEntry] = Field(min_length=1)
    """Training data: a list of entries, or the name of one of ``data.mixtures``."""
    placement: Placement
    """Workers, batch sizes and DeepSpeed settings."""
    checkpoint_every: Steps | None = None
    """Save a checkpoint every this many steps; ``null`` = at the end of the stage only."""

    @field_validator("trainable", mode="before")
    @classmethod
    def _one_word(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("trainable")
    @classmethod
    def _expand(cls, value: list[str]) -> list[str]:
        wanted = set(TRAINABLE_PARTS) if "all" in value else set(value)
        return [p for p in TRAINABLE_PARTS if p in wanted]

    @model_validator(mode="after")
    def _duration(self) -> StageConfig:
        if (self.steps is None) == (self.epochs is None):
            both = "both" if self.steps is not None else "neither"
            raise FieldIssue(("steps",), f"give exactly one of steps and epochs ({both} given)")
        return self


__all__ = [
    "EffectiveLoss",
    "LearningRates",
    "LossDefaults",
    "Placement",
    "ScheduleConfig",
    "StageConfig",
    "StageLoss",
]
