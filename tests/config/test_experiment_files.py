"""Every shipped experiment file validates, at paper scale and at ``--scale tiny``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from vlsa_platform.config import load_experiment
from vlsa_platform.config.schema import SYNTHETIC_DATASET

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
FILES = sorted(EXPERIMENTS.glob("*.yaml"))
KINDS = {
    "vlsa_paper.yaml": "single",
    "ablation.yaml": "ablation",
    "loss_ratio_sweep.yaml": "sweep",
    "stage_mixing_sweep.yaml": "sweep",
    "cognition_sweep.yaml": "sweep",
}


def test_the_five_files_are_shipped():
    assert set(KINDS) <= {f.name for f in FILES}


@pytest.mark.parametrize("scale", [None, "tiny"])
@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_experiment_file_validates(path, scale):
    config = load_experiment(path, scale=scale)
    assert config.kind == KINDS.get(path.name, config.kind)
    assert config.model.preset == (scale or "paper")
    assert list(config.stages) == ["stage1", "stage2", "stage3"]
    if scale == "tiny":
        assert {d.path for d in config.data.datasets.values()} == {SYNTHETIC_DATASET}
    for name in config.ablation.variants if config.ablation else ():
        config.variant(name)


def test_paper_recipe():
    config = load_experiment(EXPERIMENTS / "vlsa_paper.yaml")
    model = config.model
    assert (model.vision, model.recon, model.cognition) == ("sa_perceiver", True, True)
    stages = config.stages
    assert stages["stage1"].trainable == ["sa_perceiver", "projector", "epigone"]
    assert set(stages["stage2"].trainable) == {
        "sa_perceiver",
        "projector",
        "epigone",
        "denoiser",
        "vision_encoder",
    }
    assert len(stages["stage3"].trainable) == 6
    assert [s.mixture[0].dataset for s in stages.values()] == ["llava_pretrain", "llavar", "llava_next"]
    assert [s.placement.global_batch for s in stages.values()] == [256, 128, 128]
    assert all(s.loss.llm_weight == s.loss.rec_weight == 1.0 for s in stages.values())


def test_ablation_variants_are_table_3():
    config = load_experiment(EXPERIMENTS / "ablation.yaml")
    switches = {
        name: (v.switches()["vision"], v.switches()["recon"], v.switches()["cognition"])
        for name, v in config.ablation.variants.items()
    }
    assert list(switches.values()) == [
        ("anyres", False, False),
        ("lowres", False, False),
        ("sa_perceiver", False, False),
        ("sa_perceiver", True, False),
        ("anyres", False, True),
        ("sa_perceiver", True, True),
        ("anyres", False, False),
    ]
    # (1), (2), (5) and the 980K baseline train LLaVA-NeXT's two stages; (3), (4), (6) VLSA's three.
    stages = {name: list(config.variant(name).stages) for name in config.ablation.variants}
    assert {name for name, kept in stages.items() if kept == ["stage1", "stage3"]} == {
        "anyres",
        "lowres",
        "anyres_cognition",
        "anyres_980k",
    }
    assert all(kept == ["stage1", "stage2", "stage3"] for kept in stages.values() if len(kept) == 3)
    mixtures = {
        name: [[m.dataset for m in stage.mixture] for stage in config.variant(name).stages.values()]
        for name in ("anyres", "anyres_980k")
    }
    assert mixtures == {
        "anyres": [["llava_pretrain"], ["llava_next"]],  # 558K -> 790K
        "anyres_980k": [["llava_pretrain", "llavar"], ["llava_next"]],  # 980K -> 790K
    }
    # Cognition turns go where the file says (default: the last stage), in every variant that has them.
    five = config.variant("anyres_cognition")
    assert [s for s in five.stages if five.cognition_applies(s)] == ["stage3"]


def test_sweeps():
    ratio = load_experiment(EXPERIMENTS / "loss_ratio_sweep.yaml")
    assert ratio.sweep.num_trials == 4 and ratio.sweep.scheduler.kind == "asha"
    trial = ratio.trial({"loss.rec_weight": 0.3})
    assert {s.loss.rec_weight for s in trial.stages.values()} == {0.3}
    assert trial.kind == "single" and trial.sweep is None


def _stage3_factors(start: float, end: float) -> dict[str, float]:
    return {"stages.stage3.loss.schedule.start_factor": start, "stages.stage3.loss.schedule.end_factor": end}


def test_stage_mixing_sweep_asks_how_the_losses_apply_per_stage():
    mixing = load_experiment(EXPERIMENTS / "stage_mixing_sweep.yaml")
    assert (mixing.sweep.algorithm, mixing.sweep.num_trials) == ("grid", 16)
    assert all(key.startswith("stages.") for key in mixing.sweep.search_space), "per-stage keys only"
    paper = load_experiment(EXPERIMENTS / "vlsa_paper.yaml")
    progress = (0.0, 0.5, 1.0)

    def weights(config, stage: str) -> list[tuple[float, float]]:
        return [config.stage_loss(stage).weights(p) for p in progress]

    # as written (and in Tune's first trial) every stage applies the losses as the paper does
    assert all(weights(mixing, s) == weights(paper, s) == [(1.0, 1.0)] * 3 for s in paper.stages)
    rec_only = mixing.trial(
        {"stages.stage1.loss.llm_weight": 0.0, "stages.stage2.loss.rec_weight": 0.0, **_stage3_factors(0, 0)}
    )
    assert weights(rec_only, "stage1") == [(0.0, 1.0)] * 3  # L_rec alone
    assert weights(rec_only, "stage2") == weights(rec_only, "stage3") == [(1.0, 0.0)] * 3  # L_rec off
    assert weights(mixing.trial(_stage3_factors(1.0, 0.0)), "stage3") == [(1.0, 1.0), (1.0, 0.5), (1.0, 0.0)]
    assert weights(mixing.trial(_stage3_factors(0.0, 1.0)), "stage3") == [(1.0, 0.0), (1.0, 0.5), (1.0, 1.0)]


def test_stage_mixing_trials_share_their_stage_prefixes():
    mixing = load_experiment(EXPERIMENTS / "stage_mixing_sweep.yaml")
    space = mixing.sweep.search_space
    trials = [
        mixing.trial(dict(zip(space, values, strict=True)))
        for values in itertools.product(*(d.grid for d in space.values()))
    ]
    stages = list(mixing.stages)

    def prefixes(k: int) -> set[str]:
        return {json.dumps([t.stage_inputs(s) for s in stages[:k]], sort_keys=True) for t in trials}

    # 16 distinct trials (no two train alike), from 2 stage1 runs and 4 stage1+2 runs
    assert [len(prefixes(k)) for k in (1, 2, 3)] == [2, 4, 16]


def test_cognition_sweep_keeps_the_cognition_and_stage2_data_questions():
    cognition = load_experiment(EXPERIMENTS / "cognition_sweep.yaml")
    assert set(cognition.sweep.search_space) == {
        "data.cognition.p_vq",
        "data.cognition.p_px",
        "stages.stage2.mixture",
    }
    trial = cognition.trial(
        {
            "data.cognition.p_vq": 0.2,
            "data.cognition.p_px": 0.7,
            "stages.stage2.mixture": "llavar_with_captions",
        }
    )
    assert (trial.data.cognition.p_vq, trial.data.cognition.p_px) == (0.2, 0.7)
    assert [m.dataset for m in trial.stages["stage2"].mixture] == ["llavar", "llava_pretrain"]
    assert [s for s in trial.stages if trial.cognition_applies(s)] == ["stage3"]
    # the yardstick asks no cognition questions: val/loss_llm is not measured on the task a trial does more of
    assert (trial.data.validation.cognition.p_vq, trial.data.validation.cognition.p_px) == (0.0, 0.0)
    paper = load_experiment(EXPERIMENTS / "vlsa_paper.yaml")
    assert all(trial.stage_loss(s) == paper.stage_loss(s) for s in paper.stages), (
        "the losses stay the paper's"
    )
