"""ASHA against the full grid on the same loss-ratio values: training steps spent and the best objective found.

Both sweeps are real submissions (``run_submission`` on an embedded local Ray, the tiny scale, a local MLflow
store in a temporary folder): the loss-ratio sweep of ``experiments/loss_ratio_sweep.yaml`` over a finer grid
of ``--values`` log-spaced reconstruction weights, once with ASHA (``--grace``, ``--reduction``) and once with
FIFO (every trial to the end). Stages run ``--steps`` optimizer steps (one number, or one per stage) with a
validation every ``--every`` steps, so ASHA's rungs fall inside stages and at their ends.

Measured from MLflow afterwards: the optimizer steps each trial ran (the last global step it logged), their
sum, and the best objective (``--metric``, minimised) a trial reached at the end of the last stage (a trial
stopped early has no final value). Goal: the ASHA sweep's best within 2% of the grid's best for at most 40% of
its steps.

    .venv/bin/python benchmarks/asha_vs_grid.py [--values 9] [--steps 2,12,12] [--every 2] [--grace 3]
        [--reduction 3] [--lr 1e-3] [--descending | --shuffle SEED] [--grid-from an-earlier-run.log]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "experiments" / "loss_ratio_sweep.yaml"
STAGES = ("stage1", "stage2", "stage3")


def sweep_once(workdir: Path, scheduler: str, args: argparse.Namespace, values: list[float]) -> dict:
    from mlflow import MlflowClient

    from vlsa_platform.config.loader import load_experiment
    from vlsa_platform.orchestration.submission import SubmissionSpec, run_submission
    from vlsa_platform.tracking import names

    sets = [
        *(f"stages.{s}.steps={n}" for s, n in zip(STAGES, args.stage_steps, strict=True)),
        f"data.validation.every_steps={args.every}",
        f"sweep.search_space={json.dumps({'loss.rec_weight': {'grid': values}})}",
        f"sweep.scheduler.kind={scheduler}",
        f"sweep.scheduler.grace_period={args.grace}",
        f"sweep.scheduler.reduction_factor={args.reduction}",
        f"sweep.max_concurrent_trials={args.concurrent}",
        "tracking.recon_every=null",
        "tracking.log_every=1",  # every step's losses: a trial's last logged step is the last it trained
        f"sweep.metric={args.metric}",
        *(f"stages.{s}.lr.default={args.lr}" for s in STAGES if args.lr),
    ]
    config = load_experiment(FILE, scale="tiny", overrides=sets)
    spec = SubmissionSpec(
        submission_id=f"bench-{scheduler}",
        experiment=config.name,
        kind=config.kind,
        source=str(FILE),
        scale="tiny",
        overrides=sets,
        config=config.raw,
        workdir=str(workdir),
        storage_root=str(workdir / "storage"),
    )
    started = time.perf_counter()
    result = run_submission(spec, say=lambda line: print(f"  {scheduler}: {line}", flush=True))
    wall = time.perf_counter() - started
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{names.TAG_PARENT_RUN}` = '{result.parent_run_id}'"
    )
    total_steps = sum(args.stage_steps)
    trials = []
    for child in children:
        history = client.get_metric_history(child.info.run_id, names.LOSS_TOTAL)
        val = client.get_metric_history(child.info.run_id, args.metric)
        steps = max((m.step for m in [*history, *val]), default=0)
        final = [m.value for m in val if m.step == total_steps]
        trials.append(
            {
                "rec_weight": float(child.data.params["loss.rec_weight"]),
                "steps": steps,
                "final": final[0] if final else None,
                "status": child.info.status,
            }
        )
    finals = [t["final"] for t in trials if t["final"] is not None]
    return {
        "scheduler": scheduler,
        "wall_s": round(wall, 1),
        "steps": sum(t["steps"] for t in trials),
        "best": min(finals) if finals else math.nan,
        "trials": sorted(trials, key=lambda t: t["rec_weight"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=9, help="grid size (log-spaced from 0.03 to 10)")
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--descending",
        action="store_true",
        help="run the grid from the largest weight down (Tune runs a grid in its order; asynchronous ASHA lets "
        "the first trial to reach a rung through, so the order matters)",
    )
    order.add_argument(
        "--shuffle",
        type=int,
        default=None,
        metavar="SEED",
        help="run the grid in a random order drawn with this seed (between the best and the worst order for ASHA)",
    )
    parser.add_argument(
        "--steps",
        default="2,12,12",
        help="optimizer steps per stage: one number for every stage, or one per stage (e.g. 2,8,8)",
    )
    parser.add_argument("--every", type=int, default=2, help="validation every this many steps")
    parser.add_argument(
        "--grace",
        type=int,
        default=3,
        help="ASHA grace period (validations); 3 puts the first rung 4 steps into stage 2 (with the default "
        "steps and interval), after stage 1, where the tiny model's trials tie up to rounding",
    )
    parser.add_argument("--reduction", type=float, default=3.0, help="ASHA reduction factor")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="every stage's default learning rate (the paper's 2e-5 of stages 2-3 barely moves the tiny model "
        "in a few steps, so trials would tie)",
    )
    parser.add_argument(
        "--grid-from",
        type=Path,
        default=None,
        help="the JSON line an earlier run printed: take its grid sweep instead of running it again (the same "
        "values, steps, validation interval, learning rate and metric; the grid does not depend on the scheduler)",
    )
    parser.add_argument(
        "--metric",
        default="val/loss_llm",
        help="the objective (minimised); the tiny model's val/loss_llm barely moves in a few steps, so trials "
        "tie on it and ASHA keeps them all — val/loss_rec separates them",
    )
    args = parser.parse_args()
    steps = [int(n) for n in str(args.steps).split(",")]
    args.stage_steps = steps * len(STAGES) if len(steps) == 1 else steps
    if len(args.stage_steps) != len(STAGES):
        parser.error(f"--steps: one number, or one per stage ({len(STAGES)})")
    lo, hi = math.log10(0.03), math.log10(10.0)
    values = [round(10 ** (lo + (hi - lo) * i / (args.values - 1)), 4) for i in range(args.values)]
    if args.descending:
        values.reverse()
    elif args.shuffle is not None:
        random.Random(args.shuffle).shuffle(values)

    from vlsa_platform.orchestration.local import local_ray

    same = {
        "metric": args.metric,
        "values": values,
        "lr": args.lr,
        "steps_per_stage": args.stage_steps,
        "validate_every": args.every,
    }
    out = {}
    if args.grid_from is not None:
        lines = [line for line in args.grid_from.read_text().splitlines() if line.startswith('{"metric"')]
        if not lines:
            parser.error(f"--grid-from {args.grid_from}: no summary line of this benchmark in it")
        earlier = json.loads(lines[-1])

        def settings(summary: dict) -> dict:  # the grid's trials do not depend on its order
            return {k: sorted(summary.get(k) or []) if k == "values" else summary.get(k) for k in same}

        differ = sorted(k for k, v in settings(same).items() if settings(earlier)[k] != v)
        if differ:
            parser.error(f"--grid-from {args.grid_from}: its grid ran with other {', '.join(differ)}")
        out["fifo"] = {
            "scheduler": "fifo",
            "wall_s": earlier["wall_s"]["grid"],
            "steps": earlier["grid_steps"],
            "best": earlier["grid_best"],
            "trials": earlier["trials"]["grid"],
        }
    with tempfile.TemporaryDirectory(prefix="vlsa-asha-") as tmp, local_ray():
        for scheduler in ("asha", "fifo"):
            if scheduler not in out:
                out[scheduler] = sweep_once(Path(tmp) / scheduler, scheduler, args, values)
    asha, grid = out["asha"], out["fifo"]
    summary = {
        **same,
        "asha": {"grace_period": args.grace, "reduction_factor": args.reduction},
        "grid_steps": grid["steps"],
        "asha_steps": asha["steps"],
        "step_fraction": round(asha["steps"] / grid["steps"], 3) if grid["steps"] else None,
        "grid_best": grid["best"],
        "asha_best": asha["best"],
        "best_gap": round(asha["best"] / grid["best"] - 1, 4) if grid["best"] else None,
        "wall_s": {"asha": asha["wall_s"], "grid": grid["wall_s"]},
        "trials": {"asha": asha["trials"], "grid": grid["trials"]},
    }
    print(json.dumps(summary))
    print(
        f"ASHA spent {summary['asha_steps']} of the grid's {summary['grid_steps']} steps "
        f"({100 * (summary['step_fraction'] or 0):.0f}%, goal <= 40%); best {args.metric} {asha['best']:.4f} "
        f"vs the grid's {grid['best']:.4f} ({100 * (summary['best_gap'] or 0):+.2f}%, goal within 2%); "
        f"wall {asha['wall_s']:.0f}s vs {grid['wall_s']:.0f}s"
    )


if __name__ == "__main__":
    main()
