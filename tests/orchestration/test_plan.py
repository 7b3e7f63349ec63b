"""``build_plan``: runs per kind, trainable parts per variant, parameter arithmetic, derived placement."""

from __future__ import annotations

import yaml

from vlsa_platform.cluster import CPU, derive_placement
from vlsa_platform.config import ExperimentConfig
from vlsa_platform.orchestration.plan import build_plan, expand_runs

from ..config.helpers import MINIMAL


def config(**changes) -> ExperimentConfig:
    data = yaml.safe_load(MINIMAL)
    base = ExperimentConfig.model_validate(data)
    return base.with_values(changes) if changes else base


def test_single_run():
    plan = build_plan(config())
    assert (plan["kind"], plan["num_trials"], plan["search_space"]) == ("single", 1, None)
    (run,) = plan["runs"]
    assert run["name"] == "main" and run["variant"] is None
    counts = run["param_counts"]
    s1, s2 = run["stages"]
    assert s1["params_total"] == sum(c["params"] for c in counts.values())
    assert s1["params_trainable"] == counts["projector"]["trainable"] + counts["epigone"]["trainable"]
    assert s2["params_trainable"] == sum(c["trainable"] for part, c in counts.items() if part != "vae")
    assert s1["placement"]["grad_accum"] == 2 and s2["placement"]["grad_accum"] == 4
    assert s1["steps"] == 2 and s2["steps"] is None  # epochs over data of unknown size
    assert s2["lr"]["vision_encoder"] == 2e-6 and s2["lr"]["llm"] == 2e-5


def test_steps_estimated_from_epochs_when_sizes_are_known():
    plan = build_plan(config(**{"data.datasets.e.num_samples": 100}))
    s2 = plan["runs"][0]["stages"][1]
    assert s2["epochs"] == 1.0 and s2["steps"] == 7  # ceil(1 x 50% of 100 / global batch 8)


def test_ablation_runs_filter_parts_and_zero_rec_weight():
    cfg = config(ablation={"variants": {"full": {}, "plain": {"vision": "lowres", "recon": False}}})
    assert [r.name for r in expand_runs(cfg)] == ["full", "plain"]
    plan = build_plan(cfg)
    assert plan["kind"] == "ablation" and plan["num_trials"] == 2
    full, plain = plan["runs"]
    assert full["stages"][0]["trainable"] == ["projector", "epigone"]
    assert plain["stages"][0]["trainable"] == ["projector"]
    assert plain["stages"][1]["trainable"] == ["vision_encoder", "projector", "llm"]
    assert (full["stages"][0]["loss"]["rec_weight"], plain["stages"][0]["loss"]["rec_weight"]) == (1.0, 0.0)
    assert "vae" in full["param_counts"] and "vae" not in plain["param_counts"]
    assert plain["model"] == {
        "preset": "tiny",
        "vision": "lowres",
        "recon": False,
        "cognition": True,
        "lora": False,
    }


def test_lora_trains_fewer_llm_parameters():
    full = build_plan(config())["runs"][0]
    lora = build_plan(config(**{"model.lora.enabled": True}))["runs"][0]
    assert lora["param_counts"]["llm"]["trainable"] < full["param_counts"]["llm"]["trainable"]
    assert lora["stages"][1]["params_trainable"] < full["stages"][1]["params_trainable"]


def test_special_vq_tokens_grow_the_vocabulary():
    text = build_plan(config())["runs"][0]["param_counts"]["llm"]["params"]
    special = build_plan(config(**{"data.cognition.vq_format": "special"}))["runs"][0]["param_counts"]["llm"][
        "params"
    ]
    no_cognition = build_plan(config(**{"data.cognition.vq_format": "special", "model.cognition": False}))
    assert special > text
    assert no_cognition["runs"][0]["param_counts"]["llm"]["params"] == text


def test_sweep_plan():
    cfg = config(sweep={"search_space": {"loss.rec_weight": {"grid": [0.1, 1.0]}}, "num_samples": 3})
    plan = build_plan(cfg)
    assert plan["kind"] == "sweep" and plan["num_trials"] == 6
    assert plan["search_space"] == {"loss.rec_weight": {"grid": [0.1, 1.0]}}
    assert [r["name"] for r in plan["runs"]] == ["trial"]


def test_cpu_placement_keeps_the_schema_defaults():
    """Without an accelerator class nothing is derived from memory: the DESIGN.md §4 keys are the schema's
    resolved placement; the derivation only adds its own keys (and no warnings)."""
    cfg = config()
    for stage, (name, written) in zip(build_plan(cfg)["runs"][0]["stages"], cfg.stages.items(), strict=True):
        assert stage["name"] == name
        defaults = dict(list(derive_placement(written.placement, CPU).as_plan().items())[:8])  # DESIGN.md §4
        assert {k: stage["placement"][k] for k in defaults} == defaults
        assert stage["placement"]["fits"] is None and stage["warnings"] == []
