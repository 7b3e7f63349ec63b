"""The tiny preset's own pretraining (``train.tiny_pretrain``): a short run lowers each part's held-out loss, the
result is cached under a key that follows the data, the bundled weights were built for the current key, and
``model.tiny_weights: pretrained`` starts from them.

Every run here is a few steps on a 40-record dataset (the real step's lengths are measured in docs/model.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from PIL import Image
from transformers import CLIPVisionModel, LlamaForCausalLM

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.data.synthetic import write_synthetic
from vlsa_platform.train import tiny_pretrain
from vlsa_platform.train.build import build_model
from vlsa_platform.train.tiny_pretrain import (
    BUNDLED,
    INFO_FILE,
    KEY_FILE,
    PRETRAINED_PARTS,
    PretrainSettings,
    cache_key,
    current_key,
    dataset_digest,
    tiny_base_config,
    tiny_pretrained,
)

ROOT = Path(__file__).resolve().parents[2]
SHORT = PretrainSettings(
    steps={"llm": 8, "vae": 5, "vision_encoder": 8, "denoiser": 8},
    batch={"llm": 8, "vae": 4, "vision_encoder": 8, "denoiser": 8},
)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data"), num_train=40, num_val=12, crops_per_photo=1)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, small_data) -> Path:
    with torch.random.fork_rng(devices=[]):
        return tiny_pretrained(tmp_path_factory.mktemp("cache"), SHORT, dataset=small_data, bundled=None)


def test_a_short_run_lowers_each_parts_held_out_loss(pretrained):
    info = json.loads((pretrained / INFO_FILE).read_text())
    assert set(info["parts"]) == set(PRETRAINED_PARTS)
    for part, stats in info["parts"].items():
        assert stats["steps"] == SHORT.steps[part]
        assert stats["val_after"] < stats["val_before"], (part, stats)
    classes = {
        "llm": LlamaForCausalLM,
        "vae": AutoencoderKL,
        "vision_encoder": CLIPVisionModel,
        "denoiser": SD3Transformer2DModel,
    }
    for part, cls in classes.items():
        assert isinstance(cls.from_pretrained(str(pretrained / part)), cls)


def test_the_cache_is_reused_and_keyed_on_the_data(pretrained, small_data, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_pretrain, "pretrain_tiny", _must_not_train)
    assert tiny_pretrained(pretrained.parent, SHORT, dataset=small_data, bundled=None) == pretrained
    # The same weights, offered as a bundle: taken from there.
    assert tiny_pretrained(tmp_path, SHORT, dataset=small_data, bundled=pretrained) == pretrained

    config, digest = tiny_base_config(), dataset_digest(small_data)
    other = write_synthetic(tmp_path / "other", seed=1, num_train=40, num_val=12, crops_per_photo=1)
    assert dataset_digest(other) != digest
    copy = write_synthetic(tmp_path / "copy", num_train=40, num_val=12, crops_per_photo=1)
    assert dataset_digest(copy) == digest
    path = next((copy / "images" / "shapes").glob("train_*.png"))
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    pixels.save(path, compress_level=0)  # the same pixels, other bytes: the same key
    assert dataset_digest(copy) == digest
    pixels.putpixel((0, 0), (1, 2, 3))  # one pixel changed: a new key
    pixels.save(path)
    assert dataset_digest(copy) != digest
    longer = PretrainSettings(steps={**SHORT.steps, "llm": 9}, batch=SHORT.batch)
    assert cache_key(config, digest, longer) != cache_key(config, digest, SHORT)


def _must_not_train(*args, **kwargs):
    raise AssertionError("the cached weights should have been reused")


def test_tiny_weights_pretrained_starts_from_the_cached_parts(pretrained, monkeypatch):
    sources = {part: str(pretrained / part) for part in PRETRAINED_PARTS}
    monkeypatch.setattr(tiny_pretrain, "tiny_sources", lambda cache_dir=None: sources)
    overrides = ["model.tiny_weights=pretrained"]
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=overrides)
    model = build_model(config)
    state = model.state_dict()
    saved = {
        "language_model.": LlamaForCausalLM.from_pretrained(sources["llm"]).state_dict(),
        "vision_tower.": CLIPVisionModel.from_pretrained(sources["vision_encoder"]).state_dict(),
        "reconstruction.vae.": AutoencoderKL.from_pretrained(sources["vae"]).state_dict(),
        "reconstruction.denoiser.": SD3Transformer2DModel.from_pretrained(sources["denoiser"]).state_dict(),
    }
    for prefix, weights in saved.items():
        for name, tensor in weights.items():
            mine = state[prefix + name]
            if mine.shape != tensor.shape:  # the embeddings grew by the VQ tokens: the old rows are kept
                mine = mine[: tensor.shape[0]]
            assert torch.equal(mine, tensor), prefix + name
    random = build_model(
        load_experiment(
            ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=["model.tiny_weights=random"]
        )
    )
    name = "language_model.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(random.state_dict()[name], state[name])


def test_the_bundled_weights_were_built_for_the_current_data_and_configs():
    """The package's weights match the key of today's synthetic data, tiny configs and recipe; if this fails,
    ``python -m vlsa_platform.train.tiny_pretrain --bundle`` rebuilds them (until then runs build their own)."""
    assert (BUNDLED / INFO_FILE).is_file()
    assert (BUNDLED / KEY_FILE).read_text().strip() == current_key(), (
        "stale bundled tiny weights: run python -m vlsa_platform.train.tiny_pretrain --bundle"
    )
    assert tiny_pretrained() == BUNDLED
    info = json.loads((BUNDLED / INFO_FILE).read_text())
    for part, stats in info["parts"].items():
        assert stats["val_after"] < 0.5 * stats["val_before"], (part, stats)
