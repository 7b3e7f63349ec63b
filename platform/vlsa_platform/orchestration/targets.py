"""Fill the frozen-target cache for a dataset: in parallel with Ray Data, or in this process.

Each image's targets (VQ indices, VAE posterior parameters; :mod:`vlsa_platform.data.targets`) are computed
at most once per (image bytes, frozen weights, resolution, transform), whatever the number of stages, runs and
sweep trials that use them: the cache key holds nothing else. ``fill_cache`` reads each image file once, hashes
those bytes, checks which of its entries exist, and decodes (from the same bytes) and encodes only the images
with a missing entry. A submission fills the cache before its first trial (:mod:`.cache_fill`).

Under Ray, ``ray.data.from_items(paths).map_batches(TargetFiller, compute=ActorPoolStrategy(size=n))``: each
actor builds the frozen models once (a callable class's constructor), then handles batches of image paths —
the existence checks, decoding and frozen-encoder forwards all run in the actors, in parallel. Without Ray the
same :class:`TargetFiller` runs over the same batches in this process, so both paths write identical entries.
Actors reach ``s3://`` images and caches with their own environment's AWS settings (a local Ray: the
driver's environment when Ray started; a cluster: the nodes' variables or instance role).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import storage
from ..data.records import open_image, to_rgb
from ..data.targets import TARGET_KINDS, FrozenTargets, TargetCache, build_frozen_targets, image_digest

FrozenBuilder = Callable[[], FrozenTargets]


@dataclass
class FillReport:
    """What :func:`fill_cache` did.

    Attributes:
        images: distinct image files considered.
        computed: entries computed and written (one per image and kind).
        reused: entries that were already in the cache.
        encoder_calls: images passed through each frozen encoder, by kind (= entries computed per kind).
        failed: ``(image uri, error)`` for images that could not be read or decoded (their entries are
            skipped; the dataset will skip or count them too).
    """

    images: int = 0
    computed: int = 0
    reused: int = 0
    encoder_calls: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)


def decode_image(data: bytes, location: str = "<bytes>") -> Any:
    """The RGB image the dataset sees for these file bytes (``records.open_image`` + ``records.to_rgb``:
    transparency over white), so that targets computed here equal those computed on a cache miss in the
    data loader. Raises ``BadSample`` for an unreadable or too large image."""
    return to_rgb(open_image(data, location))


class TargetFiller:
    """Computes the missing cache entries of a batch of images (a Ray Data callable class).

    Args:
        cache_root: the cache's local folder or ``s3://`` prefix.
        build: makes the :class:`FrozenTargets` (called once, in the constructor: once per actor).
        kinds: which targets to fill (default: all the built models give).
    """

    def __init__(self, cache_root: str, build: FrozenBuilder, kinds: Iterable[str] | None = None) -> None:
        self.cache = TargetCache(cache_root)
        self.frozen = build()
        self.kinds = tuple(kinds) if kinds is not None else self.frozen.kinds
        missing = set(self.kinds) - set(self.frozen.kinds)
        if missing:
            raise ValueError(f"the frozen-model builder gives no model for {sorted(missing)}")

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``{"uri": [...]}`` -> per image: ``uri``, ``digest``, ``computed_<kind>`` (0/1), ``reused`` (entries
        found), ``error`` (empty when fine)."""
        rows: list[dict[str, Any]] = []
        todo: dict[str, list[tuple[int, Any]]] = {k: [] for k in self.kinds}  # kind -> [(row, key)]
        images: dict[int, Any] = {}
        for i, uri in enumerate(str(u) for u in batch["uri"]):
            row: dict[str, Any] = {"uri": uri, "digest": "", "reused": 0, "error": ""}
            row.update({f"computed_{k}": 0 for k in TARGET_KINDS})
            rows.append(row)
            try:
                data = storage.read_bytes(uri)
                digest = image_digest(data)
                keys = {kind: self.frozen.key(kind, digest) for kind in self.kinds}
                missing = [kind for kind in self.kinds if not self.cache.exists(keys[kind])]
                if missing:
                    images[i] = decode_image(data, uri)
            except Exception as exc:  # an unreadable image must not stop the fill
                row["error"] = f"{type(exc).__name__}: {exc}"
                continue
            row["digest"] = digest
            row["reused"] = len(self.kinds) - len(missing)
            for kind in missing:
                todo[kind].append((i, keys[kind]))
        for kind, items in todo.items():
            self._compute(kind, items, images, rows)
        return {
            name: np.array([r[name] for r in rows], dtype=object if name in _TEXT_COLUMNS else np.int64)
            for name in rows[0]
        }

    def _compute(
        self, kind: str, items: list[tuple[int, Any]], images: dict[int, Any], rows: list[dict]
    ) -> None:
        """Encode the images of ``items`` in one batched forward and store each entry."""
        unique: dict[str, tuple[int, Any]] = {}  # identical files in one batch are encoded once
        for row, key in items:
            unique.setdefault(key.digest, (row, key))
        if not unique:
            return
        order = list(unique.values())
        if kind == "vq":
            values = self.frozen.vq_indices([images[r] for r, _ in order])
        else:
            pixels = torch.stack([self.frozen.recon_pixels(images[r]) for r, _ in order])
            values = self.frozen.vae_params(pixels)
        for (row, key), value in zip(order, values, strict=True):
            self.cache.put(key, value)
            rows[row][f"computed_{kind}"] += 1
        for row, key in items:  # a duplicate of an entry computed just now
            if unique[key.digest][0] != row:
                rows[row]["reused"] += 1


_TEXT_COLUMNS = ("uri", "digest", "error")


def _image_uris(records: Iterable[Any], image_root: str | Mapping[str, str]) -> list[str]:
    """Distinct image locations of ``records`` (``Record``s, mappings with ``image``, or relative paths)."""
    seen: dict[str, None] = {}
    for record in records:
        if isinstance(record, str):
            rel, dataset = record, None
        elif isinstance(record, Mapping):
            rel, dataset = record.get("image"), record.get("dataset")
        else:
            rel, dataset = record.image, getattr(record, "dataset", None)
        if not rel:
            continue  # text-only
        if isinstance(image_root, Mapping):
            if dataset not in image_root:
                raise ValueError(f"no image root for dataset {dataset!r} (have {sorted(image_root)})")
            root = image_root[dataset]
        else:
            root = image_root
        seen.setdefault(storage.join(str(root), str(rel)), None)
    return list(seen)


def fill_cache(
    records: Iterable[Any],
    image_root: str | Mapping[str, str],
    cache_root: str,
    frozen: FrozenBuilder | str,
    **options: Any,
) -> FillReport:
    """Compute the cache entries that are missing for the images of ``records``.

    Args:
        records: ``Record``s (text-only ones are skipped), mappings with ``image`` (and ``dataset``), or
            image paths relative to ``image_root``.
        image_root: folder or ``s3://`` prefix of the images, or ``{dataset: root}``.
        cache_root, frozen, options: as :func:`fill_uris`.

    Returns:
        The counts; entries already present are only checked, never recomputed.
    """
    return fill_uris(_image_uris(records, image_root), cache_root, frozen, **options)


def fill_uris(
    uris: Sequence[str],
    cache_root: str,
    frozen: FrozenBuilder | str,
    *,
    kinds: Iterable[str] | None = None,
    use_ray: bool = False,
    concurrency: int = 2,
    batch_size: int = 16,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> FillReport:
    """Compute the cache entries that are missing for the image files ``uris`` (local paths or ``s3://``).

    Args:
        uris: the image files (distinct; each is read once).
        cache_root: the cache's folder or ``s3://`` prefix.
        frozen: a picklable zero-argument builder of :class:`FrozenTargets` (e.g.
            ``functools.partial(build_frozen_targets, "paper", grid_pinpoints=[[1, 1], [2, 2]])``), or a
            preset name.
        kinds: targets to fill (default: those the builder's models give).
        use_ray: Ray Data with ``concurrency`` actors (Ray is started locally if it is not yet); else in
            this process.
        concurrency, batch_size, num_cpus, num_gpus: actor pool size, images per batch, resources per actor.
    """
    build: FrozenBuilder = (
        functools.partial(build_frozen_targets, frozen) if isinstance(frozen, str) else frozen
    )
    uris = list(uris)
    kinds = tuple(kinds) if kinds is not None else None
    if not uris:
        return FillReport()
    if use_ray:
        batches = _fill_with_ray(uris, cache_root, build, kinds, concurrency, batch_size, num_cpus, num_gpus)
    else:
        filler = TargetFiller(cache_root, build, kinds)
        batches = [filler({"uri": uris[i : i + batch_size]}) for i in range(0, len(uris), batch_size)]
    report = FillReport(images=len(uris))
    calls: Counter[str] = Counter()
    for out in batches:
        for kind in TARGET_KINDS:
            calls[kind] += int(np.sum(out[f"computed_{kind}"]))  # one image through the encoder per entry
        report.reused += int(np.sum(out["reused"]))
        report.failed.extend((str(u), str(e)) for u, e in zip(out["uri"], out["error"], strict=True) if e)
    report.computed = sum(calls.values())
    report.encoder_calls = {k: v for k, v in calls.items() if v}
    return report


def _fill_with_ray(
    uris: list[str],
    cache_root: str,
    build: FrozenBuilder,
    kinds: tuple[str, ...] | None,
    concurrency: int,
    batch_size: int,
    num_cpus: float,
    num_gpus: float,
) -> list[dict[str, np.ndarray]]:
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller prints one summary line
    ds = ray.data.from_items([{"uri": u} for u in uris]).map_batches(
        TargetFiller,
        fn_constructor_kwargs={"cache_root": cache_root, "build": build, "kinds": kinds},
        compute=ray.data.ActorPoolStrategy(size=max(1, min(concurrency, len(uris)))),
        batch_size=batch_size,
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
        batch_format="numpy",
    )
    return list(ds.iter_batches(batch_size=None, batch_format="numpy"))


__all__ = ["FillReport", "TargetFiller", "decode_image", "fill_cache", "fill_uris"]
