"""Initial weights from an S3-compatible server (SeaweedFS on 127.0.0.1, keys enforced)."""

import torch

from tests.model.builders import tiny_model
from vlsa_platform import storage
from vlsa_platform.train.weights import load_initial_model, resolve_source


def test_sub_models_load_from_s3(s3_server, tmp_path, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    source = tiny_model(seed=5, vision="lowres", recon=False)
    source.language_model.save_pretrained(tmp_path / "llm")
    source.vision_tower.save_pretrained(tmp_path / "clip")
    storage.upload_dir(tmp_path / "llm", f"s3://{s3_server.bucket}/weights/llm")
    storage.upload_dir(tmp_path / "clip", f"s3://{s3_server.bucket}/weights/clip")

    model = load_initial_model(
        source.config,
        {
            "llm": f"s3://{s3_server.bucket}/weights/llm",
            "vision_encoder": f"s3://{s3_server.bucket}/weights/clip",
        },
        cache_dir=tmp_path / "cache",
    )
    for name, tensor in source.state_dict().items():
        if name.startswith(("language_model.", "vision_tower.")):
            assert torch.equal(model.state_dict()[name], tensor), name


def test_non_s3_sources_pass_through():
    assert resolve_source("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
