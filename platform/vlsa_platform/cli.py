"""``vlsa-platform``: the command line (argparse, one function per verb).

Verbs: ``validate``, ``submit``, ``resume``, ``status``, ``logs``, ``stop``, ``ui``, ``report``, ``data inspect``.
Exit status: 0 ok; 1 a submission whose trials failed (or that was stopped); 2 a bad experiment file, ``--set``,
address or usage (the message on stderr, no traceback); 3 a cluster that cannot run a trial; the cluster-access
codes of :mod:`vlsa_platform.orchestration.jobs` (unreachable, authentication); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_RESOURCES = 3
EXIT_INTERRUPTED = 130


def _human(n: int) -> str:
    """``8030261248`` -> ``8.03B``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _memory(place: dict[str, Any]) -> str:
    """``"61.2/80 GiB"`` (estimate / card) on an accelerator class, ``"-"`` without one."""
    if place.get("accelerator_memory_gib") is None or place.get("memory_gib_per_gpu") is None:
        return "-"
    fits = "" if place.get("fits") is not False else " (does not fit)"
    return f"{place['memory_gib_per_gpu']:.1f}/{place['accelerator_memory_gib']:g} GiB{fits}"


def render_plan(plan: dict[str, Any], source: str) -> str:
    """The plan as a compact, human-readable table."""
    lines = [
        f"{source}: experiment {plan['experiment']!r} — {plan['kind']}, scale {plan['scale']}, "
        f"{plan['num_trials']} run{'s' if plan['num_trials'] != 1 else ''}"
    ]
    if plan["search_space"]:
        lines.append("  search space:")
        for key, domain in plan["search_space"].items():
            ((kind, values),) = domain.items()
            lines.append(f"    {key}: {kind} {json.dumps(values)}")
    for run in plan["runs"]:
        switches = run["model"]
        flags = [switches["vision"], *(name for name in ("recon", "cognition", "lora") if switches[name])]
        lines.append(
            f"  run {run['label']}  [{' + '.join(flags)}]  {run['visual_tokens_per_image']} visual tokens/image"
        )
        rows = [
            ["stage", "trainable", "params", "trained", "loss llm/rec", "steps", "placement", "memory/GPU"]
        ]
        notes = []
        for stage in run["stages"]:
            notes.extend(f"    ! {stage['name']}: {warning}" for warning in stage.get("warnings", []))
            place = stage["placement"]
            where = f"{place['num_workers']}x{place['accelerator_type'] or ('GPU' if place['use_gpu'] else 'CPU')}"
            offload = f" offload={place['offload']}" if place["offload"] != "none" else ""
            rows.append(
                [
                    stage["name"],
                    ",".join(stage["trainable"]),
                    _human(stage["params_total"]),
                    _human(stage["params_trainable"]),
                    f"{stage['loss']['llm_weight']:g}/{stage['loss']['rec_weight']:g}",
                    "?" if stage["steps"] is None else str(stage["steps"]),
                    f"{where} zero{place['zero_stage']}{offload} "
                    f"batch {place['micro_batch']}x{place['num_workers']}x{place['grad_accum']}={place['global_batch']}",
                    _memory(place),
                ]
            )
        lines.extend(_table(rows, indent="    "))
        lines.extend(notes)
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    """Parse, resolve and print the plan of each file; start nothing (no Ray, no MLflow)."""
    from .config.errors import ConfigError
    from .config.loader import load_experiment
    from .orchestration.plan import build_plan

    status = EXIT_OK
    for i, path in enumerate(args.files):
        try:
            plan = build_plan(load_experiment(path, scale=args.scale, overrides=args.set))
        except ConfigError as err:
            print(err, file=sys.stderr)
            status = EXIT_CONFIG
            continue
        if args.json:
            print(json.dumps(plan))
        else:
            print(("\n" if i else "") + render_plan(plan, path))
    return status


def cmd_data_inspect(args: argparse.Namespace) -> int:
    """Check a dataset (records, every image, turn and token statistics); exit 0 if it could be read."""
    from .data.inspect import inspect_dataset
    from .data.records import DatasetError

    try:
        report = inspect_dataset(
            args.path,
            args.image_root,
            tokenizer=None if args.tokenizer == "none" else args.tokenizer,
            max_pixels=args.max_pixels,
            workers=args.workers,
        )
    except DatasetError as err:
        print(f"vlsa-platform data inspect: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(report.to_dict()) if args.json else report.to_text())
    if not report.inspected:
        print(f"vlsa-platform data inspect: no file under {args.path} could be read", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _add_data_verb(verbs: Any) -> None:
    """``data inspect JSON_OR_DIR [--image-root DIR] [--json]``."""
    from .data.records import DEFAULT_MAX_PIXELS

    data = verbs.add_parser("data", help="dataset tools (inspect)", description="Dataset tools.")
    sub = data.add_subparsers(dest="data_verb", required=True, metavar="SUBVERB")
    inspect = sub.add_parser(
        "inspect",
        help="check a LLaVA-format dataset: records, every image, turn and token statistics",
        description="Read every record and open every image of a LLaVA-format dataset (JSON list or JSON Lines; "
        "a folder means every *.json/*.jsonl in it) and report samples read, usable and skipped (with a reason "
        "each), text-only samples, turn and token-length statistics. Exit 0 when it could inspect (even with "
        "bad samples), 2 when the path cannot be read.",
    )
    inspect.add_argument("path", metavar="JSON_OR_DIR", help="dataset file (local or s3://) or local folder")
    inspect.add_argument(
        "--image-root",
        default=None,
        metavar="DIR",
        help="folder (local or s3://) the image paths are relative to (default: each file's folder)",
    )
    inspect.add_argument(
        "--tokenizer",
        default="tiny",
        metavar="tiny|paper|PATH|none",
        help="tokenizer for the token-length statistics: the bundled tiny one (default), paper "
        "(LLaMA-3-8B-Instruct, downloaded), a local tokenizer folder, or none",
    )
    inspect.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image allowed, width x height (default {DEFAULT_MAX_PIXELS})",
    )
    inspect.add_argument(
        "--workers", type=int, default=None, help="threads opening images (default 4 per CPU)"
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object with the same numbers")
    inspect.set_defaults(func=cmd_data_inspect)


DEFAULT_WORKDIR = ".vlsa"
"""Local work directory when none is given: the local MLflow store (``mlruns.db``, ``mlartifacts/``), the
default run storage (``storage/``) and the submission records (``submissions/``); relative to the current
directory."""


def cmd_report(args: argparse.Namespace) -> int:
    """Compare the child runs of an experiment from MLflow: print the Markdown table, write report.md,
    report.html and the PNG plots."""
    import os
    from pathlib import Path

    from .tracking import names
    from .tracking.report import ReportError, collect, render_markdown, write_report
    from .tracking.store import DB_FILE, TRACKING_URI_ENV, resolve_store

    workdir = Path(args.workdir)
    try:
        local = not args.tracking_uri and not os.environ.get(TRACKING_URI_ENV, "").strip()
        # resolve_store would create the folder (and MLflow an empty store) where nothing was tracked.
        if local and not (workdir / DB_FILE).is_file():
            raise ReportError(
                f"no local MLflow store at {workdir / DB_FILE}; give --workdir, --tracking-uri or "
                f"${TRACKING_URI_ENV}"
            )
        store = resolve_store(args.tracking_uri, workdir)
        report = collect(args.experiment, store, args.parent, metric=args.metric, mode=args.mode)
        out = Path(args.out) if args.out else Path("reports") / names.path_part(args.experiment)
        written = write_report(report, out)
    except (ReportError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"vlsa-platform report: {message}", file=sys.stderr)
        return EXIT_CONFIG
    print(render_markdown(report))
    print("written:")
    for path in written.values():
        print(f"  {path}")
    return EXIT_OK


def _add_report_verb(verbs: Any) -> None:
    """``report EXPERIMENT [--tracking-uri URI] [--workdir DIR] [--parent RUN_ID] [--out DIR] [--metric KEY]
    [--mode min|max]``."""
    report = verbs.add_parser(
        "report",
        help="compare the child runs (variants or trials) of an experiment: table and plots from MLflow",
        description="Read the child runs of an experiment's parent run from MLflow (default: the most recent "
        "parent run that has children) and compare them: varied params, the value at the last step of every "
        "metric, the best child. Prints the Markdown table; writes report.md, report.html, loss_curves.png and "
        "objective_vs_<param>.png for each varied numeric param. Exit 2 with a message for an unknown "
        "experiment or run, or a parent run without children.",
    )
    report.add_argument(
        "experiment", metavar="EXPERIMENT", help="MLflow experiment name (the experiment file's name)"
    )
    report.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store in --workdir)",
    )
    report.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"work directory holding the local store mlruns.db (default: {DEFAULT_WORKDIR} in the current "
        "directory)",
    )
    report.add_argument(
        "--parent",
        default=None,
        metavar="RUN_ID",
        help="parent run to report on (default: the most recent run without a parent that has child runs)",
    )
    report.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: reports/<experiment>/)"
    )
    report.add_argument(
        "--metric",
        default=None,
        metavar="KEY",
        help="metric that picks the best child, at its last step (default: the parent's sweep.metric, "
        "else val/loss_llm)",
    )
    report.add_argument(
        "--mode",
        choices=("min", "max"),
        default=None,
        metavar="min|max",
        help="whether lower or higher --metric is better (default: the parent's sweep.mode when the metric is "
        "its sweep.metric, else min)",
    )
    report.set_defaults(func=cmd_report)


def _scale_and_set(parser: argparse.ArgumentParser) -> None:
    """``--scale`` and ``--set``, shared by the verbs that load an experiment file."""
    parser.add_argument(
        "--scale",
        choices=("paper", "tiny"),
        default=None,
        help="tiny: the tiny model preset and the bundled synthetic data, one CPU worker per stage",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted key after loading (value parsed as YAML), e.g. stages.stage1.steps=10",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlsa-platform",
        description="Train VLSA as DeepSpeed stages on Ray, sweep its loss ratios, track it in MLflow.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = verbs.add_parser(
        "validate",
        help="check experiment files and print their plan (runs, stages, parameters, placement)",
        description="Parse and resolve experiment files and print the plan; starts nothing. "
        "Exit 2 with the offending field and its file:line for a bad file.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="experiment YAML file(s)")
    _scale_and_set(validate)
    validate.add_argument(
        "--json",
        action="store_true",
        help="print the plan as one JSON object per file, one per line",
    )
    validate.set_defaults(func=cmd_validate)
    from .cli_submissions import add_verbs

    add_verbs(verbs, _scale_and_set)
    _add_report_verb(verbs)
    _add_data_verb(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlsa-platform`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
