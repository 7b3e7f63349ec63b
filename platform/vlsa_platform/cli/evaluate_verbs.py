"""``vlsa-platform evaluate``: an exported stage scored on lmms-eval tasks in the evaluation environment, the
scores printed and logged to MLflow as ``eval/<task>/<metric>`` (:mod:`vlsa_platform.orchestration.evaluation`;
docs/evaluation.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from ..orchestration.ledger import DEFAULT_WORKDIR
from .output import error, print_rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for arguments that do not go together."""
    if Path(args.run_or_export).is_dir():
        if args.config is None:
            raise ValueError("--config is required with an export folder: the run's config/resolved.yaml")
        return
    if args.config is not None or args.scale is not None:
        raise ValueError(
            f"{args.run_or_export} is no folder, so it is taken for an MLflow run id, whose config comes from "
            "the run: drop --config and --scale (or give an existing export folder)"
        )
    if args.run_id not in (None, args.run_or_export):
        raise ValueError("--run-id differs from the run evaluated: the scores go into the run evaluated")
    if args.no_tracking:
        raise ValueError("--no-tracking: finding a run's export needs its MLflow run; give an export folder")


def _source(args: argparse.Namespace, store: Any, into: Path) -> tuple[Path, Path, str | None]:
    """``(export, config, run to log into)`` of checked arguments; raises ``EvaluationInputError`` for a run
    whose export cannot be found."""
    from ..orchestration.run_exports import export_of_run  # imports the submission machinery: when needed

    target = Path(args.run_or_export)
    if target.is_dir():
        return target.resolve(), Path(args.config).resolve(), args.run_id
    found = export_of_run(args.run_or_export, store, args.workdir, into)
    return found.export, found.config, args.run_or_export


def _request(args: argparse.Namespace, export: Path, config: Path) -> Any:
    from ..orchestration.evaluation import DEFAULT_TIMEOUT_S, EvalRequest

    return EvalRequest(
        export=export,
        config=config,
        tasks=tuple(args.tasks),
        scale=args.scale,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        include_paths=tuple(Path(p).resolve() for p in args.include_path),
        timeout_s=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT_S,
    )


def _store(args: argparse.Namespace) -> Any:
    """The MLflow store (``None`` with ``--no-tracking``); ``ValueError`` when a run is named and the local
    store it would be in does not exist."""
    import os

    from ..tracking.store import DB_FILE, TRACKING_URI_ENV, resolve_store

    if args.no_tracking:
        return None
    workdir = Path(args.workdir)
    local = not args.tracking_uri and not os.environ.get(TRACKING_URI_ENV, "").strip()
    named_run = args.run_id is not None or not Path(args.run_or_export).is_dir()
    if named_run and local and not (workdir / DB_FILE).is_file():
        raise ValueError(
            f"no local MLflow store at {workdir / DB_FILE}; give --workdir, --tracking-uri or ${TRACKING_URI_ENV}"
        )
    return resolve_store(args.tracking_uri, workdir)


def _render(outcome: Any) -> int:
    """Print the scores and each task's status; the exit status."""
    results = outcome.results
    rows = [["score", "value"]] + [[name, f"{value:.4g}"] for name, value in results.scores.items()]
    if len(rows) > 1:
        print_rows(rows)
    for task, task_outcome in results.tasks.items():
        print(f"{task}: {task_outcome.status}" + (f" — {task_outcome.error}" if task_outcome.error else ""))
    print(f"output: {outcome.out}")
    status = EXIT_FAILED if results.failed else EXIT_OK
    if outcome.run_id is not None:
        print(f"MLflow run: {outcome.run_id} (eval/... at step {outcome.step})")
        if outcome.tracking.get("duplicates"):
            print(
                f"note: {outcome.tracking['duplicates']} score(s) had been logged at step {outcome.step} before "
                "and were not logged again (results.json has the new values)"
            )
        if outcome.tracking.get("dropped"):
            error("evaluate", f"{outcome.tracking['dropped']} MLflow write(s) failed: see the log above")
            status = EXIT_FAILED
    return status


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate an export (or a run's) on lmms-eval tasks, print the scores, log them to MLflow."""
    import tempfile

    # Imported here, as the other verbs do: `vlsa-platform --help` and the other verbs start without MLflow's
    # client, numpy and PIL.
    from ..orchestration.evaluation import EvaluationError, EvaluationInputError, evaluate

    stamp = time.strftime("%Y%m%d-%H%M%S")
    echo = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="vlsa-evaluate-") as scratch:
        try:
            _check(args)
            store = _store(args)
            export, config, run_id = _source(args, store, Path(scratch))
            name = export.parent.name if export.name == "model" else export.name
            out = Path(args.out) if args.out else Path(args.workdir) / "evaluations" / f"{name}-{stamp}"
            outcome = evaluate(
                _request(args, export, config), out.resolve(), store=store, run_id=run_id, echo=echo
            )
        except (ValueError, EvaluationInputError) as err:
            error("evaluate", err)
            return EXIT_CONFIG
        except EvaluationError as err:
            error("evaluate", err)
            return EXIT_FAILED
    return _render(outcome)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive, default=None, metavar="N", help="documents per task")
    parser.add_argument(
        "--batch-size", type=_positive, default=1, metavar="N", help="questions per generate or forward call"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    parser.add_argument(
        "--include-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of more lmms-eval task files (repeatable; the platform's own tasks are always found)",
    )
    parser.add_argument(
        "--run-id",
        default=None,
        metavar="RUN_ID",
        help="MLflow run to log into (default: a new run in the config's experiment)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store in --workdir)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow")
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"work directory: the local MLflow store, evaluations/ (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder, new or empty (default: <workdir>/evaluations/<name>-<time>)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="limit on the evaluation's wall time (default: 6 hours); the tasks finished by then keep their "
        "scores",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not echo lmms-eval's output (still in the log)"
    )


def add_verb(verbs: Any) -> None:
    """``evaluate RUN_OR_EXPORT --tasks T [T ...] [--config FILE] [--scale paper|tiny] [--limit N] ...``."""
    verb = verbs.add_parser(
        "evaluate",
        help="score an exported stage on lmms-eval tasks; log eval/<task>/<metric> to MLflow",
        description="Evaluate an exported stage (a checkpoint's model/ folder) with lmms-eval in the evaluation "
        "environment (make install-eval; $VLSA_EVAL_PYTHON), one task at a time with one model load. Unknown "
        "task names (listed with close matches) and an export that is not the config's model are refused before "
        "any model loads (exit 2). Prints the scores; logs them as eval/<task>/<metric> at the export's global "
        "step, a vlsa.eval.<task>.status tag per task and the output folder as the artifact folder "
        "eval/<stage>/, into the run evaluated (RUN_OR_EXPORT as a run id, or --run-id), else into a new run "
        "of the config's experiment. A task that fails is recorded failed (exit 1) and the others' scores are "
        "kept.",
    )
    verb.add_argument(
        "run_or_export",
        metavar="RUN_OR_EXPORT",
        help="an export folder (<run storage>/.../checkpoint_N/model; give --config), or the MLflow run id of a "
        "trial or variant run: its last finished stage's export and its config/resolved.yaml, scores logged "
        "into it (its submission's record must be in --workdir)",
    )
    verb.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="lmms-eval tasks or groups")
    verb.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="the run's experiment config (its config/resolved.yaml)",
    )
    verb.add_argument(
        "--scale",
        choices=("paper", "tiny"),
        default=None,
        help="as the run had it, when --config is the file",
    )
    _options(verb)
    verb.set_defaults(func=cmd_evaluate)


__all__ = ["add_verb", "cmd_evaluate"]
