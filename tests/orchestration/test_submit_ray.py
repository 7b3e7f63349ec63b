"""``vlsa-platform submit`` of the four experiment files at tiny scale, end to end on an embedded local Ray.

Each test runs the real verb in this process (``cli.main``): the embedded Ray (one for the module, 2 CPUs),
the served local MLflow store in a temporary work directory, Ray Tune trials whose stages are Ray Train runs
of DeepSpeed on CPU. Stages are one or two optimizer steps; validation uses a few held-out samples. What is
checked is the structure the issue fixes: one parent run per submission, one child per trial or variant with
the §4 metrics and the swept parameter, early-stopped trials closed, a stopped sweep resumed without
rerunning its finished trials, ``status`` and ``report`` reading it back.

About 12 minutes on 2 cores (every stage starts worker processes that import torch and DeepSpeed); run with
``make test-e2e``.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import pytest

from vlsa_platform import cli, exits
from vlsa_platform.config.loader import TINY_EVAL_METRIC
from vlsa_platform.orchestration.ledger import find
from vlsa_platform.tracking import names
from vlsa_platform.tracking.report.render import SCORES_HEADING

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
STAGES = ("stage1", "stage2", "stage3")
FAST = [
    *(f"stages.{s}.{k}" for s in STAGES for k in ("steps=1", "epochs=null")),
    "data.validation.sampling=random:4",
    "tracking.log_every=1",
    "tracking.recon_every=null",
    # the pre-fill of the frozen-target cache is tested on its own (test_cache_sweep_ray.py)
    "data.prefill_targets=false",
]
SECTION_METRICS = (names.LOSS_TOTAL, names.LOSS_LLM, names.LOSS_REC, names.VAL_LOSS_LLM)
EVAL_SCORES = ("eval/vlsa_synthetic_vqa/exact_match", "eval/vlsa_synthetic_mc/acc")


def submit(workdir: Path, name: str, *sets: str) -> int:
    args = ["submit", str(EXPERIMENTS / name), "--scale", "tiny", "--workdir", str(workdir)]
    for item in (*FAST, *sets):
        args += ["--set", item]
    return cli.main(args)


def client(workdir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")


def runs_of(workdir: Path, experiment: str):
    """(parent runs, children by parent id) of ``experiment`` in the local store."""
    c = client(workdir)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if names.TAG_PARENT_RUN not in r.data.tags]
    children: dict[str, list] = {}
    for r in runs:
        if names.TAG_PARENT_RUN in r.data.tags:
            children.setdefault(r.data.tags[names.TAG_PARENT_RUN], []).append(r)
    return parents, children


def check_child(run, finished: bool = True) -> None:
    for key in SECTION_METRICS:
        assert key in run.data.metrics, f"{run.info.run_name} lacks {key}"
    if finished:
        assert run.info.status == "FINISHED"
        assert run.data.metrics[names.STAGE] == len(STAGES) - 1


def test_a_plan_the_model_side_refuses_is_exit_2_and_records_nothing(workdir, capsys):
    """The plan's model-side check (LoRA targets the tiny LLM lacks) runs while Ray and the MLflow server
    start: the refusal names the problem, exits 2, records no submission, starts no trial, and leaves Ray
    as it found it (first in the module, so this submission started and must stop its own)."""
    from vlsa_platform.orchestration.ledger import all_records

    was_up = ray.is_initialized()
    status = submit(
        workdir, "loss_ratio_sweep.yaml", "model.lora.enabled=true", "model.lora.target_modules=[nope]"
    )
    assert status == exits.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "model:" in err and "nope" in err
    assert all_records(workdir) == []
    assert not (workdir / "storage").exists(), "no trial started"
    assert ray.is_initialized() == was_up


def test_single_run_is_a_parent_with_one_child(local_cluster, workdir):
    assert submit(workdir, "vlsa_paper.yaml") == 0
    parents, children = runs_of(workdir, "vlsa-paper")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["vlsa.kind"] == "single" and parent.data.tags[names.TAG_SCALE] == "tiny"
    (child,) = children[parent.info.run_id]
    assert child.info.run_name == "main"
    check_child(child)
    record = find(workdir)
    assert record.state == "FINISHED" and record.spec.parent_run_id == parent.info.run_id


def test_loss_ratio_sweep_stops_worse_trials_and_resumes(local_cluster, workdir, capsys):
    """Four grid trials, one at a time: the sweep is interrupted (as ``stop`` does: SIGINT) once two trials
    ended, then resumed; the ended trials are not run again, ASHA stops the worse ones at its rung.

    The objective is ``loss/total`` (``loss/llm + w_rec * loss/rec``, larger for a larger reconstruction
    weight), so that the trials differ at the first rung: the tiny model's ``val/loss_llm`` barely moves in a
    few steps, and ASHA keeps trials that tie."""
    stop_after = 2
    ended: list[str] = []
    import vlsa_platform.orchestration.progress as progress

    line = progress.ProgressCallback._line

    def watching(self, row, what):
        line(self, row, what)
        if row["status"] in ("finished", "stopped early") and row["name"] not in ended:
            ended.append(row["name"])
            if len(ended) == stop_after:
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    sets = (
        "sweep.max_concurrent_trials=1",
        "sweep.scheduler.grace_period=1",
        "sweep.metric=loss/total",
        # the trials differ from stage1 on (loss.rec_weight); loss/total is no LLM metric, so a rung may fall
        # while the LLM is frozen: rungs at the ends of stage1 and stage2, as the test means them
        "sweep.scheduler.rungs.from_stage=stage1",
        "sweep.scheduler.rungs.at=stage_ends",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress.ProgressCallback, "_line", watching)
        status = submit(workdir, "loss_ratio_sweep.yaml", *sets)
    assert status == exits.EXIT_INTERRUPTED
    record = find(workdir)
    assert record.state == "STOPPED"
    first = {t["name"]: t for t in record.trials()}
    done_before = {n for n, t in first.items() if t["status"] in ("finished", "stopped early")}
    assert len(done_before) == stop_after
    markers = {
        n: sorted((Path(record.spec.runs_root) / "vlsa-loss-ratio" / n).glob("*.complete.json"))
        for n in done_before
    }
    stamps = {n: [p.stat().st_mtime_ns for p in paths] for n, paths in markers.items()}

    assert cli.main(["resume", record.id, "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    for name in done_before:
        assert f"{name:<14} started" not in out.split("resuming")[-1], f"{name} ran again"
        assert [p.stat().st_mtime_ns for p in markers[name]] == stamps[name]

    parents, children = runs_of(workdir, "vlsa-loss-ratio")
    assert len(parents) == 1, "a resume continues the same parent run"
    kids = children[parents[0].info.run_id]
    assert len(kids) == 4
    weights = sorted(float(k.data.params["loss.rec_weight"]) for k in kids)
    assert weights == [0.1, 0.3, 1.0, 3.0]
    for kid in kids:
        assert kid.data.tags.get(names.TAG_TRIAL_ID)
        check_child(kid, finished=kid.data.tags.get("vlsa.early_stopped") != "true")
    stopped = [k for k in kids if k.data.tags.get("vlsa.early_stopped") == "true"]
    assert stopped, "ASHA (grace 1, reduction 2) stops at least one of four trials at a rung"
    assert all(k.info.status == "KILLED" for k in stopped)
    assert all(k.data.metrics[names.STAGE] < len(STAGES) - 1 for k in stopped)
    assert parents[0].info.status == "FINISHED"

    # status and report read it back
    assert cli.main(["status", record.id, "--workdir", str(workdir)]) == 0
    table = capsys.readouterr().out
    assert "stopped early" in table and "finished" in table
    out_dir = workdir / "report"
    assert cli.main(["report", "vlsa-loss-ratio", "--workdir", str(workdir), "--out", str(out_dir)]) == 0
    assert (out_dir / "report.html").is_file() and (out_dir / "curves_val_loss_llm.png").is_file()
    assert any(out_dir.glob("objective_vs_*.png"))


def test_cognition_sweep_with_optuna(local_cluster, workdir):
    status = submit(
        workdir,
        "cognition_sweep.yaml",
        "sweep.algorithm=optuna",
        "sweep.num_samples=2",
        "sweep.scheduler.kind=fifo",
    )
    assert status == 0
    parents, children = runs_of(workdir, "vlsa-cognition")
    (parent,) = parents
    kids = children[parent.info.run_id]
    assert len(kids) == 2
    swept = ("data.cognition.p_vq", "data.cognition.p_px", "stages.stage2.mixture")
    for kid in kids:
        check_child(kid)
        for key in swept:
            assert key in kid.data.params or any(p.startswith(key) for p in kid.data.params)
    assert kids[0].data.params["data.cognition.p_vq"] != kids[1].data.params["data.cognition.p_vq"]


def test_ablation_runs_the_seven_table3_rows(local_cluster, workdir):
    assert submit(workdir, "ablation.yaml") == 0
    parents, children = runs_of(workdir, "vlsa-ablation")
    (parent,) = parents
    assert parent.data.tags["vlsa.kind"] == "ablation"
    kids = {k.data.tags[names.TAG_VARIANT]: k for k in children[parent.info.run_id]}
    assert set(kids) == {
        "anyres",
        "lowres",
        "sa",
        "sa_recon",
        "anyres_cognition",
        "sa_recon_cognition",
        "anyres_980k",
    }
    for variant, kid in kids.items():
        assert kid.info.status == "FINISHED", variant
        for key in (names.LOSS_TOTAL, names.LOSS_LLM, names.VAL_LOSS_LLM):
            assert key in kid.data.metrics, (variant, key)
    assert kids["sa_recon"].data.params["model.recon"] == "true"
    assert kids["anyres"].data.params["model.vision"] == "anyres"
    # L_rec exists only where the variant has the reconstruction branch
    assert math.isfinite(kids["sa_recon"].data.metrics[names.LOSS_REC])
    assert math.isnan(kids["anyres"].data.metrics[names.LOSS_REC])

    # the evaluation step (evaluate: at --scale tiny the local tasks) scored every variant's last stage
    for variant, kid in kids.items():
        for key in EVAL_SCORES:
            assert 0.0 <= kid.data.metrics.get(key, -1.0) <= 1.0, (variant, key)
            assert kid.data.tags[names.eval_status_tag(key.split("/")[1])] == "finished", (variant, key)
        history = client(workdir).get_metric_history(kid.info.run_id, EVAL_SCORES[0])
        validations = client(workdir).get_metric_history(kid.info.run_id, names.VAL_LOSS_LLM)
        assert [m.step for m in history] == [max(m.step for m in validations)], variant  # the last step
    out_dir = workdir / "report"
    assert cli.main(["report", "vlsa-ablation", "--workdir", str(workdir), "--out", str(out_dir)]) == 0
    text = (out_dir / "report.md").read_text()
    table = text.split(f"## {SCORES_HEADING}", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == [
        "(1) anyres (baseline)",
        "(2) lowres",
        "(3) sa",
        "(4) sa+recon",
        "(5) anyres+cognition",
        "(6) sa+recon+cognition",
        "(1b) anyres 980K",
    ]
    assert "synthetic VQA" in table and "synthetic MC" in table
    assert '<table class="scores">' in (out_dir / "report.html").read_text()


def test_a_sweep_ranked_by_a_benchmark_score(local_cluster, workdir, capsys):
    """A tiny loss-ratio sweep whose objective is a benchmark score (``loss_ratio_mme_sweep.yaml``: MME
    perception, at --scale tiny the local VQA task's exact match): each trial is evaluated after stage2 and
    stage3 as Ray work inside it, reports its scores to Tune, and the report ranks the trials by the score."""
    sets = (
        "sweep.search_space={loss.rec_weight: {grid: [0.1, 3.0]}}",
        "sweep.max_concurrent_trials=2",
    )
    assert submit(workdir, "loss_ratio_mme_sweep.yaml", *sets) == 0
    parents, children = runs_of(workdir, "vlsa-loss-ratio-mme")
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.metric"] == TINY_EVAL_METRIC
    kids = children[parent.info.run_id]
    assert len(kids) == 2
    for kid in kids:
        stopped = kid.data.tags.get("vlsa.early_stopped") == "true"
        check_child(kid, finished=not stopped)
        history = client(workdir).get_metric_history(kid.info.run_id, TINY_EVAL_METRIC)
        assert len(history) == (1 if stopped else 2), kid.info.run_name  # after stage2, and stage3
        assert all(0.0 <= m.value <= 1.0 for m in history)
    out_dir = workdir / "report"
    args = ["report", "vlsa-loss-ratio-mme", "--workdir", str(workdir), "--out", str(out_dir)]
    assert cli.main(args) == 0
    text = (out_dir / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| ") and "rank" in line)
    cells = [cell.strip() for cell in header.strip("|").split(" | ")]
    assert cells[1] == "rank" and TINY_EVAL_METRIC in cells, cells
