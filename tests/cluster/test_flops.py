"""FLOPs per sample (``cluster.flops``) against hand computations, and the cost they turn into (``cluster.cost``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from vlsa_platform.cluster import BUILTIN, CPU, DEFAULT_MFU, NOT_PRICED, compute_cost, sample_flops
from vlsa_platform.cluster.memory import ModelDims, StackDims

LLM = StackDims(layers=2, hidden=64, heads=4, kv_hidden=32, ffn=128, gated=True, norm_bytes=6)
VISION = StackDims(layers=2, hidden=32, heads=4, kv_hidden=32, ffn=64, gated=False, norm_bytes=2)
DENOISER = StackDims(layers=2, hidden=32, heads=4, kv_hidden=32, ffn=128, gated=False, norm_bytes=4)
DIMS = ModelDims(
    llm=LLM,
    vocab=1024,
    vision=VISION,
    vision_tokens=65,  # 64 patches + CLS
    images_per_sample=5,  # 2x2 tiles + the low-res snapshot
    denoiser=DENOISER,
    denoiser_tokens=80,
    largest_layer_params=65536,
    lookup_params=1024 * 64,
)
COUNTS = {
    "vision_encoder": (38144, 38144),
    "sa_perceiver": (5152, 5152),
    "projector": (6272, 6272),
    "llm": (205120, 205120),
    "epigone": (4208, 4208),
    "denoiser": (81792, 81792),
    "vae": (326995, 0),
}
STAGE1 = ["sa_perceiver", "projector", "epigone"]


def test_stage1_by_hand():
    """Stage 1 of the tiny sizes: SA-Perceiver, projector, Epigone train; the CLIP tower gets no gradient; the
    frozen LLM and MMDiT pass gradients back (backward = 1 x their weight products + 2 x attention)."""
    flops = sample_flops(DIMS, COUNTS, STAGE1, visual_tokens=64, llm_tokens=100)
    parts = flops.parts
    assert "vae" not in parts

    vision_fwd = 2 * 38144 * (5 * 65) + 5 * 4 * 2 * 32 * 65 * 65
    assert parts["vision_encoder"].forward == vision_fwd and parts["vision_encoder"].backward == 0

    assert parts["sa_perceiver"].forward == 2 * 5152 * (5 * 64)
    assert parts["sa_perceiver"].backward == 2 * parts["sa_perceiver"].forward
    assert (parts["projector"].forward, parts["epigone"].forward) == (2 * 6272 * 64, 2 * 4208 * 64)

    llm_weights = 205120 - 1024 * 64  # the input embedding is a lookup
    llm_matmul, llm_attention = 2 * llm_weights * 100, 4 * 2 * 64 * 100 * 100
    assert parts["llm"].forward == llm_matmul + llm_attention
    assert parts["llm"].backward == llm_matmul + 2 * llm_attention

    den_matmul, den_attention = 2 * (81792 // 2) * 80, 4 * 2 * 32 * 80 * 80
    assert parts["denoiser"].forward == den_matmul + den_attention
    assert parts["denoiser"].backward == den_matmul + 2 * den_attention
    assert flops.total == pytest.approx(sum(p.forward + p.backward for p in parts.values()))


def test_trained_parts_cost_three_forwards_and_losses_gate_the_backward():
    everything = sample_flops(DIMS, COUNTS, list(COUNTS), visual_tokens=64, llm_tokens=100).parts
    for part in ("vision_encoder", "llm", "denoiser"):
        attention = everything[part].forward - 2 * everything[part].weights * everything[part].tokens
        assert everything[part].backward == pytest.approx(2 * everything[part].forward)
        assert attention > 0
    no_rec = sample_flops(DIMS, COUNTS, STAGE1, visual_tokens=64, llm_tokens=100, rec_weight=0.0).parts
    assert no_rec["denoiser"].backward == 0 and no_rec["epigone"].backward == 0
    assert no_rec["projector"].backward > 0  # L_llm still reaches it


def test_lora_backward_is_one_forward_plus_the_adapters_share():
    lora = {**COUNTS, "llm": (205120 + 4096, 4096)}
    part = sample_flops(DIMS, lora, ["llm"], visual_tokens=64, llm_tokens=100).parts["llm"]
    matmul = 2 * part.weights * part.tokens
    attention = part.forward - matmul
    assert part.backward == pytest.approx((1 + 4096 / (205120 + 4096)) * matmul + 2 * attention)


def test_llm_flops_grow_with_its_tokens():
    short = sample_flops(DIMS, COUNTS, STAGE1, visual_tokens=64, llm_tokens=100).parts["llm"].total
    long = sample_flops(DIMS, COUNTS, STAGE1, visual_tokens=64, llm_tokens=400).parts["llm"].total
    assert long > 4 * short  # linear in the weights' products, quadratic in attention's


def test_cost_is_linear_in_flops_and_inverse_in_mfu():
    h100 = BUILTIN["H100"]
    base = compute_cost(1e20, h100, 8)
    assert base.mfu == DEFAULT_MFU
    assert base.gpu_hours == pytest.approx(1e20 / (989e12 * DEFAULT_MFU) / 3600)
    assert base.wall_hours == pytest.approx(base.gpu_hours / 8)
    assert base.price_usd == pytest.approx(base.gpu_hours * 6.88)
    assert compute_cost(3e20, h100, 8).gpu_hours == pytest.approx(3 * base.gpu_hours)
    half = compute_cost(1e20, replace(h100, mfu=DEFAULT_MFU / 2), 8)
    assert half.gpu_hours == pytest.approx(2 * base.gpu_hours)
    assert compute_cost(1e20, h100, 16).gpu_hours == pytest.approx(base.gpu_hours)  # same work, half the wall
    assert compute_cost(1e20, h100, 16).wall_hours == pytest.approx(base.wall_hours / 2)


def test_cpu_and_unpriced_classes_say_not_priced():
    cpu = compute_cost(1e15, CPU, 1)
    assert (cpu.gpu_hours, cpu.wall_hours, cpu.price_usd, cpu.mfu) == (None, None, None, None)
    assert cpu.note.startswith(NOT_PRICED)
    free = compute_cost(1e15, replace(BUILTIN["A10G"], hourly_usd=None), 2)
    assert free.gpu_hours is not None and free.price_usd is None and NOT_PRICED in free.note
    assert not math.isnan(free.gpu_hours)
