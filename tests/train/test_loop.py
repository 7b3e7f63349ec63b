"""The per-worker stage loop in one process (no Ray): reports, checkpoints, export, and resume equality.

A stage interrupted right after a checkpoint and run again with the same context resumes from it (engine,
optimizer, scheduler, RNG, data position) and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlsa_platform.tracking import names
from vlsa_platform.train import checkpoint_files
from vlsa_platform.train.build import WEIGHTS_FILE
from vlsa_platform.train.loop import EXPORT_DIR, PROGRESS_FILE, LocalContext, StageSpec, run_stage
from vlsa_platform.train.strategy import DeepSpeedStrategy

from .contexts import CrashingContext, Interrupt, stage1_spec


def _spec(tmp_path, zero_stage: int = 2) -> StageSpec:
    return stage1_spec(
        tmp_path,
        [
            "stages.stage1.steps=4",
            "stages.stage1.epochs=null",
            "stages.stage1.checkpoint_every=2",
            f"stages.stage1.placement.zero_stage={zero_stage}",
            "tracking.log_every=1",
            "data.validation.sampling=first:4",
            "model.gradient_checkpointing=false",
        ],
    )


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / EXPORT_DIR / WEIGHTS_FILE))


def _staging_watched(monkeypatch) -> list[list[str]]:
    """What the staging root holds while each checkpoint is saved (one entry per save)."""
    seen: list[list[str]] = []
    save = DeepSpeedStrategy.save

    def watched(self, directory, *args, **kwargs):
        save(self, directory, *args, **kwargs)
        root = checkpoint_files.staging_root()
        seen.append(sorted(p.name for p in root.iterdir()) if root.exists() else [])

    monkeypatch.setattr(DeepSpeedStrategy, "save", watched)
    return seen


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
def test_interrupted_stage_resumes_to_the_same_weights(dist, tmp_path, monkeypatch, direct):
    """Staged (copied to the stored folder) or written in place (``direct``, as Ray Train's workers do on a
    file system they can write): the same resume. In place, no save stages anything, during or after."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    seen = _staging_watched(monkeypatch)
    spec = _spec(tmp_path)
    whole = LocalContext(root=str(tmp_path / "whole"), direct=direct)
    progress = run_stage(spec, whole)
    assert (progress["step"], progress["global_step"], progress["micro_step"]) == (4, 14, 8)
    assert len(whole.checkpoints) == 2  # steps 2 and 4
    assert [r["global_step"] for r in whole.reports] == [11.0, 12.0, 13.0, 14.0]
    last = whole.reports[-1]
    for key in (
        *[f"loss/{p}" for p in ("total", "llm", "rec")],
        names.LR,
        names.THROUGHPUT,
        names.VAL_LOSS_LLM,
    ):
        assert key in last, key
    assert last[names.STAGE] == 0.0 and last[names.VAL_LOSS_REC] > 0

    crashing = CrashingContext(root=str(tmp_path / "resumed"), direct=direct)
    with pytest.raises(Interrupt):
        run_stage(spec, crashing)
    # The "replacement worker": same context, so the latest checkpoint (step 2) is handed back.
    resumed = run_stage(spec, crashing)
    assert resumed["micro_step"] == 8 and resumed["step"] == 4
    assert [r["global_step"] for r in crashing.reports] == [11.0, 12.0, 13.0, 14.0]
    expected, got = _weights(whole.checkpoints[-1]), _weights(crashing.checkpoints[-1])
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert whole.reports[-1]["loss/total"] == crashing.reports[-1]["loss/total"]
    assert len(seen) == 4  # 2 uninterrupted, 1 before the crash, 1 resumed (step 4)
    if direct:
        assert seen == [[]] * 4 and not checkpoint_files.staging_root().exists()
        assert all((Path(c) / PROGRESS_FILE).is_file() for c in whole.checkpoints + crashing.checkpoints)
        assert not list(Path(whole.checkpoints[-1]).glob(".*.tmp"))  # the marker renamed into place
    else:
        assert all(len(names_) == 1 for names_ in seen)  # one staging folder per save, removed after
        assert list(checkpoint_files.staging_root().iterdir()) == []
