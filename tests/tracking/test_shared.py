"""A run that adopted a shared stage shows it in MLflow: tags naming the run that trained it, and that stage's
metric series copied at the same global steps."""

from __future__ import annotations

from mlflow import MlflowClient

from vlsa_platform.tracking import names
from vlsa_platform.tracking.shared import link_shared_stage
from vlsa_platform.tracking.store import local_store


def test_an_adopted_stage_links_its_trainer_and_copies_its_steps(tmp_path):
    store = local_store(tmp_path)
    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.create_experiment("e", artifact_location=store.artifact_location)
    source = client.create_run(experiment, run_name="trial-00000").info.run_id
    target = client.create_run(experiment, run_name="trial-00001").info.run_id
    for step in range(1, 9):  # two stages of 4 steps; a validation at each stage's end
        client.log_metric(source, names.LOSS_TOTAL, 10.0 - step, step=step, timestamp=1000 * step)
        if step % 4 == 0:
            client.log_metric(source, names.VAL_LOSS_LLM, 5.0 - step / 4, step=step, timestamp=1000 * step)

    tags = names.shared_stage_tags("stage2", source, "trial-00000", "s3://b/e/prefixes/stage2-ab")
    copied = link_shared_stage(store, target, tags, source, (4, 8))

    assert copied == 5  # steps 5..8 of loss/total, the validation at step 8
    history = client.get_metric_history(target, names.LOSS_TOTAL)
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [
        (s, 10.0 - s, 1000 * s) for s in range(5, 9)
    ]
    assert [(m.step, m.value) for m in client.get_metric_history(target, names.VAL_LOSS_LLM)] == [(8, 3.0)]
    run_tags = client.get_run(target).data.tags
    assert run_tags["vlsa.shared.stage2.run_id"] == source
    assert run_tags["vlsa.shared.stage2.run_name"] == "trial-00000"
    assert run_tags["vlsa.shared.stage2.prefix"] == "s3://b/e/prefixes/stage2-ab"


def test_a_trainer_in_another_store_leaves_the_tags_only(tmp_path):
    store = local_store(tmp_path)
    client = MlflowClient(tracking_uri=store.uri)
    target = client.create_run(client.create_experiment("e")).info.run_id
    tags = names.shared_stage_tags("stage1", "0" * 32, "trial-00000", "/p")
    assert link_shared_stage(store, target, tags, "0" * 32, (0, 4)) == 0
    assert client.get_run(target).data.tags["vlsa.shared.stage1.run_name"] == "trial-00000"
