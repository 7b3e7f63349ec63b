"""Shared stage prefixes in a real sweep: the stage-mixing sweep trains each distinct stage prefix once.

A real submission (``run_submission`` on an embedded local Ray, the tiny scale, a local MLflow store in a
temporary folder) of ``experiments/stage_mixing_sweep.yaml`` with short stages (``--steps``) and FIFO (every
trial to the end, so every trial's stages are counted). Read back afterwards:

- from the experiment file alone: the distinct prefixes per stage, as the plan counts them (``build_plan``'s
  ``prefixes``) — what must be trained;
- from the run storage: per trial and stage, whether its ``<stage>.complete.json`` was trained by the trial or
  adopted (``shared_from``), and the publications under ``prefixes/``;
- from MLflow: the adopting runs' ``vlsa.shared.<stage>.run_id`` tags, and each trial's ``loss/total`` series
  running from step 1 to the last.

Goal: for every stage, the stages trained equal the distinct prefixes (each trained once), and every trial's
series is complete. ``--no-sharing`` runs the same sweep with ``storage.share_prefixes=false`` for the wall
time without sharing.

    .venv/bin/python benchmarks/prefix_sharing.py [--steps 2,2,4] [--concurrent 2] [--no-sharing] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "experiments" / "stage_mixing_sweep.yaml"


def _steps(args: argparse.Namespace, stages: list[str]) -> list[int]:
    steps = [int(n) for n in str(args.steps).split(",")]
    return steps * len(stages) if len(steps) == 1 else steps


def _settings(args: argparse.Namespace, stages: list[str]) -> list[str]:
    steps = _steps(args, stages)
    return [
        *(f"stages.{s}.steps={n}" for s, n in zip(stages, steps, strict=True)),
        *(f"stages.{s}.epochs=null" for s in stages),
        "data.validation.every_steps=1000",  # at the stages' ends only
        "data.validation.sampling=first:4",
        "sweep.scheduler.kind=fifo",
        f"sweep.max_concurrent_trials={args.concurrent}",
        "tracking.recon_every=null",
        "tracking.log_every=1",
        f"storage.share_prefixes={'false' if args.no_sharing else 'true'}",
        *args.sets,
    ]


def distinct_prefixes(config) -> dict[str, int]:
    """Per stage, how many of the sweep's trials must train it: the plan's count (``build_plan``'s
    ``prefixes``, from the trials' configs alone), which the run is checked against."""
    from vlsa_platform.orchestration.plan import build_plan

    return {stage: entry["trained"] for stage, entry in build_plan(config)["prefixes"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", default="2,2,4", help="optimizer steps per stage: one number, or one per stage"
    )
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument("--no-sharing", action="store_true", help="storage.share_prefixes=false")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another override, as `submit --set` takes it (e.g. a smaller grid)",
    )
    args = parser.parse_args()

    from mlflow import MlflowClient

    from vlsa_platform import storage
    from vlsa_platform.config.loader import load_experiment
    from vlsa_platform.orchestration.local import local_ray
    from vlsa_platform.orchestration.submission import run_submission
    from vlsa_platform.orchestration.submission_types import SubmissionSpec
    from vlsa_platform.tracking import names

    stages = list(load_experiment(FILE, scale="tiny").stages)
    sets = _settings(args, stages)
    config = load_experiment(FILE, scale="tiny", overrides=sets)
    expected = distinct_prefixes(config)
    with tempfile.TemporaryDirectory(prefix="vlsa-prefix-") as tmp, local_ray():
        spec = SubmissionSpec(
            submission_id="bench-prefixes",
            experiment=config.name,
            kind=config.kind,
            source=str(FILE),
            scale="tiny",
            overrides=sets,
            config=config.raw,
            workdir=tmp,
            storage_root=str(Path(tmp) / "storage"),
        )
        started = time.perf_counter()
        result = run_submission(spec, say=lambda line: print(f"  {line}", flush=True))
        wall = time.perf_counter() - started
        runs = Path(tmp) / "storage" / "runs" / spec.submission_id / names.path_part(config.name)
        trained: Counter[str] = Counter()
        adopted: Counter[str] = Counter()
        for trial in result.trials:
            for stage in stages:
                marker = json.loads(storage.read_text(str(runs / trial.name / f"{stage}.complete.json")))
                (adopted if marker.get("shared_from") else trained)[stage] += 1
        publications = sorted(p.parent.name for p in (runs / "prefixes").glob("*/published.json"))
        client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'mlruns.db'}")
        parent = client.get_run(result.parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`{names.TAG_PARENT_RUN}` = '{result.parent_run_id}'"
        )
        linked = sum(1 for c in children if any(k.startswith("vlsa.shared.") for k in c.data.tags))
        total = sum(_steps(args, stages))
        complete = [
            sorted(m.step for m in client.get_metric_history(c.info.run_id, names.LOSS_TOTAL))
            for c in children
        ]
    summary = {
        "trials": len(result.trials),
        "failed": len(result.failed),
        "sharing": not args.no_sharing,
        "distinct_prefixes": expected,
        "trained": dict(trained),
        "adopted": dict(adopted),
        "publications": len(publications),
        "runs_linking_a_trainer": linked,
        "series_complete": all(steps == list(range(1, total + 1)) for steps in complete),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(summary))
    ok = all(trained[s] == expected[s] for s in stages)
    verdict = "each distinct prefix trained once" if ok else "some prefix trained more than once"
    print(
        f"{summary['trials']} trials, {sum(trained.values())} stages trained of {len(stages) * len(result.trials)}"
        f" ({', '.join(f'{s}: {trained[s]} trained / {expected[s]} distinct' for s in stages)}): "
        f"{verdict if summary['sharing'] else 'sharing off'}; wall {wall:.0f} s"
    )


if __name__ == "__main__":
    main()
