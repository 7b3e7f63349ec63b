"""The experiment file's typed schema: one tree of pydantic models whose field docstrings are its reference.

An experiment file (``experiments/*.yaml``, see ``docs/experiments.md``) describes one submission: the model
variant, the data, the ordered training stages (paper §4.1) and, optionally, a sweep (Ray Tune) or an
ablation (one child run per Table 3 variant). Every mapping forbids unknown keys, so a typo is an error that
names the key and its line, never a silently ignored setting. Values left ``null`` are derived later (the
plan fills placement defaults; the accelerator table will fill the rest).

Checks that span several fields (dataset names used by stages exist, ``recon`` needs the SA-Perceiver, a
stage trains at least one part in every variant, sweep keys name real fields...) live in the validators here,
so ``ExperimentConfig.model_validate(mapping)`` is the one entry point whoever builds a config (the loader,
an orchestration trial, a test). This module imports no torch: the names of the model parts are repeated here
and a test checks they match ``vlsa_platform.model.parts``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, FieldIssue, Loc, dotted
from .explain import explain, problem
from .keys import OPEN_MAPPING, KeyIssue, check_key, set_dotted, split_key

# ----------------------------------------------------------------------------------------------- vocabulary

#: Parts a stage can make trainable (``vlsa_platform.model.parts.TRAINABLE_PARTS``; the VAE is always frozen).
TRAINABLE_PARTS: tuple[str, ...] = (
    "vision_encoder",
    "sa_perceiver",
    "projector",
    "llm",
    "epigone",
    "denoiser",
)
Part = Literal["vision_encoder", "sa_perceiver", "projector", "llm", "epigone", "denoiser"]
PartOrAll = Literal["vision_encoder", "sa_perceiver", "projector", "llm", "epigone", "denoiser", "all"]
VisionMode = Literal["anyres", "lowres", "sa_perceiver"]

#: Metric keys the trainer reports (DESIGN.md §4); a sweep optimises one of them.
METRICS: tuple[str, ...] = (
    "loss/total",
    "loss/llm",
    "loss/rec",
    "loss/vq",
    "loss/px",
    "lr",
    "stage",
    "throughput/samples_per_s",
    "val/loss_llm",
    "val/loss_rec",
    "cost/gpu_hours",
    "val/exact_match",
    "val/vq_accuracy",
    "val/px_accuracy",
    "val/psnr",
)

#: Dataset path that stands for the synthetic data bundled with the package (``--scale tiny`` uses it).
SYNTHETIC_DATASET = "bundled:synthetic"

#: LLaMA's linear layers (``vlsa_platform.model.lora.LLAMA_LINEARS``), the default LoRA targets.
LLAMA_LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: Names of stages, datasets, mixtures and variants: they become MLflow run names and dotted-key segments.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
AcceleratorName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

_SAMPLING = re.compile(r"^(?:all|(first|random):(?:(\d+)|(\d+(?:\.\d+)?)%))$")


def parse_sampling(text: str) -> tuple[str, int | None, float | None]:
    """``"all"`` -> ``("all", None, None)``; ``"first:1000"`` -> ``("first", 1000, None)``;
    ``"random:10%"`` -> ``("random", None, 10.0)``. Raises ``ValueError`` for anything else."""
    match = _SAMPLING.match(text.strip())
    if not match:
        raise ValueError(
            f"bad sampling {text!r}: expected all, first:N, random:N, first:N% or random:N% (as LLaVA-NeXT)"
        )
    mode, count, percent = match.groups()
    if mode is None:
        return "all", None, None
    if count is not None:
        if int(count) < 1:
            raise ValueError(f"bad sampling {text!r}: N must be at least 1")
        return mode, int(count), None
    if not 0.0 < float(percent) <= 100.0:
        raise ValueError(f"bad sampling {text!r}: a percentage must be in (0, 100]")
    return mode, None, float(percent)


def _checked_sampling(text: str) -> str:
    parse_sampling(text)
    return text.strip()


#: A mixture entry's or validation set's ``sampling`` rule, checked and stripped.
Sampling = Annotated[str, AfterValidator(_checked_sampling)]


def sampled_size(sampling: str, available: int) -> int:
    """How many of ``available`` samples a sampling rule keeps."""
    _, count, percent = parse_sampling(sampling)
    if count is not None:
        return min(count, available)
    if percent is not None:
        return int(available * percent / 100.0)
    return available


def parts_present(vision: str, recon: bool) -> tuple[str, ...]:
    """The trainable parts a variant has (``sa_perceiver`` only in VLSA mode, ``epigone``/``denoiser`` with recon)."""
    present = {"vision_encoder", "projector", "llm"}
    if vision == "sa_perceiver":
        present.add("sa_perceiver")
    if recon:
        present |= {"epigone", "denoiser"}
    return tuple(p for p in TRAINABLE_PARTS if p in present)


def derive_grad_accum(global_batch: int, micro_batch: int, num_workers: int, grad_accum: int | None) -> int:
    """``global_batch / (micro_batch * num_workers)``, which must be a whole number (and equal ``grad_accum``
    when that is given). Raises :class:`FieldIssue` blaming ``global_batch`` or ``grad_accum``."""
    per_step = micro_batch * num_workers
    if global_batch % per_step:
        raise FieldIssue(
            ("global_batch",),
            f"global_batch {global_batch} is not a multiple of micro_batch {micro_batch} x num_workers "
            f"{num_workers} = {per_step}, so no whole number of gradient-accumulation steps gives it",
        )
    derived = global_batch // per_step
    if grad_accum is not None and grad_accum != derived:
        raise FieldIssue(
            ("grad_accum",),
            f"grad_accum {grad_accum} disagrees with global_batch {global_batch} / (micro_batch {micro_batch} "
            f"x num_workers {num_workers}) = {derived}; give two of the three, or make them agree",
        )
    return derived


class _Model(BaseModel):
    """Base of every section: unknown keys are errors; attribute docstrings become field descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------------- model


class ModelWeights(_Model):
    """Where each sub-model's pretrained weights come from: a Hugging Face hub id, a local directory or an
    ``s3://`` prefix. ``null`` = the preset's default (``model/presets``: LLaMA-3-8B-Instruct, CLIP-ViT-L/14-336,
    SD3-medium, ITHQ VQ-VAE); ignored by the ``tiny`` preset, which starts from random weights."""

    vision_encoder: str | None = None
    """CLIP vision tower weights."""
    llm: str | None = None
    """LLaMA weights (and tokenizer)."""
    vae: str | None = None
    """SD3 VAE weights (frozen)."""
    denoiser: str | None = None
    """SD3 MMDiT weights (the reconstruction branch's denoiser)."""
    vq: str | None = None
    """VQ-VAE weights whose codebook indices are the cognition targets (frozen)."""


class LoraConfig(_Model):
    """LoRA adapters on the LLM (through peft), used in stages where ``llm`` is trainable."""

    enabled: bool = False
    """Train LoRA adapters instead of the full LLM (the paper trains it fully in stage 3)."""
    r: PositiveInt = 16
    """Adapter rank."""
    alpha: PositiveInt = 32
    """``lora_alpha``; the update is scaled by ``alpha / r``."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEARS), min_length=1)
    """Names of the LLM's linear layers that get adapters."""


class ModelConfig(_Model):
    """The model variant: preset size, the three ablation switches of the paper's Table 3, and geometry."""

    preset: Literal["paper", "tiny"] = "paper"
    """``paper``: LLaMA-3-8B-Instruct + CLIP-ViT-L/14-336 + SD3-medium; ``tiny``: the same classes, 2 layers wide 32."""
    vision: VisionMode = "sa_perceiver"
    """Visual encoding: ``sa_perceiver`` (VLSA, 576 tokens), ``anyres`` (LLaVA-NeXT, up to 2928) or ``lowres``
    (the 336 px snapshot only, 576)."""
    recon: bool = True
    """Reconstructive training (Epigone + SD3 MMDiT + frozen VAE, L_rec); needs ``vision: sa_perceiver``."""
    cognition: bool = True
    """Cognition-alignment turns (VQ codebook indices and pixel values) inserted into the training conversations."""
    max_grid: tuple[PositiveInt, PositiveInt] = (2, 2)
    """``[rows, cols]``: the most hi-res tiles an image is cut into (larger images are resized to fit)."""
    recon_resolution: PositiveInt | None = None
    """Side in pixels of the image the VAE encodes for L_rec; a multiple of 16 (the VAE downsamples by 8 and the
    MMDiT patchifies by 2). ``null`` = the preset's default (512 for ``paper``)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA on the LLM instead of full fine-tuning."""
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    """Attention kernel of the transformers sub-models; ``auto`` = flash-attn when installed on a GPU, else SDPA."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (LLM and vision tower) to save memory."""
    weights: ModelWeights = Field(default_factory=ModelWeights)
    """Weight sources per sub-model."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.recon_resolution is not None and self.recon_resolution % 16:
            raise FieldIssue(
                ("recon_resolution",),
                f"{self.recon_resolution} is not a multiple of 16 (the VAE downsamples by 8, the MMDiT "
                "patchifies its latent by 2)",
            )
        if self.recon and self.vision != "sa_perceiver":
            raise FieldIssue(("recon",), recon_needs_sa(self.vision), related=(("vision",),))
        return self


def recon_needs_sa(vision: str) -> str:
    return (
        f"recon: true needs vision: sa_perceiver, not {vision} — the pooled embedding P that conditions the "
        "denoiser is the SA-Perceiver's global query (paper Eq. 1-4); use recon: false with this vision mode"
    )


# ----------------------------------------------------------------------------------------------------- data


class DatasetConfig(_Model):
    """One dataset in LLaVA's conversation format (a JSON list of ``{id, image, conversations}`` records)."""

    path: Annotated[str, StringConstraints(min_length=1)]
    """The JSON file: a local path (relative ones resolve against ``data.root``, else the working directory),
    ``s3://bucket/key``, or ``bundled:synthetic`` for the package's synthetic data."""
    image_root: str | None = None
    """Directory (local or ``s3://``) that the records' ``image`` paths are relative to; ``null`` = beside ``path``."""
    split: str | None = None
    """Name of a split inside the source, for sources that hold several; ``null`` = the whole file."""
    num_samples: PositiveInt | None = None
    """Number of records, if known: lets the plan turn ``epochs`` into steps without reading the data."""

    @field_validator("path", "image_root")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is None or value == SYNTHETIC_DATASET:
            return value
        if value.startswith("bundled:"):
            raise ValueError(f"unknown bundled dataset {value!r}; the only one is {SYNTHETIC_DATASET!r}")
        if "://" in value and not value.startswith("s3://"):
            raise ValueError(f"{value!r}: only local paths and s3:// locations are supported")
        return value


class MixtureEntry(_Model):
    """One dataset's share of a stage's training data (as LLaVA-NeXT's data YAML)."""

    dataset: Name
    """Name of an entry of ``data.datasets``."""
    sampling: Sampling = "all"
    """Which records: ``all``, ``first:N``, ``random:N``, ``first:N%`` or ``random:N%`` (random = seeded by ``seed``)."""
    weight: PositiveFloat = 1.0
    """Multiplier on this entry's share of an epoch: it contributes ``weight x (sampled size)`` examples per epoch
    (2 = each record twice, 0.5 = a random half each epoch). 1 everywhere = plain concatenation."""


class CognitionConfig(_Model):
    """Cognition-alignment turns (paper §3.2), added to image samples when ``model.cognition`` is on."""

    p_vq: Fraction = 0.5
    """Probability that an image sample gets a VQ question (codebook indices of a window of its latent grid)."""
    p_px: Fraction = 0.5
    """Probability that an image sample gets a pixel question (mean RGB of a grid of cells in a quarter box)."""
    vq_window: PositiveInt = 4
    """``k``: the VQ question asks for a random ``k x k`` window of the VQ latent grid."""
    px_grid: PositiveInt = 2
    """``g``: the pixel answer lists the mean RGB of ``g x g`` cells of the box."""
    vq_format: Literal["text", "special"] = "text"
    """How indices are written: ``text`` (decimal numbers) or ``special`` (added tokens ``<vq_0>``..., the LLM's
    embeddings resized by the codebook size)."""


class ValidationSet(_Model):
    """Data for the validation metrics: the losses ``val/loss_llm`` and ``val/loss_rec``, greedy-decoding
    accuracy ``val/exact_match``, ``val/vq_accuracy``, ``val/px_accuracy``, and ``val/psnr``."""

    dataset: Name
    """Name of an entry of ``data.datasets``."""
    sampling: Sampling = "random:1000"
    """Which records to validate on (same rules as a mixture's ``sampling``)."""
    holdout: bool = True
    """Keep these records out of every training mixture that uses the same dataset."""
    every_steps: PositiveInt | None = None
    """Validate every this many optimizer steps; ``null`` = at the end of each stage only."""
    generate_samples: Annotated[int, Field(ge=0)] = 8
    """Validation samples per pass (over all ranks, split evenly, rounded up; the first of each rank's shard)
    whose answers are decoded greedily for ``val/exact_match``, ``val/vq_accuracy`` and ``val/px_accuracy``: each
    one's first complete text answer and its first VQ and pixel answers. 0 = no decoding (those metrics NaN)."""
    generate_extra_tokens: Annotated[int, Field(ge=0)] = 4
    """A decoded answer may run this many tokens past the reference's length (and its end-of-turn token)
    before decoding stops; longer answers are cut there (and cannot match)."""
    generate_batch: PositiveInt = 8
    """Answers of one kind decoded together in one ``generate`` call on a rank (prompts left-padded): fewer calls
    (under ZeRO-3 each decoding step all-gathers every layer once, whatever the batch) for more memory."""
    psnr_images: Annotated[int, Field(ge=0)] | None = 16
    """Validation images per pass (over all ranks, split evenly; the first of each rank's shard) whose
    reconstruction the frozen VAE decodes for ``val/psnr``; ``null`` = every image, 0 = none (NaN)."""


class DataConfig(_Model):
    """Datasets, named mixtures, cognition-turn settings and tokenization limits."""

    root: str | None = None
    """Prefix (local directory or ``s3://bucket/prefix``) for relative dataset paths and image roots; ``null`` =
    the working directory. Moving from a laptop to S3 means changing only this."""
    datasets: dict[Name, DatasetConfig] = Field(min_length=1)
    """Named datasets; stages, mixtures and ``validation`` refer to them by name."""
    mixtures: dict[Name, list[MixtureEntry]] = Field(default_factory=dict)
    """Named mixtures a stage can use by name (``mixture: NAME``), e.g. to sweep over data choices."""
    cognition: CognitionConfig = Field(default_factory=CognitionConfig)
    """Cognition-alignment turn settings."""
    max_length: Annotated[int, Field(ge=64)] = 4096
    """Longest tokenized sample (visual tokens included); longer ones are truncated."""
    on_bad_sample: Literal["skip", "fail"] = "skip"
    """What a missing or unreadable image / malformed record does: ``skip`` it (counted) or ``fail`` the run."""
    loader_workers: Annotated[int, Field(ge=0)] = 2
    """Data-loading processes per training worker (PyTorch ``DataLoader``); 0 = load in the training process."""
    validation: ValidationSet | None = None
    """Validation data; ``null`` = no validation losses (a sweep on a ``val/`` metric needs it)."""


# --------------------------------------------------------------------------------------------------- stages


class ScheduleConfig(_Model):
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


class LossDefaults(_Model):
    """Loss weights shared by every stage that does not set its own (``total = w_llm L_llm + w_rec L_rec``)."""

    llm_weight: NonNegativeFloat = 1.0
    """``w_llm``, weight of the autoregressive LLM loss (paper: 1)."""
    rec_weight: NonNegativeFloat = 1.0
    """``w_rec``, weight of the reconstruction loss L_rec (paper: 1); counts as 0 when ``model.recon`` is off."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """In-stage schedule of one of the weights."""


class StageLoss(_Model):
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

    def weights(self, progress: float) -> tuple[float, float]:
        """``(w_llm, w_rec)`` at ``progress`` = step / stage steps in [0, 1] (clipped): the schedule multiplies
        its ``target`` weight."""
        factor = self.schedule.factor(progress)
        if self.schedule.target == "llm_weight":
            return self.llm_weight * factor, self.rec_weight
        return self.llm_weight, self.rec_weight * factor


class LearningRates(_Model):
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


class Placement(_Model):
    """Where and how wide a stage runs. ``null`` fields are derived by the plan (``vlsa_platform.cluster``): on an
    accelerator class, the lowest ZeRO stage (then offload) whose per-GPU memory estimate fits, then the largest
    power-of-two micro-batch that fits; with no class (CPU), ZeRO-2 and micro-batch 1. In every case
    ``grad_accum = global_batch / (micro_batch x num_workers)``, which must be whole, so the optimisation is the
    same on any class."""

    accelerator_type: str | None = None
    """Ray accelerator type of the workers (``A10G``, ``A100-80G``, ``H100``...); ``null`` = any (or CPU)."""
    use_gpu: bool | None = None
    """Workers use a GPU; ``null`` = yes exactly when ``accelerator_type`` is set."""
    num_workers: PositiveInt = 1
    """Data-parallel workers (one GPU each)."""
    zero_stage: Literal[0, 1, 2, 3] | None = None
    """DeepSpeed ZeRO stage; ``null`` = derived from the memory the stage needs (2 on CPU)."""
    offload: Literal["none", "optimizer", "optimizer_and_params"] | None = None
    """DeepSpeed CPU offload; ``null`` = derived (``none`` unless nothing fits without it). Parameter offload
    needs ZeRO-3, optimizer offload ZeRO >= 1."""
    micro_batch: PositiveInt | None = None
    """Samples per worker per forward pass; ``null`` = the largest power of two that fits (1 on CPU)."""
    grad_accum: PositiveInt | None = None
    """Gradient-accumulation steps; ``null`` = derived from the other three."""
    global_batch: PositiveInt
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

    def resolved(self) -> dict[str, Any]:
        """Every field filled in with the derived defaults (the plan's ``placement``)."""
        micro = self.micro_batch or 1
        offload = self.offload or "none"
        return {
            "accelerator_type": self.accelerator_type,
            "use_gpu": self.use_gpu if self.use_gpu is not None else self.accelerator_type is not None,
            "num_workers": self.num_workers,
            "zero_stage": self.zero_stage
            if self.zero_stage is not None
            else (3 if offload == "optimizer_and_params" else 2),
            "offload": offload,
            "micro_batch": micro,
            "grad_accum": derive_grad_accum(self.global_batch, micro, self.num_workers, self.grad_accum),
            "global_batch": self.global_batch,
        }


class StageConfig(_Model):
    """One training stage: what trains, on which data, how long, at which learning rates, where.
    Each stage starts from the previous stage's checkpoint."""

    trainable: list[PartOrAll] = Field(min_length=1)
    """Parts to train (``all`` = every part); parts a variant lacks are skipped (e.g. ``sa_perceiver`` in anyres)."""
    steps: PositiveInt | None = None
    """Optimizer steps; give either this or ``epochs``."""
    epochs: PositiveFloat | None = None
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
    checkpoint_every: PositiveInt | None = None
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


# ---------------------------------------------------------------------------------------- sweep, ablation


class Domain(_Model):
    """Values a sweep key takes: exactly one of ``grid``, ``choice``, ``uniform``, ``loguniform``."""

    grid: list[Any] | None = Field(default=None, min_length=1)
    """Every value, each combined with every other grid key's values (Ray Tune ``grid_search``)."""
    choice: list[Any] | None = Field(default=None, min_length=1)
    """One value drawn at random per trial."""
    uniform: tuple[float, float] | None = None
    """``[low, high]``: a float drawn uniformly."""
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    """``[low, high]``: a float drawn uniformly in log space (both positive)."""

    @model_validator(mode="after")
    def _one(self) -> Domain:
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given or 'none'})")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise FieldIssue((self.kind,), f"low {bounds[0]} must be below high {bounds[1]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None)

    def probe_values(self) -> list[Any]:
        """Up to two distinct values from the domain, used to check that the key is real and has an effect."""
        if self.grid is not None or self.choice is not None:
            values: list[Any] = []
            for v in self.grid if self.grid is not None else self.choice:  # type: ignore[union-attr]
                if v not in values:
                    values.append(v)
            return values[:2]
        low, high = self.uniform or self.loguniform  # type: ignore[misc]
        return [low, high]

    def describe(self) -> dict[str, Any]:
        """JSON-able ``{kind: values}``."""
        return {self.kind: list(getattr(self, self.kind))}


class SchedulerConfig(_Model):
    """Trial scheduler. Its time unit is one report of the trial (``training_iteration``)."""

    kind: Literal["fifo", "asha"] = "fifo"
    """``fifo``: run every trial to the end; ``asha``: stop the worse trials early (Ray Tune ASHA)."""
    grace_period: PositiveInt = 1
    """ASHA: reports a trial makes before it may be stopped."""
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0
    """ASHA: 1 / fraction of trials promoted at each rung."""
    max_t: PositiveInt | None = None
    """ASHA: where its rungs end (none at or past it); ``null`` = one report less than a trial makes (derived
    from the stages' lengths: a rung at the last report would stop a trial whose work is done)."""
    brackets: PositiveInt = 1
    """ASHA: number of brackets."""


class SweepConfig(_Model):
    """A Ray Tune search over dotted config keys; each trial is one child run through all stages."""

    search_space: dict[str, Domain] = Field(min_length=1)
    """Dotted key of the resolved config (e.g. ``loss.rec_weight``, ``stages.stage2.loss.schedule.kind``) -> domain."""
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    """``grid``: every combination (all domains must be ``grid``); ``random``: ``num_samples`` random draws;
    ``optuna``: ``num_samples`` trials proposed by Optuna's TPE (no ``grid`` domains)."""
    num_samples: PositiveInt = 1
    """``grid``: repeats of each grid point; otherwise the number of trials."""
    metric: str = "val/loss_llm"
    """Metric key the search and the scheduler compare."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher ``metric`` is better."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """Early stopping of trials."""
    max_concurrent_trials: PositiveInt | None = None
    """Trials running at once; ``null`` = as many as the cluster fits."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; the trainer reports {', '.join(METRICS)}")
        return value

    @model_validator(mode="after")
    def _domains(self) -> SweepConfig:
        for key, domain in self.search_space.items():
            if self.algorithm == "grid" and domain.kind != "grid":
                raise FieldIssue(
                    ("search_space", key),
                    f"algorithm: grid enumerates values; use grid: [...] here, or algorithm: random for {domain.kind}",
                )
            if self.algorithm != "grid" and domain.kind == "grid":
                raise FieldIssue(
                    ("search_space", key),
                    f"algorithm: {self.algorithm} draws values; use choice: [...] instead of grid",
                )
        return self

    @property
    def num_trials(self) -> int:
        """Trials the sweep runs: the grid's size x ``num_samples`` for ``grid``, else ``num_samples``."""
        if self.algorithm == "grid":
            return math.prod(len(d.grid or ()) for d in self.search_space.values()) * self.num_samples
        return self.num_samples


class VariantConfig(_Model):
    """One ablation variant: overrides of the model's switches (``null`` = as ``model`` says)."""

    label: str | None = None
    """Display name, e.g. ``(1) anyres`` for Table 3's rows; ``null`` = the variant's key."""
    vision: VisionMode | None = None
    """Overrides ``model.vision``."""
    recon: bool | None = None
    """Overrides ``model.recon``."""
    cognition: bool | None = None
    """Overrides ``model.cognition``."""

    def switches(self) -> dict[str, Any]:
        """The overridden switches only."""
        return {k: getattr(self, k) for k in ("vision", "recon", "cognition") if getattr(self, k) is not None}


class AblationConfig(_Model):
    """One child run per variant, all with the same stages and data."""

    variants: dict[Name, VariantConfig] = Field(min_length=1)
    """Variant key -> switches."""


# -------------------------------------------------------------------------------------- cluster, tracking


class AcceleratorSpec(_Model):
    """An accelerator class in the planning table (overrides or extends the built-in entry of that name)."""

    memory_gb: PositiveFloat | None = None
    """Memory per device in GiB."""
    bf16_tflops: PositiveFloat | None = None
    """Dense bf16 peak in TFLOP/s (for MFU and time estimates)."""
    hourly_usd: NonNegativeFloat | None = None
    """Price per device-hour (for ``cost/gpu_hours`` and estimates)."""


class ClusterConfig(_Model):
    """What the planner knows about the cluster."""

    accelerators: dict[AcceleratorName, AcceleratorSpec] = Field(
        default_factory=dict, json_schema_extra={OPEN_MAPPING: True}
    )
    """Accelerator-table overrides by Ray accelerator type (``A10G``, ``A100-80G``, ``H100``...)."""


class TrackingConfig(_Model):
    """MLflow tracking."""

    tracking_uri: str | None = None
    """MLflow tracking URI; ``null`` = ``$MLFLOW_TRACKING_URI``, else a local SQLite store in the work directory."""
    log_every: PositiveInt = 10
    """Log training metrics every this many optimizer steps."""
    recon_every: PositiveInt | None = 500
    """Log a reconstruction panel (ground truth beside the decoded denoised latent, PNG) every this many
    optimizer steps, at the first micro-batch with images from then on; ``null`` = never. Needs ``model.recon``."""
    recon_samples: PositiveInt = 2
    """Images per reconstruction panel (at most the micro-batch's)."""


class StorageConfig(_Model):
    """Where checkpoints and run artifacts go."""

    path: str | None = None
    """A local directory or ``s3://bucket/prefix``; ``null`` = a folder under the local work directory."""
    keep_checkpoints: PositiveInt = 2
    """Checkpoints kept besides every stage's final one (the newest; Ray Train's ``CheckpointConfig``): the
    final checkpoint of each stage stays, as the next stage starts from its export."""
    max_failures: Annotated[int, Field(ge=-1)] = 3
    """Worker failures a stage survives by restarting its workers from the latest checkpoint (Ray Train's
    ``FailureConfig``); ``-1`` = no limit, ``0`` = the first failure ends the run."""


# --------------------------------------------------------------------------------------------------- root


class ExperimentConfig(_Model):
    """A whole experiment file, resolved (``extends`` merged, ``--scale``/``--set`` applied)."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """MLflow experiment name."""
    description: str = ""
    """Free text (logged with the parent run)."""
    seed: int = 0
    """Base random seed (data sampling, cognition turns, initialisation of new modules)."""
    extends: str | None = Field(default=None, exclude=True)
    """Path of another experiment file (relative to this one) that this file is laid over: mappings merge
    recursively, lists and scalars replace. Applied by the loader; kept only as a record (absolute path)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The model variant."""
    data: DataConfig
    """Datasets and data processing."""
    loss: LossDefaults = Field(default_factory=LossDefaults)
    """Loss weights shared by the stages (a sweep can search ``loss.rec_weight`` for all stages at once)."""
    stages: dict[Name, StageConfig] = Field(min_length=1)
    """Training stages, run in the order written (paper: stage1, stage2, stage3)."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Planning information about the cluster."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow settings."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """Checkpoint and artifact storage."""
    sweep: SweepConfig | None = None
    """A hyper-parameter search (at most one of ``sweep`` and ``ablation``)."""
    ablation: AblationConfig | None = None
    """Ablation variants (at most one of ``sweep`` and ``ablation``)."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    # -- validation ---------------------------------------------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: Any) -> ExperimentConfig:
        if isinstance(data, ExperimentConfig):
            return data
        raw = copy.deepcopy(data) if isinstance(data, dict) else {}
        config = handler(_named_mixtures(data))
        config._raw = raw
        if config.sweep is not None:
            _check_sweep_keys(raw, config)
        return config

    @model_validator(mode="after")
    def _cross_check(self) -> ExperimentConfig:
        names = set(self.data.datasets)

        def need(loc: Loc, name: str) -> None:
            if name not in names:
                raise FieldIssue(
                    loc, f"no dataset named {name!r} in data.datasets (has: {', '.join(sorted(names))})"
                )

        for mix_name, entries in self.data.mixtures.items():
            for i, entry in enumerate(entries):
                need(("data", "mixtures", mix_name, i, "dataset"), entry.dataset)
        if self.data.validation is not None:
            need(("data", "validation", "dataset"), self.data.validation.dataset)
        for stage_name, stage in self.stages.items():
            for i, entry in enumerate(stage.mixture):
                need(("stages", stage_name, "mixture", i, "dataset"), entry.dataset)
            loss = stage.loss
            loss.llm_weight = self.loss.llm_weight if loss.llm_weight is None else loss.llm_weight
            loss.rec_weight = self.loss.rec_weight if loss.rec_weight is None else loss.rec_weight
            loss.schedule = self.loss.schedule.model_copy() if loss.schedule is None else loss.schedule

        if self.sweep is not None and self.ablation is not None:
            raise FieldIssue(("ablation",), "a file has at most one of sweep and ablation")
        if self.sweep is not None and self.sweep.metric.startswith("val/") and self.data.validation is None:
            raise FieldIssue(
                ("sweep", "metric"), f"{self.sweep.metric} needs validation data (data.validation)"
            )

        for where, switches in self._variant_switches():
            vision, recon = switches["vision"], switches["recon"]
            if recon and vision != "sa_perceiver":
                raise FieldIssue((*where, "recon"), recon_needs_sa(vision), related=((*where, "vision"),))
            present = parts_present(vision, recon)
            label = f" in variant {where[-1]}" if where else ""
            for stage_name, stage in self.stages.items():
                if not any(p in present for p in stage.trainable):
                    raise FieldIssue(
                        ("stages", stage_name, "trainable"),
                        f"trains nothing{label}: {', '.join(stage.trainable)} are absent with vision "
                        f"{vision} and recon {'on' if recon else 'off'}",
                    )
                loss = stage.loss.effective(recon)
                if loss.llm_weight == 0 and loss.rec_weight == 0:
                    raise FieldIssue(("stages", stage_name, "loss"), f"both loss weights are 0{label}")
        return self

    def _variant_switches(self) -> list[tuple[Loc, dict[str, Any]]]:
        base = {"vision": self.model.vision, "recon": self.model.recon, "cognition": self.model.cognition}
        if self.ablation is None:
            return [((), base)]
        return [
            (("ablation", "variants", name), {**base, **variant.switches()})
            for name, variant in self.ablation.variants.items()
        ]

    # -- use ----------------------------------------------------------------------------------------------

    @property
    def kind(self) -> Literal["single", "ablation", "sweep"]:
        """``sweep``, ``ablation`` or ``single`` (one run)."""
        if self.sweep is not None:
            return "sweep"
        if self.ablation is not None:
            return "ablation"
        return "single"

    @property
    def raw(self) -> dict[str, Any]:
        """A copy of the mapping this config was validated from (before defaults and derived values)."""
        return copy.deepcopy(self._raw or self.model_dump(mode="json"))

    def with_values(self, values: dict[str, Any], *, origin: str = "override") -> ExperimentConfig:
        """A new config with dotted keys set (a sweep trial's sample, an ablation variant's switches).

        Applied to :attr:`raw`, so a shared key (``loss.rec_weight``) still reaches every stage that does not
        set its own. Raises :class:`ConfigError` naming ``origin`` for an unknown key or a bad value.
        """
        raw = self.raw
        for key, value in values.items():
            try:
                loc = split_key(key)
                check_key(ExperimentConfig, raw, loc)
            except KeyIssue as issue:
                raise ConfigError(f"{origin}: {issue.message}") from None
            set_dotted(raw, loc, value)
        try:
            return ExperimentConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(explain(err, ExperimentConfig, lambda _loc: origin)) from None

    def variant(self, name: str) -> ExperimentConfig:
        """The single-run config of ablation variant ``name`` (its switches applied, ``ablation`` removed)."""
        if self.ablation is None or name not in self.ablation.variants:
            raise KeyError(name)
        switches = {f"model.{k}": v for k, v in self.ablation.variants[name].switches().items()}
        return self.with_values({**switches, "ablation": None}, origin=f"ablation variant {name}")

    def trial(self, values: dict[str, Any], trial_id: str = "trial") -> ExperimentConfig:
        """The single-run config of one sweep trial: ``values`` (dotted key -> sampled value) applied, ``sweep``
        removed."""
        if self.sweep is None:
            raise ValueError("not a sweep")
        return self.with_values({**values, "sweep": None}, origin=trial_id)

    def resolved(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (what is logged as ``config/resolved.yaml``)."""
        return self.model_dump(mode="json")

    def stage_loss(self, stage: str) -> EffectiveLoss:
        """Stage ``stage``'s loss as training applies it (``w_rec`` 0 without ``model.recon``)."""
        return self.stages[stage].loss.effective(self.model.recon)


def _named_mixtures(data: Any) -> Any:
    """Replace ``stages.X.mixture: NAME`` with a copy of ``data.mixtures.NAME``."""
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return data
    mixtures = data.get("data", {}).get("mixtures") if isinstance(data.get("data"), dict) else None
    mixtures = mixtures if isinstance(mixtures, dict) else {}
    stages = {}
    for stage_name, stage in data["stages"].items():
        if isinstance(stage, dict) and isinstance(stage.get("mixture"), str):
            chosen = stage["mixture"]
            if chosen not in mixtures:
                known = ", ".join(mixtures) or "none defined"
                raise FieldIssue(
                    ("stages", stage_name, "mixture"),
                    f"no mixture named {chosen!r} in data.mixtures ({known})",
                )
            stage = {**stage, "mixture": copy.deepcopy(mixtures[chosen])}
        stages[stage_name] = stage
    return {**data, "stages": stages}


def _check_sweep_keys(raw: dict[str, Any], config: ExperimentConfig) -> None:
    """Every search-space key must name a field of the config, accept the domain's values and change a run."""
    assert config.sweep is not None
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for key, domain in config.sweep.search_space.items():
        where: Loc = ("sweep", "search_space", key)
        try:
            loc = split_key(key)
            check_key(ExperimentConfig, base, loc)
        except KeyIssue as issue:
            raise FieldIssue(where, issue.message) from None
        outcomes = []
        for value in domain.probe_values():
            trial = copy.deepcopy(base)
            set_dotted(trial, loc, value)
            try:
                resolved = ExperimentConfig.model_validate(trial).model_dump(mode="json", exclude={"loss"})
            except ValidationError as err:
                bad_loc, message = problem(err.errors()[0], ExperimentConfig)
                raise FieldIssue(
                    where, f"{key} = {value!r} gives a bad config: {dotted(bad_loc)}: {message}"
                ) from None
            outcomes.append(resolved)
        if len(outcomes) == 2 and outcomes[0] == outcomes[1]:
            raise FieldIssue(
                where,
                f"{key} has no effect on any run (e.g. every stage sets its own value); search the per-stage keys",
            )


__all__ = [
    "LLAMA_LINEARS",
    "METRICS",
    "SYNTHETIC_DATASET",
    "TRAINABLE_PARTS",
    "AblationConfig",
    "CognitionConfig",
    "DataConfig",
    "DatasetConfig",
    "Domain",
    "EffectiveLoss",
    "ExperimentConfig",
    "LearningRates",
    "LoraConfig",
    "LossDefaults",
    "MixtureEntry",
    "ModelConfig",
    "Placement",
    "ScheduleConfig",
    "StageConfig",
    "StageLoss",
    "SweepConfig",
    "VariantConfig",
    "derive_grad_accum",
    "parse_sampling",
    "parts_present",
    "sampled_size",
]
