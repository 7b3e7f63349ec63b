"""From an experiment config to the objects one training run is made of: model config, model, tokenizer.

The plan (``orchestration.plan``) and the training workers both go through :func:`vlsa_config_for`, so the
parameter counts the plan prints are those of the model that trains. Initial weights: the ``tiny`` preset
draws them from the experiment's seed (every worker builds the same model), or with ``model.tiny_weights:
pretrained`` loads its LLM, vision encoder and VAE from the platform's cached pretraining (:mod:`.tiny_pretrain`);
the ``paper`` preset loads each sub-model from ``model.weights`` (hub id, local folder or ``s3://``,
:mod:`.weights`). A stage after the first replaces them with the previous stage's exported weights
(:func:`load_exported`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .. import storage
from ..config.schema import ExperimentConfig
from ..model.configuration_vlsa import VLSAConfig
from ..model.lora import LoraSettings, apply_lora
from ..model.materialize import assign_state, compare_state, empty_model, target_dtypes
from ..model.modeling_vlsa import VLSAForConditionalGeneration
from ..model.parts import part_of

#: File names of an exported model (``export_dir``): the weights, and the run's model config beside them.
WEIGHTS_FILE = "model.safetensors"
EXPORT_INFO_FILE = "export.json"


def extra_vocab(config: ExperimentConfig) -> int:
    """Tokens added to the LLM's vocabulary: one per VQ code with ``vq_format: special``."""
    from ..model.presets import vq_config

    if config.model.cognition and config.data.cognition.vq_format == "special":
        return int(vq_config(config.model.preset)["num_vq_embeddings"])
    return 0


def lora_settings_for(config: ExperimentConfig) -> LoraSettings | None:
    """The LoRA settings of ``model.lora``, or ``None`` when LoRA is off."""
    lora = config.model.lora
    if not lora.enabled:
        return None
    return LoraSettings(
        r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=tuple(lora.target_modules)
    )


def vlsa_config_for(config: ExperimentConfig, attn_implementation: str | None = None) -> VLSAConfig:
    """The model config of an experiment: its preset, the three switches and geometry, the added vocabulary.
    Raises ``ValueError`` for a combination the model side rejects."""
    from ..model.presets import build_vlsa_config

    model = config.model
    return build_vlsa_config(
        model.preset,
        vision=model.vision,
        recon=model.recon,
        grid_pinpoints=model.grid_pinpoints,
        recon_resolution=model.recon_resolution,
        extra_vocab=extra_vocab(config),
        attn_implementation=attn_implementation or model.attn_implementation,
    )


def build_tokenizer(config: ExperimentConfig) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer (the preset's, or ``model.weights.llm``'s), with the VQ tokens added for
    ``vq_format: special``."""
    from ..data.cognition import add_vq_tokens
    from ..model.tokenizer import load_tokenizer

    source = config.model.weights.llm if config.model.preset == "paper" else None
    if source and storage.is_s3(source):
        source = str(storage.materialize(source))
    tokenizer = load_tokenizer(config.model.preset, source)
    added = extra_vocab(config)
    if added:
        add_vq_tokens(tokenizer, added)
    return tokenizer


def build_model(config: ExperimentConfig, *, init_from: str | None = None) -> VLSAForConditionalGeneration:
    """The model a stage starts from, in float32 on the CPU (the DeepSpeed strategy moves and casts it).

    ``init_from``: an exported model folder (local or ``s3://``, :func:`export_dir`) of the previous stage,
    loaded into a model built on ``meta`` (:func:`load_exported_model`) — but the VAE, never trained, from its
    source when the export holds it rounded to 16 bits (a bf16 stage's export): the frozen-target cache keys
    latents by the VAE's float32 weights (``data.targets.fingerprint``), as the submission's fill and the
    first stage hold them, so every stage's entries match the fill's; ``None``: the initial weights (the
    ``tiny`` preset's from ``seed``, or with ``model.tiny_weights: pretrained`` its LLM, vision encoder and VAE
    from :func:`.tiny_pretrain.tiny_sources`, built on first use; the ``paper`` preset's from ``model.weights``
    or the published checkpoints). LoRA adapters, when on, are added in every stage so exports of all stages
    have the same keys (they train only where ``llm`` is trainable).
    """
    vlsa = vlsa_config_for(config)
    lora = lora_settings_for(config)
    torch.manual_seed(config.seed)  # new modules (and all tiny weights) are the same in every worker
    if init_from is not None:
        model = empty_model(vlsa, lora)
        stored = load_exported(model, init_from)
        _vae_from_source(config, model, stored)
        return model
    if config.model.preset == "tiny" and config.model.tiny_weights == "pretrained":
        from ..model.pretrained import build_from_pretrained
        from .tiny_pretrain import tiny_sources

        sources = tiny_sources()
        model = build_from_pretrained(
            vlsa, {p: s for p, s in sources.items() if vlsa.recon or p not in ("vae", "denoiser")}
        )
    elif config.model.preset == "tiny":
        model = VLSAForConditionalGeneration(vlsa)
    else:
        from ..model.presets import PAPER_SOURCES
        from .weights import load_initial_model

        weights = config.model.weights
        sources = {
            part: getattr(weights, part) or ":".join(x for x in PAPER_SOURCES[part] if x)
            for part in ("llm", "vision_encoder", "vae", "denoiser")
            if vlsa.recon or part not in ("vae", "denoiser")
        }
        model = load_initial_model(vlsa, sources)
    if lora is not None:
        apply_lora(model, lora)
    return model


def load_exported_model(
    vlsa: VLSAConfig, location: str, lora: LoraSettings | None = None
) -> VLSAForConditionalGeneration:
    """The model of ``vlsa`` (with ``lora``'s adapters) holding the export at ``location``, in float32 on the
    CPU: built on ``meta`` and the export's tensors put in place, so no weight is initialised at random and host
    memory stays near one copy of the weights (:mod:`..model.materialize`)."""
    model = empty_model(vlsa, lora)
    load_exported(model, location)
    return model


def load_exported(model: torch.nn.Module, location: str) -> dict[str, str]:
    """Put an exported model's weights into ``model`` (built on ``meta`` or not; every key must match: same
    variant and LoRA). The tensors are read one by one (``pread``, no memory map) and cast to the model's
    dtypes; they become the model's tensors (no second copy). Returns each tensor's dtype in the export
    (safetensors' names: ``F32``, ``BF16``...). Raises ``ValueError`` when the export does not fit, before
    anything is read."""
    from safetensors import safe_open

    local = Path(storage.materialize(location)) if storage.is_s3(location) else Path(location)
    with safe_open(str(local / WEIGHTS_FILE), framework="pt", device="cpu", backend="pread") as f:
        mismatch = compare_state(model, {key: f.get_slice(key).get_shape() for key in f.offset_keys()})
        if mismatch:
            raise ValueError(
                f"the exported model in {location} does not fit this model ({mismatch.describe()}): was it "
                "trained with other model switches or LoRA?"
            )
        dtypes = target_dtypes(model)
        stored = {key: f.get_slice(key).get_dtype() for key in f.offset_keys()}
        state = {key: f.get_tensor(key).to(dtypes[key]) for key in f.offset_keys()}
    assign_state(model, state)
    return stored


def _vae_from_source(config: ExperimentConfig, model: torch.nn.Module, stored: dict[str, str]) -> None:
    """The model's VAE set to its source's float32 weights when the export rounded them to 16 bits
    (:func:`build_model`)."""
    recon = getattr(model, "reconstruction", None)
    if recon is None or not any(part_of(k) == "vae" and d in ("BF16", "F16") for k, d in stored.items()):
        return
    with torch.random.fork_rng(devices=[]):  # the tiny preset's VAE is drawn again from the seed
        source = source_vae(config)
    recon.vae.load_state_dict(source.state_dict(), strict=True)


def source_vae(config: ExperimentConfig) -> torch.nn.Module:
    """The frozen VAE a stage's model holds, from its source, in float32 on the CPU (what the frozen-target
    fill and cache keys use). ``tiny``: taken from the model :func:`build_model` makes (pretrained or drawn
    from the seed, as ``model.tiny_weights`` says); ``paper``: ``model.weights.vae`` (or the published VAE)
    through the loader the model uses."""
    if config.model.preset == "tiny":
        recon = build_model(config).reconstruction
        if recon is None:
            raise ValueError("this model has no reconstruction branch, so no VAE")
        return recon.vae
    from ..model.presets import PAPER_SOURCES
    from ..model.pretrained import load_submodel
    from .weights import resolve_source

    source = config.model.weights.vae or ":".join(x for x in PAPER_SOURCES["vae"] if x)
    return load_submodel("vae", resolve_source(source), vlsa_config_for(config), torch.float32)


def write_export(
    directory: str | Path, state: dict[str, torch.Tensor], vlsa: VLSAConfig, info: dict[str, Any]
) -> None:
    """Write an exported model: ``model.safetensors`` (a full state dict, no shared tensors), the
    ``config.json`` of :class:`VLSAConfig` and ``export.json`` (stage, step, trainable parts...)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
    vlsa.save_pretrained(str(out))
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))


__all__ = [
    "EXPORT_INFO_FILE",
    "WEIGHTS_FILE",
    "build_model",
    "build_tokenizer",
    "extra_vocab",
    "load_exported",
    "load_exported_model",
    "lora_settings_for",
    "source_vae",
    "vlsa_config_for",
    "write_export",
]
