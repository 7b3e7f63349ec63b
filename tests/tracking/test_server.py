"""Tracking against a real MLflow tracking server (``mlflow server`` on 127.0.0.1, SQLite in a temp folder).

One server for the module (startup takes seconds), launched and then waited for as ``submit`` does. The last
test kills it, so it stays last in the file.
"""

import urllib.request

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from vlsa_platform.config import load_experiment
from vlsa_platform.tracking import (
    LocalTrackingServer,
    Tracker,
    TrackerOptions,
    TrackingStore,
    git_commit,
    local_store,
    names,
    server_for,
    shared_store,
)

from .test_names import REPO

EXPERIMENT = "vlsa-tracking-test"
FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def early_run(workdir):
    """A run written straight into the local SQLite store before any server existed."""
    tracker = Tracker.start_parent(EXPERIMENT, "before-server", store=local_store(workdir), options=FAST)
    tracker.log_metrics({names.LOSS_TOTAL: 3.0}, step=0)
    assert tracker.close(timeout=30)
    return tracker.run_id


@pytest.fixture(scope="module")
def server(workdir, early_run):
    """Launched without waiting (``submit`` launches it before Ray); ``shared_store`` waits for it."""
    launched = server_for(local_store(workdir), startup_timeout_s=120.0).launch()
    assert isinstance(launched, LocalTrackingServer) and launched.running()
    try:
        yield launched
    finally:
        launched.stop()


@pytest.fixture(scope="module")
def store(server, workdir):
    with shared_store(local_store(workdir), server) as served:
        return TrackingStore(uri=served.uri)


def test_a_launched_server_is_waited_for_and_left_to_its_owner(server, store, workdir):
    assert store.uri == server.url
    with shared_store(local_store(workdir), server) as again:
        assert again.uri == server.url and again.source == "local-served"
    assert server.running()
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(ValueError, match="serves"), shared_store(local_store(workdir / "other"), server):
        pass


@pytest.fixture(scope="module")
def parent_id(store):
    resolved = load_experiment(REPO / "experiments" / "vlsa_paper.yaml").resolved()
    tags = names.run_tags(scale="tiny", git_commit=git_commit())
    parent = Tracker.start_parent(EXPERIMENT, "submission", tags, store=store, options=FAST)
    parent.log_config(resolved)
    assert parent.flush(20)
    yield parent.run_id
    parent.close()


def _history(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_parent_and_children_land_with_the_design_names(store, parent_id, tmp_path):
    client = MlflowClient(store.uri)
    children = []
    for variant in ("sa", "sa_recon"):
        child = Tracker.start_child(
            parent_id, variant, names.run_tags(variant=variant, scale="tiny"), {"model": {"recon": True}},
            store=store, options=FAST,
        )  # fmt: skip
        for step in range(5):
            child.log_metrics({key: 1.0 / (step + 1) for key in names.METRICS}, step=step)
        child.log_deepspeed_config(
            "stage1", {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 1}
        )
        gt = np.linspace(-1, 1, 2 * 3 * 16 * 16, dtype=np.float32).reshape(2, 3, 16, 16)
        child.log_reconstruction(gt, -gt, step=2)
        note = tmp_path / f"{variant}.txt"
        note.write_text(variant)
        child.log_artifact_file(note, "notes")
        assert child.close(timeout=30)
        children.append(child.run_id)

    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert parent_id in {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    found = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{names.TAG_PARENT_RUN}` = '{parent_id}'"
    )
    assert sorted(r.info.run_id for r in found) == sorted(children)
    parent = client.get_run(parent_id)
    assert parent.data.tags[names.TAG_SCALE] == "tiny" and names.TAG_GIT_COMMIT in parent.data.tags
    assert parent.data.params["stages.stage2.loss.rec_weight"] == "1.0"
    with open(client.download_artifacts(parent_id, names.ARTIFACT_RESOLVED_CONFIG, tmp_path)) as file:
        resolved = yaml.safe_load(file)
    assert resolved["name"] == load_experiment(REPO / "experiments" / "vlsa_paper.yaml").name

    for run_id, variant in zip(children, ("sa", "sa_recon"), strict=True):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.TAG_VARIANT] == variant
        assert run.data.params["model.recon"] == "true"
        assert set(run.data.metrics) == set(names.METRICS)
        assert _history(client, run_id, names.LOSS_TOTAL) == [0, 1, 2, 3, 4]
        listed = {
            a.path
            for folder in ("deepspeed", "recon", "notes")
            for a in client.list_artifacts(run_id, folder)
        }
        assert listed == {"deepspeed/stage1.json", "recon/step_000002.png", f"notes/{variant}.txt"}
        png = client.download_artifacts(run_id, "recon/step_000002.png", tmp_path / run_id)
        assert Image.open(png).size == (2 * 16 + 2, 2 * 16 + 2)


def test_the_server_serves_the_store_written_without_it(store, early_run):
    run = MlflowClient(store.uri).get_run(early_run)
    assert run.data.metrics == {names.LOSS_TOTAL: 3.0}


def test_a_step_is_logged_once_even_after_resume(store, parent_id):
    client = MlflowClient(store.uri)
    tracker = Tracker.start_child(parent_id, "resume", store=store, options=FAST)
    for step in [0, 1, 2, 3, 4, 3, 4, 5, 6]:  # the trainer replays steps 3 and 4
        tracker.log_metrics({names.LOSS_TOTAL: float(step)}, step=step)
    assert tracker.close(timeout=30)
    assert tracker.duplicates == 2
    assert _history(client, tracker.run_id, names.LOSS_TOTAL) == list(range(7))

    # A worker restarted from the checkpoint of step 4 attaches by id and replays steps 5 and 6.
    resumed = Tracker.for_run(tracker.run_id, store=store, options=FAST)
    for step in range(5, 9):
        resumed.log_metrics({names.LOSS_TOTAL: float(step)}, step=step)
    resumed.log_params({"seed": 0})
    resumed.log_params({"seed": 0})  # same value again: nothing to send, no MLflow error
    assert resumed.close(timeout=30)
    assert resumed.duplicates == 2
    assert _history(client, tracker.run_id, names.LOSS_TOTAL) == list(range(9))
    assert client.get_run(tracker.run_id).info.status == "FINISHED"  # an attached tracker leaves the status


def test_a_run_ended_by_someone_else_keeps_that_end_until_reopened(store, parent_id):
    """A sweep's driver marks an early-stopped trial's run KILLED while the trial's process may still end it
    on its way out; a resumed run is reopened and then ends as the resumed launch ends."""
    client = MlflowClient(store.uri)
    tracker = Tracker.start_child(parent_id, "stopped", store=store, options=FAST)
    assert tracker.flush(20)
    client.set_terminated(tracker.run_id, "KILLED")  # the driver
    assert tracker.close(status="FAILED", timeout=30)  # the trial's process, a moment later
    assert client.get_run(tracker.run_id).info.status == "KILLED"

    resumed = Tracker.for_run(tracker.run_id, store=store, options=FAST)
    resumed.reopen()
    assert resumed.flush(20)
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    assert resumed.close(status="FINISHED", timeout=30)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_server_killed_mid_run_costs_metrics_not_the_run(server, store, parent_id):
    """Must stay the last test of the module: it stops the module's server. How long a log call and the close
    take then is measured by ``benchmarks/tracking_latency.py`` (no wall-clock bound here)."""
    tracker = Tracker.start_child(
        parent_id, "killed", store=store, options=TrackerOptions(backoff_s=0.05, close_timeout_s=3.0)
    )
    tracker.log_metrics({names.LOSS_TOTAL: 1.0}, step=0)
    assert tracker.flush(20)
    server.stop()

    image = np.zeros((64, 64, 3), np.uint8)
    for step in range(1, 301):
        tracker.log_metrics({key: float(step) for key in names.METRICS}, step=step)
        if step % 50 == 0:
            tracker.log_image(image, names.recon_artifact(step))
            tracker.set_tags({"vlsa.note": f"step {step}"})
    finished = tracker.close(timeout=3.0)
    assert not finished and tracker.dropped > 0
    # Calls after close are accepted and counted, never raised.
    tracker.log_metrics({names.LOSS_TOTAL: 0.0}, step=999)
