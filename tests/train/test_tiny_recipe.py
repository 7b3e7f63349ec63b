"""The tiny recipe learns as the paper's does: ``--scale tiny`` of the paper's three stages, started from the
bundled pretrained sub-models, lowers the held-out LLM loss (the LLM's answers get better once it trains) and
the held-out reconstruction loss (the denoiser learns from stage 2 on). One process, no Ray; no timing."""

from __future__ import annotations

import math
from pathlib import Path

from vlsa_platform.config.loader import TINY_STAGE_STEPS, TINY_VALIDATION_EVERY, load_experiment
from vlsa_platform.orchestration.plan import expand_runs, plan_run, stage_placements
from vlsa_platform.tracking import names
from vlsa_platform.train.loop import EXPORT_DIR, LocalContext, StageSpec, run_stage

ROOT = Path(__file__).resolve().parents[2]


def _validations(tmp_path: Path) -> list[dict[str, float]]:
    """Every validation of the three stages, in order (the recipe as ``--scale tiny`` makes it)."""
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny")
    run = expand_runs(config)[0]
    placements = stage_placements(run)
    init_from, offset, out = None, 0, []
    for index, planned in enumerate(plan_run(run, placements)["stages"]):
        stage = planned["name"]
        spec = StageSpec(
            config=run.config.resolved(),
            stage=stage,
            stage_index=index,
            placement=placements[stage],
            steps=planned["steps"],
            step_offset=offset,
            init_from=init_from,
            target_cache=str(tmp_path / "targets"),
        )
        ctx = LocalContext(root=str(tmp_path / stage))
        run_stage(spec, ctx)
        out += [r for r in ctx.reports if names.VAL_LOSS_LLM in r]
        init_from, offset = str(Path(ctx.checkpoints[-1]) / EXPORT_DIR), offset + planned["steps"]
    return out


def test_the_tiny_recipe_lowers_the_held_out_losses(dist, tmp_path):
    vals = _validations(tmp_path)
    assert len(vals) == 3 * TINY_STAGE_STEPS // TINY_VALIDATION_EVERY
    llm = [v[names.VAL_LOSS_LLM] for v in vals]
    rec = [v[names.VAL_LOSS_REC] for v in vals]
    assert all(math.isfinite(x) for x in llm + rec)
    # The pretrained LLM already knows the answers' words (a random one starts at ln(vocab) ~ 6.9)...
    assert llm[0] < 6.0, llm
    # ... and stage 3, where it trains, lowers its held-out loss by well over 10 %.
    assert llm[-1] < 0.9 * llm[0], llm
    assert rec[-1] < 0.95 * rec[0], rec
