"""The fill's frozen models are the stage's: same keys, so a filled cache leaves a stage's loader nothing to
encode, and the loader keys each image by the bytes it decoded (one read)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.data import dataset as dataset_module
from vlsa_platform.data.dataset import VLSADataset, collate
from vlsa_platform.data.records import image_location
from vlsa_platform.data.targets import CachedTargets, TargetCache, build_frozen_targets
from vlsa_platform.orchestration.targets import fill_uris
from vlsa_platform.train.batches import DataSources, vq_targets
from vlsa_platform.train.build import build_model, build_tokenizer
from vlsa_platform.train.frozen_targets import frozen_targets_for, latent_targets, target_kinds

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32


def tiny(*overrides: str):
    return load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=list(overrides))


@pytest.mark.parametrize("weights", ["pretrained", "random"])
def test_the_fill_keys_entries_as_the_stage_model_does(weights, tmp_path):
    config = tiny(f"model.tiny_weights={weights}")
    assert target_kinds(config) == ("vq", "vae")
    fill = frozen_targets_for(config.resolved())
    stage = latent_targets(build_model(config))
    assert fill.key("vae", DIGEST) == stage.key("vae", DIGEST)
    vq = vq_targets(config, "stage3", TargetCache(tmp_path))
    assert fill.key("vq", DIGEST) == vq.frozen.key("vq", DIGEST)
    if (
        weights == "pretrained"
    ):  # the preset's seeded random VAE is not the model's: its entries would only miss
        assert build_frozen_targets("tiny").key("vae", DIGEST) != stage.key("vae", DIGEST)


def test_a_filled_cache_leaves_the_loader_nothing_to_encode(tmp_path, monkeypatch):
    config = tiny()
    dataset = config.stages["stage1"].mixture[0].dataset
    sources = DataSources.read(config, [dataset])
    records = [r for r in sources.records[dataset] if r.image][:4]
    uris = [image_location(sources.image_roots[dataset], r.image) for r in records]
    root = str(tmp_path / "targets")
    report = fill_uris(uris, root, functools.partial(frozen_targets_for, config.resolved(), ("vae",)))
    assert (report.images, report.encoder_calls) == (4, {"vae": 4})

    def no_second_read(uri):
        raise AssertionError(f"{uri} read again to hash it")

    monkeypatch.setattr(dataset_module, "file_digest", no_second_read)
    model = build_model(config)
    tokenizer = build_tokenizer(config)
    data = VLSADataset(
        records,
        tokenizer=tokenizer,
        config=model.config,
        image_roots=sources.image_roots,
        max_length=config.data.max_length,
        latent_cache=CachedTargets(TargetCache(root), latent_targets(model)),
    )
    batch = collate([data[i] for i in range(len(records))], tokenizer.pad_token_id)
    assert "recon_latent_params" in batch and "recon_pixel_values" not in batch
    assert batch["recon_latent_params"].dtype == torch.float32 and batch["recon_latent_params"].shape[0] == 4
