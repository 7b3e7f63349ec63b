"""Builders shared by model tests: tiny configs, optionally at the paper's tile geometry, and batches."""

from __future__ import annotations

import torch

from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration, grids_to_tensor, num_visual_tokens
from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.tiling import tile_image


def make_batch(config, images, text_len: int = 24, seed: int = 0):
    """A batch with one image per sample: ``<image>`` positions, a user prefix, and labelled answer tokens."""
    gen = torch.Generator().manual_seed(seed)
    tiles, lows, grids = [], [], []
    for im in images:
        t, lo, g = tile_image(
            im, config.vision_config.image_size, config.image_mean, config.image_std, config.grid_pinpoints
        )
        tiles.append(t)
        lows.append(lo)
        grids.append(g)
    counts = [num_visual_tokens(config, g) for g in grids]
    length = max(counts) + 2 * text_len
    vocab = config.text_config.vocab_size
    ids = torch.randint(10, min(vocab, 200), (len(images), length), generator=gen)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(counts):
        ids[i, 1 : 1 + n] = config.image_token_id
        end = 1 + n + 2 * text_len
        labels[i, 1 + n + text_len : end] = ids[i, 1 + n + text_len : end]
        mask[i, :end] = 1
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": torch.stack(lows),
        "tile_pixel_values": torch.cat(tiles),
        "image_grids": grids_to_tensor(grids),
    }
    if config.recon:
        r = config.recon_resolution
        batch["recon_pixel_values"] = torch.rand(len(images), 3, r, r, generator=gen) * 2 - 1
    return batch, counts


def tiny_model(seed: int = 0, **switches) -> VLSAForConditionalGeneration:
    """The tiny preset with the given ``build_vlsa_config`` switches, seeded."""
    torch.manual_seed(seed)
    return VLSAForConditionalGeneration(build_vlsa_config("tiny", **switches))


def paper_geometry(config):
    """The tiny widths at the paper's tile geometry: 336 px encoder input, 14 px patches, l = 576."""
    config.vision_config.image_size = 336
    config.vision_config.patch_size = 14
    return config


def random_images(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in sizes]
