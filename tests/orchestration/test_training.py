"""Run folders without Ray: a re-launch resumes only the config it started with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import expand_runs, plan_run, stage_placements
from vlsa_platform.orchestration.training import (
    RUN_FILE,
    RunConflictError,
    _attach_tracking,
    _keep_score,
    _segments,
    claim_run_dir,
    config_digest,
    run_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_folder_is_claimed_by_one_config(tmp_path):
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny")
    directory = run_dir(str(tmp_path), config.name, "main")
    assert Path(directory) == tmp_path / "vlsa-paper" / "main"
    assert claim_run_dir(directory, config) == {}

    _attach_tracking(directory, expand_runs(config)[0], "main", {}, None, None, {})
    recorded = json.loads((Path(directory) / RUN_FILE).read_text())
    assert recorded == {"config_sha256": config_digest(config), "run_id": None, "tracking_uri": None}
    assert claim_run_dir(directory, config) == recorded  # the same config resumes

    changed = config.with_values({"loss.rec_weight": 0.5})
    assert config_digest(changed) != config_digest(config)
    with pytest.raises(RunConflictError, match="another config"):
        claim_run_dir(directory, changed)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), [[0, 1, 2]]),  # placed alike: one worker group trains the three stages
        (("stages.stage3.placement.num_workers=2",), [[0, 1], [2]]),
        (("stages.stage2.placement.accelerator_type=A10G",), [[0], [1], [2]]),
        (("stages.stage3.placement.zero_stage=3",), [[0, 1, 2]]),  # DeepSpeed settings are the worker's
    ],
)
def test_consecutive_stages_placed_alike_share_a_worker_group(sets, expected):
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=list(sets))
    run = expand_runs(config)[0]
    assert _segments(plan_run(run)["stages"], stage_placements(run)) == expected


def test_every_stages_final_checkpoint_outranks_the_rest():
    """A segment's checkpoint history keeps the highest scores: each stage's final checkpoint (the next stage
    starts from its export), then the newest others."""

    def score(stage_index: int, step: int, stage_steps: int, offset: int) -> float:
        progress = {"stage_index": stage_index, "step": step, "stage_steps": stage_steps}
        return _keep_score({**progress, "global_step": offset + step})

    finals = [score(0, 4, 4, 0), score(1, 400, 400, 4)]
    others = [score(1, 2, 400, 4), score(2, 10**9, 2 * 10**9, 404)]
    assert min(finals) > max(others)
    assert others[1] > others[0]  # among the others, the newest first


def test_a_stage_spec_carries_the_resolved_placement_across_json():
    """The placement the plan derived reaches the workers as the same object (accelerator class and memory
    estimate included), and the plan shows it as its ``as_plan()``."""
    from vlsa_platform.cluster import ResolvedPlacement
    from vlsa_platform.train.spec import StageSpec

    config = load_experiment(
        ROOT / "experiments" / "vlsa_paper.yaml",
        scale="tiny",
        overrides=["stages.stage3.placement.accelerator_type=A10G", "stages.stage3.placement.use_gpu=false"],
    )
    run = expand_runs(config)[0]
    placements = stage_placements(run)
    plan = plan_run(run, placements)
    for index, stage in enumerate(plan["stages"]):
        placement = placements[stage["name"]]
        assert stage["placement"] == placement.as_plan()
        spec = StageSpec(
            config=config.resolved(), stage=stage["name"], stage_index=index, placement=placement
        )
        back = StageSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert isinstance(back.placement, ResolvedPlacement) and back == spec
    assert placements["stage3"].memory is not None and placements["stage3"].accelerator.name == "A10G"
