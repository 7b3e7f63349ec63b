"""LoRA on the LLM through peft (paper stage III trains the LLM fully; LoRA is the cheaper option)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

LLAMA_LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings for the LLM's linear layers."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (``lora_alpha``); the update is scaled by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] = LLAMA_LINEARS
    """Names of the LLaMA linear layers that get adapters."""


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap ``model.language_model`` in a peft LoRA model; only the adapters are trainable inside it."""
    from peft import LoraConfig, get_peft_model  # imported here: peft takes seconds to import

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    model.language_model = get_peft_model(model.language_model, config)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the LLM's weights (for export / ``save_pretrained`` of a plain model)."""
    model.language_model = model.language_model.merge_and_unload()
    return model


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.language_model.named_parameters())
