"""Frozen-model targets (VQ codebook indices, VAE posterior parameters) and a content-addressed cache for them.

Both targets come from frozen models, so they depend only on (image, model weights, resolution, input
transform) and can be computed once and reused by every stage, run and sweep trial that shares the cache.

- :class:`FrozenTargets` holds the frozen ``VQModel`` and/or ``AutoencoderKL`` and computes, per image, the VQ
  index grid ``(h', w')`` (:func:`.cognition.vq_indices`) and the VAE posterior parameters ``(2C, h, w)`` of
  the L_rec target pixels (``vae.encode(x).latent_dist.parameters``: mean and log-variance, what
  ``ReconstructionObjective.encode(latent_params=...)`` takes). It fingerprints each model once, at
  construction, and counts the images each frozen encoder has seen (``encoder_calls``).
- :class:`TargetKey`: ``sha256`` of (the image file's SHA-256, the model fingerprint, the resolution, the
  target kind, the input transform's tag). Nothing else — no run, stage or trial name — so reuse across them
  is automatic, and changed image bytes, weights, resolution or transform give a new key (a recomputation,
  never a stale hit).
- :class:`TargetCache` stores one small ``.npz`` per entry under ``<root>/<kind>/<k[:2]>/<k>.npz``, ``root``
  a local folder or ``s3://bucket/prefix`` (:mod:`vlsa_platform.storage`). One object per entry rather than
  batches: a training sample reads exactly its image's entry, parallel writers (Ray actors, several trials)
  never contend for a shared file or index, and a write is atomic on its own (local: temp file +
  ``os.replace``; S3: a PUT is atomic). A VQ entry is ~4 KB (32x32 int32), a VAE entry 256 KB at paper scale
  (2x16x64x64, stored as float16 and returned as float32: :data:`STORED_DTYPES`), so per-object overhead is
  small against the payload.
- :class:`CachedTargets` binds a cache to a :class:`FrozenTargets`: the dataset's ``LatentCache``
  (``get_latent_params(image_bytes)``) and the cognition hook's VQ lookup (computed and stored on a miss).

The image key is the SHA-256 of the image *file's bytes* (read, not decoded), so checking whether an image's
targets exist costs a read and a hash, not a decode. Identical files anywhere share entries. The data loader
hashes the bytes it decodes (``records.load_image`` leaves the digest on the image), so a cached image file is
read once per sample.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import storage
from .cognition import VQ_RESOLUTION, vq_indices, vq_pixels
from .records import file_digest_of, image_digest

if TYPE_CHECKING:
    from PIL import Image

    from ..model.configuration_vlsa import VLSAConfig
    from .types import Record

#: Kinds of target the cache holds.
TARGET_KINDS: tuple[str, ...] = ("vq", "vae")

#: Tag of the VQ input transform (:func:`.cognition.vq_pixels`); part of the VQ key. Change it when the
#: transform changes, so old entries stop matching.
VQ_TRANSFORM = "cognition.vq_pixels:square-bicubic:v1"

#: Std of the tiny preset's redrawn VQ codebook (about the spread of its random encoder's outputs).
_TINY_CODEBOOK_STD = 0.3

#: Version of the key and entry layout (part of every key). 2: VAE entries stored as float16 (format-1 entries,
#: float32, have other keys and are never read as format 2).
CACHE_FORMAT = 2

#: How each kind is stored when its values are floating point: VAE posterior parameters as float16 (half the
#: bytes; |mean| and the log-variance, clamped by diffusers to [-30, 20], are far inside float16's range, and
#: its 11-bit mantissa is below the noise the posterior sample adds), returned as float32 by ``get``.
STORED_DTYPES: dict[str, np.dtype] = {"vae": np.dtype(np.float16)}


# ------------------------------------------------------------------------------------------------ hashing


def file_digest(uri: str | os.PathLike[str]) -> str:
    """:func:`image_digest` of a local file (streamed) or an ``s3://`` object."""
    if storage.is_s3(uri):
        return image_digest(storage.read_bytes(uri))
    h = hashlib.sha256()
    with open(uri, "rb") as handle:
        for chunk in iter(functools.partial(handle.read, 1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(module: torch.nn.Module) -> str:
    """A content hash (SHA-256 hex) of a model: its public config entries (diffusers/transformers ``config``) and
    every state-dict tensor's name, dtype, shape and bytes, in name order. Costs one pass over the weights
    (about a second for the paper's VQ-VAE + VAE); :class:`FrozenTargets` computes it once."""
    h = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None:
        items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        # Private keys are bookkeeping (library version, load path, and diffusers' ``_use_default_values``,
        # a set whose order changes between processes); the public ones describe the architecture.
        items = {k: v for k, v in items.items() if not k.startswith("_")}
        h.update(json.dumps(items, sort_keys=True, default=str).encode())
    h.update(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass(frozen=True)
class TargetKey:
    """Identity of one cache entry. ``digest`` = SHA-256 of all fields; ``relpath`` = where it is stored.

    Attributes:
        image: :func:`image_digest` of the image file.
        model: :func:`fingerprint` of the frozen model.
        resolution: side of the model's square input.
        kind: ``vq`` or ``vae``.
        transform: tag of the image -> input-pixels transform.
    """

    image: str
    model: str
    resolution: int
    kind: str
    transform: str = ""

    @functools.cached_property
    def digest(self) -> str:
        fields = [CACHE_FORMAT, self.image, self.model, int(self.resolution), self.kind, self.transform]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    @property
    def relpath(self) -> str:
        return f"{self.kind}/{self.digest[:2]}/{self.digest}.npz"


# ------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ReconTransform:
    """How L_rec target pixels ``(3, R, R)`` in ``[-1, 1]`` are made from an image; ``tag`` enters the key."""

    fn: Callable[[Image.Image], torch.Tensor]
    tag: str


def recon_transform(config: VLSAConfig) -> ReconTransform:
    """The dataset's own L_rec target (:func:`.images.recon_target`) for ``config``'s geometry."""
    from .images import recon_target

    tag = (
        f"images.recon_target:tile={config.vision_config.image_size}:pinpoints={config.grid_pinpoints}"
        f":mean={[round(float(m), 6) for m in config.image_mean]}"
    )
    return ReconTransform(functools.partial(recon_target, config=config), tag)


class FrozenTargets:
    """The frozen models whose outputs are cached targets, fingerprinted once.

    Args:
        vq_model: a diffusers ``VQModel`` (``None``: no VQ targets).
        vae: a diffusers ``AutoencoderKL`` (``None``: no VAE targets).
        vq_resolution: side of the square VQ input (256 at paper scale).
        recon_resolution: side ``R`` of the L_rec target the VAE encodes.
        recon: how :meth:`recon_pixels` builds the VAE input from an image (needed only to fill a cache from
            image files; :meth:`vae_params` takes the pixels themselves).

    Attributes:
        vq_fingerprint, vae_fingerprint: :func:`fingerprint` of each model (``None`` if absent).
        encoder_calls: images passed through each frozen encoder, by kind (``Counter``).
    """

    def __init__(
        self,
        vq_model: torch.nn.Module | None = None,
        vae: torch.nn.Module | None = None,
        vq_resolution: int | None = None,
        recon_resolution: int | None = None,
        *,
        recon: ReconTransform | None = None,
    ) -> None:
        if vq_model is not None and vq_resolution is None:
            raise ValueError("vq_resolution is needed with a vq_model")
        if vae is not None and recon_resolution is None:
            raise ValueError("recon_resolution is needed with a vae")
        self.vq_model = vq_model.eval().requires_grad_(False) if vq_model is not None else None
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.vq_resolution = vq_resolution
        self.recon_resolution = recon_resolution
        self.recon = recon
        self.vq_fingerprint = fingerprint(vq_model) if vq_model is not None else None
        self.vae_fingerprint = fingerprint(vae) if vae is not None else None
        self.encoder_calls: Counter[str] = Counter()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The target kinds this instance can compute."""
        return tuple(k for k, m in (("vq", self.vq_model), ("vae", self.vae)) if m is not None)

    def key(self, kind: str, image: str) -> TargetKey:
        """The cache key of ``kind`` for the image with digest ``image``."""
        if kind == "vq" and self.vq_fingerprint is not None:
            return TargetKey(image, self.vq_fingerprint, int(self.vq_resolution), "vq", VQ_TRANSFORM)
        if kind == "vae" and self.vae_fingerprint is not None:
            tag = self.recon.tag if self.recon is not None else "pixels"
            return TargetKey(image, self.vae_fingerprint, int(self.recon_resolution), "vae", tag)
        raise ValueError(f"no {kind!r} model here (have {self.kinds})")

    @torch.no_grad()
    def vq_indices(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """``(N, h', w')`` int32 codebook indices of ``N`` decoded RGB images."""
        if self.vq_model is None:
            raise ValueError("no VQ model")
        pixels = torch.stack([vq_pixels(im, int(self.vq_resolution)) for im in images])
        self.encoder_calls["vq"] += len(images)
        return vq_indices(self.vq_model, pixels).cpu().numpy().astype(np.int32)

    def recon_pixels(self, image: Image.Image) -> torch.Tensor:
        """``(3, R, R)`` L_rec target pixels of a decoded image (through ``recon``)."""
        if self.recon is None:
            raise ValueError("FrozenTargets has no recon transform; pass recon=recon_transform(config)")
        return self.recon.fn(image)

    @torch.no_grad()
    def vae_params(self, recon_pixels: torch.Tensor) -> np.ndarray:
        """VAE posterior parameters ``(N, 2C, h, w)`` float32 of L_rec targets ``(N, 3, R, R)`` in ``[-1, 1]``
        (a single ``(3, R, R)`` image gives ``(2C, h, w)``)."""
        if self.vae is None:
            raise ValueError("no VAE")
        single = recon_pixels.dim() == 3
        x = recon_pixels.unsqueeze(0) if single else recon_pixels
        param = next(self.vae.parameters())
        self.encoder_calls["vae"] += x.shape[0]
        params = self.vae.encode(x.to(device=param.device, dtype=param.dtype)).latent_dist.parameters
        out = params.float().cpu().numpy()
        return out[0] if single else out


def _materialized(source: str) -> tuple[str, str | None]:
    from ..model.pretrained import split_source

    path, subfolder = split_source(source)
    return str(storage.materialize(path)), subfolder


def build_frozen_targets(
    preset: str,
    *,
    kinds: Iterable[str] = TARGET_KINDS,
    grid_pinpoints: Sequence[Sequence[int]] | None = None,
    recon_resolution: int | None = None,
    vq_source: str | None = None,
    vae_source: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FrozenTargets:
    """The frozen VQ-VAE and VAE of a model preset, ready to compute targets.

    ``paper``: the published weights (``vq_source`` / ``vae_source``, default ``PAPER_SOURCES``; hub ids,
    local folders or ``s3://``). ``tiny``: the preset's configs with weights drawn from ``seed`` (so every
    process builds the same models and fingerprints); the tiny VQ codebook is redrawn from N(0, 0.3^2), the
    scale of the randomly initialised encoder's outputs, so the indices vary across an image (diffusers'
    default codebook, uniform in +-1/n, maps everything to one code). The build is bitwise reproducible (no forward pass feeds the weights, so thread
    counts cannot change them): every process gets the same fingerprints. Picklable through ``functools.partial`` — what Ray actors receive.
    """
    from diffusers import AutoencoderKL, VQModel

    from ..model.presets import PAPER_SOURCES, build_vlsa_config, vq_config

    kinds = tuple(kinds)
    config = build_vlsa_config(preset, grid_pinpoints=grid_pinpoints, recon_resolution=recon_resolution)
    vq_model = vae = None
    if preset == "paper":
        if "vq" in kinds:
            path, sub = _materialized(vq_source or ":".join(x for x in PAPER_SOURCES["vq"] if x))
            vq_model = VQModel.from_pretrained(path, **({"subfolder": sub} if sub else {}))
        if "vae" in kinds:
            path, sub = _materialized(vae_source or ":".join(x for x in PAPER_SOURCES["vae"] if x))
            vae = AutoencoderKL.from_pretrained(path, **({"subfolder": sub} if sub else {}))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if "vq" in kinds:
                vq_model = VQModel.from_config(vq_config(preset)).eval()
                # No data-dependent init: the weights must be bit-equal in every process.
                with torch.no_grad():
                    vq_model.quantize.embedding.weight.normal_(0.0, _TINY_CODEBOOK_STD)
            if "vae" in kinds:
                vae = AutoencoderKL.from_config(config.vae_config)
    for model in (vq_model, vae):
        if model is not None:
            model.to(device)
    return FrozenTargets(
        vq_model,
        vae,
        VQ_RESOLUTION[preset] if vq_model is not None else None,
        config.recon_resolution if vae is not None else None,
        recon=recon_transform(config) if vae is not None else None,
    )


# -------------------------------------------------------------------------------------------------- cache


class TargetCache:
    """Cache entries (one ``.npz`` each) under a local folder or an ``s3://bucket/prefix``.

    Counters (this instance): ``computed`` (entries computed by :meth:`get_or_compute`), ``reused`` (found).
    Picklable (the S3 client is made lazily in each process).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root) if storage.is_s3(str(root)) else str(Path(root).expanduser())
        if storage.is_s3(self.root):
            storage.parse_s3(self.root)  # validate early
        self._client: Any = None
        self.computed = 0
        self.reused = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def is_s3(self) -> bool:
        return storage.is_s3(self.root)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = storage.s3_client()
        return self._client

    def uri(self, key: TargetKey) -> str:
        """Where ``key``'s entry lives."""
        return storage.join(self.root, key.relpath)

    def exists(self, key: TargetKey) -> bool:
        if not self.is_s3:
            return Path(self.uri(key)).is_file()
        bucket, name = storage.parse_s3(self.uri(key))
        try:
            self.client.head_object(Bucket=bucket, Key=name)
            return True
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise storage.StorageError(f"{self.uri(key)}: {exc}") from exc

    def get(self, key: TargetKey) -> np.ndarray | None:
        """The stored array (float32 for a kind stored in lower precision), or ``None`` when there is none."""
        uri = self.uri(key)
        try:
            data = storage.read_bytes(uri, client=self.client if self.is_s3 else None)
        except (FileNotFoundError, storage.NotFoundError):
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            array = npz["data"]
        return array.astype(np.float32) if key.kind in STORED_DTYPES else array

    def put(self, key: TargetKey, array: np.ndarray) -> None:
        """Store ``array`` atomically (a reader sees the whole entry or none), floating point values in
        :data:`STORED_DTYPES`' dtype for their kind."""
        stored = STORED_DTYPES.get(key.kind)
        if stored is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(stored)
        buf = io.BytesIO()
        meta = json.dumps({"format": CACHE_FORMAT, **dataclasses.asdict(key), "digest": key.digest})
        np.savez(buf, data=np.ascontiguousarray(array), meta=np.array(meta))
        payload = buf.getvalue()
        uri = self.uri(key)
        if self.is_s3:
            bucket, name = storage.parse_s3(uri)
            try:
                self.client.put_object(Bucket=bucket, Key=name, Body=payload)
            except Exception as exc:
                raise storage.StorageError(f"{uri}: could not write the cache entry ({exc})") from exc
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(payload)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_or_compute(self, key: TargetKey, compute_fn: Callable[[], np.ndarray]) -> np.ndarray:
        """The entry for ``key``; on a miss, ``compute_fn()`` is called, stored and returned."""
        found = self.get(key)
        if found is not None:
            self.reused += 1
            return found
        value = np.asarray(compute_fn())
        self.put(key, value)
        self.computed += 1
        return value

    def keys(self, kind: str) -> set[str]:
        """Digests of the stored entries of ``kind`` (one listing; for reports and bulk checks)."""
        if not self.is_s3:
            base = Path(self.root, kind)
            return {p.stem for p in base.glob("*/*.npz")} if base.is_dir() else set()
        bucket, prefix = storage.parse_s3(storage.join(self.root, kind) + "/")
        out: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if name.endswith(".npz"):
                    out.add(name[: -len(".npz")])
        return out


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


# --------------------------------------------------------------------------------------------- bound view


class CachedTargets:
    """A :class:`TargetCache` bound to the frozen models whose targets it holds.

    - ``get_latent_params(image_bytes_or_digest)``: the dataset's ``LatentCache`` — cached ``(2C, h, w)`` VAE
      parameters as a tensor, ``None`` on a miss (the dataset then feeds pixels and the model encodes them).
    - ``vq_grid(image_bytes_or_digest, image)``: the ``(h', w')`` VQ grid, computed from ``image`` and stored on
      a miss; ``vq_lookup(image_roots)`` adapts it to the cognition hook's ``(record, image)``.
    """

    def __init__(self, cache: TargetCache, frozen: FrozenTargets) -> None:
        self.cache = cache
        self.frozen = frozen

    @staticmethod
    def _digest(image: bytes | str) -> str:
        return image if isinstance(image, str) else image_digest(image)

    def get_latent_params(self, key: bytes | str) -> torch.Tensor | None:
        found = self.cache.get(self.frozen.key("vae", self._digest(key)))
        return None if found is None else torch.from_numpy(found)

    def vq_grid(self, key: bytes | str, image: Image.Image | np.ndarray) -> np.ndarray:
        return self.cache.get_or_compute(
            self.frozen.key("vq", self._digest(key)), lambda: self.frozen.vq_indices([image])[0]
        )

    def vq_lookup(self, image_roots: dict[str, str]) -> Callable[[Record, Any], np.ndarray]:
        """``(record, image) -> (h', w')`` for :class:`.cognition.CognitionHook`; the image is keyed by the digest
        ``records.load_image`` left on it, else its file ``image_roots[record.dataset] / record.image`` is read
        and hashed."""

        def lookup(record: Record, image: Any) -> np.ndarray:
            assert record.image is not None
            digest = file_digest_of(image) if hasattr(image, "info") else None
            if digest is None:
                digest = file_digest(storage.join(image_roots[record.dataset], record.image))
            return self.vq_grid(digest, image)

        return lookup


__all__ = [
    "CACHE_FORMAT",
    "STORED_DTYPES",
    "TARGET_KINDS",
    "VQ_TRANSFORM",
    "CachedTargets",
    "FrozenTargets",
    "ReconTransform",
    "TargetCache",
    "TargetKey",
    "build_frozen_targets",
    "file_digest",
    "fingerprint",
    "image_digest",
    "recon_transform",
]
