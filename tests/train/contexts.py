"""Worker contexts and stage specs for stage-loop tests."""

from __future__ import annotations

from pathlib import Path

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import expand_runs, plan_run, stage_placements
from vlsa_platform.train.loop import LocalContext, StageSpec

ROOT = Path(__file__).resolve().parents[2]


def stage1_spec(tmp_path: Path, overrides: list[str]) -> StageSpec:
    """The spec of ``vlsa_paper.yaml``'s stage1 at ``--scale tiny`` with ``overrides``, as the orchestration
    would hand it to a worker (placement and steps from the plan, global steps starting at 10)."""
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=overrides)
    run = expand_runs(config)[0]
    placements = stage_placements(run)
    planned = plan_run(run, placements)["stages"][0]
    return StageSpec(
        config=config.resolved(),
        stage="stage1",
        stage_index=0,
        placement=placements["stage1"],
        steps=planned["steps"],
        step_offset=10,
        target_cache=str(tmp_path / "targets"),
    )


class Interrupt(Exception):
    """Raised by :class:`CrashingContext` in place of a worker's death."""


class CrashingContext(LocalContext):
    """Dies right after the first checkpoint was taken (as a worker killed then would); used again, it hands
    that checkpoint back, as Ray Train does to a replacement worker."""

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        if checkpoint_dir is not None and len(self.checkpoints) == 1:
            raise Interrupt
