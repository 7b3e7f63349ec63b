"""The stage loop on a CUDA GPU: DeepSpeed bf16 over NCCL, validation and reconstruction decoding on the device,
and a resume from a checkpoint. Skipped without a GPU (run on a lent GPU machine; see docs/training.md)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import expand_runs, stage_placements
from vlsa_platform.tracking.store import free_port
from vlsa_platform.train.build import WEIGHTS_FILE
from vlsa_platform.train.loop import EXPORT_DIR, StageSpec, run_stage

from .contexts import CrashingContext, Interrupt

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nccl():
    if torch.distributed.is_initialized():
        pytest.skip("another test made a CPU process group in this process: run `pytest -m gpu` on its own")
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    import deepspeed

    torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl")
    yield
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_stage_trains_in_bf16_and_resumes_on_a_gpu(nccl, tmp_path, zero_stage):
    config = load_experiment(
        ROOT / "experiments" / "vlsa_paper.yaml",
        scale="tiny",
        overrides=[
            "stages.stage3.steps=4",
            "stages.stage3.epochs=null",
            "stages.stage3.checkpoint_every=2",
            "stages.stage3.placement.use_gpu=true",
            f"stages.stage3.placement.zero_stage={zero_stage}",
            "tracking.log_every=1",
            "tracking.recon_every=1",
            "data.validation.sampling=first:4",
        ],
    )
    placement = stage_placements(expand_runs(config)[0])["stage3"]
    spec = StageSpec(config=config.resolved(), stage="stage3", stage_index=2, placement=placement, steps=4)
    ctx = CrashingContext(root=str(tmp_path))
    with pytest.raises(Interrupt):
        run_stage(spec, ctx)
    progress = run_stage(spec, ctx)
    assert progress["step"] == 4 and progress["micro_step"] == 8
    assert [r["global_step"] for r in ctx.reports] == [1.0, 2.0, 3.0, 4.0]
    last = ctx.reports[-1]
    assert math.isfinite(last["loss/total"]) and math.isfinite(last["val/loss_llm"])
    weights = load_file(str(Path(ctx.checkpoints[-1]) / EXPORT_DIR / WEIGHTS_FILE))
    assert {t.dtype for t in weights.values()} <= {torch.bfloat16, torch.int64}
