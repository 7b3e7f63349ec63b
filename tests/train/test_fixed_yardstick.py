"""The fixed yardstick (issue 13): the validation set — records and cognition questions — depends only on the
experiment's seed and ``data.validation``, never on a trial's parameters or the stage; and the training data gets
cognition turns only in the stages ``ExperimentConfig.cognition_applies`` names.

Built as a stage's worker builds its data (``StageData`` + ``attach_cognition``), with the real VQ targets of the
tiny preset through the frozen-target cache, from the stage-mixing sweep at ``--scale tiny``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.data.targets import TargetCache
from vlsa_platform.model.markers import LABEL_GROUP_PX, LABEL_GROUP_VQ
from vlsa_platform.train.batches import StageData, vq_targets
from vlsa_platform.train.build import build_tokenizer, vlsa_config_for

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "experiments" / "stage_mixing_sweep.yaml"

#: Two trials that differ in everything a sweep may vary: cognition rates and window, per-stage loss weights,
#: stage-2 data.
TRIALS = (
    {
        "data.cognition.p_vq": 0.1,
        "data.cognition.p_px": 0.9,
        "data.cognition.vq_window": 2,
        "stages.stage1.loss.rec_weight": 0.3,
        "stages.stage2.loss.llm_weight": 0.0,
        "stages.stage3.loss.rec_weight": 0.0,
        "stages.stage2.mixture": [{"dataset": "llavar", "sampling": "all"}],
    },
    {
        "data.cognition.p_vq": 0.9,
        "data.cognition.p_px": 0.1,
        "data.cognition.vq_window": 4,
        "stages.stage1.loss.rec_weight": 3.0,
        "stages.stage2.loss.llm_weight": 1.0,
        "stages.stage3.loss.rec_weight": 1.0,
        "stages.stage2.mixture": [
            {"dataset": "llavar", "sampling": "all"},
            {"dataset": "llava_pretrain", "sampling": "random:25%"},
        ],
    },
)


@pytest.fixture(scope="module")
def sweep():
    return load_experiment(SWEEP, scale="tiny", overrides=["data.loader_workers=0"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> TargetCache:
    """One frozen-target cache for the module (as a submission's: shared by its trials)."""
    return TargetCache(tmp_path_factory.mktemp("targets"))


def _stage_data(
    config, stage: str, cache: TargetCache, micro_batch: int | None = None, by_modality: bool = False
) -> StageData:
    placement = config.stages[stage].placement
    data = StageData(
        config,
        config.stages[stage],
        vlsa_config_for(config),
        build_tokenizer(config),
        rank=0,
        world_size=placement.num_workers,
        micro_batch=micro_batch or placement.micro_batch or 1,
        by_modality=by_modality,
    )
    data.attach_cognition(stage, vq_targets(config, stage, cache))
    return data


def _validation(data: StageData) -> list[dict[str, torch.Tensor]]:
    return [batch.tensors for batch in data.validation_batches()]


def _assert_identical(left: list[dict[str, torch.Tensor]], right: list[dict[str, torch.Tensor]]) -> None:
    assert len(left) == len(right) > 0
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _groups(batches: list[dict[str, torch.Tensor]]) -> set[int]:
    return {int(g) for batch in batches for g in batch["label_groups"].unique()}


def test_two_trials_see_bit_identical_validation_batches(sweep, cache):
    first, second = (sweep.trial(values, f"t{i}") for i, values in enumerate(TRIALS))
    assert first.data.cognition != second.data.cognition
    assert first.stage_loss("stage1") != second.stage_loss("stage1")
    assert first.stages["stage2"].mixture != second.stages["stage2"].mixture
    left, right = _stage_data(first, "stage3", cache), _stage_data(second, "stage3", cache)
    assert left.cognition.settings != right.cognition.settings  # the training turns do differ
    seen = _validation(left)
    _assert_identical(seen, _validation(right))
    # The yardstick holds cognition questions of both kinds (with the tiny VQ-VAE's real indices), and pixels.
    assert {LABEL_GROUP_VQ, LABEL_GROUP_PX} <= _groups(seen)
    assert any("pixel_values" in key for batch in seen for key in batch)


def test_every_stage_sees_the_same_validation_batches(sweep, cache):
    config = sweep.trial(TRIALS[0])
    # stage1 has no cognition turns in training, stage3 has: the validation questions are the same.
    stage1, stage3 = _stage_data(config, "stage1", cache), _stage_data(config, "stage3", cache)
    assert stage1.cognition is None and stage3.cognition is not None
    _assert_identical(_validation(stage1), _validation(stage3))


def test_a_stage_with_another_micro_batch_sees_the_same_validation_batches(sweep, cache):
    """Validation batches hold one sample whatever the stage's micro-batch (or its grouping by modality), so no
    stage leaves out another tail of the set."""
    config = sweep.trial(TRIALS[0])
    stage1 = _stage_data(config, "stage1", cache, micro_batch=1)
    seen = _validation(stage1)
    assert len(seen) == len(stage1._val_positions)  # every validation record, one per batch
    _assert_identical(
        seen, _validation(_stage_data(config, "stage3", cache, micro_batch=4, by_modality=True))
    )


def test_a_model_without_cognition_is_asked_the_same_questions(sweep, cache):
    """The ablation rule: ``model.cognition`` off changes the training data, never the validation's questions."""
    with_cognition = sweep.trial(TRIALS[0])
    without = sweep.trial({**TRIALS[0], "model.cognition": False})
    data = _stage_data(without, "stage3", cache)
    assert data.cognition is None
    _assert_identical(_validation(_stage_data(with_cognition, "stage3", cache)), _validation(data))


def _training_groups(config, stage: str, cache: TargetCache, micro_batches: int = 12) -> set[int]:
    data = _stage_data(config, stage, cache)
    return _groups([b.tensors for b in itertools.islice(data.batches(), micro_batches)])


@pytest.mark.parametrize(
    ("chosen", "with_turns", "without_turns"),
    [(None, "stage3", "stage1"), (["stage1"], "stage1", "stage3")],
)
def test_cognition_turns_only_in_the_chosen_stages(sweep, cache, chosen, with_turns, without_turns):
    config = sweep.trial(
        {"data.cognition.p_vq": 1.0, "data.cognition.p_px": 1.0, "data.cognition.stages": chosen}
    )
    assert config.cognition_applies(with_turns) and not config.cognition_applies(without_turns)
    assert {LABEL_GROUP_VQ, LABEL_GROUP_PX} <= _training_groups(config, with_turns, cache)
    assert _training_groups(config, without_turns, cache).isdisjoint({LABEL_GROUP_VQ, LABEL_GROUP_PX})


def test_vq_targets_only_where_questions_ask_for_them(sweep, cache):
    """The frozen VQ-VAE is built for a stage when its training turns or the validation ask VQ questions."""
    no_validation_vq = {"data.validation.cognition.p_vq": 0.0}
    assert vq_targets(sweep.trial(no_validation_vq), "stage1", cache) is None
    assert vq_targets(sweep.trial(no_validation_vq), "stage3", cache) is not None
    assert vq_targets(sweep.trial({"model.cognition": False}), "stage1", cache) is not None
    off = sweep.trial({**no_validation_vq, "model.cognition": False})
    assert vq_targets(off, "stage3", cache) is None
