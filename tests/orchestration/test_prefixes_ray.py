"""Two racing runs sharing a stage prefix, on a real local Ray with Ray Train and DeepSpeed: the tiny paper recipe
twice, differing only in stage 3's reconstruction weight, started at the same time under one run storage on S3.
Stages 1 and 2 are trained once: one run trains and publishes them, the other waits and adopts them (its markers
point at the trainer's checkpoints, its MLflow run links to the trainer's and carries the copied steps) and trains
only its own stage 3. About 2 minutes on 2 cores.

S3 only: its conditional writes are the harder of the two claim mechanisms; the local-folder claims race in
``test_prefixes.py`` (both storages, no Ray), and trials adopting prefixes from a local folder run in every
submitted sweep (``test_submit_ray.py``)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vlsa_platform import storage
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import expand_runs
from vlsa_platform.orchestration.prefixes import PREFIXES_DIR, PUBLISHED_FILE
from vlsa_platform.orchestration.training import run_training
from vlsa_platform.tracking import names
from vlsa_platform.tracking.store import local_store

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("stage1", "stage2", "stage3")
STEPS = 2


def _config(stage3_rec: float):
    sets = ["seed=3", "tracking.log_every=1", "tracking.recon_every=null", "data.validation.sampling=first:4"]
    for stage in STAGES:
        sets += [
            f"stages.{stage}.steps={STEPS}",
            f"stages.{stage}.epochs=null",
            f"stages.{stage}.warmup_ratio=0",
            f"stages.{stage}.lr.default=2e-3",
            f"stages.{stage}.placement.use_gpu=false",
            f"stages.{stage}.placement.num_workers=1",
            f"stages.{stage}.placement.global_batch=2",
        ]
    sets.append(f"stages.stage3.loss.rec_weight={stage3_rec}")
    return load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny", overrides=sets)


def _race(root: str, work: Path):
    store = local_store(work / "tracking")

    def train(args):
        name, rec = args
        return run_training(expand_runs(_config(rec))[0], storage_root=root, store=store, run_name=name)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(train, [("a", 0.0), ("b", 1.0)])), store


def test_two_racing_runs_train_their_shared_prefix_once(cluster, tmp_path):
    from mlflow import MlflowClient

    root = f"s3://{cluster.bucket}/prefix-race-{tmp_path.name}"
    (a, b), store = _race(root, tmp_path)
    trainer, adopter = (a, b) if a.stages[0].shared_from is None else (b, a)
    for index in (0, 1):
        assert trainer.stages[index].shared_from is None
        shared = adopter.stages[index].shared_from
        assert shared is not None and shared["run"]["name"] == trainer.name, shared
        assert adopter.stages[index].checkpoint == trainer.stages[index].checkpoint
    assert adopter.stages[2].shared_from is None and trainer.stages[2].shared_from is None
    assert adopter.stages[2].checkpoint.startswith(adopter.directory)
    assert [s.global_step for s in adopter.stages] == [2, 4, 6]

    # the storage holds one publication per shared stage, both naming the trainer; no adopter checkpoint before
    # its own stage 3
    experiment = storage.join(root, "vlsa-paper", PREFIXES_DIR)
    for stage in ("stage1", "stage2"):
        location = adopter.stages[STAGES.index(stage)].shared_from["prefix"]
        assert location.startswith(experiment) and Path(location).name.startswith(stage)
        record = json.loads(storage.read_text(storage.join(location, PUBLISHED_FILE)))
        assert record["run"]["name"] == trainer.name and record["run"]["run_id"] == trainer.run_id
    own = [s for s in adopter.stages if s.checkpoint.startswith(adopter.directory)]
    assert [s.stage for s in own] == ["stage3"]

    client = MlflowClient(tracking_uri=store.uri)
    tags = client.get_run(adopter.run_id).data.tags
    assert tags["vlsa.shared.stage1.run_id"] == tags["vlsa.shared.stage2.run_id"] == trainer.run_id
    history = {m.step: m.value for m in client.get_metric_history(adopter.run_id, names.LOSS_TOTAL)}
    source = {m.step: m.value for m in client.get_metric_history(trainer.run_id, names.LOSS_TOTAL)}
    assert sorted(history) == list(range(1, 7))  # copied steps 1-4, its own 5-6
    assert all(history[step] == source[step] for step in range(1, 5))
