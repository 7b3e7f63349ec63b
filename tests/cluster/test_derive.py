"""Placement derivation: open fields filled per accelerator class, the global batch (and schedule) kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform.cli import main
from vlsa_platform.cluster import BUILTIN, AcceleratorClass, StageNeeds, derive_placement, estimate
from vlsa_platform.cluster.memory import GIB
from vlsa_platform.config.errors import ConfigError
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.schema import Placement
from vlsa_platform.orchestration.plan import build_plan

PAPER = str(Path(__file__).resolve().parents[2] / "experiments" / "vlsa_paper.yaml")
OPEN = (
    "zero_stage",
    "micro_batch",
)  # the shipped file sets these; leaving them null lets the plan derive them


def paper_plan(*sets: str, scale: str | None = None) -> dict:
    return build_plan(load_experiment(PAPER, scale=scale, overrides=sets))


def stage_on(accelerator: str, stage: str = "stage3", *sets: str) -> dict:
    """The paper recipe's ``stage`` placed on ``accelerator`` with its ZeRO stage and micro-batch left open."""
    placement = f"stages.{stage}.placement"
    opened = [f"{placement}.{key}=" for key in OPEN]
    plan = paper_plan(f"{placement}.accelerator_type={accelerator}", *opened, *sets)
    return next(s for s in plan["runs"][0]["stages"] if s["name"] == stage)


# --------------------------------------------------------------------------------------- same stage, two classes


def test_same_stage_on_a10g_and_h100_same_batch_and_schedule_different_deepspeed():
    a10g, h100 = stage_on("A10G"), stage_on("H100")
    pa, ph = a10g["placement"], h100["placement"]
    # the optimisation is the same: global batch, steps, learning rates, everything but the placement
    assert pa["global_batch"] == ph["global_batch"] == 128 and pa["num_workers"] == ph["num_workers"] == 8
    strip = {"placement", "warnings", "estimate", "checkpoint"}  # the placement's cost and checkpoint stall
    assert {k: v for k, v in a10g.items() if k not in strip} == {
        k: v for k, v in h100.items() if k not in strip
    }
    assert a10g["steps"] == h100["steps"] == -(-779289 // 128)
    # ... the DeepSpeed settings are not
    for p in (pa, ph):
        assert p["micro_batch"] * p["num_workers"] * p["grad_accum"] == p["global_batch"]
        assert p["derived"] == ["zero_stage", "offload", "micro_batch", "grad_accum"]
        assert p["fits"] is True and p["memory_gib_per_gpu"] <= p["accelerator_memory_gib"]
    settings = [(p["zero_stage"], p["offload"], p["micro_batch"], p["grad_accum"]) for p in (pa, ph)]
    assert settings[0] != settings[1]
    # the full 8B + 2B fine-tune needs ZeRO-3 and the optimizer on the host on a 24 GB card, neither on an H100
    assert (pa["zero_stage"], pa["offload"]) == (3, "optimizer")
    assert ph["zero_stage"] < 3 and ph["offload"] == "none"
    assert (pa["accelerator_memory_gib"], ph["accelerator_memory_gib"]) == (22.49, 79.65)
    assert pa["hourly_usd"] == pytest.approx(8 * BUILTIN["A10G"].hourly_usd, abs=0.01)
    assert a10g["warnings"] == h100["warnings"] == []


def test_bigger_cards_take_bigger_micro_batches():
    micro = {a: stage_on(a, "stage1")["placement"]["micro_batch"] for a in ("A10G", "A100-80G", "H200")}
    assert micro["A10G"] <= micro["A100-80G"] < micro["H200"]


def test_simulated_classes_at_tiny_scale():
    """Two classes simulated on CPU workers (``use_gpu: false`` + ``accelerator_type``, the custom resource a
    local Ray cluster declares), their memory set in the file: same global batch and steps, different
    DeepSpeed settings."""
    from vlsa_platform.cluster import ModelDims, stage_needs
    from vlsa_platform.model.accounting import parameter_counts
    from vlsa_platform.model.presets import build_vlsa_config

    config = build_vlsa_config("tiny")
    counts = parameter_counts(config)
    needs = stage_needs(
        ModelDims.from_vlsa_config(config),
        counts,
        list(counts)[:-1],
        sequence_length=4096,
        checkpointing=True,
    )

    def gib(zero: int, micro: int) -> float:
        return estimate(needs, zero_stage=zero, offload="none", num_workers=2, micro_batch=micro).total / GIB

    small = (gib(2, 1) + gib(3, 1)) / 2  # ZeRO-3 fits at micro-batch 1, ZeRO-2 does not
    assert gib(3, 2) > small
    sets = [
        "stages.stage3.placement.num_workers=2",
        "stages.stage3.placement.global_batch=8",
        "stages.stage3.placement.micro_batch=",
        "stages.stage3.placement.zero_stage=",
        f"cluster.accelerators.A10G.memory_gb={small}",
        "cluster.accelerators.H100.memory_gb=4",
    ]

    def on(accelerator: str) -> dict:
        plan = paper_plan(*sets, f"stages.stage3.placement.accelerator_type={accelerator}", scale="tiny")
        return plan["runs"][0]["stages"][2]

    a10g, h100 = on("A10G"), on("H100")
    pa, ph = a10g["placement"], h100["placement"]
    assert pa["use_gpu"] is ph["use_gpu"] is False
    assert a10g["steps"] == h100["steps"] and pa["global_batch"] == ph["global_batch"] == 8
    assert (pa["zero_stage"], pa["micro_batch"], pa["grad_accum"]) == (3, 1, 4)
    assert (ph["zero_stage"], ph["micro_batch"], ph["grad_accum"]) == (0, 4, 1)


# -------------------------------------------------------------------------------- explicit values, overrides


def test_values_the_file_sets_are_kept_and_checked():
    stage = paper_plan(
        "stages.stage3.placement.accelerator_type=A10G", "stages.stage3.placement.zero_stage=2"
    )["runs"][0]["stages"][2]
    p = stage["placement"]
    assert (p["zero_stage"], p["micro_batch"], p["grad_accum"]) == (2, 4, 4)  # as written (micro_batch 4)
    assert p["derived"] == ["offload", "grad_accum"] and p["offload"] == "none"  # offload would not rescue it
    assert p["fits"] is False and p["memory_gib_per_gpu"] > p["accelerator_memory_gib"]
    (warning,) = stage["warnings"]
    assert warning.startswith("stages.stage3.placement: about ")
    assert (
        "more than A10G's 22.5 GiB" in warning and "set in the file: zero_stage 2, micro_batch 4" in warning
    )


def test_shipped_recipe_fits_where_it_is_placed():
    stages = paper_plan()["runs"][0]["stages"]
    s2, s3 = stages[1]["placement"], stages[2]["placement"]
    assert (s3["accelerator_type"], s3["zero_stage"], s3["micro_batch"], s3["fits"]) == ("H100", 3, 4, True)
    assert s2["fits"] is True and s2["derived"] == ["offload", "grad_accum"]


def test_overrides_change_memory_and_price():
    base = stage_on("A10G")["placement"]
    bigger = stage_on(
        "A10G", "stage3", "cluster.accelerators.A10G.memory_gb=48", "cluster.accelerators.A10G.hourly_usd=0.5"
    )["placement"]
    assert bigger["accelerator_memory_gib"] == 48.0 and bigger["hourly_usd"] == 4.0
    assert (bigger["zero_stage"], bigger["offload"]) != (base["zero_stage"], base["offload"])
    assert bigger["offload"] == "none"


def test_unknown_accelerator_type_is_an_error_listing_the_classes(capsys):
    with pytest.raises(ConfigError) as info:
        paper_plan(
            "stages.stage2.placement.accelerator_type=V100",
            "cluster.accelerators.MI300X={memory_gb: 192, bf16_tflops: 1307, hourly_usd: 4}",
        )
    message = str(info.value)
    assert message.startswith("stages.stage2.placement.accelerator_type: unknown accelerator type 'V100'")
    assert "H100, H200, MI300X" in message
    assert main(["validate", PAPER, "--set", "stages.stage1.placement.accelerator_type=B9000"]) == 2
    assert "stages.stage1.placement.accelerator_type: unknown" in capsys.readouterr().err


def test_validate_json_shows_derived_settings(capsys):
    argv = ["validate", PAPER, "--json", "--set", "stages.stage3.placement.accelerator_type=A10G"]
    argv += [x for key in OPEN for x in ("--set", f"stages.stage3.placement.{key}=")]
    assert main(argv) == 0
    stage3 = json.loads(capsys.readouterr().out)["runs"][0]["stages"][2]
    p = stage3["placement"]
    assert {
        "derived",
        "memory_gib_per_gpu",
        "accelerator_memory_gib",
        "fits",
        "hourly_usd",
        "offload",
    } <= set(p)
    assert p["derived"] == ["zero_stage", "offload", "micro_batch", "grad_accum"]
    assert set(p["memory_breakdown_gib"]) == {"model_states", "activations", "overhead"}
    assert stage3["warnings"] == []


def test_tiny_scale_keeps_the_cpu_defaults():
    for stage in paper_plan(scale="tiny")["runs"][0]["stages"]:
        p = stage["placement"]
        assert (p["accelerator_type"], p["use_gpu"], p["num_workers"]) == (None, False, 1)
        assert (p["zero_stage"], p["offload"], p["micro_batch"], p["grad_accum"], p["global_batch"]) == (
            2,  # stage3's ZeRO-3 runs as ZeRO-2 on one CPU rank
            "none",
            1,
            2,
            2,
        )
        assert p["fits"] is None and p["accelerator_memory_gib"] is None and p["hourly_usd"] is None
        assert 0 < p["memory_gib_per_gpu"] < 2  # a sanity number only
        assert stage["warnings"] == []


# ------------------------------------------------------------------------------------ derivation, directly

X = 7_000_000_000  # a 7B model, all of it trained, 8 workers, 1 GiB of activations per sample
NEEDS = StageNeeds(
    trained_params=X,
    frozen_params=0,
    largest_layer_params=0,
    activation_bytes={"llm": GIB},
    sequence_length=1,
)


def card(memory_gib: float) -> AcceleratorClass:
    return AcceleratorClass("X", "X", memory_gib, 100.0, 1.0)


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (160, (0, "none")),
        (80, (1, "none")),
        (40, (2, "none")),
        (24, (3, "none")),
        (12, (3, "optimizer")),
        (2, (3, "optimizer_and_params")),
    ],
)
def test_lowest_zero_stage_then_offload(memory, expected):
    placement = Placement(accelerator_type="X", num_workers=8, global_batch=64)
    resolved = derive_placement(placement, card(memory), NEEDS)
    assert (resolved.zero_stage, resolved.offload) == expected and resolved.fits
    # the largest power of two that fits (and divides the 8 samples per worker)
    m = resolved.micro_batch
    fits = estimate(NEEDS, zero_stage=expected[0], offload=expected[1], num_workers=8, micro_batch=m)
    assert fits.total <= memory * GIB
    bigger = estimate(NEEDS, zero_stage=expected[0], offload=expected[1], num_workers=8, micro_batch=2 * m)
    assert m == 8 or bigger.total > memory * GIB
    assert resolved.grad_accum == 64 // (8 * m)


def test_micro_batch_divides_the_per_worker_batch():
    placement = Placement(accelerator_type="X", num_workers=8, global_batch=96)  # 12 per worker
    resolved = derive_placement(placement, card(10_000), NEEDS)
    assert (resolved.micro_batch, resolved.grad_accum) == (4, 3)


def test_nothing_fits_gives_the_most_frugal_settings_and_a_warning():
    placement = Placement(accelerator_type="X", num_workers=8, global_batch=64)
    resolved = derive_placement(placement, card(1), NEEDS, where="stages.s.placement")
    assert (resolved.zero_stage, resolved.offload, resolved.micro_batch) == (3, "optimizer_and_params", 1)
    assert resolved.fits is False
    (warning,) = resolved.warnings
    assert "even with the most memory-saving settings" in warning


def test_batch_arithmetic_errors_name_the_field():
    uneven = Placement.model_construct(
        accelerator_type="X",
        num_workers=3,
        global_batch=64,
        use_gpu=None,
        zero_stage=None,
        offload=None,
        micro_batch=None,
        grad_accum=None,
    )
    with pytest.raises(
        ConfigError, match=r"^stages\.s\.placement\.global_batch: global_batch 64 is not a multiple"
    ):
        derive_placement(uneven, card(80), NEEDS, where="stages.s.placement")
    accum = uneven.model_copy(update={"num_workers": 8, "grad_accum": 3})
    with pytest.raises(ConfigError, match=r"^stages\.s\.placement\.grad_accum: "):
        derive_placement(accum, card(80), NEEDS, where="stages.s.placement")
    # grad_accum given, micro_batch open: the micro-batch follows from it
    resolved = derive_placement(accum.model_copy(update={"grad_accum": 2}), card(80), NEEDS)
    assert (resolved.micro_batch, resolved.grad_accum, resolved.derived) == (
        4,
        2,
        ("zero_stage", "offload", "micro_batch"),
    )
