"""Ablation variants with their own stages and overrides (issue 13: Table 3 as the paper ran it)."""

from __future__ import annotations

import pytest

from vlsa_platform.config import load_experiment
from vlsa_platform.config.errors import ConfigError

from .helpers import MINIMAL, line_of, write

THREE = (
    MINIMAL
    + """\
  s3:
    trainable: all
    steps: 3
    lr: {default: 2.0e-5}
    mixture:
      - {dataset: d}
    placement: {num_workers: 2, micro_batch: 1, global_batch: 8}
"""
)
MIXTURES = THREE.replace(
    "  validation: {dataset: d}\n",
    "  validation: {dataset: d}\n  mixtures:\n    both: [{dataset: d}, {dataset: e}]\n",
)


def _load(tmp_path, variants: str, base: str = MIXTURES):
    path = write(tmp_path, "x.yaml", base + "ablation:\n  variants:\n" + variants)
    return path, load_experiment(path)


def _error(tmp_path, variants: str, base: str = MIXTURES) -> tuple[str, object]:
    path = write(tmp_path, "x.yaml", base + "ablation:\n  variants:\n" + variants)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return str(info.value), path


def test_variant_keeps_only_its_stages_and_applies_its_set(tmp_path):
    _, config = _load(
        tmp_path,
        "    short: {stages: [s1, s3], set: {stages.s1.mixture: both, stages.s3.steps: 5}}\n    full: {}\n",
    )
    short = config.variant("short")
    assert list(short.stages) == ["s1", "s3"] and short.ablation is None and short.kind == "single"
    assert [m.dataset for m in short.stages["s1"].mixture] == ["d", "e"]
    assert short.stages["s3"].steps == 5
    full = config.variant("full")
    assert list(full.stages) == ["s1", "s2", "s3"]
    assert [m.dataset for m in full.stages["s1"].mixture] == ["d"] and full.stages["s3"].steps == 3
    # The default cognition stage is the variant's own last stage.
    assert [s for s in short.stages if short.cognition_applies(s)] == ["s3"]


@pytest.mark.parametrize(
    ("variants", "field", "message"),
    [
        (
            "    v: {stages: [s1, s9]}\n",
            "ablation.variants.v.stages.1",
            "no stage named 's9' (stages: s1, s2, s3)",
        ),
        ("    v: {stages: []}\n", "ablation.variants.v.stages", "leaves no stage to train"),
        ("    v: {stages: [s3, s1]}\n", "ablation.variants.v.stages", "write [s1, s3]"),
        ("    v: {stages: [s1, s1]}\n", "ablation.variants.v.stages", "names 's1' twice"),
        ("    v: {set: {stages.s1.stepz: 3}}\n", 'ablation.variants.v.set["stages.s1.stepz"]', "stepz"),
        (
            "    v: {set: {stages.s1.steps: many}}\n",
            'ablation.variants.v.set["stages.s1.steps"]',
            "valid integer",
        ),
        (
            "    v: {stages: [s1, s3], set: {stages.s2.steps: 3}}\n",
            'ablation.variants.v.set["stages.s2.steps"]',
            "s2 is not among this variant's stages (s1, s3)",
        ),
        ("    v: {set: {stages.s1.mixture: nope}}\n", 'ablation.variants.v.set["stages.s1.mixture"]', "nope"),
        ("    v: {set: {model.vision: lowres}}\n", 'ablation.variants.v.set["model.vision"]', "own vision"),
        ("    v: {set: {sweep: null}}\n", "ablation.variants.v.set.sweep", "cannot set sweep"),
    ],
)
def test_bad_variants_are_refused_naming_the_variant_field(tmp_path, variants, field, message):
    error, path = _error(tmp_path, variants)
    assert f"x.yaml:{line_of(path, '    v: ')}: {field}: " in error
    assert message in error


def test_a_stage_the_variant_leaves_out_must_not_be_named_by_cognition_stages(tmp_path):
    base = MIXTURES.replace(
        "  validation: {dataset: d}\n", "  validation: {dataset: d}\n  cognition: {stages: [s2]}\n"
    )
    error, _ = _error(tmp_path, "    v: {stages: [s1, s3]}\n", base=base)
    assert (
        "ablation.variants.v.stages: gives variant v a bad config: data.cognition.stages.0: no stage named 's2'"
        in error
    )


def test_a_variant_stage_list_is_checked_with_its_switches(tmp_path):
    # s1 trains only the projector and epigone: with recon off it trains nothing, but a variant without s1 is fine.
    base = MIXTURES.replace("[projector, epigone]", "[epigone]")
    _, config = _load(tmp_path, "    v: {recon: off, stages: [s2, s3]}\n", base=base)
    assert list(config.variant("v").stages) == ["s2", "s3"]
    error, _ = _error(tmp_path, "    v: {recon: off, stages: [s1, s3]}\n", base=base)
    assert "stages.s1.trainable: trains nothing in variant v" in error


def test_variant_set_works_at_tiny_scale_and_after_cli_overrides(tmp_path):
    path = write(
        tmp_path,
        "x.yaml",
        MIXTURES + "ablation:\n  variants:\n    v: {stages: [s1, s3], set: {stages.s1.mixture: both}}\n",
    )
    config = load_experiment(path, scale="tiny", overrides=["stages.s2.steps=7"])
    variant = config.variant("v")
    assert list(variant.stages) == ["s1", "s3"] and len(variant.stages["s1"].mixture) == 2
