"""A stage's data on one worker: its shard of each epoch, as micro-batches, resumable at any micro-step (the
records, datasets and mixtures themselves are :mod:`vlsa_platform.data`'s).

Every rank computes the same epoch order (``data.mixture``, seeded by the experiment's seed and the epoch) and
takes every ``world_size``-th sample of it. Under ZeRO-2 or ZeRO-3 with several ranks the order is first grouped by
modality (:func:`~vlsa_platform.data.mixture.group_by_modality`) so all ranks see images, or none, at the same
micro-step. An epoch gives ``len(shard) // micro_batch`` micro-batches on every rank; the micro-step counter
(kept in checkpoints) alone says where the data stands, so a resumed worker continues with the very batch
the lost one would have trained on next. Loading is deterministic: the dataset draws its cognition turns from
``(seed, epoch, record id)``, never from a process's RNG, so ``DataLoader`` worker processes change nothing.

Cognition turns: a stage's training data gets them where ``ExperimentConfig.cognition_applies`` says
(:func:`cognition_hook`); the validation set always gets its own (:func:`validation_cognition_hook`), so it is one
fixed yardstick for every trial, stage and variant of a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from transformers import PreTrainedTokenizerBase

from ..config.schema import ExperimentConfig, StageConfig
from ..data.cognition import CognitionHook, CognitionSettings
from ..data.dataset import EpochRecords, Sample, VLSADataset, collate
from ..data.mixture import EpochOrder, build_mixture_plan, group_by_modality
from ..data.records import dataset_location, read_records
from ..data.types import Record, Skip
from ..model.configuration_vlsa import VLSAConfig
from .frozen_targets import asks_vq, frozen_vq

#: Samples per validation micro-batch in every stage (a forward without gradients fits wherever training fits).
VALIDATION_MICRO_BATCH = 1


@dataclass
class Batch:
    """A collated micro-batch and the bad records the loader skipped to fill it."""

    tensors: dict[str, torch.Tensor]
    skips: tuple[Skip, ...] = ()
    samples: int = 0


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A micro-batch's tensors on ``device`` (the strategy's)."""
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


@dataclass
class _Collate:
    """Picklable collate for ``DataLoader`` workers: the model batch plus the skips met."""

    pad_token_id: int

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        skips = tuple(skip for s in samples for skip in s.skips)
        return Batch(collate(samples, self.pad_token_id), skips, len(samples))


@dataclass
class DataSources:
    """Every dataset a stage reads, loaded once: records by dataset name and their image roots."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    image_roots: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, list[Skip]] = field(default_factory=dict)
    """Records each file's reader rejected (bad JSON, missing keys...), by dataset."""
    absolute_paths: frozenset[str] = frozenset()
    """Datasets whose records may name absolute image paths (``allow_absolute_paths``)."""

    @classmethod
    def read(cls, config: ExperimentConfig, names: Sequence[str]) -> DataSources:
        sources = cls()
        for name in dict.fromkeys(names):
            spec = config.data.datasets[name]
            path, image_root = dataset_location(spec, config.data.root)
            records, skips = read_records(
                path,
                dataset=name,
                on_bad=config.data.on_bad_sample,
                allow_absolute_paths=spec.allow_absolute_paths,
            )
            if spec.allow_absolute_paths:
                sources.absolute_paths |= {name}
            if not records:
                raise ValueError(f"dataset {name!r} ({path}) has no usable records")
            sources.records[name], sources.image_roots[name], sources.unreadable[name] = (
                records,
                image_root,
                skips,
            )
        return sources

    def has_image(self, dataset: str, position: int) -> bool:
        return self.records[dataset][position].image is not None


def cognition_hook(config: ExperimentConfig, stage: str, vq_lookup: Any = None) -> CognitionHook | None:
    """Stage ``stage``'s training cognition hook (``data.cognition``, the experiment's seed), ``None`` where
    ``config.cognition_applies(stage)`` says the stage gets no cognition turns; ``vq_lookup`` gives VQ grids."""
    if not config.cognition_applies(stage):
        return None
    return CognitionHook(CognitionSettings.from_config(config.data.cognition), config.seed, vq_lookup)


def validation_cognition_hook(config: ExperimentConfig, vq_lookup: Any = None) -> CognitionHook | None:
    """The validation set's cognition hook: ``data.validation.cognition`` and the experiment's seed only, so the
    questions are the same for every trial, stage and variant (``model.cognition`` and ``data.cognition`` play
    no part); ``None`` without validation or when both its rates are 0."""
    validation = config.data.validation
    if validation is None or (validation.cognition.p_vq == 0 and validation.cognition.p_px == 0):
        return None
    return CognitionHook(CognitionSettings.from_config(validation.cognition), config.seed, vq_lookup)


def vq_targets(config: ExperimentConfig, stage: str, cache: Any) -> Any:
    """The VQ grids of stage ``stage``'s cognition questions through the frozen-target cache ``cache`` (a
    ``data.targets.TargetCache``; computed and stored on a miss), as ``data.targets.CachedTargets``; ``None``
    when neither its training data nor the validation set asks VQ questions (:func:`.frozen_targets.asks_vq`).
    Built whatever ``model.cognition`` says when the validation asks them (its questions are every run's)."""
    if not asks_vq(config, stage):
        return None
    from ..data.targets import CachedTargets

    return CachedTargets(cache, frozen_vq(config))


class StageData:
    """One rank's micro-batches of one stage (and its validation shard).

    Args:
        config: the run's experiment config.
        stage: the stage's config (its ``mixture``).
        vlsa: the model config (geometry, recon).
        tokenizer: the LLM's tokenizer.
        rank, world_size: this worker's data-parallel position.
        micro_batch: samples per micro-batch.
        by_modality: group each epoch by modality (ZeRO-2 or ZeRO-3 with several ranks:
            ``DeepSpeedStrategy.needs_same_batch_structure``).
        cognition: the training data's cognition hook, or ``None`` (:func:`cognition_hook`).
        latent_cache: cached VAE latents (``data.targets.CachedTargets``), or ``None``.
        validation_cognition: the validation set's cognition hook, or ``None`` (:func:`validation_cognition_hook`;
            never the training one: the validation questions are the experiment's, not the trial's).

    :meth:`attach_cognition` sets both hooks as a stage's worker does.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        stage: StageConfig,
        vlsa: VLSAConfig,
        tokenizer: PreTrainedTokenizerBase,
        *,
        rank: int,
        world_size: int,
        micro_batch: int,
        by_modality: bool,
        cognition: CognitionHook | None = None,
        latent_cache: Any = None,
        validation_cognition: CognitionHook | None = None,
    ) -> None:
        self.config, self.stage, self.vlsa, self.tokenizer = config, stage, vlsa, tokenizer
        self.rank, self.world_size, self.micro_batch = rank, world_size, micro_batch
        self.by_modality = by_modality
        self.cognition, self.latent_cache = cognition, latent_cache
        self.validation_cognition = validation_cognition
        validation = config.data.validation
        names = [e.dataset for e in stage.mixture] + ([validation.dataset] if validation else [])
        self.sources = DataSources.read(config, names)
        sizes = {name: len(recs) for name, recs in self.sources.records.items()}
        self.plan, self._val_positions = build_mixture_plan(stage.mixture, sizes, config.seed, validation)
        if len(self.plan) == 0:
            raise ValueError("the stage's mixture selects no records")
        self.micro_batches_per_epoch = len(self._shard(0)) // micro_batch
        if self.micro_batches_per_epoch == 0:
            raise ValueError(
                f"an epoch of {len(self.plan)} samples gives no whole micro-batch of {micro_batch} on each of "
                f"{world_size} workers"
            )

    def attach_cognition(self, stage: str, vq_targets: Any = None) -> None:
        """Both cognition hooks of stage ``stage`` (its name): the training one where
        ``config.cognition_applies(stage)``, the validation one from ``data.validation.cognition``; VQ grids
        from ``vq_targets`` (``data.targets.CachedTargets``; ``None``: no VQ questions)."""
        lookup = vq_targets.vq_lookup(self.sources.image_roots) if vq_targets is not None else None
        self.cognition = cognition_hook(self.config, stage, lookup)
        self.validation_cognition = validation_cognition_hook(self.config, lookup)

    # -- training --------------------------------------------------------------------------------------

    def steps_for_epochs(self, epochs: float, global_batch: int) -> int:
        """Optimizer steps of ``epochs`` passes (the plan's rule: ``ceil(epochs x samples / global_batch)``)."""
        return max(1, math.ceil(epochs * len(self.plan) / global_batch))

    def _group(self, order: EpochOrder, micro_batch: int) -> EpochOrder:
        if not self.by_modality:
            return order
        return group_by_modality(order, self.sources.has_image, micro_batch * self.world_size)

    def _shard(self, epoch: int) -> EpochOrder:
        return self._group(self.plan.epoch(epoch), self.micro_batch).shard(self.rank, self.world_size)

    def _dataset(
        self, order: Sequence[tuple[str, int]], epoch: int, cognition: CognitionHook | None
    ) -> VLSADataset:
        return VLSADataset(
            EpochRecords(order, self.sources.records),
            tokenizer=self.tokenizer,
            config=self.vlsa,
            image_roots=self.sources.image_roots,
            absolute_paths=self.sources.absolute_paths,
            max_length=self.config.data.max_length,
            cognition=cognition,
            latent_cache=self.latent_cache,
            on_bad_sample=self.config.data.on_bad_sample,
            epoch=epoch,
        )

    def _loader(self, dataset: torch.utils.data.Dataset, micro_batch: int) -> DataLoader:
        workers = self.config.data.loader_workers
        return DataLoader(
            dataset,
            batch_size=micro_batch,
            shuffle=False,
            drop_last=True,
            num_workers=workers,
            collate_fn=_Collate(self.tokenizer.pad_token_id),
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
            # Its own generator: a DataLoader iterator otherwise draws its base seed from the global torch RNG,
            # which would make a resumed run's L_rec noise differ from an uninterrupted one's.
            generator=torch.Generator().manual_seed(0),
        )

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """Micro-batches from micro-step ``start`` on (across epochs, without end)."""
        per_epoch = self.micro_batches_per_epoch
        epoch, offset = divmod(start, per_epoch)
        while True:
            shard = self._shard(epoch)
            dataset = self._dataset(shard, epoch, self.cognition)
            first, stop = offset * self.micro_batch, per_epoch * self.micro_batch
            yield from self._loader(Subset(dataset, range(first, stop)), self.micro_batch)
            epoch, offset = epoch + 1, 0

    # -- validation ------------------------------------------------------------------------------------

    def validation_batches(self) -> DataLoader | None:
        """This rank's validation micro-batches (the same on every pass), ``None`` without ``data.validation``.

        The records (``build_mixture_plan``'s validation positions: the validation spec, the experiment's seed
        and the dataset's size) and their cognition questions (:attr:`validation_cognition`, at epoch 0) do not
        depend on the stage's mixture or the trial's settings. One sample per micro-batch
        (:data:`VALIDATION_MICRO_BATCH`), whatever the stage's ``micro_batch``: the records left out to give every
        rank the same number of batches (fewer than ``world_size`` of each modality when grouped, fewer than
        ``world_size`` when sharded) and the mean of the per-batch losses then do not follow the stage's
        micro-batch, so stages placed on as many workers validate on the same samples.
        """
        validation = self.config.data.validation
        if validation is None or self._val_positions is None:
            return None
        positions = np.asarray(self._val_positions, dtype=np.int64)
        order = EpochOrder((validation.dataset,), np.zeros(len(positions), dtype=np.int32), positions)
        shard = self._group(order, VALIDATION_MICRO_BATCH).shard(self.rank, self.world_size)
        dataset = self._dataset(shard, 0, self.validation_cognition)
        return self._loader(dataset, VALIDATION_MICRO_BATCH)


__all__ = [
    "VALIDATION_MICRO_BATCH",
    "Batch",
    "DataSources",
    "StageData",
    "cognition_hook",
    "to_device",
    "validation_cognition_hook",
    "vq_targets",
]
