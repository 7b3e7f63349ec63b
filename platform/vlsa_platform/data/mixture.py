"""Data mixtures as in LLaVA-NeXT's data YAML: which records of each dataset, how often, in what order.

A stage's mixture is a list of ``(dataset, sampling, weight)`` entries (``config.schema.MixtureEntry``):

- ``sampling`` picks the records once for the whole run: ``all``, ``first:N``, ``random:N``, ``first:N%``,
  ``random:N%`` (:func:`select`; ``random`` is seeded by the experiment's seed and the dataset's name, so the
  same rule picks the same records in every stage and every process);
- ``weight`` scales the entry's share of each epoch: ``floor(weight)`` passes over the picked records plus a
  fresh random ``frac(weight)`` of them each epoch (2 = each record twice, 0.5 = a random half);
- :meth:`MixturePlan.epoch` gives the epoch's shuffled order of ``(dataset, position)`` pairs, the same for
  the same ``(seed, epoch)`` on every worker (each rank takes :meth:`EpochOrder.shard`).

Positions index the dataset's list of usable records (what :func:`records.read_records` returned).

Validation holdout (``config.schema.ValidationSet``): :func:`validation_positions` picks the validation
records; with ``holdout: true`` they are removed from the pool of every training entry on the same dataset
*before* that entry's sampling, so ``all`` means all but the validation records.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config.schema import parse_sampling, sampled_size

__all__ = [
    "EpochOrder",
    "MixturePlan",
    "MixtureSource",
    "build_mixture_plan",
    "group_by_modality",
    "select",
    "validation_positions",
]


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator keyed by the seed and names (stable across processes, unlike ``hash()``)."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(words)


def select(records: Sequence[Any] | int, sampling: str, seed: int, *, key: str = "") -> np.ndarray:
    """Positions (sorted, int64) that a sampling rule keeps out of ``records`` (a sequence or its length).

    ``first:N`` keeps the first N, ``random:N`` N drawn without replacement with a generator seeded by
    ``(seed, key)``; ``N%`` rounds down (``config.schema.sampled_size``, which the plan uses too).
    """
    n = records if isinstance(records, int) else len(records)
    mode, _, _ = parse_sampling(sampling)
    if mode == "all":
        return np.arange(n, dtype=np.int64)
    k = sampled_size(sampling, n)
    if mode == "first":
        return np.arange(k, dtype=np.int64)
    chosen = _rng(seed, "select", key, sampling).choice(n, size=k, replace=False)
    return np.sort(chosen.astype(np.int64))


def validation_positions(size: int, sampling: str, seed: int, dataset: str) -> np.ndarray:
    """The records of a dataset (of ``size`` usable records) used for validation (``ValidationSet``)."""
    return select(size, sampling, seed, key=f"validation:{dataset}")


@dataclass(frozen=True)
class MixtureSource:
    """One mixture entry, bound to a dataset of ``size`` usable records."""

    dataset: str
    size: int
    sampling: str = "all"
    weight: float = 1.0


@dataclass(frozen=True)
class EpochOrder:
    """One epoch's sample order: ``entry[i]`` indexes ``datasets`` (the entry's dataset), ``position[i]`` the
    record in that dataset's list. Iterating gives ``(dataset, position)`` pairs."""

    datasets: tuple[str, ...]
    entry: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.datasets[int(self.entry[i])], int(self.position[i])

    def __iter__(self) -> Iterator[tuple[str, int]]:
        names = self.datasets
        for e, p in zip(self.entry.tolist(), self.position.tolist(), strict=True):
            yield names[e], p

    def shard(self, rank: int, world_size: int) -> EpochOrder:
        """Rank ``rank``'s part (every ``world_size``-th sample; the tail that does not divide evenly is
        dropped so every rank gets the same number of steps)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        usable = len(self) - len(self) % world_size
        return EpochOrder(
            self.datasets, self.entry[rank:usable:world_size], self.position[rank:usable:world_size]
        )


@dataclass
class MixturePlan:
    """The sample order of each epoch of one stage, deterministic for ``(seed, epoch)``.

    Args:
        sources: the mixture's entries.
        seed: the experiment's seed.
        holdout: per dataset name, positions kept out of training (the validation records).
    """

    sources: Sequence[MixtureSource]
    seed: int
    holdout: Mapping[str, Collection[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        if not self.sources:
            raise ValueError("a mixture needs at least one entry")
        self._picked: list[np.ndarray] = []
        for source in self.sources:
            if source.weight <= 0:
                raise ValueError(f"mixture entry {source.dataset!r}: weight must be positive")
            pool = np.arange(source.size, dtype=np.int64)
            held = self.holdout.get(source.dataset)
            if held is not None and len(held):
                pool = pool[~np.isin(pool, np.fromiter(held, dtype=np.int64))]
            self._picked.append(pool[select(len(pool), source.sampling, self.seed, key=source.dataset)])

    def picked(self, i: int) -> np.ndarray:
        """Positions entry ``i`` draws from (after holdout and sampling)."""
        return self._picked[i]

    def counts(self) -> list[int]:
        """Samples each entry contributes to an epoch: ``floor(w) * n + round(frac(w) * n)``."""
        out = []
        for source, picked in zip(self.sources, self._picked, strict=True):
            whole = math.floor(source.weight)
            out.append(whole * len(picked) + round((source.weight - whole) * len(picked)))
        return out

    def __len__(self) -> int:
        """Samples per epoch (the same every epoch)."""
        return sum(self.counts())

    def epoch(self, epoch: int) -> EpochOrder:
        """The shuffled ``(dataset, position)`` order of epoch ``epoch`` (0-based)."""
        entries, positions = [], []
        for i, (source, picked, count) in enumerate(
            zip(self.sources, self._picked, self.counts(), strict=True)
        ):
            whole = math.floor(source.weight)
            parts = [picked] * whole
            extra = count - whole * len(picked)
            if extra:  # the fractional part: a fresh random subset each epoch
                rng = _rng(self.seed, "fraction", source.dataset, i, epoch)
                parts.append(np.sort(rng.choice(picked, size=extra, replace=False)))
            chosen = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            entries.append(np.full(len(chosen), i, dtype=np.int32))
            positions.append(chosen)
        entry = np.concatenate(entries)
        position = np.concatenate(positions)
        order = _rng(self.seed, "shuffle", epoch).permutation(len(position))
        names = tuple(s.dataset for s in self.sources)
        return EpochOrder(names, entry[order], position[order])


def group_by_modality(order: EpochOrder, has_image: Callable[[str, int], bool], block: int) -> EpochOrder:
    """``order`` rearranged so that every aligned run of ``block`` samples is all-image or all-text.

    With ``block = micro_batch x world_size``, the ``k``-th micro-batch of every rank (after
    :meth:`EpochOrder.shard`) comes from run ``k``, so all ranks see images, or none, at the same micro-step
    (what ZeRO-3 needs: each rank all-gathers the parameters of the sub-modules it runs, so the ranks must
    run the same ones; and ZeRO-2: it reduces gradients in the order the backward readies them, so the ranks
    must run the same graph). LLaVA's ``group_by_modality_length`` sampler solves the same problem the same way.
    Within a modality the epoch's shuffled order is kept; runs are placed by the position of their first
    sample, so both modalities stay spread over the epoch. The last ``< block`` samples of each modality
    that do not fill a run are dropped for this epoch (a different subset each epoch, as the order differs).
    """
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    flags = np.fromiter((has_image(d, p) for d, p in order), dtype=bool, count=len(order))
    runs: list[np.ndarray] = []
    for modality in (True, False):
        where = np.flatnonzero(flags == modality)
        usable = len(where) - len(where) % block
        runs.extend(where[i : i + block] for i in range(0, usable, block))
    runs.sort(key=lambda run: int(run[0]))
    index = np.concatenate(runs) if runs else np.empty(0, dtype=np.int64)
    return EpochOrder(order.datasets, order.entry[index], order.position[index])


def build_mixture_plan(
    entries: Sequence[Any],
    sizes: Mapping[str, int],
    seed: int,
    validation: Any | None = None,
) -> tuple[MixturePlan, np.ndarray | None]:
    """A stage's plan from config objects.

    Args:
        entries: the stage's ``MixtureEntry`` list.
        sizes: usable records per dataset name.
        seed: the experiment's seed.
        validation: ``data.validation`` (a ``ValidationSet``) or ``None``.

    Returns:
        ``(plan, validation positions)``; the positions are ``None`` without validation. With
        ``validation.holdout`` they are kept out of this plan's entries on the same dataset.
    """
    val = None
    holdout: dict[str, np.ndarray] = {}
    if validation is not None:
        val = validation_positions(sizes[validation.dataset], validation.sampling, seed, validation.dataset)
        if validation.holdout:
            holdout[validation.dataset] = val
    sources = [MixtureSource(e.dataset, sizes[e.dataset], e.sampling, e.weight) for e in entries]
    return MixturePlan(sources, seed, holdout), val
