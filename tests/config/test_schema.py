"""Schema rules: cross-checks, placement arithmetic, sweeps, ablations, helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from vlsa_platform.cluster import CPU, AcceleratorTable, accelerator_for, derive_placement
from vlsa_platform.config import ConfigError, ExperimentConfig, load_experiment, schema
from vlsa_platform.config.keys import unwrap

from .helpers import MINIMAL, line_of, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def minimal() -> dict:
    return yaml.safe_load(MINIMAL)


def error_of(tmp_path, text: str, **kwargs) -> str:
    write(tmp_path, "x.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_experiment("x.yaml", **kwargs)
    return str(info.value)


def _models(root: type[BaseModel]):
    seen, todo = set(), [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                tp = unwrap(stack.pop())
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    todo.append(tp)
                stack.extend(getattr(tp, "__args__", ()))


def test_every_field_is_documented():
    for model in _models(ExperimentConfig):
        assert model.__doc__, model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"


def test_config_vocabulary_matches_the_model_side():
    from vlsa_platform.model.lora import LLAMA_LINEARS, LoraSettings
    from vlsa_platform.model.parts import TRAINABLE_PARTS

    assert schema.TRAINABLE_PARTS == TRAINABLE_PARTS
    assert schema.LLAMA_LINEARS == LLAMA_LINEARS
    lora = schema.LoraConfig()
    assert (lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules)) == (
        LoraSettings().r,
        LoraSettings().alpha,
        LoraSettings().dropout,
        LoraSettings().target_modules,
    )


@pytest.mark.parametrize(
    ("vision", "recon"),
    [("sa_perceiver", True), ("sa_perceiver", False), ("anyres", False), ("lowres", False)],
)
def test_parts_present_matches_the_model(vision, recon):
    from vlsa_platform.model.accounting import parameter_counts
    from vlsa_platform.model.presets import build_vlsa_config

    counts = parameter_counts(build_vlsa_config("tiny", vision=vision, recon=recon))
    assert schema.parts_present(vision, recon) == tuple(p for p in counts if p != "vae")


# ------------------------------------------------------------------------------------------------- model


def test_recon_with_anyres_is_rejected(tmp_path):
    text = MINIMAL.replace("preset: tiny", "preset: tiny\n  vision: anyres")
    message = error_of(tmp_path, text)
    assert "x.yaml:2: model.recon: recon: true needs vision: sa_perceiver, not anyres" in message
    assert "global query" in message
    write(tmp_path, "ok.yaml", text.replace("vision: anyres", "vision: anyres\n  recon: off"))
    assert load_experiment("ok.yaml").model.recon is False


def test_recon_resolution_multiple_of_16(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("preset: tiny", "preset: tiny\n  recon_resolution: 520"))
    assert "x.yaml:4: model.recon_resolution: 520 is not a multiple of 16" in message


# ---------------------------------------------------------------------------------------------- stages


def test_steps_xor_epochs(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("    steps: 2\n", "    steps: 2\n    epochs: 1\n"))
    assert "stages.s1.steps: give exactly one of steps and epochs (both given)" in message
    message = error_of(tmp_path, MINIMAL.replace("    steps: 2\n", ""))
    assert "stages.s1.steps: give exactly one of steps and epochs (neither given)" in message


def test_lr_keys_are_parts(tmp_path):
    path = write(
        tmp_path, "y.yaml", MINIMAL.replace("lr: {default: 1.0e-3}", "lr: {default: 1.0e-3, vae: 1.0e-4}")
    )
    with pytest.raises(ConfigError, match=rf"y.yaml:{line_of(path, 'vae')}: stages.s1.lr.vae: unknown key"):
        load_experiment("y.yaml")
    config = ExperimentConfig.model_validate(minimal())
    assert config.stages["s2"].lr.for_part("vision_encoder") == 2e-6
    assert config.stages["s2"].lr.for_part("llm") == 2e-5


def test_unknown_part(tmp_path):
    assert "stages.s1.trainable.1: Input should be 'vision_encoder'" in error_of(
        tmp_path, MINIMAL.replace("[projector, epigone]", "[projector, vae]")
    )


def test_stage_must_train_something_in_every_variant(tmp_path):
    text = MINIMAL.replace("[projector, epigone]", "[epigone]") + (
        "ablation:\n  variants:\n    base: {}\n    plain: {recon: off}\n"
    )
    message = error_of(tmp_path, text)
    assert (
        "stages.s1.trainable: trains nothing in variant plain: epigone are absent with vision sa_perceiver and recon off"
        in message
    )


def test_ablation_variant_recon_needs_sa(tmp_path):
    text = MINIMAL + "ablation:\n  variants:\n    bad: {vision: lowres}\n"
    path = write(tmp_path, "x.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_experiment("x.yaml")
    assert (
        f"x.yaml:{line_of(path, 'bad:')}: ablation.variants.bad.recon: recon: true needs vision: sa_perceiver"
        in str(info.value)
    )


def test_dataset_names_are_cross_checked(tmp_path):
    text = MINIMAL.replace("- {dataset: d}", "- {dataset: missing}")
    path = write(tmp_path, "x.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_experiment("x.yaml")
    assert str(info.value) == (
        f"x.yaml:{line_of(path, 'dataset: missing')}: stages.s1.mixture.0.dataset: "
        "no dataset named 'missing' in data.datasets (has: d, e)"
    )
    assert "data.validation.dataset: no dataset named 'zz'" in error_of(
        tmp_path, MINIMAL.replace("validation: {dataset: d}", "validation: {dataset: zz}")
    )


def test_named_mixture(tmp_path):
    text = MINIMAL.replace(
        "  validation: {dataset: d}\n",
        "  validation: {dataset: d}\n  mixtures:\n    both: [{dataset: d}, {dataset: e, weight: 2}]\n",
    )
    write(tmp_path, "x.yaml", text)
    config = load_experiment("x.yaml", overrides=["stages.s1.mixture=both"])
    assert [(m.dataset, m.weight) for m in config.stages["s1"].mixture] == [("d", 1.0), ("e", 2.0)]
    with pytest.raises(
        ConfigError, match=r"--set stages.s1.mixture=other: stages.s1.mixture: no mixture named 'other'"
    ):
        load_experiment("x.yaml", overrides=["stages.s1.mixture=other"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", ("all", None, None)),
        ("first:1000", ("first", 1000, None)),
        ("random:10%", ("random", None, 10.0)),
        ("random:12.5%", ("random", None, 12.5)),
    ],
)
def test_parse_sampling(text, expected):
    assert schema.parse_sampling(text) == expected


@pytest.mark.parametrize("text", ["some", "first:", "random:0", "first:101%", "last:5", "random:-1"])
def test_parse_sampling_rejects(text):
    with pytest.raises(ValueError, match="bad sampling"):
        schema.parse_sampling(text)


def test_sampled_size():
    assert schema.sampled_size("all", 10) == 10
    assert schema.sampled_size("first:4", 10) == 4
    assert schema.sampled_size("random:40", 10) == 10
    assert schema.sampled_size("random:50%", 10) == 5


def test_bad_dataset_location(tmp_path):
    assert "only local paths and s3:// locations" in error_of(
        tmp_path, MINIMAL.replace('"bundled:synthetic"}\n    e', '"gs://b/x.json"}\n    e')
    )
    assert "unknown bundled dataset" in error_of(
        tmp_path, MINIMAL.replace('"bundled:synthetic"}\n    e', '"bundled:other"}\n    e')
    )


# ---------------------------------------------------------------------------------------------- placement


def test_grad_accum_is_derived():
    config = ExperimentConfig.model_validate(minimal())
    resolved = derive_placement(config.stages["s1"].placement, CPU).as_plan()
    assert dict(list(resolved.items())[:8]) == {  # the DESIGN.md §4 keys come first
        "accelerator_type": None,
        "use_gpu": False,
        "num_workers": 2,
        "zero_stage": 2,
        "offload": "none",
        "micro_batch": 1,
        "grad_accum": 2,
        "global_batch": 4,
    }


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        (
            {"num_workers": 3, "global_batch": 8},
            "global_batch: global_batch 8 is not a multiple of num_workers 3",
        ),
        (
            {"num_workers": 2, "micro_batch": 2, "grad_accum": 3, "global_batch": 8},
            "grad_accum: grad_accum 3 disagrees with global_batch 8 / (micro_batch 2 x num_workers 2) = 2",
        ),
        (
            {"global_batch": 8, "zero_stage": 2, "offload": "optimizer_and_params"},
            "offload: parameter offload needs zero_stage 3",
        ),
        (
            {"global_batch": 8, "zero_stage": 0, "offload": "optimizer"},
            "offload: optimizer offload needs zero_stage 1, 2 or 3",
        ),
    ],
)
def test_placement_errors(placement, expected):
    data = minimal()
    data["stages"]["s1"]["placement"] = placement
    with pytest.raises(Exception) as info:
        ExperimentConfig.model_validate(data)
    assert f"stages.s1.placement.{expected}" in _explained(info.value)


def _explained(err) -> str:
    from vlsa_platform.config.explain import explain

    return "\n".join(explain(err, ExperimentConfig, lambda loc: "here"))


def test_placement_agreeing_and_offload_defaults():
    data = minimal()
    data["stages"]["s1"]["placement"] = {
        "accelerator_type": "A10G",
        "num_workers": 2,
        "micro_batch": 2,
        "grad_accum": 1,
        "global_batch": 4,
        "offload": "optimizer_and_params",
    }
    placement = ExperimentConfig.model_validate(data).stages["s1"].placement
    accelerator = accelerator_for(placement, AcceleratorTable.from_config())
    resolved = derive_placement(placement, accelerator).as_plan()
    assert (resolved["grad_accum"], resolved["zero_stage"], resolved["use_gpu"]) == (1, 3, True)


# -------------------------------------------------------------------------------------------------- loss


def test_stage_losses_inherit_the_shared_ones():
    data = minimal()
    data["loss"] = {"rec_weight": 0.3, "schedule": {"kind": "linear", "end_factor": 0.0}}
    data["stages"]["s2"]["loss"] = {"rec_weight": 2.0}
    config = ExperimentConfig.model_validate(data)
    s1, s2 = config.stages["s1"].loss, config.stages["s2"].loss
    assert (s1.llm_weight, s1.rec_weight, s2.rec_weight) == (1.0, 0.3, 2.0)
    assert s1.schedule.kind == s2.schedule.kind == "linear"


def test_schedule_factor():
    linear = schema.ScheduleConfig(kind="linear", start_factor=1.0, end_factor=0.0)
    cosine = schema.ScheduleConfig(kind="cosine", start_factor=1.0, end_factor=0.0)
    constant = schema.ScheduleConfig(kind="constant", start_factor=0.5, end_factor=0.0)
    assert [linear.factor(t) for t in (0, 0.25, 1, 2)] == [1.0, 0.75, 0.0, 0.0]
    assert (
        math.isclose(cosine.factor(0.5), 0.5)
        and cosine.factor(0) == 1.0
        and math.isclose(cosine.factor(1), 0.0, abs_tol=1e-12)
    )
    assert constant.factor(0.9) == 0.5


def test_both_weights_zero_rejected(tmp_path):
    message = error_of(
        tmp_path, MINIMAL, overrides=["loss.llm_weight=0", "model.recon=off", "model.vision=lowres"]
    )
    assert "stages.s1.loss: both loss weights are 0" in message  # recon off: w_rec counts as 0
    message = error_of(tmp_path, MINIMAL, overrides=["loss.llm_weight=0", "loss.rec_weight=0"])
    assert "stages.s1.loss: both loss weights are 0" in message


# ------------------------------------------------------------------------------------------------- sweep


SWEEP = (
    MINIMAL
    + """\
sweep:
  search_space:
    loss.rec_weight: {grid: [0.1, 0.3, 1.0, 3.0]}
    stages.s2.loss.schedule.kind: {grid: [constant, linear]}
  num_samples: 2
  scheduler: {kind: asha, grace_period: 1}
"""
)


def test_sweep_num_trials(tmp_path):
    write(tmp_path, "x.yaml", SWEEP)
    config = load_experiment("x.yaml")
    assert config.kind == "sweep"
    assert config.sweep.num_trials == 4 * 2 * 2
    write(
        tmp_path,
        "r.yaml",
        SWEEP.replace("grid:", "choice:").replace("num_samples: 2", "num_samples: 7\n  algorithm: random"),
    )
    assert load_experiment("r.yaml").sweep.num_trials == 7


def test_sweep_trial_values_reach_the_stages(tmp_path):
    write(tmp_path, "x.yaml", SWEEP)
    trial = load_experiment("x.yaml").with_values(
        {"loss.rec_weight": 3.0, "stages.s2.loss.schedule.kind": "linear"}
    )
    assert [s.loss.rec_weight for s in trial.stages.values()] == [3.0, 3.0]
    assert (
        trial.stages["s2"].loss.schedule.kind == "linear"
        and trial.stages["s1"].loss.schedule.kind == "constant"
    )
    with pytest.raises(
        ConfigError, match=r"trial 3: loss\.rec_weight: Input should be greater than or equal to 0"
    ):
        load_experiment("x.yaml").with_values({"loss.rec_weight": -1}, origin="trial 3")


def test_sweep_key_must_exist(tmp_path):
    path = write(tmp_path, "x.yaml", SWEEP.replace("loss.rec_weight:", "loss.rec_weigth:"))
    with pytest.raises(ConfigError) as info:
        load_experiment("x.yaml")
    assert str(info.value) == (
        f'x.yaml:{line_of(path, "rec_weigth")}: sweep.search_space["loss.rec_weigth"]: '
        "loss.rec_weigth: unknown key (known keys here: llm_weight, rec_weight, schedule)"
    )
    assert "stages.s7: no entry 's7' in stages" in error_of(
        tmp_path, SWEEP.replace("stages.s2.loss", "stages.s7.loss")
    )


def test_sweep_values_must_validate(tmp_path):
    message = error_of(tmp_path, SWEEP.replace("[constant, linear]", "[constant, wavy]"))
    assert (
        "stages.s2.loss.schedule.kind = 'wavy' gives a bad config: stages.s2.loss.schedule.kind: Input should be"
        in message
    )


def test_sweep_key_shadowed_by_every_stage(tmp_path):
    text = SWEEP.replace("    steps: 2\n", "    steps: 2\n    loss: {rec_weight: 1}\n").replace(
        "    epochs: 1\n", "    epochs: 1\n    loss: {rec_weight: 1}\n"
    )
    assert 'sweep.search_space["loss.rec_weight"]: loss.rec_weight has no effect on any run' in error_of(
        tmp_path, text
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("num_samples: 2", "num_samples: 2\n  algorithm: random"),
            "algorithm: random draws values; use choice",
        ),
        (("{grid: [0.1, 0.3, 1.0, 3.0]}", "{uniform: [0.1, 3.0]}"), "algorithm: grid enumerates values"),
        (("{grid: [0.1, 0.3, 1.0, 3.0]}", "{loguniform: [3.0, 0.1]}"), "low 3.0 must be below high 0.1"),
        (
            ("{grid: [0.1, 0.3, 1.0, 3.0]}", "{grid: [1], choice: [2]}"),
            "give exactly one of grid, choice, uniform, loguniform",
        ),
        (("num_samples: 2", "num_samples: 2\n  metric: val/acc"), "unknown metric 'val/acc'"),
    ],
)
def test_sweep_shape_errors(tmp_path, change, expected):
    assert expected in error_of(tmp_path, SWEEP.replace(*change))


def test_val_metric_needs_validation_data(tmp_path):
    assert "sweep.metric: val/loss_llm needs validation data" in error_of(
        tmp_path, SWEEP.replace("  validation: {dataset: d}\n", "")
    )


def test_sweep_and_ablation_are_exclusive(tmp_path):
    text = SWEEP + "ablation:\n  variants:\n    a: {recon: off}\n"
    assert "ablation: a file has at most one of sweep and ablation" in error_of(tmp_path, text)


# ---------------------------------------------------------------------------------------------- ablation


def test_variant_config(tmp_path):
    write(
        tmp_path,
        "x.yaml",
        MINIMAL + "ablation:\n  variants:\n    lo: {label: '(2) lowres', vision: lowres, recon: off}\n",
    )
    config = load_experiment("x.yaml")
    assert config.kind == "ablation"
    variant = config.variant("lo")
    assert (variant.model.vision, variant.model.recon, variant.model.cognition) == ("lowres", False, True)
    assert variant.kind == "single" and variant.ablation is None


def test_docs_mention_every_field():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    missing = [
        f"{model.__name__}.{name}"
        for model in _models(ExperimentConfig)
        for name in model.model_fields
        if name not in docs
    ]
    assert not missing, f"docs/experiments.md does not mention {missing}"
