"""Loading the published sub-models into the composite (exercised with tiny checkpoints saved locally)."""

import pytest
import torch

from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.pretrained import build_from_pretrained, split_source

from .builders import make_batch, random_images, tiny_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny sub-model checkpoints laid out like the hub repos (SD3 parts in subfolders of one folder)."""
    root = tmp_path_factory.mktemp("ckpt")
    source = tiny_model(seed=3)
    source.language_model.save_pretrained(root / "llm")
    source.vision_tower.save_pretrained(root / "clip")
    source.reconstruction.vae.save_pretrained(root / "sd3" / "vae")
    source.reconstruction.denoiser.save_pretrained(root / "sd3" / "transformer")
    return root, source


def test_sub_models_come_from_their_checkpoints(checkpoints):
    root, source = checkpoints
    sources = {
        "llm": str(root / "llm"),
        "vision_encoder": str(root / "clip"),
        "vae": str(root / "sd3" / "vae"),
        "denoiser": str(root / "sd3" / "transformer"),
    }
    model = build_from_pretrained(source.config, sources)
    for prefix in ("language_model.", "vision_tower.", "reconstruction.vae.", "reconstruction.denoiser."):
        for name, tensor in source.state_dict().items():
            if name.startswith(prefix):
                assert torch.equal(model.state_dict()[name], tensor), name
    # Our own modules are initialised, not left empty, and the model trains.
    assert not any(p.is_meta for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.sa_perceiver.parameters())
    assert not any(p.requires_grad for p in model.reconstruction.vae.parameters())
    batch, _ = make_batch(model.config, random_images([(112, 112)]))
    model(**batch).loss.backward()


def test_missing_sources_build_fresh_and_vocab_grows(checkpoints):
    root, _ = checkpoints
    config = build_vlsa_config("tiny", vision="lowres", recon=False, extra_vocab=64)
    model = build_from_pretrained(config, {"llm": str(root / "llm")})
    assert model.language_model.get_input_embeddings().weight.shape[0] == config.text_config.vocab_size
    position_ids = model.vision_tower.embeddings.position_ids
    assert torch.equal(position_ids, torch.arange(position_ids.shape[-1]).expand_as(position_ids))


def test_mismatched_checkpoint_and_wrong_part_are_errors(checkpoints):
    root, _ = checkpoints
    wider = build_vlsa_config("tiny", recon=False)
    wider.vision_config.hidden_size = 48
    with pytest.raises(ValueError, match="vision_encoder does not match"):
        build_from_pretrained(wider, {"vision_encoder": str(root / "clip")})
    with pytest.raises(ValueError, match="no denoiser"):
        build_from_pretrained(
            build_vlsa_config("tiny", recon=False), {"denoiser": str(root / "sd3" / "transformer")}
        )
    with pytest.raises(ValueError, match="no pretrained loader"):
        build_from_pretrained(wider, {"vq": "x"})


def test_split_source(tmp_path):
    assert split_source("stabilityai/stable-diffusion-3-medium-diffusers:vae") == (
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "vae",
    )
    assert split_source("meta-llama/Meta-Llama-3-8B-Instruct") == (
        "meta-llama/Meta-Llama-3-8B-Instruct",
        None,
    )
    assert split_source(str(tmp_path)) == (str(tmp_path), None)
