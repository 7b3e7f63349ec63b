"""LoRA on the LLM through peft (paper stage III trains the LLM fully; LoRA is the cheaper option).

The defaults and target layers are the experiment file's (``config.model_section.LoraConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config.model_section import LoraConfig
from ..config.vocabulary import LLAMA_LINEARS

_DEFAULTS = LoraConfig()


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings for the LLM's linear layers."""

    r: int = _DEFAULTS.r
    """Adapter rank."""
    alpha: int = _DEFAULTS.alpha
    """Scaling numerator (``lora_alpha``); the update is scaled by ``alpha / r``."""
    dropout: float = _DEFAULTS.dropout
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
