"""Records -> model samples -> batches in the model's format (``docs/model.md``, "A batch").

:class:`VLSADataset` is a map-style torch ``Dataset`` over one epoch's ordered records (the mixture decides the
order). For each record it loads the image, tiles it (:mod:`.images`), lets the cognition hook add its
question/answer turns, tokenizes (:mod:`.chat`), and attaches the L_rec target: pixels, and also the cached
VAE latent parameters when a cache is given and has them (keyed by the SHA-256 of the image file, as
``targets.TargetCache``). ``collate`` sends the cached parameters only when every image of the batch has them,
else the pixels (the model then encodes them with its frozen VAE), so a partly filled cache is never wrong,
only slower. :class:`EpochRecords` turns the mixture's ``(dataset, position)`` order into the record
sequence the dataset takes.

A bad record (any ``BadSample``: missing or unreadable image, too long, ...) never raises out of
``__getitem__`` under ``on_bad_sample="skip"``: it is counted per reason (``skipped``, ``skip_counts()``,
``bad_records()``) and the next index that gives a good sample is returned instead (``index + 1``,
``index + 2``, ... wrapping; one of the same modality — image or text-only — when there is one, so batches
grouped by modality stay grouped; deterministic, so every worker and every rerun sees the same substitution). Under
``"fail"`` the first bad record raises, named by id, dataset and position.

Counters live in the dataset object, so with ``DataLoader(num_workers > 0)`` each worker process counts its own;
every :class:`Sample` also carries the skips met while producing it (``Sample.skips``), which a trainer can sum
in the main process.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from ..model.configuration_vlsa import VLSAConfig
from ..model.markers import IGNORE_INDEX, LABEL_GROUP_TEXT
from ..model.modeling_vlsa import grids_to_tensor
from .chat import ChatEncoder
from .images import ImageInputs, prepare_image
from .records import DEFAULT_MAX_PIXELS, file_digest_of, image_location, load_image
from .targets import file_digest
from .types import BadSample, Record, Skip, Turn

#: ``(image_root, relative_path, max_pixels) -> RGB image``, raising ``BadSample`` (``records.load_image``); for
#: datasets that allow absolute image paths it is also passed ``allow_absolute=True``.
ImageLoader = Callable[..., Image.Image]

#: ``(record, image, epoch) -> the conversation with cognition turns inserted`` (``cognition.py``).
CognitionHook = Callable[[Record, Image.Image, int], Sequence[Turn]]


class LatentCache(Protocol):
    """Where precomputed VAE posterior parameters come from (``targets.CachedTargets`` is one)."""

    def get_latent_params(self, key: bytes | str) -> torch.Tensor | None:
        """``(2C, R/8, R/8)`` VAE posterior mean and log-variance of an image, by its file's bytes or their
        SHA-256 hex digest (``targets.image_digest``; the dataset passes the digest), or ``None`` on a miss."""
        ...


class EpochRecords(Sequence[Record]):
    """One epoch's records in the mixture's order, without copying them: item ``i`` is
    ``records[dataset][position]`` for the ``i``-th ``(dataset, position)`` pair of ``order``
    (``mixture.EpochOrder``, or any sequence of pairs).

    Args:
        order: the epoch's ``(dataset, position)`` pairs (e.g. ``plan.epoch(e).shard(rank, world)``).
        records: per dataset name, its usable records (``records.read_records``' first result).
    """

    def __init__(self, order: Sequence[tuple[str, int]], records: Mapping[str, Sequence[Record]]) -> None:
        self.order = order
        self.records = records

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Record:  # type: ignore[override]
        dataset, position = self.order[i]
        return self.records[dataset][position]


@dataclass(frozen=True)
class Sample:
    """One tokenized sample (``T`` tokens).

    Attributes:
        record_id: the record's id (for messages).
        input_ids, labels, label_groups: ``(T,)`` long tensors (:class:`~.chat.Encoded`).
        image: the image inputs, ``None`` for a text-only sample.
        recon_latent_params: ``(2C, R/8, R/8)`` cached VAE posterior parameters, ``None`` when not cached.
        truncated: whether the conversation was shortened to fit ``max_length``.
        skips: bad records met (and skipped) on the way to this sample.
    """

    record_id: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    label_groups: torch.Tensor
    image: ImageInputs | None = None
    recon_latent_params: torch.Tensor | None = None
    truncated: bool = False
    skips: tuple[Skip, ...] = ()

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class VLSADataset(Dataset):
    """One epoch's records as model samples.

    Args:
        records: the epoch's records, in order.
        tokenizer: the LLM's tokenizer (LLaMA-3 specials; the image token ``config.image_token_id`` in its
            vocabulary).
        config: the model config (vision geometry, ``recon``, ``recon_resolution``).
        image_roots: dataset name -> directory (local or ``s3://``) its records' image paths are relative to.
        absolute_paths: names of the datasets whose records may name an absolute image path or ``s3://`` URL
            (``allow_absolute_paths``; the loader is then called with ``allow_absolute=True``); other datasets'
            are ``absolute_image_path``.
        max_length: longest sample in tokens, visual tokens included.
        cognition: the cognition hook, or ``None`` for no cognition turns; text-only samples never get them.
        latent_cache: cached VAE latent parameters (used when every image of a batch has them), or ``None``.
        on_bad_sample: ``skip`` (count and substitute) or ``fail`` (raise).
        max_pixels: images with more pixels are ``image_too_large`` (passed to the loader).
        epoch: passed to the cognition hook (``set_epoch`` changes it).
        max_tries: how many consecutive indices ``__getitem__`` tries before giving up.
        image_loader: ``(image_root, path, max_pixels) -> RGB image`` raising ``BadSample`` (default
            ``records.load_image``).
    """

    def __init__(
        self,
        records: Sequence[Record],
        *,
        tokenizer: PreTrainedTokenizerBase,
        config: VLSAConfig,
        image_roots: Mapping[str, str],
        max_length: int,
        absolute_paths: Collection[str] = (),
        cognition: CognitionHook | None = None,
        latent_cache: LatentCache | None = None,
        on_bad_sample: Literal["skip", "fail"] = "skip",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        epoch: int = 0,
        max_tries: int = 64,
        image_loader: ImageLoader = load_image,
    ) -> None:
        if on_bad_sample not in ("skip", "fail"):
            raise ValueError(f"on_bad_sample must be 'skip' or 'fail', got {on_bad_sample!r}")
        self.records = records
        self.config = config
        self.image_roots = dict(image_roots)
        self.absolute_paths = frozenset(absolute_paths)
        self.max_length = max_length
        self.cognition = cognition
        self.latent_cache = latent_cache
        self.on_bad_sample = on_bad_sample
        self.max_pixels = max_pixels
        self.epoch = epoch
        self.max_tries = max_tries
        self.image_loader = image_loader
        image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.encoder = ChatEncoder(tokenizer, image_token)
        self.pad_token_id = tokenizer.pad_token_id
        self.skipped: Counter[str] = Counter()
        self._bad: dict[int, Skip] = {}

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the cognition hook sees (its random choices are per (seed, epoch, record))."""
        self.epoch = epoch

    def skip_counts(self) -> dict[str, int]:
        """Distinct bad records met so far, per reason (keys of ``SKIP_REASONS``)."""
        return dict(self.skipped)

    def bad_records(self) -> list[Skip]:
        """The bad records met so far, in the order of their position in the epoch."""
        return [self._bad[i] for i in sorted(self._bad)]

    def __getitem__(self, index: int) -> Sample:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} records")
        index %= n
        met: list[Skip] = []
        with_image = self.records[index].image is not None
        # A substitute of the same modality first (so a sampler that groups batches by modality, as ZeRO-3
        # needs, keeps its groups), then any.
        for same_modality in (True, False):
            for step in range(min(self.max_tries, n)):
                i = (index + step) % n
                if i in self._bad:
                    continue
                record = self.records[i]
                if same_modality and (record.image is not None) != with_image:
                    continue
                try:
                    sample = self.encode(record)
                except BadSample as exc:
                    named = exc.for_record(record.dataset, record.index, record.id)
                    if self.on_bad_sample == "fail":
                        raise named from exc
                    skip = named.to_skip()
                    self._bad[i] = skip
                    self.skipped[exc.reason] += 1
                    met.append(skip)
                    continue
                return dataclasses.replace(sample, skips=tuple(met)) if met else sample
        raise RuntimeError(
            f"no usable sample in {min(self.max_tries, n)} records from index {index} "
            f"(skipped so far: {self.skip_counts()}); check the data with `vlsa-platform data inspect`"
        )

    def encode(self, record: Record) -> Sample:
        """The sample of one record; raises ``BadSample`` for a bad one."""
        turns: Sequence[Turn] = record.turns
        inputs, latent = None, None
        if record.image is not None:
            root = self._image_root(record)
            if record.dataset in self.absolute_paths:
                image = self.image_loader(root, record.image, self.max_pixels, allow_absolute=True)
            else:
                image = self.image_loader(root, record.image, self.max_pixels)
            inputs = prepare_image(image, self.config)
            if self.cognition is not None:
                turns = self.cognition(record, image, self.epoch)
            if self.latent_cache is not None and self.config.recon:
                # Keyed by the file's SHA-256, hashed by the loader from the bytes it decoded (one read); a
                # loader that leaves no digest costs one more read of the file.
                digest = file_digest_of(image) or file_digest(image_location(root, record.image))
                latent = self.latent_cache.get_latent_params(digest)
        visual = [inputs.num_tokens] if inputs is not None else []
        enc = self.encoder.encode(turns, visual, self.max_length)
        return Sample(record.id, enc.input_ids, enc.labels, enc.label_groups, inputs, latent, enc.truncated)

    def _image_root(self, record: Record) -> str:
        try:
            return self.image_roots[record.dataset]
        except KeyError:
            raise ValueError(
                f"no image root for dataset {record.dataset!r} (record {record.id!r}); "
                f"image_roots has {sorted(self.image_roots)}"
            ) from None


def collate(samples: Sequence[Sample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch in the model's format (``docs/model.md``): right padding, images in sample order.

    Returns ``input_ids``, ``attention_mask``, ``labels``, ``label_groups`` ``(B, T)``; when any sample has an
    image also ``pixel_values`` ``(N, 3, S, S)``, ``tile_pixel_values`` ``(sum m_i, 3, S, S)``, ``image_grids``
    ``(N, 4)`` and the L_rec target: ``recon_latent_params`` ``(N, 2C, R/8, R/8)`` if every image has cached
    ones, else ``recon_pixel_values`` ``(N, 3, R, R)`` if they have pixel targets.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    length = max(len(s) for s in samples)
    shape = (len(samples), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    label_groups = torch.full(shape, LABEL_GROUP_TEXT, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s)
        input_ids[row, :n] = s.input_ids
        attention_mask[row, :n] = 1
        labels[row, :n] = s.labels
        label_groups[row, :n] = s.label_groups
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "label_groups": label_groups,
    }
    with_image = [s for s in samples if s.image is not None]
    if with_image:
        images = [s.image for s in with_image]
        batch["pixel_values"] = torch.stack([im.lowres for im in images])
        batch["tile_pixel_values"] = torch.cat([im.tiles for im in images])
        batch["image_grids"] = grids_to_tensor([im.grid for im in images])
        if all(s.recon_latent_params is not None for s in with_image):
            batch["recon_latent_params"] = torch.stack([s.recon_latent_params for s in with_image])
        elif all(im.recon is not None for im in images):
            batch["recon_pixel_values"] = torch.stack([im.recon for im in images])
    return batch


__all__ = ["CognitionHook", "EpochRecords", "ImageLoader", "LatentCache", "Sample", "VLSADataset", "collate"]
