"""The words every section of the experiment schema shares, and the base class of its sections.

Names of the model parts, vision modes, presets, attention kernels and metrics, the bundled-dataset path, the
default LoRA targets, the constrained string types (``Name``, ``Sampling``...) and the small rules several
sections apply (sampling strings, which parts a variant has, ``grad_accum``). Imports neither torch nor any
other section: the model side (``vlsa_platform.model``) imports its part names, vision modes, presets,
attention kernels and LoRA targets from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .errors import FieldIssue

#: A part a stage can make trainable, in the order the paper introduces them (the VAE is always frozen).
Part = Literal["vision_encoder", "sa_perceiver", "projector", "llm", "epigone", "denoiser"]
PartOrAll = Literal[Part, "all"]
#: Parts a stage can make trainable (``vlsa_platform.model.parts`` adds the frozen ``vae``).
TRAINABLE_PARTS: tuple[str, ...] = get_args(Part)

#: How images reach the LLM (paper Table 3): the VLSA SA-Perceiver, LLaVA-NeXT's anyres, or low-res only.
VisionMode = Literal["anyres", "lowres", "sa_perceiver"]
VISION_MODES: tuple[str, ...] = get_args(VisionMode)

#: Model presets: the paper's sub-models, or the same classes small (``vlsa_platform.model.presets``).
Preset = Literal["paper", "tiny"]
PRESETS: tuple[str, ...] = get_args(Preset)

#: Attention kernels of the transformers sub-models (``vlsa_platform.model.attention``).
AttnImplementation = Literal["auto", "sdpa", "flash_attention_2", "eager"]
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(AttnImplementation)

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

#: LLaMA's linear layers, the default LoRA targets (``vlsa_platform.model.lora`` uses them too).
LLAMA_LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: Names of stages, datasets, mixtures and variants: they become MLflow run names and dotted-key segments.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
AcceleratorName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# Upper bounds of the schema's integer fields: far above anything a real run needs, low enough that a typo
# (an extra zero run, 10**30) is refused by ``validate`` instead of reaching Ray, DeepSpeed or the plan's
# arithmetic. Float fields need no such list: :class:`Section` refuses inf, NaN and magnitudes past
# :data:`MAX_FLOAT` in every one of them.

#: Largest magnitude of any float field: float32's largest finite value (about 3.4e38). Training computes
#: in float32 or bf16 (the same range), where a larger learning rate, loss weight or factor is inf.
MAX_FLOAT = 3.4028234663852886e38

#: Most samples in one optimizer step or forward pass (``global_batch``, ``micro_batch``, ``grad_accum``,
#: validation decoding batches): 2**24, about 16.8 M; the largest published LLM batches are a few thousand
#: sequences (4 M tokens).
MAX_BATCH = 2**24

#: Most optimizer steps of a stage, and the longest interval counted in steps (``steps``, ``every_steps``,
#: ``checkpoint_every``, ``log_every``, ASHA's ``max_t``...); also the most ``epochs``, as an epoch is at
#: least one step: 10**8 (LLaMA's pretraining took about 10**6 steps).
MAX_STEPS = 10**8

#: Most workers or processes (``num_workers``, ``loader_workers``, ``max_concurrent_trials``): 2**16, more
#: GPUs than any single Ray cluster this platform runs on.
MAX_WORKERS = 2**16

#: Most records of one dataset (``num_samples``): 10**12 (LAION-5B holds 5.9 * 10**9 image-text pairs).
MAX_RECORDS = 10**12

#: Every other count or size (``max_length`` in tokens, LoRA rank, image sides in pixels, tile grids,
#: cognition windows, checkpoints kept, failures, sweep samples and seeds...): 2**20, about a million.
MAX_COUNT = 2**20

#: Largest ``seed``: 2**31 - 1. NumPy and Ray Tune take seeds in [0, 2**32), and a sweep's seed repeats add up
#: to ``MAX_COUNT`` to it.
MAX_SEED = 2**31 - 1

BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH)]
Steps = Annotated[int, Field(gt=0, le=MAX_STEPS)]
Workers = Annotated[int, Field(gt=0, le=MAX_WORKERS)]
Records = Annotated[int, Field(gt=0, le=MAX_RECORDS)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

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


def recon_needs_sa(vision: str) -> str:
    """Why ``recon: true`` is refused with ``vision`` (the model section and each ablation variant say it)."""
    return (
        f"recon: true needs vision: sa_perceiver, not {vision} — the pooled embedding P that conditions the "
        "denoiser is the SA-Perceiver's global query (paper Eq. 1-4); use recon: false with this vision mode"
    )


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


def _huge_floats(
    value: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], float]]:
    """``(path, value)`` of every float past :data:`MAX_FLOAT` in a field's value (its lists, tuples and
    mappings; a nested section checks its own fields)."""
    if isinstance(value, float) and abs(value) > MAX_FLOAT:
        yield loc, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _huge_floats(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _huge_floats(item, (*loc, key))


class Section(BaseModel):
    """Base of every section: unknown keys are errors; attribute docstrings become field descriptions; every
    float field is finite (YAML's ``.inf``, ``.nan`` and ``1e999`` are refused) and within :data:`MAX_FLOAT`
    (``10**40`` is refused too)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _within_float32(cls, value: Any) -> Any:
        huge = next(_huge_floats(value), None)
        if huge is not None:
            loc, number = huge
            raise FieldIssue(
                loc,
                f"{number:.3g} is past float32's largest value ({MAX_FLOAT:.3g}): training computes in "
                "float32 or bf16, where it is inf",
            )
        return value


__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "LLAMA_LINEARS",
    "MAX_BATCH",
    "MAX_COUNT",
    "MAX_FLOAT",
    "MAX_RECORDS",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_WORKERS",
    "METRICS",
    "PRESETS",
    "SYNTHETIC_DATASET",
    "TRAINABLE_PARTS",
    "VISION_MODES",
    "AcceleratorName",
    "AttnImplementation",
    "BatchSize",
    "Count",
    "Fraction",
    "Name",
    "Part",
    "PartOrAll",
    "Preset",
    "Records",
    "Sampling",
    "Section",
    "Seed",
    "Steps",
    "VisionMode",
    "Workers",
    "derive_grad_accum",
    "parse_sampling",
    "parts_present",
    "recon_needs_sa",
    "sampled_size",
]
