"""A stage's inputs (``ExperimentConfig.stage_inputs``): what it trains on besides the weights before it — so a
sweep key acts from the first stage whose inputs two of its values set apart (``sweep.scheduler.rungs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def stages_apart(values_a: dict, values_b: dict) -> list[str]:
    config = load_experiment(EXPERIMENTS / "vlsa_paper.yaml", scale="tiny")
    one, other = config.with_values(values_a), config.with_values(values_b)
    return [stage for stage in config.stages if one.stage_inputs(stage) != other.stage_inputs(stage)]


@pytest.mark.parametrize(
    ("key", "values", "apart"),
    [
        ("loss.rec_weight", (0.1, 3.0), ["stage1", "stage2", "stage3"]),  # the run-wide loss, in every stage
        ("stages.stage3.loss.rec_weight", (0.0, 1.0), ["stage3"]),
        ("seed", (0, 1), ["stage1", "stage2", "stage3"]),
        # cognition turns go into the last stage only (data.cognition.stages left open)
        ("data.cognition.p_vq", (0.1, 0.9), ["stage3"]),
        ("stages.stage2.lr.default", (1e-5, 2e-5), ["stage2"]),
        ("tracking.log_every", (1, 5), []),  # how a run is watched is no input of its stages
    ],
)
def test_a_key_sets_apart_the_stages_that_read_it(key, values, apart):
    assert stages_apart({key: values[0]}, {key: values[1]}) == apart


def test_cognition_counts_where_the_file_puts_it():
    where = {"data.cognition.stages": ["stage2", "stage3"]}
    assert stages_apart({**where, "data.cognition.p_px": 0.2}, {**where, "data.cognition.p_px": 0.7}) == [
        "stage2",
        "stage3",
    ]
    off = {"model.cognition": False}
    assert stages_apart({**off, "data.cognition.p_px": 0.2}, {**off, "data.cognition.p_px": 0.7}) == []


def test_a_switch_of_the_model_sets_every_stage_apart():
    assert stages_apart({"model.recon": True}, {"model.recon": False}) == ["stage1", "stage2", "stage3"]


def test_what_training_ignores_sets_no_stage_apart():
    off = {"stages.stage3.loss.rec_weight": 0.0}
    linear = {"stages.stage3.loss.schedule.kind": "linear", "stages.stage3.loss.schedule.end_factor": 0.0}
    assert stages_apart(off, {**off, **linear}) == []  # the schedule of a zero weight moves nothing
    constant = {"stages.stage3.loss.schedule.kind": "constant"}
    end = {**constant, "stages.stage3.loss.schedule.end_factor": 0.3}
    assert stages_apart(constant, end) == []  # constant ignores end_factor
    assert stages_apart({}, linear) == ["stage3"]  # on a weight that counts, the schedule is an input
