"""Tracking without a server: URI resolution, the local SQLite store, ``NullTracker`` and the panel helper."""

import inspect
import socket

import numpy as np
import pytest
from mlflow import MlflowClient

from vlsa_platform.tracking import (
    NullTracker,
    Tracker,
    TrackerOptions,
    local_store,
    names,
    reconstruction_panel,
    resolve_store,
    shared_store,
    tracker_for_rank,
)

FAST = TrackerOptions(backoff_s=0.05, close_timeout_s=20.0)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_store("http://mlflow:5000", tmp_path).uri == "http://mlflow:5000"
    env = resolve_store(None, tmp_path)
    assert (env.uri, env.source, env.artifact_location) == ("http://127.0.0.1:1", "env", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    local = resolve_store(None, tmp_path / "work")
    assert local.source == "local" and local.is_local_sqlite
    assert local.uri == f"sqlite:///{tmp_path / 'work' / 'mlruns.db'}"
    assert local.artifact_location == (tmp_path / "work" / "mlartifacts").as_uri()


def test_shared_store_passes_a_remote_store_through(tmp_path):
    remote = resolve_store("http://mlflow.internal:5000", tmp_path)
    with shared_store(remote) as store:
        assert store is remote
    assert list(tmp_path.iterdir()) == []


def test_local_sqlite_store_without_server(tmp_path):
    store = local_store(tmp_path)
    with Tracker.start_parent(
        "local-exp", "submission", {names.TAG_SCALE: "tiny"}, store=store, options=FAST
    ) as parent:
        parent.log_config({"stages": {"stage1": {"loss": {"rec_weight": 0.0}}}, "name": "local-exp"})
        parent.log_metrics({names.COST_GPU_HOURS: 0.0}, step=0)
        child = Tracker.start_child(
            parent.run_id, "variant-a", {names.TAG_VARIANT: "a"}, store=store, options=FAST
        )
        child.log_metrics({names.LOSS_TOTAL: 1.0, names.LR: 1e-4}, step=1)
        child.log_skipped({"missing image": 2, "bad record": 1}, step=1)
        assert child.close()
    client = MlflowClient(store.uri)
    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.TAG_PARENT_RUN] == parent.run_id
    assert run.data.metrics == {
        "loss/total": 1.0,
        "lr": 1e-4,
        "data/skipped/missing_image": 2.0,
        "data/skipped/bad_record": 1.0,
        "data/skipped/total": 3.0,
    }
    top = client.get_run(parent.run_id)
    assert top.data.params["stages.stage1.loss.rec_weight"] == "0.0"
    # Artifacts land in the work directory, not in the current directory's ./mlruns.
    assert (tmp_path / "mlartifacts").is_dir()
    found = list((tmp_path / "mlartifacts").rglob("resolved.yaml"))
    assert len(found) == 1 and found[0].parent.name == "config"


def test_null_tracker_has_the_interface_and_does_nothing(tmp_path):
    public = {n for n, v in inspect.getmembers(Tracker) if not n.startswith("_") and inspect.isfunction(v)}
    missing = {n for n in public if not hasattr(NullTracker, n)}
    assert not missing, missing
    null = tracker_for_rank(1, "some-run-id")
    assert isinstance(null, NullTracker) and isinstance(tracker_for_rank(0, None), NullTracker)
    null.log_metrics({"loss/total": 1.0}, step=0)
    null.log_params({"a": 1})
    null.set_tags({"vlsa.scale": "tiny"})
    null.log_image(np.zeros((4, 4, 3), np.uint8), "x.png")
    null.log_artifact_file(tmp_path / "missing.txt")
    assert null.flush(0) and null.close("FAILED") and null.dropped == 0
    assert list(tmp_path.iterdir()) == []


def test_reconstruction_panel_layout():
    gt = -np.ones((2, 3, 8, 6), np.float32)  # black
    rec = np.ones((2, 3, 8, 6), np.float32)  # white... except a red pixel
    rec[1, 1:, 0, 0] = -1.0
    panel = np.asarray(reconstruction_panel(gt, rec, gap=2))
    assert panel.shape == (2 * 8 + 2, 2 * 6 + 2, 3)
    assert (panel[:8, :6] == 0).all() and (panel[:8, 8:] == 255).all()
    assert tuple(panel[10, 8]) == (255, 0, 0)
    with pytest.raises(ValueError):
        reconstruction_panel(gt, rec[:1])


def test_a_server_that_never_answers_costs_at_most_the_close_deadline():
    """A listening socket that never accepts: every request hangs until MLflow's (lowered) timeout. The time
    a log call and the close take is measured by ``benchmarks/tracking_latency.py`` (no wall-clock bound here)."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(1)
        uri = f"http://127.0.0.1:{hole.getsockname()[1]}"
        tracker = Tracker.for_run("0" * 32, store=uri, options=TrackerOptions(backoff_s=0.05))
        for step in range(200):
            tracker.log_metrics({names.LOSS_TOTAL: 1.0, names.LR: 0.1}, step=step)
            tracker.log_text("x", "notes/x.txt")
        assert not tracker.close("FAILED", timeout=1.5)
    assert tracker.dropped >= 400  # nothing got through
