"""How an experiment file becomes a Tune experiment: search space, searcher, scheduler, trial runs, and how
many trials the cluster holds at once. No Ray cluster is started."""

from __future__ import annotations

import json
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


def test_stage_mixing_space_is_a_grid_whose_first_trials_are_its_distinct_prefixes():
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    config = load("stage_mixing_sweep.yaml")
    space = sweep.param_space(config)
    assert space == {key: tune.grid_search([1.0, 0.0]) for key in config.sweep.search_space}
    assert sweep.num_samples(config) == 1
    # Tune's order (the first key varies fastest): the first four trials (max_concurrent_trials) start from the
    # four distinct stage1+2 prefixes, and every later trial reuses one of them; the first is the paper's recipe.
    stages = list(config.stages)
    trials = [
        sweep.trial_run(config, spec, f"x_{i:05d}").run.config
        for i, (_, spec) in enumerate(generate_variants(space))
    ]
    assert len(trials) == config.sweep.num_trials == 16
    prefixes = [json.dumps([t.stage_inputs(s) for s in stages[:2]], sort_keys=True) for t in trials]
    assert len(set(prefixes[:4])) == 4 and set(prefixes) == set(prefixes[:4])
    paper = load("vlsa_paper.yaml")
    for stage in stages:
        for progress in (0.0, 0.5, 1.0):
            assert trials[0].stage_loss(stage).weights(progress) == paper.stage_loss(stage).weights(progress)


def test_cognition_space_draws_each_key_as_written():
    from ray.tune.search.sample import Categorical, Float

    config = load("cognition_sweep.yaml")
    space = sweep.param_space(config)
    assert set(space) == set(config.sweep.search_space)
    assert isinstance(space["stages.stage2.mixture"], Categorical)
    assert space["stages.stage2.mixture"].categories == ["llavar_only", "llavar_with_captions"]
    for key in ("data.cognition.p_vq", "data.cognition.p_px"):
        assert isinstance(space[key], Float)
        assert (space[key].lower, space[key].upper) == (0.1, 0.9)
    assert sweep.num_samples(config) == 12


def test_ablation_is_a_grid_over_its_variants_and_a_single_run_has_no_space():
    ablation = load("ablation.yaml")
    assert sweep.param_space(ablation) == {"variant": {"grid_search": list(ablation.ablation.variants)}}
    assert sweep.param_space(load("vlsa_paper.yaml")) == {}


def test_searchers_follow_the_algorithm_and_bound_concurrency():
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    grid = sweep.search_algorithm(load("loss_ratio_sweep.yaml"), 2)
    assert isinstance(grid, BasicVariantGenerator)
    assert grid.max_concurrent == 2
    optuna = sweep.search_algorithm(load("cognition_sweep.yaml", "sweep.algorithm=optuna"), 3)
    assert isinstance(optuna, ConcurrencyLimiter)
    assert optuna.max_concurrent == 3
    assert type(optuna.searcher).__name__ == "OptunaSearch"


def test_asha_counts_rung_points_from_the_named_stage():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from vlsa_platform.orchestration.rungs import RUNG_CLOCK

    # 3 steps a stage, validation every 2 steps and at each stage end: 2 per stage; counted from stage1 (the
    # swept weight acts there; the metric is not val/loss_llm): 6 rung points.
    config = load(
        "loss_ratio_sweep.yaml",
        "data.validation.every_steps=2",
        "sweep.metric=loss/total",
        "sweep.scheduler.rungs.from_stage=stage1",
    )
    asha = decisions.scheduler(config)
    assert isinstance(asha, ASHAScheduler)
    assert asha._time_attr == RUNG_CLOCK, "ASHA's time is the stage-relative rung clock, not iterations"
    assert asha._max_t == 5  # no rung at the last validation: the trial's work is done there
    # grace period 2, reduction factor 2: rungs at 2 and 4 validations.
    assert sorted(milestone for milestone, _ in asha._brackets[0]._rungs) == [2, 4]
    assert isinstance(decisions.scheduler(load("vlsa_paper.yaml")), FIFOScheduler)

    # the file's rungs: from stage3, where the LLM trains; its 2 validation points leave room for no rung
    # with grace 2 before the last, so ASHA would have none: the trials run as a grid
    shipped = load("loss_ratio_sweep.yaml", "data.validation.every_steps=2")
    assert shipped.sweep.scheduler.rungs.from_stage == "stage3"
    assert isinstance(decisions.scheduler(shipped), FIFOScheduler)
    one = load("loss_ratio_sweep.yaml", "data.validation.every_steps=1", "sweep.scheduler.grace_period=1")
    asha = decisions.scheduler(one)  # stage3: 3 rung points, max_t 2: rungs at 1 and 2
    assert asha._max_t == 2 and sorted(m for m, _ in asha._brackets[0]._rungs) == [1, 2]


def test_rungs_unknown_when_a_stage_length_is_not():
    # --scale tiny sizes stages in steps; an epoch of the synthetic bundle has no size the plan knows
    config = load_experiment(
        EXPERIMENTS / "loss_ratio_sweep.yaml",
        scale="tiny",
        overrides=["stages.stage3.epochs=1", "stages.stage3.steps=null"],
    )
    assert decisions.scheduler(config)._max_t == decisions.UNKNOWN_MAX_T
    assert decisions.worker_clock(config).waits, "the workers still know where ASHA decides"


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


# ----------------------------------------------------------------------------------------------- seed repeats

SEEDED = """\
seed: 7
sweep:
  search_space:
    loss.rec_weight: {grid: [0.1, 0.3]}
    stages.s2.loss.schedule.kind: {grid: [constant, linear]}
  seeds: 3
"""


def _seeded(tmp_path: Path, extra: str = SEEDED):
    from tests.config.helpers import MINIMAL, write

    return write(tmp_path, "seeded.yaml", MINIMAL + extra)


def test_seed_repeats_cross_the_grid_and_the_plan_counts_them(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    from vlsa_platform.orchestration.plan import build_plan

    config = load_experiment(_seeded(tmp_path))
    assert config.sweep.num_trials == 2 * 2 * 3
    plan = build_plan(config)
    assert (plan["num_trials"], plan["seeds"]) == (12, [7, 8, 9])
    assert sweep.num_samples(config) == 1  # the seeds are a grid dimension, not Tune's repeats

    space = sweep.param_space(config)
    trials = [
        sweep.trial_run(config, spec, f"x_{i:05d}") for i, (_, spec) in enumerate(generate_variants(space))
    ]
    assert len(trials) == plan["num_trials"]
    by_setting: dict[tuple, list[int]] = {}
    for trial in trials:
        assert trial.run.config.seed == trial.values["seed"]
        setting = tuple(sorted((k, v) for k, v in trial.values.items() if k != "seed"))
        by_setting.setdefault(setting, []).append(trial.values["seed"])
    assert len(by_setting) == 4
    assert all(sorted(seeds) == [7, 8, 9] for seeds in by_setting.values())
    assert len({t.run.name for t in trials}) == 12
    assert sweep.describe_values(trials[0].values).endswith(f" seed={trials[0].values['seed']}")


def test_one_seed_leaves_the_space_and_the_trials_as_they_were(tmp_path):
    config = load_experiment(_seeded(tmp_path, SEEDED.replace("seeds: 3", "seeds: 1")))
    assert "seed" not in sweep.param_space(config)
    assert sweep.seeds(config) == [7]
    chosen = sweep.trial_run(
        config, {"loss.rec_weight": 0.3, "stages.s2.loss.schedule.kind": "linear"}, "x_00001"
    )
    assert "seed" not in chosen.values and chosen.run.config.seed == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("grid: [0.1, 0.3]", "choice: [0.1, 0.3]"), "seeds above 1 need algorithm: grid"),
        (("seeds: 3", "seeds: 3\n  algorithm: optuna"), "seeds above 1 need algorithm: grid"),
        (("stages.s2", "seed: {grid: [1, 2]}\n    stages.s2"), "do not also search seed"),
    ],
)
def test_refused_seed_repeats_exit_2_naming_sweep_seeds(tmp_path, capsys, change, message):
    from vlsa_platform.cli import main

    text = SEEDED.replace(*change)
    if "choice" in change[1]:
        text = text.replace("{grid: [constant, linear]}", "{choice: [constant, linear]}")
        text = text.replace("seeds: 3", "seeds: 3\n  algorithm: random")
    elif "optuna" in change[1]:
        text = text.replace("grid:", "choice:")
    path = _seeded(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sweep.seeds" in err and message in err and "Traceback" not in err


def test_validate_prints_the_seeds_and_counts_the_repeats(tmp_path, capsys):
    from vlsa_platform.cli import main

    assert main(["validate", str(_seeded(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "sweep, scale tiny, 12 runs" in out and "  seeds per setting: 7, 8, 9" in out
