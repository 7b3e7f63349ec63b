"""The ``data`` section: named datasets, mixtures (a stage's share of each dataset), cognition-turn settings,
validation data and tokenization limits.

Whether the dataset names a mixture or a stage uses exist is checked by ``ExperimentConfig`` (:mod:`.schema`),
which sees the whole file; a stage's ``mixture: NAME`` is expanded there too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, StringConstraints, field_validator

from .vocabulary import (
    MAX_COUNT,
    MAX_WORKERS,
    SYNTHETIC_DATASET,
    BatchSize,
    Count,
    Fraction,
    Name,
    Records,
    Sampling,
    Section,
    Steps,
)


class DatasetConfig(Section):
    """One dataset in LLaVA's conversation format (a JSON list of ``{id, image, conversations}`` records)."""

    path: Annotated[str, StringConstraints(min_length=1)]
    """The JSON file: a local path (relative ones resolve against ``data.root``, else the working directory),
    ``s3://bucket/key``, or ``bundled:synthetic`` for the package's synthetic data."""
    image_root: str | None = None
    """Directory (local or ``s3://``) that the records' ``image`` paths are relative to; ``null`` = beside ``path``."""
    split: str | None = None
    """Name of a split inside the source, for sources that hold several; ``null`` = the whole file."""
    num_samples: Records | None = None
    """Number of records, if known: lets the plan turn ``epochs`` into steps without reading the data."""
    mean_text_tokens: Count | None = None
    """Mean text tokens per record (prompt and answers in the chat layout, visual tokens not counted), as
    ``vlsa-platform data inspect`` reports it: the plan's cost estimate uses it for the LLM's sequence length;
    ``null`` = the upper bound, every sample as long as ``data.max_length`` allows (docs/experiments.md)."""
    allow_absolute_paths: bool = False
    """Let records name their image by an absolute local path or an ``s3://`` URL (read as written), and follow
    symlinks out of ``image_root`` (a root assembled from links to folders elsewhere needs it); off = such
    records are skipped as ``absolute_image_path`` / ``image_outside_root``. A relative path's ``..`` may not lead
    above ``image_root`` either way (docs/data.md, "Containment")."""

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


class MixtureEntry(Section):
    """One dataset's share of a stage's training data (as LLaVA-NeXT's data YAML)."""

    dataset: Name
    """Name of an entry of ``data.datasets``."""
    sampling: Sampling = "all"
    """Which records: ``all``, ``first:N``, ``random:N``, ``first:N%`` or ``random:N%`` (random = seeded by ``seed``)."""
    weight: PositiveFloat = 1.0
    """Multiplier on this entry's share of an epoch: it contributes ``weight x (sampled size)`` examples per epoch
    (2 = each record twice, 0.5 = a random half each epoch). 1 everywhere = plain concatenation."""


class CognitionConfig(Section):
    """Cognition-alignment turns (paper §3.2), added to image samples when ``model.cognition`` is on."""

    p_vq: Fraction = 0.5
    """Probability that an image sample gets a VQ question (codebook indices of a window of its latent grid)."""
    p_px: Fraction = 0.5
    """Probability that an image sample gets a pixel question (mean RGB of a grid of cells in a quarter box)."""
    vq_window: Count = 4
    """``k``: the VQ question asks for a random ``k x k`` window of the VQ latent grid."""
    px_grid: Count = 2
    """``g``: the pixel answer lists the mean RGB of ``g x g`` cells of the box."""
    vq_format: Literal["text", "special"] = "text"
    """How indices are written: ``text`` (decimal numbers) or ``special`` (added tokens ``<vq_0>``..., the LLM's
    embeddings resized by the codebook size)."""
    stages: list[Name] | None = None
    """The stages whose training data gets cognition turns; ``null`` = the last stage only (the paper puts them
    in the stage-3 instruction data). The validation set's questions are ``data.validation.cognition``'s."""


class ValidationCognition(Section):
    """The validation set's own cognition questions: part of the fixed yardstick, so they depend on this spec and
    the experiment's ``seed`` only — never on ``data.cognition`` (which a sweep may vary), ``model.cognition``
    (an ablation variant without cognition is asked the same questions) or the stage. Every setting that shapes
    a question is copied here, not read from ``data.cognition``: a sweep over ``data.cognition.vq_window`` or its
    rates then changes the training data only, and the questions read the same for every trial and stage."""

    p_vq: Fraction = 0.5
    """Probability that a validation image sample gets a VQ question (drawn per record, once for the run: every
    pass and stage asks the same). 0 = none (no frozen VQ-VAE needed for validation)."""
    p_px: Fraction = 0.5
    """Probability that a validation image sample gets a pixel question. 0 = none."""
    vq_window: Count = 4
    """``k``: a VQ question asks for a ``k x k`` window of the VQ latent grid."""
    px_grid: Count = 2
    """``g``: a pixel answer lists the mean RGB of ``g x g`` cells of the box."""
    vq_format: Literal["text", "special"] = "text"
    """How the validation's VQ answers are written. ``text`` (decimal numbers) every model can read, so it is
    the default; ``special`` (``<vq_i>`` tokens) only models that have those tokens can, so it is refused unless
    every run of the file has them (``model.cognition`` on and ``data.cognition.vq_format: special``)."""


class ValidationSet(Section):
    """Data for the validation metrics: the losses ``val/loss_llm`` and ``val/loss_rec``, greedy-decoding
    accuracy ``val/exact_match``, ``val/vq_accuracy``, ``val/px_accuracy``, and ``val/psnr``. The set — records
    and cognition questions — depends only on this spec and the experiment's ``seed``: every trial, stage and
    variant of a file is measured on the same samples (docs/training.md, "Validation")."""

    dataset: Name
    """Name of an entry of ``data.datasets``."""
    sampling: Sampling = "random:1000"
    """Which records to validate on (same rules as a mixture's ``sampling``)."""
    holdout: bool = True
    """Keep these records out of every training mixture that uses the same dataset."""
    every_steps: Steps | None = None
    """Validate every this many optimizer steps; ``null`` = at the end of each stage only."""
    generate_samples: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 8
    """Validation samples per pass (over all ranks, split evenly, rounded up; the first of each rank's shard)
    whose answers are decoded greedily for ``val/exact_match``, ``val/vq_accuracy`` and ``val/px_accuracy``: each
    one's first complete text answer and its first VQ and pixel answers. 0 = no decoding (those metrics NaN)."""
    generate_extra_tokens: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 4
    """A decoded answer may run this many tokens past the reference's length (and its end-of-turn token)
    before decoding stops; longer answers are cut there (and cannot match)."""
    generate_batch: BatchSize = 8
    """Answers of one kind decoded together in one ``generate`` call on a rank (prompts left-padded): fewer calls
    (under ZeRO-3 each decoding step all-gathers every layer once, whatever the batch) for more memory."""
    psnr_images: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = 16
    """Validation images per pass (over all ranks, split evenly; the first of each rank's shard) whose
    reconstruction the frozen VAE decodes for ``val/psnr``; ``null`` = every image, 0 = none (NaN)."""
    cognition: ValidationCognition = Field(default_factory=ValidationCognition)
    """The cognition questions of the validation samples (their own settings, the same for every trial, stage
    and variant; ``val/loss_llm`` includes their answers, ``val/vq_accuracy`` and ``val/px_accuracy`` score
    them)."""


class DataConfig(Section):
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
    max_length: Annotated[int, Field(ge=64, le=MAX_COUNT)] = 4096
    """Longest tokenized sample (visual tokens included); longer ones are truncated."""
    on_bad_sample: Literal["skip", "fail"] = "skip"
    """What a missing or unreadable image / malformed record does: ``skip`` it (counted) or ``fail`` the run."""
    prefill_targets: bool = True
    """Before the first run of a submission with several runs (a sweep, an ablation), fill the frozen-target
    cache (VQ indices, VAE latents) for every image the runs read, in one Ray Data pass, so that no run encodes
    an image another already did (``orchestration/cache_fill.py``). A submission of one run never pre-fills:
    its stages share the entries its first stage writes on a miss. ``false``: each run computes what it misses."""
    loader_workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] = 2
    """Data-loading processes per training worker (PyTorch ``DataLoader``); 0 = load in the training process."""
    validation: ValidationSet | None = None
    """Validation data; ``null`` = no validation losses (a sweep on a ``val/`` metric needs it)."""


__all__ = [
    "CognitionConfig",
    "DataConfig",
    "DatasetConfig",
    "MixtureEntry",
    "ValidationCognition",
    "ValidationSet",
]
