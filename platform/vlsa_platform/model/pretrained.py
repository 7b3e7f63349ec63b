"""Build the VLSA model with its sub-models' published weights (paper §4.1's initialisation).

The composite is first built on the ``meta`` device (no memory for the 10B parameters), then each sub-model
that has a source is loaded with its library's own ``from_pretrained`` and put in place, and only our own
modules (SA-Perceiver, projector, newline, Epigone) are materialised and initialised. Sources are hub ids or
local folders; a hub id may name a subfolder after a colon (``stabilityai/stable-diffusion-3-medium-diffusers:vae``).
Remote (``s3://``) sources are fetched to a local folder by the caller (``vlsa_platform.storage``) first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from torch import nn
from transformers import CLIPVisionModel, LlamaForCausalLM

from .configuration_vlsa import VLSAConfig
from .materialize import empty_model
from .modeling_vlsa import VLSAForConditionalGeneration
from .submodels import SUBMODEL_PATHS, build_submodel


def split_source(source: str) -> tuple[str, str | None]:
    """``"org/repo:subfolder"`` -> ``("org/repo", "subfolder")``; a local folder is taken whole."""
    if Path(source).exists() or ":" not in source:
        return source, None
    repo, subfolder = source.rsplit(":", 1)
    return repo, subfolder or None


def load_submodel(part: str, source: str, config: VLSAConfig, dtype: torch.dtype) -> nn.Module:
    """``part``'s checkpoint at ``source`` through its library's ``from_pretrained``."""
    path, subfolder = split_source(source)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    if part == "llm":
        model = LlamaForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=config.text_config._attn_implementation, **kwargs
        )
        if model.config.vocab_size < config.text_config.vocab_size:  # added tokens (e.g. the VQ codes)
            model.resize_token_embeddings(config.text_config.vocab_size)
        return model
    if part == "vision_encoder":
        return CLIPVisionModel.from_pretrained(
            path, dtype=dtype, attn_implementation=config.vision_config._attn_implementation, **kwargs
        )
    cls = {"vae": AutoencoderKL, "denoiser": SD3Transformer2DModel}[part]
    return cls.from_pretrained(path, torch_dtype=dtype, **kwargs)


def _check_shapes(part: str, expected: nn.Module, loaded: nn.Module) -> None:
    want = {n: tuple(p.shape) for n, p in expected.named_parameters()}
    got = {n: tuple(p.shape) for n, p in loaded.named_parameters()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise ValueError(f"pretrained {part} does not match the model config (first differences: {diff})")


def build_from_pretrained(
    config: VLSAConfig,
    sources: Mapping[str, str | None],
    dtype: torch.dtype = torch.float32,
) -> VLSAForConditionalGeneration:
    """The model with ``sources[part]`` loaded for each sub-model that has one (on the CPU).

    Sub-models without a source are built fresh; our own modules (SA-Perceiver, projector, newline, Epigone)
    are initialised as in a fresh model. The VAE stays frozen.
    """
    unknown = set(sources) - set(SUBMODEL_PATHS)
    if unknown:
        raise ValueError(
            f"no pretrained loader for {sorted(unknown)}; expected some of {sorted(SUBMODEL_PATHS)}"
        )
    model = empty_model(config)
    for part, path in SUBMODEL_PATHS.items():
        *owner_path, attr = path.split(".")
        owner = model
        for name in owner_path:
            owner = getattr(owner, name)
        if owner is None:  # e.g. no reconstruction branch in this variant
            if sources.get(part):
                raise ValueError(f"a source is given for {part}, but this model variant has no {part}")
            continue
        if sources.get(part):
            sub = load_submodel(part, sources[part], config, dtype)
            _check_shapes(part, getattr(owner, attr), sub)
        else:
            sub = build_submodel(part, config)
        setattr(owner, attr, sub)
    # What is still on meta now is ours: plain parameters, initialised as post_init would.
    for module in model.modules():
        if any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
            module.to_empty(device="cpu", recurse=False)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            model._init_weights(module)
    if model.reconstruction is not None:
        model.reconstruction.vae.requires_grad_(False).eval()
    return model.to(dtype)
