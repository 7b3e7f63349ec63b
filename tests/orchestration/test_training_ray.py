"""The three VLSA stages as Ray Train runs on a local Ray cluster: 2 CPU workers each, DeepSpeed on gloo.

One local Ray for the module, declaring two simulated accelerator classes (the ``accelerator_type:<TYPE>``
resources Ray Train asks for). Three runs of the tiny paper recipe (4-6 steps a stage):

- ``zero2``: ZeRO-2 on the simulated H100 class, local run storage, tracked in a local MLflow store;
- ``zero3``: ZeRO-3 on the simulated A10G class (a smaller card: the plan derives micro-batch 1 and two
  accumulation steps where the H100 gets micro-batch 2 and one), run storage on S3 (SeaweedFS);
- ``killed``: the ``zero2`` run re-launched under a new storage root holding only its first two stages' completion
  markers (so it resumes at stage 3), with one worker SIGKILLed after stage 3's first checkpoint.

The three stages of a run are placed alike, so one worker group trains them in turn (its workers import
torch, transformers, diffusers and DeepSpeed once: about 30 s here); its checkpoints are in the folder named
after stage 1. The module takes about 5-6 minutes (training the two reference runs at the same time was slower
on 2 cores: the start-up is CPU-bound, not waiting).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.schema import METRICS
from vlsa_platform.model.parts import part_of
from vlsa_platform.orchestration.plan import build_plan, expand_runs
from vlsa_platform.orchestration.training import run_dir, run_training
from vlsa_platform.tracking import names
from vlsa_platform.tracking.store import local_store
from vlsa_platform.train.build import WEIGHTS_FILE, build_model
from vlsa_platform.train.loop import PROGRESS_FILE

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"
STAGES = ("stage1", "stage2", "stage3")
STEPS = {"stage1": 4, "stage2": 4, "stage3": 6}
TOTAL_STEPS = sum(STEPS.values())


def experiment(zero_stage: int, accelerator: str, extra: tuple[str, ...] = ()):
    """The tiny paper recipe, short stages, 2 workers on a simulated class, global batch 4."""
    sets = [
        "seed=7",
        "tracking.log_every=1",
        "tracking.recon_every=3",
        "data.validation.sampling=first:8",
        "data.validation.every_steps=100",  # at each stage's end only (--scale tiny would validate every 4)
        # From random weights, so the training LLM loss falls from stage 1's captions to stage 3's questions
        # (the pretrained LLM knows the captions already, and stage 3 adds the VQ tokens it has never seen).
        "model.tiny_weights=random",
        "cluster.accelerators.A10G.memory_gb=0.84",  # a card too small for micro-batch 2 of the tiny model
    ]
    for stage in STAGES:
        prefix = f"stages.{stage}"
        sets += [
            f"{prefix}.steps={STEPS[stage]}",
            f"{prefix}.epochs=null",
            f"{prefix}.checkpoint_every=2",
            f"{prefix}.warmup_ratio=0",
            f"{prefix}.lr.default=2e-3",
            f"{prefix}.placement.accelerator_type={accelerator}",
            f"{prefix}.placement.use_gpu=false",
            f"{prefix}.placement.num_workers=2",
            f"{prefix}.placement.global_batch=4",
            f"{prefix}.placement.micro_batch=null",
            f"{prefix}.placement.zero_stage={zero_stage}",
        ]
    sets += ["stages.stage2.lr.vision_encoder=2e-3", "stages.stage3.lr.vision_encoder=2e-3"]
    return load_experiment(PAPER, scale="tiny", overrides=[*sets, *extra])


def _train(config, work: Path, storage_root: str):
    store = local_store(work / "tracking")
    result = run_training(expand_runs(config)[0], storage_root=storage_root, store=store)
    return config, result, store, work


@pytest.fixture(scope="module")
def zero2(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("zero2")
    return _train(experiment(2, "H100"), work, str(work / "runs"))


@pytest.fixture(scope="module")
def zero3(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("zero3")
    return _train(experiment(3, "A10G"), work, f"s3://{cluster.bucket}/runs-{work.name}")


def _export(location: str) -> dict[str, torch.Tensor]:
    from vlsa_platform import storage

    local = storage.materialize(location) if storage.is_s3(location) else location
    return load_file(str(Path(local) / WEIGHTS_FILE))


def _check_stages(config, result) -> None:
    """Each stage's export differs from the previous weights exactly in the parts it trains."""
    assert [s.stage for s in result.stages] == list(STAGES)
    assert [s.global_step for s in result.stages] == [4, 8, 14]
    before = {k: v.detach().clone() for k, v in build_model(config).state_dict().items()}
    for outcome in result.stages:
        after = _export(outcome.model)
        assert after.keys() == before.keys()
        trainable = set(config.stages[outcome.stage].trainable)
        changed_parts = set()
        for key, value in after.items():
            part = part_of(key)
            if part in trainable:
                if not torch.equal(value, before[key]):
                    changed_parts.add(part)
            else:
                assert torch.equal(value, before[key]), f"{outcome.stage}: frozen {key} changed"
        assert changed_parts == trainable & {part_of(k) for k in after}, outcome.stage
        before = after


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _val(client, run_id: str, key: str) -> list[float]:
    return [value for _, value in _history(client, run_id, key)]


def test_zero2_three_stages_train_the_right_parts_and_track_everything(zero2):
    from mlflow import MlflowClient

    config, result, store, _ = zero2
    _check_stages(config, result)
    # placed alike, the three stages ran in one worker group: one Ray Train run folder, every stage's final
    # checkpoint kept beside the newest others (storage.keep_checkpoints)
    run_folders = {p.name for p in Path(result.directory).iterdir() if p.is_dir()}
    assert "stage1" in run_folders and not run_folders & {"stage2", "stage3"}, run_folders

    client = MlflowClient(tracking_uri=store.uri)
    run = client.get_run(result.run_id)
    assert set(METRICS) <= set(run.data.metrics), set(METRICS) - set(run.data.metrics)
    assert names.SKIPPED_TOTAL in run.data.metrics
    assert run.data.params["stages.stage2.loss.rec_weight"] == "1.0"
    assert run.data.tags[names.TAG_SCALE] == "tiny" and names.TAG_GIT_COMMIT in run.data.tags
    # Every step of the three stages exactly once, in one series; the stage index steps 0, 1, 2.
    totals = _history(client, result.run_id, names.LOSS_TOTAL)
    assert [step for step, _ in totals] == list(range(1, TOTAL_STEPS + 1))
    stage_series = _history(client, result.run_id, names.STAGE)
    assert [value for _, value in stage_series] == [0.0] * 4 + [1.0] * 4 + [2.0] * 6
    # Device-hours of the simulated class accumulate across the stages.
    hours = [value for _, value in _history(client, result.run_id, names.COST_GPU_HOURS)]
    assert hours == sorted(hours) and hours[-1] > 0

    # The loss parts fall: validation (fixed data and noise) from the end of stage 1 to the end of stage 3,
    # and the training LLM loss from the first two steps to the last two.
    val_llm, val_rec = (_val(client, result.run_id, k) for k in (names.VAL_LOSS_LLM, names.VAL_LOSS_REC))
    assert len(val_llm) == 3 and val_llm[-1] < val_llm[0], val_llm
    assert len(val_rec) == 3 and val_rec[-1] < val_rec[0], val_rec
    train_llm = _val(client, result.run_id, names.LOSS_LLM)
    assert sum(train_llm[-2:]) < sum(train_llm[:2]), train_llm

    artifacts = {a.path for a in client.list_artifacts(result.run_id, "deepspeed")}
    assert artifacts == {f"deepspeed/{stage}.json" for stage in STAGES}
    local = Path(client.download_artifacts(result.run_id, "", str(Path(result.directory) / "artifacts")))
    resolved = yaml.safe_load((local / names.ARTIFACT_RESOLVED_CONFIG).read_text())
    assert resolved["stages"]["stage3"]["placement"]["zero_stage"] == 2
    ds_config = json.loads((local / "deepspeed" / "stage1.json").read_text())
    assert ds_config["zero_optimization"]["stage"] == 2 and ds_config["train_batch_size"] == 4
    panels = sorted((local / "recon").rglob("*.png"))
    assert panels, "no reconstruction panels"
    from PIL import Image

    with Image.open(panels[0]) as panel:
        assert panel.mode == "RGB" and panel.width > panel.height // 2


def test_zero3_three_stages_on_s3_storage(zero3):
    from mlflow import MlflowClient

    config, result, store, _ = zero3
    assert result.directory.startswith("s3://")
    _check_stages(config, result)
    client = MlflowClient(tracking_uri=store.uri)
    val_llm, val_rec = (_val(client, result.run_id, k) for k in (names.VAL_LOSS_LLM, names.VAL_LOSS_REC))
    assert len(val_llm) == 3 and val_llm[-1] < val_llm[0], val_llm
    assert len(val_rec) == 3 and val_rec[-1] < val_rec[0], val_rec


def test_two_classes_same_global_batch_and_lr_schedule_different_deepspeed_settings(zero2, zero3):
    """The same stages on a simulated H100 and a simulated A10G: the plan derives different micro-batch and
    accumulation (and the files ask for different ZeRO stages); the runs follow the same learning-rate
    schedule step for step, with the same global batch."""
    from mlflow import MlflowClient

    plans = [build_plan(cfg)["runs"][0]["stages"] for cfg, *_ in (zero2, zero3)]
    for big, small in zip(*plans, strict=True):
        b, s = big["placement"], small["placement"]
        assert (b["accelerator_type"], s["accelerator_type"]) == ("H100", "A10G")
        assert b["global_batch"] == s["global_batch"] == 4
        assert (b["micro_batch"], b["grad_accum"], b["zero_stage"]) == (2, 1, 2)
        assert (s["micro_batch"], s["grad_accum"], s["zero_stage"]) == (1, 2, 3)
        assert "micro_batch" in b["derived"] and "micro_batch" in s["derived"]
    lrs = []
    for _, result, store, _ in (zero2, zero3):
        client = MlflowClient(tracking_uri=store.uri)
        lrs.append(_history(client, result.run_id, names.LR))
    steps, values = ([[item[i] for item in series] for series in lrs] for i in (0, 1))
    assert steps[0] == steps[1] == list(range(1, TOTAL_STEPS + 1))
    assert values[0] == pytest.approx(values[1], rel=1e-12, abs=1e-15)
    assert not math.isclose(values[0][0], values[0][2])  # the schedule moves (cosine decay within a stage)


def _worker_pids() -> list[int]:
    """Processes of Ray Train workers on this machine (their title names the actor class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"RayTrainWorker" in cmdline:
            pids.append(int(proc.name))
    return pids


def test_killed_worker_is_replaced_and_the_run_matches_the_uninterrupted_one(zero2, tmp_path):
    """Re-launched under a new storage root with stages 1-2 marked complete, the run resumes at stage 3; a
    worker SIGKILLed after stage 3's first checkpoint is replaced, the stage resumes from that checkpoint, and
    the final weights equal the uninterrupted run's. The new MLflow run holds stage 3's steps exactly once."""
    from mlflow import MlflowClient

    config, reference, _, _ = zero2
    storage_root = tmp_path / "runs"
    directory = Path(run_dir(str(storage_root), config.name, "main"))
    directory.mkdir(parents=True)
    for stage in ("stage1", "stage2"):
        shutil.copy(Path(reference.directory) / f"{stage}.complete.json", directory)

    store = local_store(tmp_path / "tracking")
    outcome: dict[str, object] = {}

    def launch() -> None:
        try:
            outcome["result"] = run_training(
                expand_runs(config)[0], storage_root=str(storage_root), store=store
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=launch, daemon=True)
    thread.start()
    killed, saved_at_kill = None, set()
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        # one segment (the three stages are placed alike), in the folder named after its first stage
        checkpoints = list((directory / "stage1").glob(f"checkpoint_*/{PROGRESS_FILE}"))
        progress = [json.loads(p.read_text()) for p in checkpoints]
        steps_saved = {p["step"] for p in progress if p["stage"] == "stage3"}
        if 2 in steps_saved:
            pids = _worker_pids()
            if pids:
                killed, saved_at_kill = pids[-1], steps_saved
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "the stage ended before a worker could be killed"
    assert saved_at_kill == {2}, "the worker must die mid-stage, before the next checkpoint"
    result = outcome["result"]

    final, expected = _export(result.final_model), _export(reference.final_model)
    assert final.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)

    client = MlflowClient(tracking_uri=store.uri)
    steps = [step for step, _ in _history(client, result.run_id, names.LOSS_TOTAL)]
    assert steps == list(range(9, TOTAL_STEPS + 1))
