"""Per-GPU memory of a training stage under DeepSpeed ZeRO: model states + activations + overhead.

**Model states** (bf16 mixed precision, fp32 master weights, Adam), bytes per parameter, following DeepSpeed's
own estimators (``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs`` in
``deepspeed.runtime.zero``; a test checks the numbers agree) and the ZeRO paper's partitioning (Rajbhandari
et al. 2020, §5): per *trained* parameter 2 (bf16 weight) + 2 (bf16 gradient) + 16 (fp32 gradient, fp32
master weight, Adam m and v — the paper's K = 12 plus DeepSpeed's fp32 gradient partition); per *frozen*
parameter 2 (bf16 weight). With N data-parallel workers:

=============================  ===========  ==============  ===========
                               bf16 params  bf16 gradients  fp32 states
=============================  ===========  ==============  ===========
ZeRO-0                         2 P          2 T             16 T
ZeRO-1                         2 P          2 T             16 T / N
ZeRO-2                         2 P          2 T / N         16 T / N
ZeRO-3                         2 P / N      (in buckets)    16 T / N     + 4 x largest layer (gathered)
+ offload optimizer (ZeRO-1)   as above     2 T             on the host
+ offload optimizer (ZeRO-2/3) as above     on the host     on the host
+ offload params (ZeRO-3)      on the host  on the host     on the host  + 4 x largest layer
=============================  ===========  ==============  ===========

(P = all parameters, T = trained ones). DeepSpeed's import costs ~5 s and planning must not load it, so the
formulas are written out here rather than called.

**Activations** per sample (bf16, 2 bytes), per transformer layer, after Korthikanti et al. 2022 ("Reducing
Activation Recomputation in Large Transformer Models", §4.1: ``sbh(34 + 5as/h)`` for GPT), generalised to
grouped-query attention, gated MLPs and frozen weights, without dropout (none of our models has any) and with
memory-efficient attention (SDPA / flash-attention keep no ``s x s`` matrix; ``eager`` adds ``2as²``):

- attention: ``2sh`` (input of the Q/K/V projections, if they train) + ``2sh`` Q + ``4s·h_kv`` K and V +
  ``2sh`` attention output (input of the output projection),
- MLP: ``2sh`` input (if trained) + ``4sf`` (activation input and output) or, gated (SwiGLU), ``8sf``
  (gate, up, act(gate), product — the product only if the down projection trains),
- norms: two per layer, each keeping its input (HF's RMSNorm upcasts to fp32: 4 bytes + the bf16 output it
  multiplies its weight by).

With activation checkpointing a layer keeps only its bf16 input (``2sh``) and one layer at a time is
recomputed in full. The LLM's loss head keeps ``10·s·V`` bytes (bf16 logits, their fp32 copy, and the fp32
log-probabilities cross-entropy saves) — at LLaMA-3's 128K vocabulary the largest single term. Per sample:
the LLM over ``data.max_length`` tokens (the worst case: every sample as long as truncation allows), the
vision tower over the tiles and the low-res snapshot (only when it trains: nothing upstream needs its
gradients otherwise), the MMDiT over the latent patches and the conditioning tokens (when L_rec counts). The
small modules (SA-Perceiver, projector, Epigone) and the frozen VAE's forward (no graph) are left out.

**Overhead**: a 10 % margin on the sum (allocator fragmentation, DeepSpeed's communication buckets) plus
:data:`CONTEXT_GIB` for the CUDA context, cuBLAS workspaces and NCCL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..model.configuration_vlsa import VLSAConfig

Offload = Literal["none", "optimizer", "optimizer_and_params"]

GIB = float(1 << 30)
#: Bytes per element of activations (bf16).
ACT_BYTES = 2
#: Bytes per (position x vocabulary entry) kept by the LLM's loss head (bf16 logits 2 + fp32 copy 4 +
#: fp32 log-probabilities 4).
LOGIT_BYTES = 10
#: Multiplicative margin on model states + activations (fragmentation, communication buckets).
MARGIN = 0.10
#: Fixed per-process overhead in GiB (CUDA context, cuBLAS workspace, NCCL buffers).
CONTEXT_GIB = 0.75


@dataclass(frozen=True)
class StackDims:
    """One transformer stack, as the activation formula needs it."""

    layers: int
    hidden: int
    """``h``."""
    heads: int
    """``a`` (only for the ``s x s`` term of eager attention)."""
    kv_hidden: int
    """Width of K (and of V): ``kv_heads x head_dim`` (= ``h`` without grouped-query attention)."""
    ffn: int
    """``f``: the MLP's inner width."""
    gated: bool
    """SwiGLU-style MLP (LLaMA) rather than ``act(x W1) W2`` (CLIP, MMDiT)."""
    norm_bytes: int
    """Bytes per element each of the layer's two norms keeps: 6 for HF's fp32-upcasting RMSNorm (4 fp32
    input + 2 bf16 output), 2 for LayerNorm (its input), 4 for MMDiT's AdaLN (input + normalised output, which
    the modulation multiplies)."""


def layer_activation_bytes(
    dims: StackDims, tokens: int, *, weights_trained: bool = True, eager_attention: bool = False
) -> float:
    """Activations one layer keeps for its backward, for one sample of ``tokens`` tokens (Korthikanti et al.,
    generalised as the module docs say). ``weights_trained`` False: the inputs of frozen linears are not kept
    (autograd needs them only for weight gradients)."""
    s, h, f, kv = tokens, dims.hidden, dims.ffn, dims.kv_hidden
    linear_inputs = 1 if weights_trained else 0
    attention = ACT_BYTES * (s * h * linear_inputs + s * h + 2 * s * kv + s * h)
    if eager_attention:
        attention += ACT_BYTES * dims.heads * s * s  # softmax probabilities, kept for attention @ V
    if dims.gated:
        mlp = ACT_BYTES * (s * h * linear_inputs + 3 * s * f + s * f * linear_inputs)
    else:
        mlp = ACT_BYTES * (s * h * linear_inputs + 2 * s * f)
    norms = 2 * dims.norm_bytes * s * h
    return float(attention + mlp + norms)


def stack_activation_bytes(
    dims: StackDims,
    tokens: int,
    *,
    checkpointing: bool,
    weights_trained: bool = True,
    eager_attention: bool = False,
) -> float:
    """A whole stack's activations for one sample: every layer's, or with checkpointing one bf16 hidden state
    per layer plus one layer recomputed in full."""
    layer = layer_activation_bytes(
        dims, tokens, weights_trained=weights_trained, eager_attention=eager_attention
    )
    if checkpointing:
        return float(dims.layers * ACT_BYTES * tokens * dims.hidden + layer)
    return float(dims.layers * layer)


# ---------------------------------------------------------------------------------------------- model side


@dataclass(frozen=True)
class ModelDims:
    """The numbers of a model variant the memory model needs (from its :class:`VLSAConfig`)."""

    llm: StackDims
    vocab: int
    vision: StackDims
    vision_tokens: int
    """Tokens of one vision-tower input (patches + CLS)."""
    images_per_sample: int
    """Vision-tower inputs per image: the largest tile grid + the low-res snapshot (1 for ``lowres``)."""
    denoiser: StackDims | None
    """The MMDiT, when the variant has the reconstruction branch."""
    denoiser_tokens: int
    """Latent patches at ``recon_resolution`` + conditioning tokens (the joint sequence)."""
    largest_layer_params: int
    """Parameters of the largest module ZeRO-3 gathers at once (the LLM's embedding or output matrix)."""
    lookup_params: int = 0
    """Parameters of the LLM's input embedding when it is not tied to the output head: a lookup, no
    matrix product (:mod:`.flops` leaves it out of the FLOPs)."""

    @classmethod
    def from_vlsa_config(cls, config: VLSAConfig) -> ModelDims:
        """Read the dimensions off a :class:`VLSAConfig` (no model is built)."""
        text, vision = config.text_config, config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        llm = StackDims(
            layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            heads=text.num_attention_heads,
            kv_hidden=kv_heads * head_dim,
            ffn=text.intermediate_size,
            gated=True,
            norm_bytes=6,
        )
        vis = StackDims(
            layers=vision.num_hidden_layers,
            hidden=vision.hidden_size,
            heads=vision.num_attention_heads,
            kv_hidden=vision.hidden_size,
            ffn=vision.intermediate_size,
            gated=False,
            norm_bytes=2,
        )
        images = 1 if config.vision_mode == "lowres" else config.max_tiles + 1
        denoiser, denoiser_tokens, largest_denoiser = None, 0, 0
        if config.recon and config.denoiser_config is not None and config.vae_config is not None:
            den: dict[str, Any] = config.denoiser_config
            width = den["num_attention_heads"] * den["attention_head_dim"]
            denoiser = StackDims(
                layers=den["num_layers"],
                hidden=width,
                heads=den["num_attention_heads"],
                kv_hidden=width,
                ffn=4 * width,
                gated=False,
                norm_bytes=4,
            )
            vae_factor = 2 ** (len(config.vae_config["block_out_channels"]) - 1)
            side = config.recon_resolution // vae_factor // den["patch_size"]
            denoiser_tokens = side * side + config.tokens_per_tile
            largest_denoiser = 2 * 12 * width * width  # a joint block: two streams of attention + 4x MLP
        h = text.hidden_size
        largest_llm_layer = 4 * h * h + 3 * h * text.intermediate_size
        return cls(
            llm=llm,
            vocab=text.vocab_size,
            vision=vis,
            vision_tokens=config.tokens_per_tile + 1,
            images_per_sample=images,
            denoiser=denoiser,
            denoiser_tokens=denoiser_tokens,
            largest_layer_params=max(text.vocab_size * h, largest_llm_layer, largest_denoiser),
            lookup_params=0 if getattr(text, "tie_word_embeddings", False) else text.vocab_size * h,
        )


#: Parts whose gradients flow back through the LLM (everything upstream of it, and the LLM itself).
_THROUGH_LLM = ("vision_encoder", "sa_perceiver", "projector", "llm")
#: Parts whose gradients flow back through the MMDiT.
_THROUGH_DENOISER = ("vision_encoder", "sa_perceiver", "projector", "epigone", "denoiser")


@dataclass(frozen=True)
class StageNeeds:
    """What a stage asks of each GPU before ZeRO and batch size are chosen."""

    trained_params: int
    frozen_params: int
    largest_layer_params: int
    activation_bytes: dict[str, float]
    """Per sample, by part (``llm``, ``llm_logits``, ``vision_encoder``, ``denoiser``)."""
    sequence_length: int

    @property
    def activation_bytes_per_sample(self) -> float:
        return float(sum(self.activation_bytes.values()))


def stage_needs(
    dims: ModelDims,
    counts: dict[str, tuple[int, int]],
    trainable: list[str],
    *,
    sequence_length: int,
    checkpointing: bool,
    eager_attention: bool = False,
    llm_weight: float = 1.0,
    rec_weight: float = 1.0,
) -> StageNeeds:
    """A stage's parameters (trained / frozen) and per-sample activations.

    Args:
        dims: the variant's dimensions.
        counts: ``{part: (params, params trained when trainable)}`` (``model.accounting.parameter_counts``).
        trainable: the parts the stage trains (those the variant has).
        sequence_length: LLM tokens per sample, visual tokens included (``data.max_length``).
        checkpointing: activation checkpointing of the three transformer stacks.
        eager_attention: attention materialises its ``s x s`` probabilities.
        llm_weight: the stage's L_llm weight (0: no backward through the LLM unless it trains).
        rec_weight: the stage's effective L_rec weight (0 or no recon: no backward through the MMDiT).

    With LoRA, ``counts`` holds only the adapters as the LLM's trained parameters; its activations are those of
    a trained LLM (the adapters need the inputs of the linears they sit beside).
    """
    trained = sum(counts[p][1] for p in trainable if p in counts)
    total = sum(params for params, _ in counts.values())
    acts: dict[str, float] = {}
    if any(p in trainable for p in _THROUGH_LLM) and (llm_weight > 0 or "llm" in trainable):
        acts["llm"] = stack_activation_bytes(
            dims.llm,
            sequence_length,
            checkpointing=checkpointing,
            weights_trained="llm" in trainable,  # LoRA adapters keep the inputs too
            eager_attention=eager_attention,
        )
        acts["llm_logits"] = float(LOGIT_BYTES * sequence_length * dims.vocab)
    if "vision_encoder" in trainable:
        acts["vision_encoder"] = dims.images_per_sample * stack_activation_bytes(
            dims.vision, dims.vision_tokens, checkpointing=checkpointing, eager_attention=eager_attention
        )
    if dims.denoiser is not None and rec_weight > 0 and any(p in trainable for p in _THROUGH_DENOISER):
        acts["denoiser"] = stack_activation_bytes(
            dims.denoiser,
            dims.denoiser_tokens,
            checkpointing=checkpointing,
            weights_trained="denoiser" in trainable,
        )
    return StageNeeds(
        trained_params=trained,
        frozen_params=total - trained,
        largest_layer_params=dims.largest_layer_params,
        activation_bytes=acts,
        sequence_length=sequence_length,
    )


# ------------------------------------------------------------------------------------------- model states


def model_state_bytes(
    trained: float,
    frozen: float,
    zero_stage: int,
    offload: Offload,
    num_workers: int,
    largest_layer_params: float = 0.0,
) -> tuple[float, float]:
    """``(GPU bytes, host bytes)`` per worker for the parameters, gradients and optimizer states (see the
    table in the module docs; for ``frozen == 0`` equal to DeepSpeed's estimators)."""
    if offload == "optimizer" and zero_stage == 0:
        raise ValueError("optimizer offload needs ZeRO >= 1")
    if offload == "optimizer_and_params" and zero_stage != 3:
        raise ValueError("parameter offload needs ZeRO-3")
    n = num_workers
    params16 = 2.0 * (trained + frozen)
    grads16 = 2.0 * trained
    states32 = 16.0 * trained
    host = 0.0
    if zero_stage >= 1:
        states32 /= n
    if zero_stage >= 2:
        grads16 /= n
    if zero_stage == 3:
        params16 /= n
        grads16 = 0.0  # reduce-scattered from buckets straight into the fp32 partition
    if offload != "none":
        host += states32
        states32 = 0.0
        if zero_stage >= 2:
            host += grads16
            grads16 = 0.0
    if offload == "optimizer_and_params":
        host += params16
        params16 = 0.0
    gathered = 4.0 * largest_layer_params if zero_stage == 3 else 0.0
    return params16 + grads16 + states32 + gathered, host


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one worker, in bytes."""

    model_states: float
    activations: float
    overhead: float
    offloaded: float
    """Host memory the offloaded states take, per worker."""

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.overhead

    def gib(self) -> dict[str, float]:
        """The parts in GiB, rounded to 0.01 (for the plan)."""
        return {
            "model_states": round(self.model_states / GIB, 2),
            "activations": round(self.activations / GIB, 2),
            "overhead": round(self.overhead / GIB, 2),
        }


def estimate(
    needs: StageNeeds,
    *,
    zero_stage: int,
    offload: Offload,
    num_workers: int,
    micro_batch: int,
    context_gib: float = CONTEXT_GIB,
) -> MemoryEstimate:
    """Memory of one worker running ``needs`` with these DeepSpeed settings and micro-batch."""
    gpu, host = model_state_bytes(
        needs.trained_params,
        needs.frozen_params,
        zero_stage,
        offload,
        num_workers,
        needs.largest_layer_params,
    )
    acts = micro_batch * needs.activation_bytes_per_sample
    overhead = MARGIN * (gpu + acts) + context_gib * GIB
    return MemoryEstimate(model_states=gpu, activations=acts, overhead=overhead, offloaded=host)


__all__ = [
    "CONTEXT_GIB",
    "GIB",
    "LOGIT_BYTES",
    "MARGIN",
    "MemoryEstimate",
    "ModelDims",
    "Offload",
    "StackDims",
    "StageNeeds",
    "estimate",
    "layer_activation_bytes",
    "model_state_bytes",
    "stack_activation_bytes",
    "stage_needs",
]
