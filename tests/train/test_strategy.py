"""The DeepSpeed strategy and the training step on DeepSpeed's CPU accelerator (gloo), tiny model.

One process group for the package (``tests/train/conftest.py``; world size 1: ZeRO partitions over one
rank), engines reused across tests; a two-process ZeRO-2/3 run (spawned, gloo) is marked slow.
"""

from __future__ import annotations

import functools
import math
import os
import random
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from vlsa_platform.cluster import CPU, derive_placement
from vlsa_platform.config.schema import LearningRates, Placement
from vlsa_platform.model.parts import frozen_state, set_trainable
from vlsa_platform.tracking.store import free_port
from vlsa_platform.train.schedules import build_lr_scheduler
from vlsa_platform.train.step import train_step
from vlsa_platform.train.strategy import DeepSpeedStrategy, param_groups

from ..model.builders import make_batch, random_images, tiny_model
from .distributed import join_gloo

STAGE1 = ["sa_perceiver", "projector", "epigone"]
LRS = LearningRates(default=1e-2, projector=2e-2)


def _strategy(zero_stage: int, **kwargs) -> DeepSpeedStrategy:
    kwargs = {"micro_batch": 2, "grad_accum": 2, "world_size": 1, **kwargs}
    return DeepSpeedStrategy(zero_stage=zero_stage, **kwargs)


def _prepare(strategy: DeepSpeedStrategy, seed: int = 0, kind: str = "constant"):
    model = tiny_model(seed=seed)
    set_trainable(model, STAGE1)
    frozen = frozen_state(model)
    groups = param_groups(model, LRS, weight_decay=0.01)
    factory = functools.partial(build_lr_scheduler, kind=kind, total_steps=20, warmup_ratio=0.0)
    strategy.prepare(model, groups, factory)
    return model, frozen


def _batch(model, seed=0):
    batch, _ = make_batch(
        model.config, random_images([(100, 100), (120, 90)], seed=seed), text_len=8, seed=seed
    )
    return batch


def _gathered(deepspeed, strategy):
    """Context in which every parameter is whole (ZeRO-3 partitions them)."""
    params = list(strategy.engine.module.parameters())
    if strategy.zero_stage == 3:
        return deepspeed.zero.GatheredParameters(params)
    return nullcontext()


def _eval_loss(strategy, batch) -> float:
    torch.manual_seed(1234)  # the same flow-matching noise every time
    with torch.no_grad():
        out = strategy.forward(**batch)
    return float(out.loss_llm + out.loss_rec)


@pytest.fixture(scope="module", params=[0, 2, 3], ids=lambda z: f"zero{z}")
def trained(request, dist):
    """A stage-1 engine trained for 4 optimizer steps (8 micro-batches of 2, global batch 4)."""
    strategy = _strategy(request.param)
    model, frozen = _prepare(strategy)
    batch = _batch(model)
    before = _eval_loss(strategy, batch)
    metrics = []
    for i in range(8):
        torch.manual_seed(i)
        metrics.append(train_step(strategy, batch, (1.0, 1.0)))
    after = _eval_loss(strategy, batch)
    return {"strategy": strategy, "frozen": frozen, "before": before, "after": after, "metrics": metrics}


# --------------------------------------------------------------------------------------------- no engine


def test_param_groups_per_part_lrs_and_no_frozen_params():
    model = tiny_model()
    set_trainable(model, STAGE1)
    groups = param_groups(model, LRS, weight_decay=0.1)
    names = {g["name"] for g in groups}
    assert {g["part"] for g in groups} == set(STAGE1)
    assert "projector" in names and "projector/no_decay" in names
    for group in groups:
        assert group["lr"] == (2e-2 if group["part"] == "projector" else 1e-2)
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else 0.1)
        assert all(p.requires_grad for p in group["params"])
    in_groups = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_groups == trainable
    no_decay = {"no_decay" in g["name"] for g in param_groups(model, LRS, weight_decay=0.0)}
    assert no_decay == {False}
    set_trainable(model, [])
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, LRS, 0.0)


def test_ds_config_from_placement():
    written = Placement(
        num_workers=2, zero_stage=3, offload="optimizer", micro_batch=2, grad_accum=4, global_batch=16
    )
    placement = derive_placement(written, CPU)
    strategy = DeepSpeedStrategy.from_placement(placement, bf16=True, max_grad_norm=None)
    config = strategy.ds_config
    assert config["train_batch_size"] == 16 and config["train_micro_batch_size_per_gpu"] == 2
    assert config["gradient_accumulation_steps"] == 4 and config["gradient_clipping"] == 0.0
    assert config["bf16"] == {"enabled": True, "check_grad_overflow": False}  # see test_bf16_path.py
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in config["zero_optimization"]
    with pytest.raises(ValueError, match="needs zero_stage 3"):
        DeepSpeedStrategy(zero_stage=2, offload="optimizer_and_params")
    with pytest.raises(ValueError, match="optimizer offload"):
        DeepSpeedStrategy(zero_stage=0, offload="optimizer")


# --------------------------------------------------------------------------------------- trained engines


def test_loss_falls(trained):
    assert trained["after"] < trained["before"] - 0.05, (trained["before"], trained["after"])
    for m in trained["metrics"]:
        assert m["loss/total"] == pytest.approx(m["loss/llm"] + m["loss/rec"], rel=1e-6)


def test_frozen_parts_bitwise_unchanged(dist, trained):
    strategy, frozen = trained["strategy"], trained["frozen"]
    with _gathered(dist, strategy):
        named = dict(strategy.engine.module.named_parameters())
        assert set(frozen) == {n for n, p in named.items() if not p.requires_grad}
        for name, value in frozen.items():
            assert torch.equal(named[name].data, value), name


def test_optimizer_steps_every_grad_accum_micro_batches(trained):
    assert [m["optimizer_step"] for m in trained["metrics"]] == [0.0, 1.0] * 4
    assert trained["strategy"].optimizer_steps == 4
    assert trained["strategy"].ds_config["train_batch_size"] == 4
    # Every stage reports the norm (ZeRO-0: the strategy clips with torch's fused clip_grad_norm_ itself).
    assert all(m["grad_norm"] > 0 for m in trained["metrics"][1::2])


def test_per_part_lrs_reach_the_engine(trained):
    metrics = trained["metrics"][-1]
    assert metrics["lr/projector"] == pytest.approx(2e-2) and metrics[
        "lr/projector/no_decay"
    ] == pytest.approx(2e-2)
    assert metrics["lr/sa_perceiver"] == pytest.approx(1e-2) and metrics["lr/epigone"] == pytest.approx(1e-2)
    assert metrics["lr"] in {2e-2, 1e-2}


def test_nonfinite_loss_is_skipped_and_counted(dist, trained):
    strategy = trained["strategy"]
    with _gathered(dist, strategy):
        before = {n: p.detach().clone() for n, p in strategy.engine.module.named_parameters()}
    steps, micro = strategy.optimizer_steps, strategy.engine.micro_steps
    stats = {}
    batch = _batch(strategy.engine.module)
    for _ in range(2):
        metrics = train_step(strategy, batch, (float("nan"), 1.0), stats)
    assert stats == {"skipped_nonfinite": 2} and metrics["skipped_nonfinite"] == 2.0
    assert metrics["optimizer_step"] == 0.0 and math.isnan(metrics["loss/total"])
    assert (strategy.optimizer_steps, strategy.engine.micro_steps) == (steps, micro)
    with _gathered(dist, strategy):
        for name, param in strategy.engine.module.named_parameters():
            assert torch.equal(param.data, before[name]), name


def test_batch_with_no_loss_still_steps_with_zero_loss(trained):
    strategy = trained["strategy"]
    batch = _batch(strategy.engine.module)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    micro = strategy.engine.micro_steps
    metrics = train_step(strategy, batch, (1.0, 0.0))  # no labelled token, and L_rec weighted 0
    assert metrics["loss/total"] == 0.0 and math.isnan(metrics["loss/llm"])
    assert strategy.engine.micro_steps == micro + 1


@pytest.mark.parametrize("zero_stage", [2, 3], ids=lambda z: f"zero{z}")
def test_resume_reproduces_next_step_and_client_state(dist, tmp_path, zero_stage):
    first = _strategy(zero_stage)
    model, _ = _prepare(first, kind="cosine")
    batch = _batch(model)
    for i in range(4):
        torch.manual_seed(i)
        train_step(first, batch, (1.0, 1.0))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    first.save(
        tmp_path / "ckpt", client_state={"data": {"position": 8, "epoch": 0}, "step": first.optimizer_steps}
    )
    expected_rng = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    # Two optimizer steps: the second window's losses depend on the first's update (moments, lr).
    expected = [train_step(first, batch, (1.0, 0.5)) for _ in range(4)]

    second = _strategy(zero_stage)
    # Different initial weights: weights, Adam moments, LR schedule and step count come from the checkpoint.
    _prepare(second, seed=1, kind="cosine")
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    client = second.load(tmp_path / "ckpt")
    assert client["data"] == {"position": 8, "epoch": 0} and client["step"] == 2
    assert second.optimizer_steps == 2
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_rng
    second.load(tmp_path / "ckpt")  # restores the RNG again, for the steps below
    resumed = [train_step(second, batch, (1.0, 0.5)) for _ in range(4)]
    assert second.optimizer_steps == 4
    for a, b in zip(expected, resumed, strict=True):
        assert a["loss/total"] == b["loss/total"] and a["lr"] == b["lr"]
        assert a.get("grad_norm") == b.get("grad_norm")


@pytest.mark.slow
@pytest.mark.e2e  # DeepSpeedCPUAdam's first use JIT-compiles it (minutes on a fresh machine): with the e2e tests
@pytest.mark.parametrize(
    ("zero_stage", "offload"), [(2, "optimizer"), (3, "optimizer_and_params")], ids=["zero2-opt", "zero3-all"]
)
def test_offload_trains_with_cpu_adam(dist, zero_stage, offload):
    """Offloading swaps in DeepSpeedCPUAdam (JIT-compiled on first use: about 100 s on 2 cores, then cached)."""
    strategy = _strategy(zero_stage, offload=offload, micro_batch=2, grad_accum=1)
    model, frozen = _prepare(strategy)
    assert type(strategy.engine.optimizer.optimizer).__name__ == "DeepSpeedCPUAdam"
    batch = _batch(model)
    before = _eval_loss(strategy, batch)
    for i in range(4):
        torch.manual_seed(i)
        assert train_step(strategy, batch, (1.0, 1.0))["optimizer_step"] == 1.0
    assert _eval_loss(strategy, batch) < before - 0.05
    with _gathered(dist, strategy):
        named = dict(strategy.engine.module.named_parameters())
        assert all(torch.equal(named[n].data, v) for n, v in frozen.items())


# ------------------------------------------------------------------------------------------------ two ranks


def _text_only(batch):
    """The same sample with its images dropped (the ``<image>`` positions become ordinary tokens)."""
    text = {k: batch[k].clone() for k in ("input_ids", "attention_mask", "labels")}
    text["input_ids"][text["input_ids"] >= 1000] = 42
    return text


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    """Trains the same start on each rank's micro-batches under ZeRO 0-3 and records, per run, how far the
    weights end from ZeRO-0's on the same batches, whether both ranks hold the same weights, and the error."""
    import json

    deepspeed = join_gloo(rank, 2, port)
    model_config = tiny_model(seed=0).config
    image_batches = [
        make_batch(
            model_config, random_images([(100, 100)], seed=10 * i + rank), text_len=8, seed=10 * i + rank
        )[0]
        for i in range(4)
    ]
    # Rank 0's first micro-batch is text-only while rank 1 has an image (the unused-parameter zero terms).
    mixed = [_text_only(b) if rank == 0 and i == 0 else b for i, b in enumerate(image_batches)]
    runs = {
        "zero0-mixed": (0, mixed),
        "zero1-mixed": (1, mixed),
        "zero2-mixed": (2, mixed),
        "zero0-images": (0, image_batches),
        "zero2-images": (2, image_batches),
        "zero3-images": (3, image_batches),
        "zero3-mixed": (3, mixed),
    }
    weights, results = {}, {}
    for name, (zero_stage, micro_batches) in runs.items():
        model = tiny_model(seed=0)
        set_trainable(model, [*STAGE1, "llm"])
        strategy = DeepSpeedStrategy(zero_stage=zero_stage, micro_batch=1, grad_accum=2)
        strategy.prepare(model, param_groups(model, LRS, 0.0))
        losses, error = [], None
        for i, micro in enumerate(micro_batches):
            torch.manual_seed(i)  # the same flow-matching noise in every run
            try:
                losses.append(train_step(strategy, micro, (1.0, 1.0))["loss/total"])
            except ValueError as exc:
                error = (i, str(exc))
                break
        with _gathered(deepspeed, strategy):
            weights[name] = {n: p.detach().clone() for n, p in strategy.engine.module.named_parameters()}
        checksum = float(sum(p.double().sum() for p in weights[name].values()))
        sums = [None, None]
        torch.distributed.all_gather_object(sums, checksum)
        reference = weights[f"zero0-{name.split('-')[1]}"]
        results[name] = {
            "losses": losses,
            "error": error,
            "steps": strategy.optimizer_steps,
            "same_weights": sums[0] == sums[1],
            "off_zero0": max(float((weights[name][n] - v).abs().max()) for n, v in reference.items()),
        }
        strategy.release()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.e2e  # two processes with gloo, 15-30 s: with the e2e tests (make test's 10 minutes)
def test_two_ranks_train_as_zero0_and_refuse_mixed_batches_where_zero_cannot(tmp_path):
    """Two gloo ranks, two optimizer steps of two micro-batches each. ZeRO-1 with a text-only micro-batch on
    one rank and an image on the other ends where ZeRO-0 does (the zero terms); ZeRO-2 and ZeRO-3 end there
    when every rank has images, and refuse the mixed micro-batch on every rank with a clear error before any
    collective: ZeRO-2's gradient buckets are reduced in the order the backward readies them, so different
    graphs would reduce mismatched slices (gloo aborts, or the gradients of different parameters are summed)."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, res in enumerate(results):
        for name in ("zero1-mixed", "zero2-images", "zero3-images"):
            run = res[name]
            assert run["error"] is None and run["steps"] == 2 and run["same_weights"], (rank, name, run)
            assert all(np.isfinite(run["losses"])) and len(run["losses"]) == 4, (rank, name)
            # Adam's first steps move each weight by about its learning rate (1e-2): mixed-up gradients would
            # show up at that size, summation order at 1e-7.
            assert run["off_zero0"] < 1e-5, (rank, name, run["off_zero0"])
        for name in ("zero2-mixed", "zero3-mixed"):
            run = res[name]
            assert run["steps"] == 0 and run["losses"] == [] and run["same_weights"], (rank, name, run)
            assert run["error"][0] == 0 and "same batch structure" in run["error"][1], (rank, name, run)
            assert "pixel_values" in run["error"][1] and "labels" not in run["error"][1]


@pytest.mark.parametrize("zero_stage", [0, 2, 3], ids=lambda z: f"zero{z}")
def test_text_only_batch_where_only_the_vision_side_trains(dist, zero_stage):
    """With gradient checkpointing the LLM's inputs require grad even when no trainable parameter is reached:
    ZeRO 0-2 step on zero terms (their gradient buckets must not be empty), ZeRO-3 skips and counts."""
    strategy = _strategy(zero_stage, micro_batch=1, grad_accum=1, activation_checkpointing=True)
    model, frozen = _prepare(strategy)
    text = _text_only(_batch(model))
    stats: dict[str, int] = {}
    metrics = train_step(strategy, text, (1.0, 1.0), stats)
    assert math.isfinite(metrics["loss/llm"])
    if zero_stage == 3:
        assert metrics["optimizer_step"] == 0.0 and stats["skipped_no_grad"] == 1
    else:
        assert metrics["optimizer_step"] == 1.0 and metrics["grad_norm"] == 0.0
    with _gathered(dist, strategy):
        named = dict(strategy.engine.module.named_parameters())
        assert all(torch.equal(named[n].data, v) for n, v in frozen.items())
