"""ASHA against the full grid on the same loss-ratio values: training steps spent, the best objective found, and
whether each rung's ranking predicts the final one.

Both sweeps are real submissions (``run_submission`` on an embedded local Ray, the tiny scale, a local MLflow
store in a temporary folder): the loss-ratio sweep of ``experiments/loss_ratio_sweep.yaml`` over a finer grid
of ``--values`` log-spaced reconstruction weights, once with ASHA (``--grace``, ``--reduction``, the file's
``sweep.scheduler.rungs``: rung points from stage3, or ``--from-stage``) and once with FIFO (every trial to the
end). Stages run ``--steps`` optimizer steps (one number, or one per stage) with a validation every ``--every``
steps, so ASHA's rungs fall inside stage 3 (with the defaults: 4 and 8 steps into it).

Measured from MLflow afterwards: the optimizer steps each trial ran (the last global step it logged), their
sum, and the best objective (``--metric``, minimised) a trial reached at the end of the last stage (a trial
stopped early has no final value). Goal: the ASHA sweep's best within 2% of the grid's best for at most 40% of
its steps. From the grid's validation curves: for every ASHA rung (the milestones of the scheduler a submission
builds, at the validation where Tune records a trial there) and every validation, Kendall's tau-b between the
trials' metric there and their final metric (``scipy.stats.kendalltau``), with its p-value; ``--replay`` replays
ASHA on those curves in many trial orders.

    .venv/bin/python benchmarks/asha_vs_grid.py [--values 27] [--steps 2,12,12] [--every 2] [--grace 2]
        [--reduction 2] [--lr 1e-3] [--descending | --shuffle SEED] [--grid-from an-earlier-run.log]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "experiments" / "loss_ratio_sweep.yaml"
STAGES = ("stage1", "stage2", "stage3")


def sweep_once(workdir: Path, scheduler: str, args: argparse.Namespace, values: list[float]) -> dict:
    from mlflow import MlflowClient

    from vlsa_platform.config.loader import load_experiment
    from vlsa_platform.orchestration.submission import run_submission
    from vlsa_platform.orchestration.submission_types import SubmissionSpec
    from vlsa_platform.tracking import names

    sets = _settings(args, values, scheduler)
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
        val = sorted(val, key=lambda m: m.step)
        trials.append(
            {
                "rec_weight": float(child.data.params["loss.rec_weight"]),
                "steps": steps,
                "final": final[0] if final else None,
                "status": child.info.status,
                # each validation: [step, value, seconds after the trial's run started] (for --replay)
                "curve": [
                    [m.step, m.value, round((m.timestamp - child.info.start_time) / 1000, 1)] for m in val
                ],
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


def _settings(args: argparse.Namespace, values: list[float], scheduler: str) -> list[str]:
    return [
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
        *([f"sweep.scheduler.rungs.from_stage={args.from_stage}"] if args.from_stage else []),
        *(["sweep.scheduler.rungs.allow_frozen_llm=true"] if args.allow_frozen_llm else []),
        *(f"stages.{s}.lr.default={args.lr}" for s in STAGES if args.lr),
    ]


class _Trial:
    """What the scheduler reads of a trial."""

    def __init__(self, index: int) -> None:
        self.trial_id = f"replay_{index:05d}"


def _replay_once(
    sched: Any,
    curves: list[list[list[float]]],
    order: list[int],
    concurrent: int,
    metric: str,
    clock_at: Any,
) -> tuple[int, list[float], dict[int, int]]:
    """One replay: ``(steps spent, final values of the trials that ran to the end, {stopped trial: the global
    step it stopped at})``; ``clock_at(global step)`` is ASHA's rung clock at a validation there."""
    import heapq

    from ray.tune.schedulers import TrialScheduler

    from vlsa_platform.orchestration.rungs import RUNG_CLOCK

    waiting = list(order)
    events: list[tuple[float, int, int]] = []  # (seconds, trial, validation index)
    spent: dict[int, int] = {}
    finals: list[float] = []
    stopped: dict[int, int] = {}  # trial -> the global step of the validation that stopped it

    def start(now: float) -> None:
        index = waiting.pop(0)
        sched.on_trial_add(None, _Trial(index))
        heapq.heappush(events, (now + curves[index][0][2], index, 0))

    for _ in range(min(concurrent, len(waiting))):
        start(0.0)
    while events:
        now, index, k = heapq.heappop(events)
        step, value, _ = curves[index][k]
        spent[index] = int(step)
        result = {"training_iteration": k + 1, RUNG_CLOCK: clock_at(int(step)), metric: value}
        decision = sched.on_trial_result(None, _Trial(index), result)
        if decision == TrialScheduler.STOP or k + 1 == len(curves[index]):
            if decision == TrialScheduler.STOP:
                stopped[index] = int(step)
            else:
                finals.append(value)
            if waiting:
                start(now)
        else:
            began = now - curves[index][k][2]
            heapq.heappush(events, (began + curves[index][k + 1][2], index, k + 1))
    return sum(spent.values()), finals, stopped


class _Clock:
    """ASHA's rung clock for the benchmark's settings, as a submission builds it: the scheduler
    (``orchestration.decisions.scheduler``: Tune's ASHA with the grace period, reduction factor and rungs), its
    rungs in clock ticks as the scheduler itself holds them, and where a global step falls (stage, step in it)."""

    def __init__(self, args: argparse.Namespace, values: list[float]) -> None:
        from vlsa_platform.config.loader import load_experiment
        from vlsa_platform.orchestration.plan import planned_rungs, stage_steps

        self.config = load_experiment(FILE, scale="tiny", overrides=_settings(args, values, "asha"))
        schedule = planned_rungs(self.config)
        assert schedule is not None
        self.schedule = schedule
        self.lengths = {
            name: int(stage_steps(self.config, stage) or 0) for name, stage in self.config.stages.items()
        }
        # Tune's own milestones (``_Bracket._rungs``, every bracket), not re-derived: none when the scheduler
        # is FIFO (too few rung points for a rung).
        brackets = getattr(self.scheduler(), "_brackets", [])
        self.milestones = sorted({float(m) for bracket in brackets for m, _ in bracket._rungs})

    def scheduler(self) -> Any:
        from vlsa_platform.orchestration.decisions import scheduler as sweep_scheduler

        return sweep_scheduler(self.config)

    def at(self, global_step: int) -> int:
        return self.schedule.clock.at_global_step(global_step, self.lengths)[0]

    def where(self, global_step: int) -> tuple[str, int]:
        start = 0
        for stage, steps in self.lengths.items():
            if global_step <= start + steps:
                return stage, global_step - start
            start += steps
        raise ValueError(f"global step {global_step} is past the run's {start} steps")


def _tau(pairs: list[tuple[float, float]]) -> dict:
    """Kendall's tau-b between the two columns (``scipy.stats.kendalltau``, its default method: an exact p-value
    when neither column has ties and there are at most 33 pairs, the normal approximation corrected for ties
    when there are ties), with the count of distinct values in each; ``None`` where one column is all one value
    (no ranking to correlate)."""
    import warnings

    from scipy.stats import kendalltau

    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    row = {"trials": len(pairs), "distinct": len(set(xs)), "distinct_final": len(set(ys))}
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return {**row, "tau": None, "p": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = kendalltau(xs, ys)
    return {**row, "tau": round(float(result.statistic), 4), "p": float(f"{result.pvalue:.3g}")}


def rank_evidence(grid: list[dict], clock: _Clock) -> dict:
    """Whether a rung predicts: for every validation of the grid's trials (all at the same global steps) and
    for every ASHA rung (the first validation whose clock reaches the rung, where Tune records a trial there),
    Kendall's tau between the trials' metric there and their final metric. A tau near 1 says the ranking at
    that point is the final one; near 0, that cutting there is a draw."""
    done = [t for t in grid if t["final"] is not None and t.get("curve")]
    steps = sorted({int(step) for t in done for step, _, _ in t["curve"]})
    validations = []
    for global_step in steps:
        pairs = [
            (value, t["final"]) for t in done for step, value, _ in t["curve"] if int(step) == global_step
        ]
        stage, step = clock.where(global_step)
        tick = clock.at(global_step)
        validations.append(
            {"global_step": global_step, "stage": stage, "step": step, "rung_clock": tick, **_tau(pairs)}
        )
    rungs = []
    for milestone in clock.milestones:
        reached = next((row for row in validations if row["rung_clock"] >= milestone), None)
        if reached is not None:
            rungs.append({"rung": milestone, **reached})
    return {"rungs": rungs, "validations": validations}


def replay(grid: list[dict], args: argparse.Namespace, clock: _Clock, orders: int, seed: int) -> dict:
    """ASHA replayed on the grid's measured curves, in ``orders`` random arrival orders.

    The scheduler is the one a submission builds (:class:`_Clock`), fed each grid trial's validations as Tune
    would see them (the rung clock: rung points from the file's ``rungs.from_stage`` (or ``--from-stage``) on,
    read from each validation's global step). Trials start in the drawn order, ``--concurrent`` at a time, and
    each keeps its measured timing (seconds from its start to each validation), so results arrive at the rungs
    in the order they would have; a stopped trial frees its slot at the validation that stopped it.
    What it shows: how much of ASHA's saving on this grid comes from the order the trials arrive in, and how
    often ASHA keeps the grid's best trial to the end (and at which rung it stops it when it does not).
    """
    import numpy as np

    curves = [t["curve"] for t in grid]
    grid_steps = sum(t["steps"] for t in grid)
    grid_best = min(t["final"] for t in grid if t["final"] is not None)
    best = {i for i, t in enumerate(grid) if t["final"] == grid_best}

    rng = random.Random(seed)
    np.random.seed(seed)  # ASHA draws a bracket per trial when there are several
    fractions, gaps, found, best_stops = [], [], [], []
    for _ in range(orders):
        sched = clock.scheduler()
        sched.set_search_properties(args.metric, "min")
        order = list(range(len(curves)))
        rng.shuffle(order)
        spent, finals, stopped = _replay_once(sched, curves, order, args.concurrent, args.metric, clock.at)
        fractions.append(spent / grid_steps)
        gaps.append(min(finals) / grid_best - 1)
        found.append(min(finals) == grid_best)
        best_stops.extend(stopped[i] for i in best if i in stopped)
    fractions_a, gaps_a, found_a = np.array(fractions), np.array(gaps), np.array(found)

    def pct(a: Any, q: float) -> float:
        return round(float(np.percentile(a, q)), 3)

    return {
        "orders": orders,
        "seed": seed,
        "step_fraction": {
            "mean": round(float(fractions_a.mean()), 3),
            "p10": pct(fractions_a, 10),
            "p90": pct(fractions_a, 90),
            "min": round(float(fractions_a.min()), 3),
            "max": round(float(fractions_a.max()), 3),
            "share_at_most_40pct": round(float((fractions_a <= 0.4).mean()), 3),
        },
        "best_gap_max": round(float(gaps_a.max()), 5),
        "share_best_within_2pct": round(float((gaps_a <= 0.02).mean()), 3),
        # the grid's best trial ran to the end, and the steps ASHA spent in those orders
        "share_kept_grid_best": round(float(found_a.mean()), 3),
        "step_fraction_when_kept": round(float(fractions_a[found_a].mean()), 3) if found_a.any() else None,
        # {global step: share of the orders in which the grid's best trial was stopped there}
        "grid_best_stopped_at": {
            str(step): round(best_stops.count(step) / orders, 3) for step in sorted(set(best_stops))
        },
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--values",
        type=int,
        default=27,
        help="grid size (log-spaced from 0.03 to 10); asynchronous ASHA lets the first trials to reach a rung "
        "through, so its saving grows with the trial count",
    )
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
        default=2,
        help="ASHA grace period (rung points from --from-stage on); 2 puts the first rung 4 steps into stage 3 "
        "(with the default steps, interval and the file's rungs from stage3)",
    )
    parser.add_argument(
        "--from-stage",
        default=None,
        help="the stage ASHA's rungs count from (sweep.scheduler.rungs.from_stage; default: the file's, stage3); "
        "validate refuses one before the LLM trains when the metric is val/loss_llm, unless --allow-frozen-llm",
    )
    parser.add_argument(
        "--allow-frozen-llm",
        action="store_true",
        help="sweep.scheduler.rungs.allow_frozen_llm: rungs may fall where the LLM is frozen (with --from-stage "
        "stage1: the rules before rungs in stage terms, rung points counted from the run's start)",
    )
    parser.add_argument(
        "--reduction",
        type=float,
        default=2.0,
        help="ASHA reduction factor (the file's 2: with the default steps, rungs 4 and 8 steps into stage 3; "
        "3 leaves one rung, at 4)",
    )
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="every stage's default learning rate (the paper's 2e-5 of stages 2-3 barely moves the tiny model "
        "in a few steps, so trials would tie)",
    )
    _add_run_options(parser)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
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
        "end within 0.1%% of each other on it — val/loss_rec separates them",
    )
    parser.add_argument(
        "--replay",
        type=int,
        default=1000,
        metavar="ORDERS",
        help="also replay ASHA on the grid's measured curves in this many random trial orders (0: none): the "
        "spread of what the real run's one order shows",
    )
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="run (or take, --grid-from) the grid and replay ASHA on it, without the real ASHA sweep",
    )


def _grid_from(parser: argparse.ArgumentParser, path: Path, same: dict) -> dict:
    """The grid sweep of an earlier run's summary line, refused when it ran with other settings."""
    lines = [line for line in path.read_text().splitlines() if line.startswith('{"metric"')]
    if not lines:
        parser.error(f"--grid-from {path}: no summary line of this benchmark in it")
    earlier = json.loads(lines[-1])

    def settings(summary: dict) -> dict:  # the grid's trials do not depend on its order
        return {k: sorted(summary.get(k) or []) if k == "values" else summary.get(k) for k in same}

    differ = sorted(k for k, v in settings(same).items() if settings(earlier)[k] != v)
    if differ:
        parser.error(f"--grid-from {path}: its grid ran with other {', '.join(differ)}")
    return {
        "scheduler": "fifo",
        "wall_s": (earlier.get("wall_s") or {}).get("grid"),
        "steps": earlier["grid_steps"],
        "best": earlier["grid_best"],
        "trials": earlier["trials"]["grid"],
    }


def main() -> None:
    parser = _parser()
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
        out["fifo"] = _grid_from(parser, args.grid_from, same)
    wanted = ("fifo",) if args.replay_only else ("asha", "fifo")
    if any(scheduler not in out for scheduler in wanted):
        with tempfile.TemporaryDirectory(prefix="vlsa-asha-") as tmp, local_ray():
            for scheduler in wanted:
                if scheduler not in out:
                    out[scheduler] = sweep_once(Path(tmp) / scheduler, scheduler, args, values)
    _report(args, same, values, out)


def _report(args: argparse.Namespace, same: dict, values: list[float], out: dict) -> None:
    """Print the JSON summary and the human lines: the real ASHA run against the grid (unless
    ``--replay-only``), the rank correlation per rung, and the replay."""
    grid = out["fifo"]
    clock = _Clock(args, values)
    rungs = clock.schedule.rungs() or []
    scheduler = {
        "grace_period": args.grace,
        "reduction_factor": args.reduction,
        "from_stage": clock.schedule.clock.from_stage,
        "max_t": clock.schedule.max_t,
        "milestones": clock.milestones,
        "rungs": [(r["stage"], r["step"]) for r in rungs],
    }
    evidence, replayed = None, None
    if all(t.get("curve") for t in grid["trials"]):
        evidence = rank_evidence(grid["trials"], clock)
        if args.replay:
            replayed = replay(grid["trials"], args, clock, args.replay, seed=args.shuffle or 0)
    else:
        print(
            "no rank correlation and no replay: the grid from --grid-from has no validation curves (an older run)"
        )
    summary = {**same, "asha": scheduler, "grid_steps": grid["steps"], "grid_best": grid["best"]}
    if not args.replay_only:
        asha = out["asha"]
        kept = {t["rec_weight"] for t in grid["trials"] if t["final"] == grid["best"]}
        summary |= {
            "asha_steps": asha["steps"],
            "step_fraction": round(asha["steps"] / grid["steps"], 3) if grid["steps"] else None,
            "asha_best": asha["best"],
            "best_gap": round(asha["best"] / grid["best"] - 1, 4) if grid["best"] else None,
            # the grid's best weight ran to the end in the ASHA sweep
            "asha_kept_grid_best": any(
                t["rec_weight"] in kept and t["final"] is not None for t in asha["trials"]
            ),
        }
    summary |= {
        "wall_s": {"grid": grid["wall_s"], **({} if args.replay_only else {"asha": out["asha"]["wall_s"]})},
        "tau": evidence,
        "replay": replayed,
        "trials": {"grid": grid["trials"], **({} if args.replay_only else {"asha": out["asha"]["trials"]})},
    }
    print(json.dumps(summary))
    if not args.replay_only:
        print(
            f"ASHA spent {summary['asha_steps']} of the grid's {summary['grid_steps']} steps "
            f"({100 * (summary['step_fraction'] or 0):.0f}%, goal <= 40%); best {args.metric} "
            f"{summary['asha_best']:.5f} vs the grid's {grid['best']:.5f} "
            f"({100 * (summary['best_gap'] or 0):+.3f}%, goal within 2%; the grid's best "
            f"{'kept' if summary['asha_kept_grid_best'] else 'stopped'}); "
            f"wall {out['asha']['wall_s']:.0f}s vs {grid['wall_s']:.0f}s"
        )
    _print_tau(evidence, scheduler, replayed)
    _print_replay(replayed)


def _print_tau(evidence: dict | None, scheduler: dict, replayed: dict | None) -> None:
    if evidence is None:
        return
    if not evidence["rungs"]:
        print(f"no ASHA rung (from {scheduler['from_stage']}, max_t {scheduler['max_t']} rung points)")
    every = ", ".join(
        f"{row['stage']}:{row['step']} {'-' if row['tau'] is None else format(row['tau'], '+.2f')}"
        for row in evidence["validations"]
    )
    print(f"Kendall tau with the final at every validation (stage:step tau; -: every trial tied): {every}")
    stops = (replayed or {}).get("grid_best_stopped_at", {})
    for row in evidence["rungs"]:
        tau = (
            "undefined (every trial tied)" if row["tau"] is None else f"{row['tau']:+.3f} (p {row['p']:.3g})"
        )
        stopped = (
            f"; the grid's best stopped here in {100 * stops.get(str(row['global_step']), 0):.1f}% of "
            "the replayed orders"
            if replayed
            else ""
        )
        print(
            f"rung at rung point {row['rung']:g} ({row['stage']} step {row['step']}, global step "
            f"{row['global_step']}): Kendall tau with the final {tau} over {row['trials']} trials, "
            f"{row['distinct']} distinct values there{stopped}"
        )


def _print_replay(replayed: dict | None) -> None:
    if replayed is None:
        return
    f = replayed["step_fraction"]
    kept = replayed["step_fraction_when_kept"]
    print(
        f"ASHA replayed on the grid's curves in {replayed['orders']} random orders: {100 * f['mean']:.0f}% of the "
        f"grid's steps on average (10-90%: {100 * f['p10']:.0f}-{100 * f['p90']:.0f}%, range "
        f"{100 * f['min']:.0f}-{100 * f['max']:.0f}%), at most 40% in {100 * f['share_at_most_40pct']:.0f}% of "
        f"the orders; best within 2% of the grid's in {100 * replayed['share_best_within_2pct']:.0f}% "
        f"(largest gap {100 * replayed['best_gap_max']:+.3f}%); the grid's best kept to the end in "
        f"{100 * replayed['share_kept_grid_best']:.1f}%"
        + (f", for {100 * kept:.0f}% of the grid's steps on average there" if kept is not None else "")
    )


if __name__ == "__main__":
    main()
