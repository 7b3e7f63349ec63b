"""The bf16 path of the DeepSpeed strategy (issue 17 item 3) on DeepSpeed's CPU accelerator, which computes in
bf16 like a GPU: ZeRO-0 through ``torch_autocast`` with the strategy's own fused clipping, ZeRO 1-3 in
DeepSpeed's ``bf16`` mode without its per-step overflow test. The configs, then short bf16 runs: the loss
falls, a non-finite loss is still skipped, and ``grad_norm`` is the norm of the gradients before clipping.
"""

from __future__ import annotations

import math

import pytest
import torch

from vlsa_platform.model.parts import set_trainable
from vlsa_platform.train.step import train_step
from vlsa_platform.train.strategy import DeepSpeedStrategy

from ..model.builders import tiny_model
from .test_strategy import STAGE1, _batch, _eval_loss, _gathered, _prepare, _strategy

CLIP = 1e-4
"""A clipping norm far below the tiny model's gradient norms, so a norm measured after clipping would show."""


def _bf16(zero_stage: int, **kwargs) -> DeepSpeedStrategy:
    return _strategy(zero_stage, bf16=True, **kwargs)


# ----------------------------------------------------------------------------------------------- configs


def test_zero0_bf16_is_autocast_over_fp32_weights_clipped_by_the_strategy():
    config = _bf16(0, max_grad_norm=0.5).ds_config
    assert config["bf16"] == {"enabled": False}
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    # DeepSpeed neither measures nor clips: the strategy's one fused clip_grad_norm_ does both.
    assert config["gradient_clipping"] == 0.0


@pytest.mark.parametrize(
    ("zero_stage", "offload"),
    [(1, "none"), (2, "none"), (2, "optimizer"), (3, "none"), (3, "optimizer_and_params")],
)
def test_zero_bf16_skips_the_overflow_check_and_clips_in_deepspeed(zero_stage, offload):
    config = _bf16(zero_stage, offload=offload, max_grad_norm=0.5).ds_config
    assert config["bf16"] == {"enabled": True, "check_grad_overflow": False}
    assert "torch_autocast" not in config
    assert config["gradient_clipping"] == 0.5  # DeepSpeed's one global norm serves clipping and grad_norm


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_fp32_config_unchanged(zero_stage):
    config = _strategy(zero_stage).ds_config
    assert config["bf16"] == {"enabled": False} and "torch_autocast" not in config


# ------------------------------------------------------------------------------------------- bf16 engines


# ZeRO-3's bf16 path is DeepSpeed's own, unchanged (its overflow test runs under fp16 only): with the e2e tests.
@pytest.fixture(
    scope="module", params=[0, 2, pytest.param(3, marks=pytest.mark.e2e)], ids=lambda z: f"zero{z}"
)
def trained_bf16(request, dist):
    """A stage-1 bf16 engine trained for 4 optimizer steps (8 micro-batches of 2), DeepSpeed's overflow test
    counted (a spy on the ZeRO-1/2 optimizer's ``check_overflow``)."""
    strategy = _bf16(request.param)
    model, _ = _prepare(strategy)
    checks = []
    optimizer = strategy.engine.optimizer
    if hasattr(optimizer, "check_overflow"):
        original = optimizer.check_overflow
        optimizer.check_overflow = lambda *a, **k: (checks.append(1), original(*a, **k))[1]
    batch = _batch(model)
    before = _eval_loss(strategy, batch)
    metrics = []
    for i in range(8):
        torch.manual_seed(i)
        metrics.append(train_step(strategy, batch, (1.0, 1.0)))
    after = _eval_loss(strategy, batch)
    return {"strategy": strategy, "before": before, "after": after, "metrics": metrics, "checks": checks}


def test_bf16_loss_falls(trained_bf16):
    assert trained_bf16["after"] < trained_bf16["before"] - 0.05, (
        trained_bf16["before"],
        trained_bf16["after"],
    )
    assert [m["optimizer_step"] for m in trained_bf16["metrics"]] == [0.0, 1.0] * 4
    assert all(math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in trained_bf16["metrics"][1::2])


def test_bf16_weights_and_optimizer_per_stage(trained_bf16):
    strategy = trained_bf16["strategy"]
    engine = strategy.engine
    trainable = [p for p in engine.module.parameters() if p.requires_grad]
    if strategy.zero_stage == 0:
        # Trained weights fp32 under autocast, frozen ones bf16, no DeepSpeed wrapper (no per-tensor overflow
        # test, norm or master copy).
        assert all(p.dtype == torch.float32 for p in trainable)
        frozen = [p for p in engine.module.parameters() if not p.requires_grad]
        assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
        assert type(engine.optimizer) is torch.optim.AdamW and engine.gradient_clipping() == 0.0
    else:
        assert all(p.dtype == torch.bfloat16 for p in trainable)
        assert engine.gradient_clipping() == strategy.max_grad_norm
    if strategy.zero_stage in (1, 2):
        assert trained_bf16["checks"] == []  # four optimizer steps, no overflow test
        assert engine.optimizer.check_grad_overflow is False


def test_bf16_export_is_bf16(trained_bf16):
    """Every bf16 stage exports bf16 weights, ZeRO-0's fp32 ones under autocast too."""
    state = trained_bf16["strategy"].full_state_dict()
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}


def test_bf16_generate_outside_the_engine_forward(trained_bf16):
    """Validation decodes through the module's ``generate``, outside the engine's forward (and its autocast):
    ``precision()`` lets ZeRO-0's fp32 trained and bf16 frozen parts meet."""
    strategy = trained_bf16["strategy"]
    if strategy.zero_stage == 3:
        pytest.skip("ZeRO-3 generates inside gathered(); the precision is the bf16 module's either way")
    model = strategy.engine.module
    batch = _batch(model)
    model.eval()
    try:
        with torch.no_grad(), strategy.precision():
            keys = ("input_ids", "attention_mask", "pixel_values", "tile_pixel_values", "image_grids")
            tokens = model.generate(**{k: batch.get(k) for k in keys}, max_new_tokens=2)
    finally:
        model.train()
    assert tokens.shape == (len(batch["input_ids"]), 2)


def test_bf16_nonfinite_loss_is_skipped(dist, trained_bf16):
    strategy = trained_bf16["strategy"]
    with _gathered(dist, strategy):
        before = {n: p.detach().clone() for n, p in strategy.engine.module.named_parameters()}
    steps, micro = strategy.optimizer_steps, strategy.engine.micro_steps
    stats: dict[str, int] = {}
    batch = _batch(strategy.engine.module)
    for _ in range(2):
        metrics = train_step(strategy, batch, (float("nan"), 1.0), stats)
    assert stats == {"skipped_nonfinite": 2} and metrics["optimizer_step"] == 0.0
    assert (strategy.optimizer_steps, strategy.engine.micro_steps) == (steps, micro)
    with _gathered(dist, strategy):
        for name, param in strategy.engine.module.named_parameters():
            assert torch.equal(param.data, before[name]), name


# -------------------------------------------------------------------------------------------- grad norm


def _reference_norm(autocast: bool) -> float:
    """torch's global norm of a plain (no DeepSpeed) copy's gradients on the first micro-batch, seed 0, with
    the strategy's dtypes: under ``autocast`` frozen weights bf16 and trained ones fp32, else all bf16."""
    model = tiny_model(seed=0)
    set_trainable(model, STAGE1)
    for param in model.parameters():
        if not (autocast and param.requires_grad):
            param.data = param.data.to(torch.bfloat16)
    batch = _batch(model)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
        loss = torch.stack([out.loss_llm.float(), out.loss_rec.float()]).sum()
    loss.backward()
    grads = [p.grad.float() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


@pytest.mark.parametrize("zero_stage", [0, 2], ids=lambda z: f"zero{z}")
def test_bf16_grad_norm_is_the_norm_before_clipping(dist, zero_stage):
    """One micro-batch per step, clipped hard (``CLIP``): the reported norm is the unclipped one, as torch
    measures it on a plain copy of the model (ZeRO-0: fp32 weights under autocast; ZeRO-2: bf16 weights)."""
    strategy = _bf16(zero_stage, grad_accum=1, max_grad_norm=CLIP)
    model, _ = _prepare(strategy)
    batch = _batch(model)
    torch.manual_seed(0)
    metrics = train_step(strategy, batch, (1.0, 1.0))
    expected = _reference_norm(autocast=zero_stage == 0)
    assert expected > 100 * CLIP
    # ZeRO-0 runs torch's own computation; ZeRO-2 sums bf16 per-tensor norms in another order.
    assert metrics["grad_norm"] == pytest.approx(expected, rel=1e-4 if zero_stage == 0 else 2e-2)
    strategy.release()


@pytest.mark.slow
@pytest.mark.e2e  # minutes on 2 cores: with the e2e tests
@pytest.mark.parametrize(
    ("zero_stage", "offload"), [(2, "optimizer"), (3, "optimizer_and_params")], ids=["zero2-opt", "zero3-all"]
)
def test_bf16_offload_trains(dist, zero_stage, offload):
    """Offloading under bf16 (DeepSpeedCPUAdam on fp32 master partitions; JIT-compiled on first use)."""
    strategy = _bf16(zero_stage, offload=offload, grad_accum=1)
    model, _ = _prepare(strategy)
    batch = _batch(model)
    before = _eval_loss(strategy, batch)
    norms = []
    for i in range(4):
        torch.manual_seed(i)
        metrics = train_step(strategy, batch, (1.0, 1.0))
        assert metrics["optimizer_step"] == 1.0
        norms.append(metrics["grad_norm"])
    assert _eval_loss(strategy, batch) < before - 0.05
    assert all(math.isfinite(n) and n > 0 for n in norms)
    strategy.release()
