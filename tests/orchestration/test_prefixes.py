"""Shared stage prefixes without Ray: which runs share what, claims that racing runs settle on one owner (local
folder and S3), and the driver adopting what another run published instead of training it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vlsa_platform import storage
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import prefixes
from vlsa_platform.orchestration.plan import expand_runs, plan_run, stage_placements
from vlsa_platform.orchestration.prefixes import (
    PrefixClaims,
    SharedPrefixes,
    prefix_digests,
    shareable_stages,
)
from vlsa_platform.orchestration.training import StageOutcome, _complete_marker, _run_segments, _segments
from vlsa_platform.train.spec import EXPORT_DIR

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"
STAGES = ["stage1", "stage2", "stage3"]


def _config(values: dict | None = None):
    return load_experiment(PAPER, scale="tiny").with_values(values or {})


def _digests(config) -> dict[str, str]:
    run = expand_runs(config)[0]
    placements = stage_placements(run)
    planned = plan_run(run, placements)["stages"]
    return prefix_digests(config, {s["name"]: s["steps"] for s in planned}, placements)


def _shared(a: dict, b: dict) -> list[str]:
    one, other = _digests(_config(a)), _digests(_config(b))
    return [stage for stage in STAGES if one[stage] == other[stage]]


@pytest.mark.parametrize(
    ("key", "values", "shared"),
    [
        ("stages.stage3.loss.rec_weight", (0.0, 1.0), ["stage1", "stage2"]),
        ("stages.stage2.loss.rec_weight", (0.3, 3.0), ["stage1"]),
        ("stages.stage1.loss.llm_weight", (0.0, 1.0), []),  # a prefix holds every stage before it
        ("seed", (0, 1), []),
        ("tracking.log_every", (1, 5), STAGES),  # not an input of any stage
    ],
)
def test_runs_share_the_stages_before_the_first_one_their_inputs_differ_in(key, values, shared):
    assert _shared({key: values[0]}, {key: values[1]}) == shared


def test_the_placement_and_steps_are_part_of_a_prefix():
    assert _shared({}, {"stages.stage1.steps": 7}) == []
    assert _shared({}, {"stages.stage2.placement.num_workers": 2}) == ["stage1"]


def test_a_run_shares_neither_its_last_stage_nor_where_rungs_count():
    assert shareable_stages(STAGES) == {"stage1", "stage2"}
    assert shareable_stages(STAGES, rungs_from="stage2") == {"stage1"}
    assert shareable_stages(STAGES, rungs_from="stage1") == set()
    assert shareable_stages(["only"]) == set()


def test_sharing_can_be_switched_off(tmp_path):
    config = _config({"storage.share_prefixes": False})
    run = expand_runs(config)[0]
    placements = stage_placements(run)
    planned = plan_run(run, placements)["stages"]
    assert SharedPrefixes.for_run(config, str(tmp_path), str(tmp_path / "r"), planned, placements) is None
    on = SharedPrefixes.for_run(_config(), str(tmp_path), str(tmp_path / "r"), planned, placements)
    assert on is not None and set(on.locations) == {"stage1", "stage2"}


# ------------------------------------------------------------------------------------- claims, local and S3


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, monkeypatch):
    """A fresh prefix folder, in a local folder or on the S3 test server."""
    if request.param == "local":
        return str(tmp_path / "prefixes" / "stage1-abc")
    server = request.getfixturevalue("s3_server")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{server.bucket}/prefixes-{uuid.uuid4().hex[:8]}/stage1-abc"


def test_conditional_writes_let_one_racer_win(where):
    path = storage.join(where, "race.json")
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda i: storage.create_exclusive(path, json.dumps({"i": i})), range(8)))
    winners = [i for i, v in enumerate(versions) if v is not None]
    assert len(winners) == 1
    text, version = storage.read_versioned(path)
    assert json.loads(text) == {"i": winners[0]} and version == versions[winners[0]]
    # replace only from the version read; a stale version loses
    new = storage.replace_if(path, '{"i": "new"}', version)
    assert new is not None and new != version
    assert storage.replace_if(path, '{"i": "late"}', version) is None
    assert json.loads(storage.read_text(path)) == {"i": "new"}
    assert storage.replace_if(storage.join(where, "missing.json"), "{}", version) is None


def _export(where: str, name: str) -> dict:
    """A stage outcome whose checkpoint holds an export (a file under ``model/``)."""
    checkpoint = f"{where}-runs/{name}/checkpoint_000001"
    storage.write_text(storage.join(checkpoint, EXPORT_DIR, "config.json"), "{}")
    return {"stage": "stage1", "checkpoint": checkpoint, "global_step": 4, "stage_steps": 4, "gpu_hours": 0.0}


def test_racing_runs_train_a_prefix_once_and_the_others_adopt_it(where):
    claims = [PrefixClaims(owner=f"run-{i}", poll_s=0.05) for i in range(4)]
    trained: list[int] = []

    def run(i: int) -> dict | None:
        record = claims[i].acquire(where)
        if record is None:  # this run trains the stage, then publishes it
            trained.append(i)
            time.sleep(0.3)
            prefixes.publish(where, _export(where, f"run-{i}"), {"name": f"run-{i}", "run_id": None})
        return record

    with ThreadPoolExecutor(4) as pool:
        records = list(pool.map(run, range(4)))
    assert len(trained) == 1
    adopted = [r for r in records if r is not None]
    assert len(adopted) == 3 and all(r["run"]["name"] == f"run-{trained[0]}" for r in adopted)
    # a second publication (a claim taken over from a slow run) does not replace the first
    assert not prefixes.publish(where, _export(where, "late"), {"name": "late"})
    assert prefixes.published(where)["run"]["name"] == f"run-{trained[0]}"


def test_a_claim_is_taken_over_only_from_a_run_that_is_gone(where):
    holder = PrefixClaims(owner="holder", stale_after_s=60)
    other = PrefixClaims(owner="other", stale_after_s=60)
    assert holder.claim(where)
    assert not other.claim(where)  # alive
    assert holder.claim(where)  # its own, again (a re-launch of the same run)
    holder.release()
    assert other.claim(where)  # released: the run failed
    quiet = PrefixClaims(owner="third", stale_after_s=60)
    assert not quiet.claim(where)
    quiet.stale_after_s = 0.0  # as if "other" had stopped renewing it long ago
    assert quiet.claim(where)
    other.renew()
    assert not other.held  # it knows it lost the claim
    quiet.renew()
    assert len(quiet.held) == 1


def test_a_publication_whose_export_is_gone_is_trained_again(tmp_path):
    where = str(tmp_path / "p")
    outcome = _export(where, "gone")
    prefixes.publish(where, outcome, {"name": "gone"})
    assert prefixes.published(where) is not None
    storage.delete(storage.join(outcome["checkpoint"], EXPORT_DIR, "config.json"))
    Path(outcome["checkpoint"], EXPORT_DIR).rmdir()
    assert prefixes.published(where) is None


def test_claims_are_kept_alive_while_a_run_trains_and_released_after(tmp_path):
    where = str(tmp_path / "p")
    claims = PrefixClaims(owner="r", heartbeat_s=0.05)
    with claims.kept_alive():
        assert claims.claim(where)
        first = json.loads(Path(where, prefixes.CLAIM_FILE).read_text())["heartbeat"]
        time.sleep(0.3)
        renewed = json.loads(Path(where, prefixes.CLAIM_FILE).read_text())
        assert renewed["heartbeat"] > first and not renewed["released"]
    assert json.loads(Path(where, prefixes.CLAIM_FILE).read_text())["released"]
    assert not claims.held


# ----------------------------------------------------------------------------- the driver, with a fake fit


def _fake_fit(directory: str, trained: list[tuple[str, str]], lock: threading.Lock):
    """What a segment's workers do, without Ray: each stage not marked complete gets a checkpoint with an
    export, its marker, and its publication when the run claimed it."""

    def fit(specs, previous, publish):
        for spec in specs:
            marker = _complete_marker(directory, spec.stage)
            if storage.exists(marker):
                previous = StageOutcome(**json.loads(storage.read_text(marker)))
                continue
            time.sleep(0.2)
            start = previous.global_step if previous is not None else 0
            checkpoint = storage.join(directory, "stage1", f"checkpoint_{spec.stage}")
            storage.write_text(storage.join(checkpoint, EXPORT_DIR, "config.json"), "{}")
            previous = StageOutcome(spec.stage, checkpoint, start + 2, 2, 0.0)
            storage.write_text(marker, json.dumps(previous.__dict__))
            with lock:
                trained.append((directory.rsplit("/", 1)[-1], spec.stage))
            if spec.stage in publish:
                prefixes.publish(publish[spec.stage], previous.__dict__, {"name": directory, "run_id": None})

        class Result:
            error = None

        return Result()

    return fit


def test_two_racing_runs_train_their_common_stages_once(tmp_path):
    root = str(tmp_path / "storage")
    trained: list[tuple[str, str]] = []
    lock = threading.Lock()

    def train(name: str, stage3_rec: float) -> list[StageOutcome]:
        config = _config({"stages.stage3.loss.rec_weight": stage3_rec})
        run = expand_runs(config)[0]
        placements = stage_placements(run)
        planned = plan_run(run, placements)["stages"]
        directory = storage.join(root, "runs", name)
        sharing = SharedPrefixes.for_run(config, root, directory, planned, placements)
        sharing.claims.poll_s = 0.05
        with sharing.claims.kept_alive():
            return _run_segments(
                name,
                directory,
                _segments(planned, placements),
                planned,
                lambda i: type("Spec", (), {"stage": planned[i]["name"]})(),
                _fake_fit(directory, trained, lock),
                sharing,
            )

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda args: train(*args), [("a", 0.0), ("b", 1.0)])
    by_stage = {stage: sorted(run for run, s in trained if s == stage) for stage in STAGES}
    assert len(by_stage["stage1"]) == 1 and len(by_stage["stage2"]) == 1, by_stage
    assert by_stage["stage3"] == ["a", "b"]
    trainer = by_stage["stage1"][0]
    adopter, trainer_run = (b, a) if trainer == "a" else (a, b)
    for index in (0, 1):  # the adopter's first two stages are the trainer's, marked as shared
        assert adopter[index].checkpoint == trainer_run[index].checkpoint
        assert adopter[index].shared_from["run"]["name"].endswith(trainer)
        assert trainer_run[index].shared_from is None
    assert adopter[2].checkpoint != trainer_run[2].checkpoint and adopter[2].shared_from is None
    assert [o.global_step for o in adopter] == [2, 4, 6]


def test_the_plan_counts_the_stages_a_grid_trains():
    from vlsa_platform.orchestration.plan import build_plan

    grid = {
        "stages.stage3.loss.rec_weight": {"grid": [0.0, 1.0]},
        "stages.stage2.lr.default": {"grid": [1e-5, 2e-5]},
    }
    config = _config({"sweep": {"search_space": grid, "scheduler": {"kind": "fifo"}}})
    assert build_plan(config)["prefixes"] == {
        "stage1": {"runs": 4, "trained": 1},
        "stage2": {"runs": 4, "trained": 2},
        "stage3": {"runs": 4, "trained": 4},
    }
    seeds = config.with_values({"sweep.seeds": 2})  # another seed is another prefix from stage 1 on
    assert build_plan(seeds)["prefixes"]["stage1"] == {"runs": 8, "trained": 2}
    assert build_plan(config.with_values({"storage.share_prefixes": False}))["prefixes"] is None
    drawn = {"stages.stage3.loss.rec_weight": {"choice": [0.0, 1.0]}}
    random = _config({"sweep": {"search_space": drawn, "algorithm": "random", "num_samples": 4}})
    assert build_plan(random)["prefixes"] is None  # drawn at run time
