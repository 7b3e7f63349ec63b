"""The plan's cost estimate (``orchestration.estimate``): per stage, per run, per submission; and what
``validate`` prints of it for the paper's recipe at paper scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform.cli import main
from vlsa_platform.cluster import DEFAULT_MFU
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import build_plan

from .test_plan import config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
PAPER = str(EXPERIMENTS / "vlsa_paper.yaml")
STAGE_KEYS = {"flops_per_sample", "flops_by_part", "llm_tokens", "samples", "devices", "mfu", "gpu_hours"}


def paper_plan(*overrides: str) -> dict:
    return build_plan(load_experiment(PAPER, overrides=list(overrides)))


def test_cpu_stages_are_not_priced():
    plan = build_plan(config())
    (run,) = plan["runs"]
    s1, s2 = run["stages"]
    assert s1["estimate"]["flops_per_sample"] > 0 and s1["estimate"]["samples"] == 2 * 4
    assert s1["estimate"]["gpu_hours"] is None and "not priced" in s1["estimate"]["note"]
    assert s2["estimate"]["samples"] is None  # epochs over data of unknown size: steps unknown
    assert run["estimate"] == {"gpu_hours": None, "wall_hours": None, "price_usd": None}


def test_paper_stages_are_estimated_from_steps_class_and_mfu():
    plan = paper_plan()
    (run,) = plan["runs"]
    for stage in run["stages"]:
        est = stage["estimate"]
        assert set(est) >= STAGE_KEYS and est["mfu"] == DEFAULT_MFU and est["devices"] == 8
        assert est["samples"] == stage["steps"] * stage["placement"]["global_batch"]
        assert est["flops"] == pytest.approx(est["flops_per_sample"] * est["samples"])
        peak = {"A100-80G": 312e12, "H100": 989e12}[stage["placement"]["accelerator_type"]]
        hours = est["flops"] / (peak * DEFAULT_MFU) / 3600
        assert est["gpu_hours"] == pytest.approx(hours, abs=1e-3)
        assert est["wall_hours"] == pytest.approx(hours / 8, abs=1e-3)
        assert est["price_usd"] == pytest.approx(hours * stage["placement"]["hourly_usd"] / 8, abs=0.01)
        assert est["llm_tokens"] == 4096 and est["text_tokens_from"] == "max_length"
    assert run["estimate"]["gpu_hours"] == pytest.approx(
        sum(s["estimate"]["gpu_hours"] for s in run["stages"]), abs=1e-2
    )
    assert plan["estimate"]["gpu_hours"]["full"] == pytest.approx(run["estimate"]["gpu_hours"], abs=0.01)
    json.dumps(plan)  # JSON-able


def test_estimate_scales_with_steps_and_inversely_with_mfu():
    base = paper_plan("stages.stage3.epochs=null", "stages.stage3.steps=1000")
    double = paper_plan("stages.stage3.epochs=null", "stages.stage3.steps=2000")
    faster = paper_plan(
        "stages.stage3.epochs=null", "stages.stage3.steps=1000", "cluster.accelerators.H100.mfu=0.8"
    )
    hours = [p["runs"][0]["stages"][2]["estimate"]["gpu_hours"] for p in (base, double, faster)]
    assert hours[1] == pytest.approx(2 * hours[0], rel=1e-3)
    assert hours[2] == pytest.approx(hours[0] / 2, rel=1e-3)
    assert faster["runs"][0]["stages"][2]["estimate"]["mfu"] == 0.8
    assert faster["runs"][0]["stages"][0]["estimate"]["mfu"] == DEFAULT_MFU  # another class


def test_mean_text_tokens_shorten_the_llm_sequence():
    plan = paper_plan("data.datasets.llava_pretrain.mean_text_tokens=64")
    s1, s2 = plan["runs"][0]["stages"][:2]
    assert (
        s1["estimate"]["llm_tokens"] == 576 + 64 and s1["estimate"]["text_tokens_from"] == "mean_text_tokens"
    )
    assert s2["estimate"]["llm_tokens"] == 4096
    assert s1["estimate"]["flops_per_sample"] < s2["estimate"]["flops_per_sample"] / 3


def test_unknown_text_lengths_give_both_bounds():
    """Without ``mean_text_tokens`` the estimate is the upper bound (every sample at ``max_length``) and its
    ``lower_bound`` has no text at all; with it, one figure between the two and no bounds."""
    s1 = paper_plan()["runs"][0]["stages"][0]["estimate"]
    assert s1["llm_tokens"] == 4096 and s1["lower_bound"]["llm_tokens"] == 576
    assert 0 < s1["lower_bound"]["gpu_hours"] < s1["gpu_hours"]
    known = paper_plan("data.datasets.llava_pretrain.mean_text_tokens=64")["runs"][0]["stages"][0]["estimate"]
    assert "lower_bound" not in known
    assert s1["lower_bound"]["gpu_hours"] < known["gpu_hours"] < s1["gpu_hours"]


def test_sweep_total_counts_shared_prefixes_and_the_asha_floor():
    plan = build_plan(load_experiment(str(EXPERIMENTS / "stage_mixing_sweep.yaml")))
    est, (run,) = plan["estimate"], plan["runs"]
    hours = est["gpu_hours"]
    assert est["runs"] == plan["num_trials"] == 16 and est["asha"]
    assert hours["full"] == pytest.approx(16 * run["estimate"]["gpu_hours"], abs=0.1)
    stage_hours = {s["name"]: s["estimate"]["gpu_hours"] for s in run["stages"]}
    prefixes = plan["prefixes"]
    expected = sum(prefixes[name]["trained"] * hours_ for name, hours_ in stage_hours.items())
    assert hours["with_prefixes"] == pytest.approx(expected, abs=0.1)
    assert hours["asha_floor"] < hours["with_prefixes"] < hours["full"]
    # everyone trains stage3 up to its first rung; at least one trial trains all of it
    floor_stage3 = hours["asha_floor"] - (expected - 16 * stage_hours["stage3"])
    assert stage_hours["stage3"] < floor_stage3 < 16 * stage_hours["stage3"]


def test_validate_prints_the_estimate_at_paper_scale(capsys):
    assert main(["validate", PAPER]) == 0
    out = capsys.readouterr().out
    plan = paper_plan()
    lines = out.splitlines()
    header = next(line for line in lines if line.strip().startswith("estimate"))
    for word in ("FLOPs/sample", "LLM tokens", "samples", "GPUs", "MFU", "GPU-hours", "wall", "price"):
        assert word in header
    for stage in plan["runs"][0]["stages"]:
        est = stage["estimate"]
        row = next(line for line in lines[lines.index(header) :] if line.split()[0] == stage["name"])
        assert f"{est['samples']:,}" in row and f"8x{est['accelerator']}" in row and "0.40" in row
        assert f"{est['gpu_hours']:,.1f}" in row and f"${est['price_usd']:,.0f}" in row
    total = next(line for line in lines[lines.index(header) :] if line.split()[0] == "total")
    assert f"{plan['runs'][0]['estimate']['gpu_hours']:,.1f}" in total
    assert "upper bound" in out  # text lengths unknown: said so


def test_validate_prints_the_sweep_total(capsys):
    assert main(["validate", str(EXPERIMENTS / "stage_mixing_sweep.yaml")]) == 0
    out = capsys.readouterr().out
    assert "estimated cost of 16 runs" in out and "with shared stage prefixes" in out and "ASHA" in out


def test_each_runs_estimate_for_the_parent_run():
    from vlsa_platform.orchestration.plan import estimated_run_hours

    assert estimated_run_hours(load_experiment(PAPER)) == {
        "main": paper_plan()["runs"][0]["estimate"]["gpu_hours"]
    }
    assert estimated_run_hours(config()) == {"main": None}  # CPU workers: not priced
    ablation = load_experiment(str(EXPERIMENTS / "ablation.yaml"))
    hours = estimated_run_hours(ablation)
    assert set(hours) == set(ablation.ablation.variants) and all(h and h > 0 for h in hours.values())
