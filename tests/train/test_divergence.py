"""The divergence policy (``training.on_nonfinite``) in the stage loop, in one process (no Ray).

A stage whose loss stays non-finite stops after ``skip_limit`` skipped micro-batches in a row with an error that
names the stage, its step, the count and its last good checkpoint (one a finite loss followed), tags the MLflow
run with it and writes nothing on the way out, so that checkpoint loads; isolated non-finite micro-batches are
only skipped. A huge learning rate really makes the tiny model's loss non-finite, and ends the stage in bounded
micro-batches.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from vlsa_platform.tracking import Tracker, TrackerOptions, local_store, names
from vlsa_platform.train import loop
from vlsa_platform.train.build import WEIGHTS_FILE
from vlsa_platform.train.loop import (
    EXPORT_DIR,
    PROGRESS_FILE,
    DivergedError,
    LocalContext,
    StageSpec,
    run_stage,
)
from vlsa_platform.train.strategy import DeepSpeedStrategy

from .contexts import stage1_spec


def _spec(tmp_path, *overrides: str, steps: int = 4) -> StageSpec:
    return stage1_spec(
        tmp_path,
        [
            f"stages.stage1.steps={steps}",
            "stages.stage1.epochs=null",
            "stages.stage1.checkpoint_every=1",
            "tracking.log_every=1",
            "data.validation=null",
            "model.gradient_checkpointing=false",
            *overrides,
        ],
    )


class _Tags:
    """A rank-0 tracker stand-in that keeps the tags and metrics the loop sends."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.metrics: list[tuple[dict[str, float], int]] = []

    def set_tags(self, tags):
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics, step):
        self.metrics.append((dict(metrics), step))

    def log_deepspeed_config(self, stage, config):
        pass

    def log_skipped(self, counts, step):
        pass

    def close(self, timeout=None):
        return True


@pytest.fixture
def tracker(monkeypatch) -> _Tags:
    kept = _Tags()
    monkeypatch.setattr(loop, "tracker_for_rank", lambda *args, **kwargs: kept)
    return kept


_FORWARD = DeepSpeedStrategy.forward


def _poison(monkeypatch, bad: set[int]) -> list[int]:
    """Make the loss of the forward calls numbered in ``bad`` (1-based) NaN; the calls made so far."""
    calls: list[int] = []

    def poisoned(self, **batch):
        out = _FORWARD(self, **batch)
        calls.append(len(calls) + 1)
        if calls[-1] in bad:
            out.loss_llm = out.loss_llm * math.nan
        return out

    monkeypatch.setattr(DeepSpeedStrategy, "forward", poisoned)
    return calls


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / EXPORT_DIR / WEIGHTS_FILE))


def test_nonfinite_run_stops_at_the_skip_limit(dist, tmp_path, monkeypatch, tracker):
    spec = _spec(tmp_path, "training.on_nonfinite.skip_limit=3")
    accum = spec.placement.grad_accum
    # Finite for two optimizer steps and the first micro-batch after them (on step 2's weights), then NaN.
    first_bad = 2 * accum + 2
    calls = _poison(monkeypatch, bad=set(range(first_bad, 10_000)))
    ctx = LocalContext(root=str(tmp_path / "ckpt"))
    with pytest.raises(DivergedError) as raised:
        run_stage(spec, ctx)
    message = str(raised.value)
    assert "stage stage1 diverged: 3 consecutive micro-batches had a non-finite loss" in message
    assert f"at step 2 of {spec.steps} (global step 12, micro-step {first_bad + 2})" in message
    assert message.endswith("its last good checkpoint (a finite loss followed it) is at step 2")
    assert len(calls) == first_bad + 2  # bounded: the limit, not the stage's steps, ended it
    assert tracker.tags[names.TAG_FAILURE] == message
    # Nothing was written on the way out: the checkpoints of steps 1 and 2, the last one as it was written.
    assert len(ctx.checkpoints) == 2
    progress = json.loads((Path(ctx.checkpoints[-1]) / PROGRESS_FILE).read_text())
    assert (progress["step"], progress["skipped_nonfinite"]) == (2, 0)
    # It loads: a re-launch with a sane loss resumes from it and finishes the stage.
    monkeypatch.setattr(DeepSpeedStrategy, "forward", _FORWARD)
    resumed = LocalContext(root=str(tmp_path / "again"), checkpoints=list(ctx.checkpoints))
    done = run_stage(spec, resumed)
    assert (done["step"], done["micro_step"], done["skipped_nonfinite"]) == (
        spec.steps,
        spec.steps * accum,
        0,
    )
    assert all(torch.isfinite(v).all() for v in _weights(resumed.checkpoints[-1]).values())


def test_isolated_nonfinite_micro_batches_are_skipped(dist, tmp_path, monkeypatch, tracker):
    spec = _spec(tmp_path, "training.on_nonfinite.skip_limit=2")
    accum = spec.placement.grad_accum
    bad = {2, 4, 6}  # never two in a row
    calls = _poison(monkeypatch, bad=bad)
    ctx = LocalContext(root=str(tmp_path / "ckpt"))
    progress = run_stage(spec, ctx)
    assert progress["step"] == spec.steps
    assert progress["skipped_nonfinite"] == len(bad)
    assert progress["micro_step"] == spec.steps * accum + len(bad) == len(calls)
    assert names.TAG_FAILURE not in tracker.tags
    assert all(torch.isfinite(v).all() for v in _weights(ctx.checkpoints[-1]).values())


def test_huge_learning_rate_ends_the_stage_in_bounded_steps(dist, tmp_path):
    """The issue's check: an (injected) huge learning rate ends a tiny run in bounded micro-batches, with the
    reason in MLflow and the last good checkpoint loadable. (``lr: .inf`` itself is refused by the schema.)"""
    store = local_store(tmp_path / "work")
    run = Tracker.start_parent("divergence", "run", store=store, options=TrackerOptions(backoff_s=0.05))
    # Linear warm-up over 5 of 50 steps: step 1 at learning rate 0, step 2 at 2e29, after which the forwards
    # overflow.
    spec = _spec(
        tmp_path,
        "stages.stage1.lr.default=1e30",
        "stages.stage1.warmup_ratio=0.1",
        "training.on_nonfinite.skip_limit=4",
        steps=50,
    )
    spec.run_id, spec.tracking_uri = run.run_id, store.uri
    ctx = LocalContext(root=str(tmp_path / "ckpt"))
    try:
        with pytest.raises(DivergedError) as raised:
            run_stage(spec, ctx)
    finally:
        run.close(status="FAILED")  # what orchestration does with the worker's error
    reason = str(raised.value)
    assert reason.startswith("stage stage1 diverged: 4 consecutive micro-batches had a non-finite loss")
    assert "at step 2 of 50" in reason  # bounded: 2 steps and 4 skipped micro-batches, not 50 steps
    assert "its last good checkpoint (a finite loss followed it) is at step 1" in reason
    assert "only non-finite losses followed the one at step 2" in reason
    recorded = MlflowClient(store.uri).get_run(run.run_id)
    assert recorded.info.status == "FAILED"
    assert recorded.data.tags[names.TAG_FAILURE] == reason
    assert [r["global_step"] for r in ctx.reports] == [11.0, 12.0]
    assert all(math.isfinite(r["loss/total"]) for r in ctx.reports)  # no NaN was logged as a step's loss
    assert len(ctx.checkpoints) == 2  # one per step; none of the diverged state after them
    # The last good checkpoint (step 1) loads: resumed from it, the stage trains on finite losses until the
    # same step-2 update diverges again.
    again = LocalContext(root=str(tmp_path / "again"), checkpoints=ctx.checkpoints[:1])
    with pytest.raises(DivergedError, match=r"its last good checkpoint .* is at step 1; only non-finite"):
        run_stage(spec, again)
    assert [r["global_step"] for r in again.reports] == [12.0]
    assert math.isfinite(again.reports[0]["loss/total"])
