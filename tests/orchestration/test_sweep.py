"""How an experiment file becomes a Tune experiment: search space, searcher, scheduler, trial runs, and how
many trials the cluster holds at once. No Ray cluster is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import decisions, sweep
from vlsa_platform.orchestration.submission import _fits, trial_resources

pytest.importorskip("ray.tune")

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
SHORT = [f"stages.{s}.{k}" for s in ("stage1", "stage2", "stage3") for k in ("steps=3", "epochs=null")]


def load(name: str, *sets: str):
    return load_experiment(EXPERIMENTS / name, scale="tiny", overrides=[*SHORT, *sets])


def test_loss_ratio_space_is_the_files_grid():
    from ray import tune

    config = load("loss_ratio_sweep.yaml")
    space = sweep.param_space(config)
    assert space == {"loss.rec_weight": tune.grid_search([0.1, 0.3, 1.0, 3.0])}
    assert sweep.num_samples(config) == 1


def test_stage_mixing_space_draws_each_key_as_written():
    from ray.tune.search.sample import Categorical, Float

    config = load("stage_mixing_sweep.yaml")
    space = sweep.param_space(config)
    assert set(space) == set(config.sweep.search_space)
    assert isinstance(space["loss.schedule.kind"], Categorical)
    assert space["loss.schedule.kind"].categories == ["constant", "linear", "cosine"]
    assert isinstance(space["data.cognition.p_vq"], Float)
    assert (space["data.cognition.p_vq"].lower, space["data.cognition.p_vq"].upper) == (0.1, 0.9)
    assert sweep.num_samples(config) == 24


def test_ablation_is_a_grid_over_its_variants_and_a_single_run_has_no_space():
    ablation = load("ablation.yaml")
    assert sweep.param_space(ablation) == {"variant": {"grid_search": list(ablation.ablation.variants)}}
    assert sweep.param_space(load("vlsa_paper.yaml")) == {}


def test_searchers_follow_the_algorithm_and_bound_concurrency():
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    grid = sweep.search_algorithm(load("loss_ratio_sweep.yaml"), 2)
    assert isinstance(grid, BasicVariantGenerator)
    assert grid.max_concurrent == 2
    optuna = sweep.search_algorithm(load("stage_mixing_sweep.yaml", "sweep.algorithm=optuna"), 3)
    assert isinstance(optuna, ConcurrencyLimiter)
    assert optuna.max_concurrent == 3
    assert type(optuna.searcher).__name__ == "OptunaSearch"


def test_asha_rungs_count_validations():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    config = load("loss_ratio_sweep.yaml", "data.validation.every_steps=2")
    # 3 steps a stage, validation every 2 steps and at each stage end: 2 per stage.
    assert sweep.validations_per_run(config) == 6
    asha = decisions.scheduler(config)
    assert isinstance(asha, ASHAScheduler)
    assert asha._time_attr == "training_iteration"
    assert asha._max_t == 5  # no rung at the last validation: the trial's work is done there
    # grace period 2, reduction factor 2: rungs at 2 and 4 validations.
    assert sorted(milestone for milestone, _ in asha._brackets[0]._rungs) == [2, 4]
    assert isinstance(decisions.scheduler(load("vlsa_paper.yaml")), FIFOScheduler)


def test_validations_unknown_when_a_stage_length_is_not():
    # --scale tiny sizes stages in steps; an epoch of the synthetic bundle has no size the plan knows
    config = load_experiment(
        EXPERIMENTS / "loss_ratio_sweep.yaml",
        scale="tiny",
        overrides=["stages.stage2.epochs=1", "stages.stage2.steps=null"],
    )
    assert sweep.validations_per_run(config) is None
    assert decisions.scheduler(config)._max_t == decisions.UNKNOWN_MAX_T


def test_trial_runs_carry_their_values():
    config = load("loss_ratio_sweep.yaml")
    chosen = sweep.trial_run(config, {"loss.rec_weight": 3.0}, "f00ba_00002")
    assert chosen.run.name == "trial-00002"
    assert chosen.values == {"loss.rec_weight": 3.0}
    assert chosen.run.config.sweep is None
    assert {s.loss.rec_weight for s in chosen.run.config.stages.values()} == {3.0}

    ablation = load("ablation.yaml")
    lowres = sweep.trial_run(ablation, {"variant": "lowres"}, "x_00001")
    assert (lowres.run.name, lowres.run.variant, lowres.run.label) == ("lowres", "lowres", "(2) lowres")
    assert lowres.run.config.model.vision == "lowres" and lowres.run.config.ablation is None


def test_concurrency_is_bounded_by_what_the_cluster_holds():
    config = load("loss_ratio_sweep.yaml")
    need = trial_resources(config)
    assert need == {"CPU": 1.0}  # tiny: one CPU worker a stage, no loader processes
    assert _fits({"CPU": 2.0}, need) == 2
    assert _fits({"CPU": 0.5}, need) == 0
    two = load("loss_ratio_sweep.yaml", "stages.stage3.placement.num_workers=2")
    assert _fits({"CPU": 3.0}, trial_resources(two)) == 1


def test_a_class_the_cluster_lacks_fits_nothing():
    config = load_experiment(EXPERIMENTS / "vlsa_paper.yaml")
    need = trial_resources(config)
    assert need["accelerator_type:H100"] > 0 and need["GPU"] == 8.0
    assert _fits({"CPU": 64.0, "GPU": 8.0, "accelerator_type:A100-80G": 1.0}, need) == 0
    assert (
        _fits({"CPU": 64.0, "GPU": 8.0, "accelerator_type:A100-80G": 1.0, "accelerator_type:H100": 1.0}, need)
        == 1
    )
