"""The loader: YAML with line numbers, ``extends``, ``--scale``, ``--set`` and the error messages."""

from __future__ import annotations

import pytest

from vlsa_platform.config import ConfigError, load_experiment
from vlsa_platform.config.loader import (
    TINY_GLOBAL_BATCH,
    TINY_LR,
    TINY_MAX_ZERO_STAGE,
    TINY_STAGE_STEPS,
    TINY_VALIDATION_EVERY,
)
from vlsa_platform.config.schema import SYNTHETIC_DATASET

from .helpers import MINIMAL, line_of, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(*args, **kwargs)
    return str(info.value)


def test_minimal_loads(tmp_path):
    config = load_experiment(write(tmp_path, "x.yaml", MINIMAL))
    assert list(config.stages) == ["s1", "s2"]
    assert config.stages["s2"].trainable == [
        "vision_encoder",
        "sa_perceiver",
        "projector",
        "llm",
        "epigone",
        "denoiser",
    ]
    assert config.kind == "single"


def test_unknown_key_names_field_and_line(tmp_path):
    path = write(tmp_path, "x.yaml", MINIMAL.replace("    steps: 2\n", "    steps: 2\n    stepz: 3\n"))
    message = error_of("x.yaml")
    assert f"x.yaml:{line_of(path, 'stepz')}: stages.s1.stepz: unknown key" in message
    assert "known keys here:" in message and "steps" in message


def test_wrong_type_names_field_and_line(tmp_path):
    text = MINIMAL.replace("    steps: 2\n", "    steps: 2\n    loss: {rec_weight: abc}\n", 1)
    path = write(tmp_path, "x.yaml", text)
    message = error_of("x.yaml")
    assert message == (
        f"x.yaml:{line_of(path, 'rec_weight: abc')}: stages.s1.loss.rec_weight: "
        "Input should be a valid number, unable to parse string as a number (got 'abc')"
    )


def test_several_problems_one_line_each(tmp_path):
    text = MINIMAL.replace("  preset: tiny\n", "  preset: huge\n  colour: red\n")
    path = write(tmp_path, "x.yaml", text)
    lines = error_of("x.yaml").splitlines()
    assert lines[0].startswith(
        f"x.yaml:{line_of(path, 'preset: huge')}: model.preset: Input should be 'paper' or 'tiny'"
    )
    assert lines[1].startswith(f"x.yaml:{line_of(path, 'colour')}: model.colour: unknown key")


def test_missing_required_key(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL.replace("    lr: {default: 1.0e-3}\n", ""))
    assert "x.yaml:10: stages.s1.lr: required key is missing" in error_of("x.yaml")


def test_yaml_syntax_error(tmp_path):
    write(tmp_path, "x.yaml", "name: x\n  oops: [\n")
    assert error_of("x.yaml").startswith("x.yaml:2: invalid YAML:")


def test_duplicate_key(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL.replace("name: t\n", "name: t\nname: u\n"))
    assert error_of("x.yaml") == "x.yaml:2: name: duplicate key"


def test_not_a_mapping_and_empty_and_missing(tmp_path):
    write(tmp_path, "list.yaml", "- a\n- b\n")
    assert "list.yaml:1: an experiment file is a mapping" in error_of("list.yaml")
    write(tmp_path, "empty.yaml", "# nothing\n")
    assert "empty.yaml:1: the file is empty" in error_of("empty.yaml")
    assert error_of("nope.yaml") == "nope.yaml: no such experiment file"


# ------------------------------------------------------------------------------------------------ extends


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL)
    write(
        tmp_path,
        "child.yaml",
        """\
        extends: base.yaml
        name: child
        stages:
          s1:
            trainable: [projector]
            lr: {projector: 5.0e-4}
        """,
    )
    config = load_experiment("child.yaml")
    assert config.name == "child"
    assert config.stages["s1"].trainable == ["projector"]
    assert config.stages["s1"].lr.default == 1e-3 and config.stages["s1"].lr.projector == 5e-4
    assert config.stages["s1"].steps == 2
    assert config.extends == str(tmp_path / "base.yaml")
    assert "extends" not in config.resolved()


def test_extends_error_points_into_the_file_that_wrote_it(tmp_path):
    base = write(tmp_path, "base.yaml", MINIMAL.replace("global_batch: 8", "global_batch: 7"))
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nseed: many\n")
    message = error_of("child.yaml")
    assert (
        f"base.yaml:{line_of(base, 'global_batch: 7')}: stages.s2.placement.global_batch: global_batch 7"
        in message
    )
    assert f"child.yaml:{line_of(child, 'seed')}: seed: Input should be a valid integer" in message


def test_extends_missing_file(tmp_path):
    write(tmp_path, "child.yaml", "name: c\nextends: nowhere.yaml\n")
    assert (
        error_of("child.yaml")
        == "child.yaml:2: extends: no such file: nowhere.yaml (paths are relative to child.yaml)"
    )


def test_extends_cycle(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    assert error_of("a.yaml") == "b.yaml:1: extends: cycle: a.yaml -> b.yaml -> a.yaml"
    write(tmp_path, "self.yaml", "extends: self.yaml\n")
    assert "cycle: self.yaml -> self.yaml" in error_of("self.yaml")


def test_extends_not_a_string(tmp_path):
    write(tmp_path, "c.yaml", "extends: [a.yaml]\nname: c\n")
    assert error_of("c.yaml") == "c.yaml:1: extends: expected the path of another experiment file"


def test_child_steps_replace_inherited_epochs(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL)
    write(tmp_path, "child.yaml", "extends: base.yaml\nstages:\n  s2:\n    steps: 5\n")
    stage = load_experiment("child.yaml").stages["s2"]
    assert (stage.steps, stage.epochs) == (5, None)


# ---------------------------------------------------------------------------------------------------- --set


def test_set_is_typed(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL)
    config = load_experiment(
        "x.yaml",
        overrides=["stages.s1.steps=10", "model.cognition=off", "loss.rec_weight=0.5", "name=renamed"],
    )
    assert config.stages["s1"].steps == 10 and isinstance(config.stages["s1"].steps, int)
    assert config.model.cognition is False
    assert config.stages["s1"].loss.rec_weight == 0.5
    assert config.name == "renamed"


def test_set_steps_replaces_epochs_and_mapping_merges(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL)
    config = load_experiment("x.yaml", overrides=["stages.s2.steps=3", "stages.s1.lr={llm: 1.0e-5}"])
    assert (config.stages["s2"].steps, config.stages["s2"].epochs) == (3, None)
    assert config.stages["s1"].lr.default == 1e-3 and config.stages["s1"].lr.llm == 1e-5


def test_set_list_item(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL)
    config = load_experiment("x.yaml", overrides=["stages.s1.mixture.0.weight=2"])
    assert config.stages["s1"].mixture[0].weight == 2.0


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("stages.s1.stepz=10", "--set stages.s1.stepz=10: stages.s1.stepz: unknown key"),
        ("stages.s9.steps=1", "--set stages.s9.steps=1: stages.s9: no entry 's9' in stages (has: s1, s2)"),
        ("model.preset.x=1", "--set model.preset.x=1: model.preset.x: model.preset is a single value"),
        ("stages.s1.mixture.3.weight=1", "stages.s1.mixture.3: stages.s1.mixture has no item 3"),
        ("stages.s1.steps", "--set 'stages.s1.steps': expected KEY=VALUE"),
        ("extends=other.yaml", "extends: only an experiment file can extend another one"),
        ("stages..steps=1", "bad key 'stages..steps'"),
    ],
)
def test_set_bad_key(tmp_path, item, expected):
    write(tmp_path, "x.yaml", MINIMAL)
    assert expected in error_of("x.yaml", overrides=[item])


def test_set_bad_value_is_located_at_the_override(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL)
    message = error_of("x.yaml", overrides=["stages.s1.steps=many"])
    assert message == (
        "--set stages.s1.steps=many: stages.s1.steps: "
        "Input should be a valid integer, unable to parse string as an integer (got 'many')"
    )


# --------------------------------------------------------------------------------------------------- --scale


def test_scale_tiny_swaps_model_data_and_placement(tmp_path):
    text = MINIMAL.replace(
        "preset: tiny", "preset: paper\n  recon_resolution: 1024\n  weights: {llm: /models/llama}"
    )
    text = text.replace(
        'd: {path: "bundled:synthetic"}',
        "d: {path: s3://bucket/d.json, image_root: s3://bucket/img, num_samples: 9}",
    )
    text = text.replace(
        "placement: {num_workers: 2, global_batch: 4}",
        "placement: {accelerator_type: H100, num_workers: 8, zero_stage: 3, offload: optimizer, global_batch: 256}",
    )
    write(tmp_path, "x.yaml", text)
    paper = load_experiment("x.yaml")
    assert paper.model.preset == "paper" and paper.data.datasets["d"].num_samples == 9
    tiny = load_experiment("x.yaml", scale="tiny")
    assert tiny.model.preset == "tiny"
    assert tiny.model.recon_resolution is None and tiny.model.weights.llm is None
    assert {d.path for d in tiny.data.datasets.values()} == {SYNTHETIC_DATASET}
    assert tiny.data.datasets["d"].image_root is None
    placement = tiny.stages["s1"].placement
    assert (placement.accelerator_type, placement.use_gpu, placement.num_workers) == (None, False, 1)
    assert (placement.micro_batch, placement.global_batch, placement.offload) == (
        1,
        TINY_GLOBAL_BATCH,
        "none",
    )
    assert placement.zero_stage == TINY_MAX_ZERO_STAGE == 2  # one rank: nothing for ZeRO-3 to partition
    # stages, losses and data references are kept; a length in steps too, one in epochs becomes steps
    assert tiny.stages["s1"].steps == 2 and tiny.stages["s2"].mixture[0].sampling == "random:50%"
    assert tiny.stages["s2"].steps == TINY_STAGE_STEPS and tiny.stages["s2"].epochs is None
    # each stage's default rate becomes TINY_LR, its parts keeping their ratio to it
    assert tiny.stages["s1"].lr.default == TINY_LR
    s2 = tiny.stages["s2"].lr
    assert (s2.default, s2.vision_encoder) == (TINY_LR, TINY_LR / 10)
    assert tiny.data.validation.every_steps == TINY_VALIDATION_EVERY
    # --set applies after --scale
    two = load_experiment(
        "x.yaml",
        scale="tiny",
        overrides=[
            "stages.s1.placement.num_workers=2",
            "stages.s1.placement.zero_stage=3",
            "stages.s2.lr.default=2e-5",
        ],
    )
    assert two.stages["s1"].placement.num_workers == 2 and two.stages["s1"].placement.zero_stage == 3
    assert two.stages["s2"].lr.default == 2e-5


def test_scale_paper_keeps_the_file(tmp_path):
    write(tmp_path, "x.yaml", MINIMAL)
    assert load_experiment("x.yaml", scale="paper").model_dump() == load_experiment("x.yaml").model_dump()


def test_scale_error_is_located_at_scale(tmp_path):
    # global batch 2 over the 2 workers a --set asks for, with micro-batch 2: not whole
    write(tmp_path, "x.yaml", MINIMAL)
    message = error_of(
        "x.yaml",
        scale="tiny",
        overrides=["stages.s1.placement.num_workers=2", "stages.s1.placement.micro_batch=2"],
    )
    assert message.startswith(
        "--scale tiny: stages.s1.placement.global_batch: global_batch 2 is not a multiple"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on: 1\n", "x.yaml:1: (top level): key True is not a name"),
        ("a: !!python/object:os.system {}\n", "x.yaml:1: a: unsupported YAML tag"),
        ("a: !!python/name:os.system ''\n", "x.yaml:1: a: unsupported YAML tag"),
        ("a: &x [*x]\n", "x.yaml:1: a.0: a YAML alias that contains itself"),
    ],
)
def test_yaml_that_safe_load_would_not_give_plain_data(tmp_path, text, expected):
    write(tmp_path, "x.yaml", text)
    assert error_of("x.yaml").startswith(expected)


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    text = MINIMAL.replace(
        "    placement: {num_workers: 2, global_batch: 4}\n",
        "    placement: &p {num_workers: 2, global_batch: 8}\n",
    )
    text = text.replace(
        "    placement: {num_workers: 2, micro_batch: 1, global_batch: 8}\n",
        "    placement: {<<: *p, micro_batch: 2}\n",
    )
    write(tmp_path, "x.yaml", text)
    placement = load_experiment("x.yaml").stages["s2"].placement
    assert (placement.num_workers, placement.micro_batch, placement.global_batch) == (2, 2, 8)


def test_tiny_scale_validates_on_the_bundled_held_out_split():
    from pathlib import Path

    from vlsa_platform.config.loader import TINY_VALIDATION_DATASET, load_experiment

    repo = Path(__file__).resolve().parents[2]
    cfg = load_experiment(repo / "experiments" / "loss_ratio_sweep.yaml", scale="tiny")
    assert cfg.data.validation.dataset == TINY_VALIDATION_DATASET
    assert cfg.data.validation.holdout is False
    assert cfg.data.datasets[TINY_VALIDATION_DATASET].split == "val"
