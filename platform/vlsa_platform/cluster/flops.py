"""Training FLOPs per sample of a stage, by part, from the model's parameter counts and dimensions.

The convention is the one MFU is measured in (Kaplan et al. 2020, §2.1; PaLM, Chowdhery et al. 2022, App. B):
a matrix product costs 2 FLOPs per weight per token, so a part's forward is ``2 x N x T`` for ``N`` weights
over ``T`` tokens, plus attention's score and value products, ``4 x layers x width x s`` per token over a
sequence of ``s`` (no discount for causal masking, as PaLM counts it). Activation recomputation
(``gradient_checkpointing``) is not counted: MFU counts model FLOPs, so recomputation lowers the MFU instead.

Backward, per part (the rule the plan states):

- weights trained: ``2 x`` forward (gradients of the inputs and of the weights, each a product the size of the
  forward's); with LoRA, ``1 x`` forward for the frozen weights plus ``2 x`` for the adapters' share;
- weights frozen but gradients pass through (a trained part upstream of it and a loss downstream: the frozen
  LLM of stage 1, the frozen MMDiT): ``1 x`` forward (gradients of the inputs only);
- otherwise (nothing upstream trains, or no loss with a weight reaches it): none.
  Attention's products have no weights: ``2 x`` their forward wherever gradients pass.

Tokens per sample, one image each (the largest the grid pinpoints allow, as ``visual_tokens_per_image``):

- vision tower: ``images x (patches + CLS)`` (tiles and the low-res snapshot, or the snapshot alone);
- SA-Perceiver: the vision tower's output tokens, hi-res and low-res (its projections see each once);
- projector and Epigone: the visual tokens the LLM receives;
- LLM: text + visual tokens, at most ``data.max_length``; its input embedding (a lookup) is left out, its
  output head counts;
- MMDiT: the joint sequence (latent patches at ``recon_resolution`` and the conditioning tokens); each token
  passes through one of its two streams' weights, about half of them: ``2 x N/2 x T``;
- VAE and VQ-VAE: left out (frozen targets, a small convolutional encoder per image, cacheable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .memory import ModelDims, StackDims

#: Parts before a part on the way from the image to a loss (a gradient reaches a part from any of them).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "vision_encoder": (),
    "sa_perceiver": ("vision_encoder",),
    "projector": ("vision_encoder", "sa_perceiver"),
    "llm": ("vision_encoder", "sa_perceiver", "projector"),
    "epigone": ("vision_encoder", "sa_perceiver", "projector"),
    "denoiser": ("vision_encoder", "sa_perceiver", "projector", "epigone"),
}
#: The losses each part's output reaches: ``llm`` (L_llm), ``rec`` (L_rec).
DOWNSTREAM_LOSSES: dict[str, tuple[str, ...]] = {
    "vision_encoder": ("llm", "rec"),
    "sa_perceiver": ("llm", "rec"),
    "projector": ("llm", "rec"),
    "llm": ("llm",),
    "epigone": ("rec",),
    "denoiser": ("rec",),
}


@dataclass(frozen=True)
class PartFlops:
    """One part's training FLOPs for one sample."""

    weights: int
    """Weights that multiply each token (the part's parameters less lookups; half the MMDiT's)."""
    tokens: int
    """Tokens per sample through those weights."""
    forward: float
    """``2 x weights x tokens`` plus attention's products."""
    backward: float
    """By the module's rule: 0, 1 x or 2 x the forward."""

    @property
    def total(self) -> float:
        return self.forward + self.backward


@dataclass(frozen=True)
class SampleFlops:
    """A stage's training FLOPs for one sample, by part."""

    parts: dict[str, PartFlops]
    llm_tokens: int
    """LLM sequence length assumed (text + visual tokens, at most ``data.max_length``)."""

    @property
    def total(self) -> float:
        return float(sum(p.total for p in self.parts.values()))

    def as_plan(self) -> dict[str, dict[str, float | int]]:
        """``{part: {"weights", "tokens", "forward", "backward"}}`` for the plan."""
        return {
            part: {"weights": f.weights, "tokens": f.tokens, "forward": f.forward, "backward": f.backward}
            for part, f in self.parts.items()
        }


def attention_flops(stack: StackDims, tokens: int) -> float:
    """Forward FLOPs of a stack's attention products (scores ``QK^T`` and ``AV``) for one sequence."""
    return 4.0 * stack.layers * stack.hidden * tokens * tokens


def gradient_passes(part: str, trainable: set[str], active_losses: set[str]) -> bool:
    """Whether a backward runs through ``part``: a trained part at or before it and a weighted loss after it."""
    reaches_loss = bool(set(DOWNSTREAM_LOSSES.get(part, ())) & active_losses)
    trained_before = part in trainable or bool(set(UPSTREAM.get(part, ())) & trainable)
    return reaches_loss and trained_before


def _backward(forward_weights: float, forward_attention: float, trained_share: float, passes: bool) -> float:
    """The module's backward rule for a part whose weight products cost ``forward_weights``."""
    if not passes:
        return 0.0
    return (1.0 + trained_share) * forward_weights + 2.0 * forward_attention


def sample_flops(
    dims: ModelDims,
    counts: Mapping[str, tuple[int, int]],
    trainable: list[str],
    *,
    visual_tokens: int,
    llm_tokens: int,
    llm_weight: float = 1.0,
    rec_weight: float = 1.0,
) -> SampleFlops:
    """Training FLOPs of one sample of a stage (module docs).

    Args:
        dims: the variant's dimensions (:class:`~.memory.ModelDims`).
        counts: ``{part: (params, params trained when trainable)}`` (``model.accounting.parameter_counts``).
        trainable: the parts the stage trains.
        visual_tokens: tokens the LLM receives per image.
        llm_tokens: the LLM's sequence per sample (text + visual, at most ``data.max_length``).
        llm_weight, rec_weight: the stage's loss weights (0: that loss sends no gradient).
    """
    active = {name for name, w in (("llm", llm_weight), ("rec", rec_weight)) if w > 0}
    if dims.denoiser is None:
        active.discard("rec")
    trained = set(trainable) & set(counts)
    patches = dims.vision_tokens - 1
    tokens = {
        "vision_encoder": dims.images_per_sample * dims.vision_tokens,
        "sa_perceiver": dims.images_per_sample * patches,
        "projector": visual_tokens,
        "llm": llm_tokens,
        "epigone": visual_tokens,
        "denoiser": dims.denoiser_tokens,
    }
    attention = {
        "vision_encoder": dims.images_per_sample * attention_flops(dims.vision, dims.vision_tokens),
        "llm": attention_flops(dims.llm, llm_tokens),
    }
    if dims.denoiser is not None:
        attention["denoiser"] = attention_flops(dims.denoiser, dims.denoiser_tokens)
    parts: dict[str, PartFlops] = {}
    for part, (params, trained_params) in counts.items():
        if part not in tokens:
            continue  # the VAE: frozen targets, left out
        weights = params - (dims.lookup_params if part == "llm" else 0)
        if part == "denoiser":
            weights //= 2  # two streams; a token meets one
        forward_weights = 2.0 * weights * tokens[part]
        forward_attention = attention.get(part, 0.0)
        share = trained_params / params if part in trained and params else 0.0
        passes = gradient_passes(part, trained, active)
        parts[part] = PartFlops(
            weights=weights,
            tokens=tokens[part],
            forward=forward_weights + forward_attention,
            backward=_backward(forward_weights, forward_attention, share, passes),
        )
    return SampleFlops(parts=parts, llm_tokens=llm_tokens)


__all__ = [
    "DOWNSTREAM_LOSSES",
    "UPSTREAM",
    "PartFlops",
    "SampleFlops",
    "attention_flops",
    "gradient_passes",
    "sample_flops",
]
