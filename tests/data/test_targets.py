"""The frozen-target cache: keys, atomic entries, computed once across trials, local and s3://."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlsa_platform.data import records as records_module
from vlsa_platform.data import targets as targets_module
from vlsa_platform.data.cognition import CognitionHook, CognitionSettings
from vlsa_platform.data.images import recon_target
from vlsa_platform.data.targets import (
    CachedTargets,
    FrozenTargets,
    TargetCache,
    TargetKey,
    build_frozen_targets,
    file_digest,
    fingerprint,
    image_digest,
)
from vlsa_platform.data.types import Record, Turn
from vlsa_platform.model.markers import LABEL_GROUP_VQ
from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.reconstruction import ReconstructionObjective
from vlsa_platform.orchestration.targets import decode_image, fill_cache

TINY = functools.partial(build_frozen_targets, "tiny", seed=0)


def write_images(folder: Path, count: int = 3, seed: int = 0) -> list[str]:
    """Small PNGs of different sizes (smooth random colours, so the VQ codes vary)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        h, w = 40 + 13 * i, 70 - 9 * i
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        name = f"img_{i}.png"
        image.save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def frozen() -> FrozenTargets:
    return TINY()


def test_keys_change_with_every_field():
    base = TargetKey("a" * 64, "f" * 64, 64, "vq", "t")
    variants = [
        TargetKey("b" * 64, "f" * 64, 64, "vq", "t"),
        TargetKey("a" * 64, "e" * 64, 64, "vq", "t"),
        TargetKey("a" * 64, "f" * 64, 32, "vq", "t"),
        TargetKey("a" * 64, "f" * 64, 64, "vae", "t"),
        TargetKey("a" * 64, "f" * 64, 64, "vq", "u"),
    ]
    assert len({base.digest, *(v.digest for v in variants)}) == 6
    assert TargetKey("a" * 64, "f" * 64, 64, "vq", "t").digest == base.digest
    assert base.relpath == f"vq/{base.digest[:2]}/{base.digest}.npz"


def test_fingerprint_follows_weights_and_config(frozen):
    again = TINY()
    assert again.vq_fingerprint == frozen.vq_fingerprint and again.vae_fingerprint == frozen.vae_fingerprint
    other = build_frozen_targets("tiny", seed=1)
    assert other.vq_fingerprint != frozen.vq_fingerprint and other.vae_fingerprint != frozen.vae_fingerprint
    model = TINY().vq_model
    before = fingerprint(model)
    with torch.no_grad():
        model.quantize.embedding.weight[0, 0] += 1e-3
    assert fingerprint(model) != before
    # The same build in another process gives the same fingerprint: test_targets_ray (keys made in actors).


def test_frozen_targets_compute_indices_and_posterior_parameters(frozen, tmp_path):
    (name,) = write_images(tmp_path, 1)
    image = decode_image((tmp_path / name).read_bytes())
    grid = frozen.vq_indices([image])
    assert grid.shape == (1, 8, 8) and grid.dtype == np.int32 and len(np.unique(grid)) > 1
    pixels = frozen.recon_pixels(image)
    assert pixels.shape == (3, 64, 64)
    params = frozen.vae_params(pixels)
    assert params.shape == (32, 8, 8) and params.dtype == np.float32
    with torch.no_grad():
        expected = frozen.vae.encode(pixels[None]).latent_dist.parameters[0].numpy()
    np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-6)
    assert frozen.encoder_calls["vq"] >= 1 and frozen.encoder_calls["vae"] >= 1


def test_local_cache_entries_are_atomic_and_counted(tmp_path):
    cache = TargetCache(tmp_path / "cache")
    key = TargetKey(image_digest(b"x"), "m", 64, "vq", "t")
    assert cache.get(key) is None and not cache.exists(key)
    calls = []

    def compute():
        calls.append(1)
        return np.arange(16, dtype=np.int32).reshape(4, 4)

    first = cache.get_or_compute(key, compute)
    second = TargetCache(tmp_path / "cache").get_or_compute(key, compute)  # another user of the same root
    assert len(calls) == 1 and cache.computed == 1
    np.testing.assert_array_equal(first, second)
    assert cache.exists(key) and cache.keys("vq") == {key.digest}
    files = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files == [f"{key.digest}.npz"]  # no temporary files left behind


def _fill_trials(records, image_root: Path, cache_root: str, builder=TINY):
    """Two 'trials' sharing a cache: each fills it, then reads its targets through ``CachedTargets``."""
    reports = [fill_cache(records, str(image_root), cache_root, builder) for _ in range(2)]
    return reports


def test_two_trials_compute_each_image_once_and_recompute_on_change(tmp_path, frozen):
    images = tmp_path / "images"
    names = write_images(images, 3)
    records = [{"image": n} for n in names] + [{"image": names[0]}, {"image": None}]  # a repeat, a text-only
    cache_root = str(tmp_path / "cache")
    first, second = _fill_trials(records, images, cache_root)
    assert (first.images, first.computed, first.reused, first.encoder_calls) == (3, 6, 0, {"vq": 3, "vae": 3})
    assert (second.computed, second.reused, second.encoder_calls) == (0, 6, {})

    # The entries are the frozen models' outputs for each image.
    cache = TargetCache(cache_root)
    config = build_vlsa_config("tiny")
    for name in names:
        data = (images / name).read_bytes()
        image = decode_image(data)
        vq = cache.get(frozen.key("vq", image_digest(data)))
        np.testing.assert_array_equal(vq, frozen.vq_indices([image])[0])
        vae = cache.get(frozen.key("vae", image_digest(data)))
        expected = frozen.vae_params(recon_target(image, config))
        assert vae.dtype == np.float32  # stored as float16, read back as float32
        np.testing.assert_allclose(vae, expected.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-6)

    # Changed image bytes: that image only is recomputed (both kinds).
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(images / names[1])
    changed = fill_cache(records, str(images), cache_root, TINY)
    assert (changed.computed, changed.reused, changed.encoder_calls) == (2, 4, {"vq": 1, "vae": 1})

    # Changed frozen weights: every entry is recomputed.
    reweighted = fill_cache(
        records, str(images), cache_root, functools.partial(build_frozen_targets, "tiny", seed=1)
    )
    assert (reweighted.computed, reweighted.reused) == (6, 0)

    # Another L_rec resolution: the VAE entries only.
    other_res = fill_cache(
        records, str(images), cache_root, functools.partial(build_frozen_targets, "tiny", recon_resolution=32)
    )
    assert (other_res.computed, other_res.reused, other_res.encoder_calls) == (3, 3, {"vae": 3})
    assert len(TargetCache(cache_root).keys("vq")) == 3 + 1 + 3  # original, changed image, other weights


def test_unreadable_images_are_reported_not_fatal(tmp_path):
    images = tmp_path / "images"
    names = write_images(images, 1)
    (images / "broken.png").write_bytes(b"not a png")
    report = fill_cache([*names, "broken.png", "missing.png"], str(images), str(tmp_path / "c"), TINY)
    assert report.computed == 2 and len(report.failed) == 2
    assert {Path(uri).name for uri, _ in report.failed} == {"broken.png", "missing.png"}


def test_cached_latent_params_feed_the_reconstruction_objective(tmp_path):
    """The dataset's view: ``get_latent_params(image bytes)`` gives what ``ReconstructionObjective.encode``
    takes, and equals encoding the pixels with the same VAE."""
    config = build_vlsa_config("tiny")
    objective = ReconstructionObjective(config)
    frozen = FrozenTargets(vae=objective.vae, recon_resolution=config.recon_resolution)
    images = tmp_path / "images"
    (name,) = write_images(images, 1)
    data = (images / name).read_bytes()
    pixels = recon_target(decode_image(data), config)
    targets = CachedTargets(TargetCache(tmp_path / "cache"), frozen)
    assert targets.get_latent_params(data) is None  # a miss: the dataset falls back to pixels
    key = frozen.key("vae", image_digest(data))
    targets.cache.put(key, frozen.vae_params(pixels))
    params = targets.get_latent_params(data)
    assert params.shape == (32, 8, 8)
    z_cached = objective.encode(latent_params=params[None], generator=torch.Generator().manual_seed(0))
    z_pixels = objective.encode(pixels=pixels[None], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z_cached, z_pixels, atol=2e-3, rtol=2e-3)  # float16 storage: 11-bit mantissa
    assert objective.vae_encoder_calls == 1  # the pixels; the cached parameters cost no encoder call


def test_cognition_hook_reads_vq_targets_through_the_cache(tmp_path, frozen):
    images = tmp_path / "images"
    (name,) = write_images(images, 1)
    targets = CachedTargets(TargetCache(tmp_path / "cache"), frozen)
    hook = CognitionHook(
        CognitionSettings(p_vq=1.0, p_px=0.0), seed=0, vq_lookup=targets.vq_lookup({"d": str(images)})
    )
    record = Record(
        "r", "d", 0, name, (Turn("user", "<image>\nWhat is it?"), Turn("assistant", "A picture."))
    )
    image = decode_image((images / name).read_bytes())
    first = hook(record, image, 0)
    assert hook(record, image, 0) == first and sum(t.group == LABEL_GROUP_VQ for t in first) == 1
    assert targets.cache.computed == 1 and targets.cache.reused == 1
    assert file_digest(images / name) == image_digest((images / name).read_bytes())


def test_s3_cache_computes_each_image_once(tmp_path, s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    images = tmp_path / "images"
    names = write_images(images, 2)
    cache_root = f"s3://{s3_server.bucket}/targets-{uuid.uuid4().hex[:8]}"
    first, second = _fill_trials(names, images, cache_root)
    assert (first.computed, first.reused, first.encoder_calls) == (4, 0, {"vq": 2, "vae": 2})
    assert (second.computed, second.reused) == (0, 4)
    cache = TargetCache(cache_root)
    assert len(cache.keys("vq")) == 2 and len(cache.keys("vae")) == 2
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=cache_root.split("/", 3)[3])
    assert all(obj["Key"].endswith(".npz") for obj in listed["Contents"]) and listed["KeyCount"] == 4

    # The same entries as a local fill.
    local = tmp_path / "local"
    fill_cache(names, str(images), str(local), TINY)
    frozen = TINY()
    for name in names:
        for kind in ("vq", "vae"):
            key = frozen.key(kind, file_digest(images / name))
            np.testing.assert_array_equal(cache.get(key), TargetCache(local).get(key))

    Image.fromarray(np.full((20, 24, 3), 200, dtype=np.uint8)).save(images / names[0])
    assert fill_cache(names, str(images), cache_root, TINY).computed == 2


def test_vae_entries_are_float16_on_disk_and_float32_when_read(tmp_path):
    cache = TargetCache(tmp_path / "cache")
    key = TargetKey(image_digest(b"x"), "m", 64, "vae", "t")
    value = np.random.default_rng(0).normal(size=(32, 8, 8)).astype(np.float32)
    cache.put(key, value)
    with np.load(cache.uri(key)) as npz:
        assert npz["data"].dtype == np.float16 and npz["data"].nbytes == value.nbytes // 2
    read = cache.get(key)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, value.astype(np.float16).astype(np.float32))
    vq_key = TargetKey(image_digest(b"x"), "m", 64, "vq", "t")
    cache.put(vq_key, np.arange(16, dtype=np.int32).reshape(4, 4))
    assert cache.get(vq_key).dtype == np.int32  # indices are stored as they are


def test_the_format_is_part_of_every_key(monkeypatch):
    """Entries of an older layout (format 1: float32 VAE entries) have other keys, so they are never read."""
    key = TargetKey("a" * 64, "f" * 64, 64, "vae", "t")
    current = key.digest
    monkeypatch.setattr(targets_module, "CACHE_FORMAT", 1)
    assert TargetKey("a" * 64, "f" * 64, 64, "vae", "t").digest != current


def test_the_loader_keys_images_by_the_bytes_it_decoded(tmp_path, monkeypatch):
    """One read per image: ``load_image`` hashes the bytes it decodes, and the cognition hook's VQ lookup
    and the dataset's latent lookup use that digest instead of reading the file again."""
    images = tmp_path / "images"
    (name,) = write_images(images, 1)
    reads = []
    real = records_module.read_local
    monkeypatch.setattr(records_module, "read_local", lambda path: reads.append(path) or real(path))
    image = records_module.load_image(str(images), name)
    assert len(reads) == 1
    assert records_module.file_digest_of(image) == image_digest((images / name).read_bytes())

    def no_second_read(uri):
        raise AssertionError(f"{uri} read again to hash it")

    monkeypatch.setattr(targets_module, "file_digest", no_second_read)
    frozen = TINY()
    targets = CachedTargets(TargetCache(tmp_path / "cache"), frozen)
    record = Record("r", "d", 0, name, (Turn("user", "<image>\nWhat?"), Turn("assistant", "A picture.")))
    grid = targets.vq_lookup({"d": str(images)})(record, image)
    np.testing.assert_array_equal(grid, frozen.vq_indices([image])[0])
