"""The per-GPU memory model: DeepSpeed's model-state estimators, Korthikanti's activations, the paper dims."""

from __future__ import annotations

import pytest

from vlsa_platform.cluster.memory import (
    GIB,
    LOGIT_BYTES,
    ModelDims,
    StackDims,
    estimate,
    layer_activation_bytes,
    model_state_bytes,
    stack_activation_bytes,
    stage_needs,
)

P = 7_000_000_000  # a 7B model, every parameter trained
LARGEST = 500_000_000


@pytest.fixture(scope="module")
def zero():
    """DeepSpeed's own estimators (``deepspeed.runtime.zero``)."""
    stage_1_and_2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    return stage_1_and_2, stage3


@pytest.mark.parametrize("workers", [1, 8, 64])
def test_model_states_equal_deepspeeds_estimators(zero, workers):
    stage_1_and_2, stage3 = zero

    def ours(stage, offload):
        return model_state_bytes(P, 0, stage, offload, workers, LARGEST)[0]

    _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(P, workers, 1, cpu_offload=False)
    assert ours(2, "none") == pytest.approx(gpu, abs=1)
    _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(P, workers, 1, cpu_offload=True)
    assert ours(2, "optimizer") == pytest.approx(gpu, abs=1)
    for offload, cpu_offload, params in (
        ("none", False, False),
        ("optimizer", True, False),
        ("optimizer_and_params", True, True),
    ):
        _, gpu, _ = stage3.estimate_zero3_model_states_mem_needs(
            P, LARGEST, workers, 1, cpu_offload=cpu_offload, cpu_offload_params=params
        )
        assert ours(3, offload) == pytest.approx(gpu, abs=1), offload


def test_zero_stages_partition_more_and_frozen_parameters_cost_two_bytes():
    states = {z: model_state_bytes(P, 0, z, "none", 8)[0] for z in (0, 1, 2, 3)}
    assert states[0] == 20 * P  # bf16 weight + bf16 grad + fp32 grad, master, m, v
    assert states[0] > states[1] > states[2] > states[3]
    assert states[1] == pytest.approx(4 * P + 16 * P / 8)
    frozen = model_state_bytes(0, P, 2, "none", 8)[0]
    assert frozen == 2 * P and model_state_bytes(0, P, 3, "none", 8)[0] == 2 * P / 8
    gpu, host = model_state_bytes(P, 0, 3, "optimizer_and_params", 8)
    assert gpu == 0 and host == pytest.approx(18 * P / 8)
    with pytest.raises(ValueError):
        model_state_bytes(P, 0, 2, "optimizer_and_params", 8)


GPT = StackDims(layers=1, hidden=1024, heads=16, kv_hidden=1024, ffn=4096, gated=False, norm_bytes=2)


def test_layer_activations_follow_korthikanti_without_dropout():
    """Korthikanti et al. 2022: ``sbh(34 + 5as/h)`` per layer; without dropout (masks: ``2sbh + as²b``, dropout
    output ``2as²b``) that is ``32sbh + 2as²b`` — and memory-efficient attention keeps no ``s x s`` matrix."""
    s, h, a = 2048, GPT.hidden, GPT.heads
    assert layer_activation_bytes(GPT, s, eager_attention=True) == 32 * s * h + 2 * a * s * s
    assert layer_activation_bytes(GPT, s) == 32 * s * h


def test_checkpointing_and_frozen_weights_keep_less():
    llama = StackDims(layers=32, hidden=4096, heads=32, kv_hidden=1024, ffn=14336, gated=True, norm_bytes=6)
    s = 4096
    full = stack_activation_bytes(llama, s, checkpointing=False)
    ckpt = stack_activation_bytes(llama, s, checkpointing=True)
    assert ckpt == 32 * 2 * s * 4096 + layer_activation_bytes(llama, s)
    assert ckpt < full / 10
    assert layer_activation_bytes(llama, s, weights_trained=False) < layer_activation_bytes(llama, s)


@pytest.fixture(scope="module")
def paper():
    from vlsa_platform.model.accounting import parameter_counts
    from vlsa_platform.model.presets import build_vlsa_config

    config = build_vlsa_config("paper")
    return ModelDims.from_vlsa_config(config), parameter_counts(config)


def test_paper_dimensions(paper):
    dims, _ = paper
    assert (dims.llm.layers, dims.llm.hidden, dims.llm.kv_hidden, dims.llm.ffn) == (32, 4096, 1024, 14336)
    assert dims.vocab == 128256 and dims.largest_layer_params == 128256 * 4096
    assert (dims.vision.layers, dims.vision_tokens, dims.images_per_sample) == (
        24,
        577,
        5,
    )  # 2x2 tiles + snapshot
    assert dims.denoiser is not None and dims.denoiser.hidden == 1536 and dims.denoiser.layers == 24
    assert dims.denoiser_tokens == (512 // 8 // 2) ** 2 + 576  # latent patches + SA-Perceiver tokens


def test_stage_needs_follow_the_gradient_paths(paper):
    dims, counts = paper
    kw = {"sequence_length": 4096, "checkpointing": True}
    stage1 = stage_needs(dims, counts, ["sa_perceiver", "projector", "epigone"], **kw)
    assert set(stage1.activation_bytes) == {"llm", "llm_logits", "denoiser"}  # the vision tower is frozen
    assert stage1.trained_params == sum(counts[p][1] for p in ("sa_perceiver", "projector", "epigone"))
    assert stage1.trained_params + stage1.frozen_params == sum(c for c, _ in counts.values())
    assert stage1.activation_bytes["llm_logits"] == LOGIT_BYTES * 4096 * 128256
    stage3 = stage_needs(
        dims, counts, ["vision_encoder", "sa_perceiver", "projector", "llm", "epigone", "denoiser"], **kw
    )
    assert set(stage3.activation_bytes) == {"llm", "llm_logits", "vision_encoder", "denoiser"}
    assert stage3.activation_bytes["llm"] > stage1.activation_bytes["llm"]  # trained LLM keeps linear inputs
    no_rec = stage_needs(dims, counts, ["sa_perceiver", "projector", "epigone"], rec_weight=0.0, **kw)
    assert "denoiser" not in no_rec.activation_bytes
    only_denoiser = stage_needs(dims, counts, ["denoiser"], **kw)
    assert set(only_denoiser.activation_bytes) == {"denoiser"}  # no gradient reaches the LLM


def test_estimate_adds_margin_and_context(paper):
    dims, counts = paper
    needs = stage_needs(dims, counts, ["projector"], sequence_length=4096, checkpointing=True)
    one = estimate(needs, zero_stage=2, offload="none", num_workers=8, micro_batch=1)
    two = estimate(needs, zero_stage=2, offload="none", num_workers=8, micro_batch=2)
    assert two.activations == 2 * one.activations and two.model_states == one.model_states
    assert one.overhead == pytest.approx(0.1 * (one.model_states + one.activations) + 0.75 * GIB)
    assert 5 < one.activations / GIB < 8  # ~5 GiB of logits + ~1.7 GiB of checkpointed LLM per 4K sample
