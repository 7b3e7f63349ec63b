"""VLSADataset and collate: samples in the model's batch format, bad records skipped and counted, and the real
tiny model consuming a collated batch (data/dataset.py, data/images.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlsa_platform.data.cognition import CognitionHook, CognitionSettings
from vlsa_platform.data.dataset import EpochRecords, Sample, VLSADataset, collate
from vlsa_platform.data.images import padded_canvas, prepare_image, recon_target
from vlsa_platform.data.mixture import MixturePlan, MixtureSource
from vlsa_platform.data.records import load_image
from vlsa_platform.data.targets import CachedTargets, FrozenTargets, TargetCache, file_digest, recon_transform
from vlsa_platform.data.types import BadSample, Record, Turn
from vlsa_platform.model.markers import IGNORE_INDEX, LABEL_GROUP_PX, LABEL_GROUP_VQ
from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration, grids_to_tensor
from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.tiling import plan_grid, tile_image
from vlsa_platform.model.tokenizer import load_tokenizer

DS = "toy"


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    noise = rng.integers(0, 30, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    _image(150, 200, 0).save(root / "a.png")
    _image(300, 500, 1).save(root / "b.jpg", quality=90)
    _image(112, 112, 2).save(root / "c.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return str(root)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def config():
    return build_vlsa_config("tiny")


def _rec(index, image, *turns):
    return Record(id=f"r{index}", dataset=DS, index=index, image=image, turns=tuple(Turn(*t) for t in turns))


CAPTION = _rec(
    0, "a.png", ("user", "<image>\nDescribe the image briefly."), ("assistant", "A colour gradient.")
)
TEXT_ONLY = _rec(1, None, ("user", "What is two plus two?"), ("assistant", "Four."))
MULTI_TURN = _rec(
    2,
    "b.jpg",
    ("user", "What do you see in <image> this picture?"),
    ("assistant", "A gradient from dark to light with some noise."),
    ("user", "Which corner is brightest?"),
    ("assistant", "The bottom right corner."),
)
SQUARE = _rec(3, "c.png", ("user", "Colour? <image>"), ("assistant", "Mostly green and red."))
CORRUPT = _rec(4, "corrupt.jpg", ("user", "<image>\nWhat is this?"), ("assistant", "Nothing."))
MISSING = _rec(5, "nowhere/missing.png", ("user", "<image>\nWhat is this?"), ("assistant", "Nothing."))


def _dataset(records, tok, config, image_root, **kwargs):
    kwargs.setdefault("max_length", 512)
    return VLSADataset(records, tokenizer=tok, config=config, image_roots={DS: image_root}, **kwargs)


def _cognition():
    """cognition.py's hook, always adding a VQ and a pixel question (a fixed 8x8 index grid stands in for the
    frozen VQ-VAE's)."""
    grid = np.arange(64).reshape(8, 8)
    return CognitionHook(CognitionSettings(p_vq=1.0, p_px=1.0), seed=0, vq_lookup=lambda record, image: grid)


# ----------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("hw", [(150, 200), (300, 500), (112, 112)])
def test_image_inputs_match_tiling_and_the_recon_target_is_the_padded_canvas(config, hw):
    image = _image(*hw, seed=3)
    inputs = prepare_image(image, config)
    tile = config.vision_config.image_size
    grid = plan_grid(*hw, tile, config.grid_pinpoints)
    assert inputs.grid == grid and inputs.num_tokens == config.tokens_per_tile
    assert inputs.tiles.shape == (grid.num_tiles, 3, tile, tile) and inputs.lowres.shape == (3, tile, tile)
    if (grid.content_height, grid.content_width) == hw:  # no shrink: exactly tile_image on the pixels
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        tiles, lowres, _ = tile_image(
            pixels, tile, config.image_mean, config.image_std, config.grid_pinpoints
        )
        torch.testing.assert_close(inputs.tiles, tiles)
        # The snapshot is resized on 8 bits: the float resize's, up to 8-bit rounding (in pixel units).
        std = torch.tensor(config.image_std).view(3, 1, 1)
        diff = ((inputs.lowres - lowres) * std).abs()
        assert diff.mean() < 1 / 255 and diff.max() < 12 / 255, (diff.mean(), diff.max())
    r = config.recon_resolution
    target = inputs.recon
    assert target.shape == (3, r, r) and target.min() >= -1 and target.max() <= 1
    torch.testing.assert_close(target, recon_target(image, config))
    # Padding (below / right of the content, with a margin for the resampling kernel) is the encoder's mean
    # colour, to the nearest 8-bit value.
    mean = torch.tensor(config.image_mean).view(3, 1, 1) * 2 - 1
    rows = math.ceil(grid.content_height / grid.canvas_height * r) + 2
    cols = math.ceil(grid.content_width / grid.canvas_width * r) + 2
    if rows < r:
        torch.testing.assert_close(target[:, rows:], mean.expand(3, r - rows, r), atol=1 / 255, rtol=0)
    if cols < r:
        torch.testing.assert_close(target[:, :, cols:], mean.expand(3, r, r - cols), atol=1 / 255, rtol=0)
    # The same as resizing the exact float canvas, up to 8-bit rounding (also between the two separable passes).
    pixels = torch.from_numpy(np.asarray(image.resize((grid.content_width, grid.content_height))).copy())
    canvas = padded_canvas(pixels.permute(2, 0, 1).float() / 255, grid, tuple(config.image_mean))
    exact = F.interpolate(canvas[None], size=(r, r), mode="bicubic", antialias=True, align_corners=False)[0]
    diff = (target - (exact.clamp(0, 1) * 2 - 1)).abs()
    assert diff.mean() < 1 / 255 and diff.max() < 12 / 255, (diff.mean(), diff.max())
    # The content: the canvas at recon resolution looks like the image (top-left corner mean colour).
    content = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255 * 2 - 1
    h = r * grid.content_height // grid.canvas_height // 2
    w = r * grid.content_width // grid.canvas_width // 2
    ch, cw = hw[0] // 2, hw[1] // 2
    assert (target[:, :h, :w].mean((1, 2)) - content[:, :ch, :cw].mean((1, 2))).abs().max() < 0.1


# ----------------------------------------------------------------------------------------------- samples


def test_collate_gives_the_models_batch_format(tok, config, image_root):
    ds = _dataset([CAPTION, TEXT_ONLY, MULTI_TURN], tok, config, image_root)
    samples = [ds[i] for i in range(3)]
    assert [s.record_id for s in samples] == ["r0", "r1", "r2"] and samples[1].image is None
    batch = collate(samples, tok.pad_token_id)
    lengths = [len(s) for s in samples]
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "labels",
        "label_groups",
        "pixel_values",
        "tile_pixel_values",
        "image_grids",
        "recon_pixel_values",
    }
    assert batch["input_ids"].shape == (3, max(lengths))
    for row, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert torch.equal(batch["input_ids"][row, :n], s.input_ids)
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and (
            batch["label_groups"][row, n:] == 0
        ).all()
        assert torch.equal(batch["labels"][row, :n], s.labels)
    image_tokens = (batch["input_ids"] == config.image_token_id).sum(1).tolist()
    assert image_tokens == [config.tokens_per_tile, 0, config.tokens_per_tile]
    grids = [samples[0].image.grid, samples[2].image.grid]
    s, r = config.vision_config.image_size, config.recon_resolution
    assert batch["pixel_values"].shape == (2, 3, s, s)
    assert batch["tile_pixel_values"].shape == (sum(g.num_tiles for g in grids), 3, s, s)
    assert torch.equal(batch["image_grids"], grids_to_tensor(grids))
    assert torch.equal(batch["tile_pixel_values"][: grids[0].num_tiles], samples[0].image.tiles)
    assert batch["recon_pixel_values"].shape == (2, 3, r, r)

    text_only = collate([samples[1]], tok.pad_token_id)
    assert set(text_only) == {"input_ids", "attention_mask", "labels", "label_groups"}


def test_bad_images_are_skipped_counted_and_replaced_deterministically(tok, config, image_root):
    records = [CAPTION, CORRUPT, MISSING, SQUARE]
    ds = _dataset(records, tok, config, image_root)
    first = ds[1]  # corrupt -> missing -> the square image
    assert isinstance(first, Sample) and first.record_id == "r3"
    assert ds.skip_counts() == {"unreadable_image": 1, "missing_image": 1}
    assert [(s.id, s.reason) for s in first.skips] == [("r4", "unreadable_image"), ("r5", "missing_image")]
    again = ds[2]
    assert again.record_id == "r3" and again.skips == ()  # known-bad records are not retried or recounted
    assert ds.skipped == {"unreadable_image": 1, "missing_image": 1}
    assert [s.index for s in ds.bad_records()] == [4, 5]
    assert torch.equal(again.input_ids, ds[3].input_ids)
    # A fresh dataset makes the same substitution.
    assert _dataset(records, tok, config, image_root)[2].record_id == "r3"


def test_too_long_is_a_skip_and_fail_mode_names_the_record(tok, config, image_root):
    ds = _dataset([CAPTION, TEXT_ONLY], tok, config, image_root, max_length=config.tokens_per_tile)
    assert ds[0].record_id == "r1" and ds.skip_counts() == {"too_long": 1}
    strict = _dataset([CAPTION, CORRUPT], tok, config, image_root, on_bad_sample="fail")
    with pytest.raises(BadSample) as err:
        strict[1]
    assert err.value.reason == "unreadable_image" and err.value.id == "r4" and "r4" in str(err.value)


def test_nothing_usable_is_a_clear_error(tok, config, image_root):
    ds = _dataset([CORRUPT, MISSING], tok, config, image_root)
    with pytest.raises(RuntimeError, match="no usable sample"):
        ds[0]


# ----------------------------------------------------------------------------------------------- the model


def test_the_real_model_trains_on_a_collated_mixed_batch(tok, config, image_root):
    records = [CAPTION, TEXT_ONLY, MULTI_TURN, SQUARE]
    ds = _dataset(records, tok, config, image_root, cognition=_cognition(), max_length=1024)
    samples = [ds[i] for i in range(4)]
    assert ds.skip_counts() == {} and not any(s.truncated for s in samples)
    assert samples[1].label_groups.eq(0).all()  # text-only samples get no cognition turns
    for s in (samples[0], samples[2], samples[3]):
        assert set(s.label_groups.unique().tolist()) == {0, LABEL_GROUP_VQ, LABEL_GROUP_PX}
    batch = collate(samples, tok.pad_token_id)
    assert (batch["label_groups"] == LABEL_GROUP_VQ).any() and (batch["label_groups"] == LABEL_GROUP_PX).any()
    torch.manual_seed(0)
    model = VLSAForConditionalGeneration(config)
    out = model(**batch, generator=torch.Generator().manual_seed(0))
    for name in ("loss", "loss_llm", "loss_rec", "loss_vq", "loss_px"):
        value = getattr(out, name)
        assert value is not None and torch.isfinite(value), name
    out.loss.backward()
    assert model.language_model.get_input_embeddings().weight.grad is not None


def test_cached_latent_params_are_the_vae_posterior_of_the_recon_target(tok, config, image_root, tmp_path):
    torch.manual_seed(0)
    model = VLSAForConditionalGeneration(config)
    frozen = FrozenTargets(
        vae=model.reconstruction.vae, recon_resolution=config.recon_resolution, recon=recon_transform(config)
    )
    cached = CachedTargets(TargetCache(tmp_path / "cache"), frozen)
    # Fill the cache for the JPEG only, the way the target builder does: from the image file.
    path = f"{image_root}/{MULTI_TURN.image}"
    params = frozen.vae_params(frozen.recon_pixels(load_image(image_root, MULTI_TURN.image)))
    cached.cache.put(frozen.key("vae", file_digest(path)), params)

    ds = _dataset([MULTI_TURN, TEXT_ONLY, CAPTION], tok, config, image_root, latent_cache=cached)
    jpeg, text, png = ds[0], ds[1], ds[2]
    assert png.recon_latent_params is None  # a miss
    # The cached target is the VAE's view of exactly the pixel target the dataset builds (stored as float16).
    expected = frozen.vae_params(jpeg.image.recon).astype(np.float16).astype(np.float32)
    assert jpeg.recon_latent_params.dtype == torch.float32
    torch.testing.assert_close(jpeg.recon_latent_params, torch.from_numpy(expected))
    batch = collate([jpeg, text], tok.pad_token_id)
    assert "recon_pixel_values" not in batch
    assert batch["recon_latent_params"].shape == (1, *params.shape)
    out = model(**batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss_rec)
    mixed = collate([jpeg, png], tok.pad_token_id)  # one miss: pixels for every image
    assert "recon_latent_params" not in mixed and mixed["recon_pixel_values"].shape[0] == 2


def test_epoch_records_follow_the_mixture_order(tok, config, image_root):
    by_dataset = {DS: [CAPTION, TEXT_ONLY, SQUARE], "other": [MULTI_TURN]}
    plan = MixturePlan([MixtureSource(DS, 3), MixtureSource("other", 1, weight=2.0)], seed=0)
    order = plan.epoch(0)
    records = EpochRecords(order, by_dataset)
    assert len(records) == 5
    assert [r.id for r in records] == [by_dataset[d][p].id for d, p in order]
    roots = {DS: image_root, "other": image_root}
    ds = VLSADataset(records, tokenizer=tok, config=config, image_roots=roots, max_length=512)
    assert [ds[i].record_id for i in range(len(ds))] == [r.id for r in records]
