"""``vlsa-platform report``: the child runs of an experiment compared from MLflow (table, report.md,
report.html and plots; :mod:`vlsa_platform.tracking.report`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_OK
from ..orchestration.ledger import DEFAULT_WORKDIR
from .output import error


def cmd_report(args: argparse.Namespace) -> int:
    """Compare the child runs of an experiment from MLflow: print the Markdown table, write report.md,
    report.html and the PNG plots."""
    import os
    from pathlib import Path

    from ..tracking import names
    from ..tracking.report import ReportError, collect, render_markdown, write_report
    from ..tracking.store import DB_FILE, TRACKING_URI_ENV, resolve_store

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
        report = collect(
            args.experiment, store, args.parent, metric=args.metric, mode=args.mode, baseline=args.baseline
        )
        out = Path(args.out) if args.out else Path("reports") / names.path_part(args.experiment)
        written = write_report(report, out)
    except (ReportError, OSError) as err:
        error("report", err)
        return EXIT_CONFIG
    print(render_markdown(report))
    print("written:")
    for path in written.values():
        print(f"  {path}")
    return EXIT_OK


def add_verb(verbs: Any) -> None:
    """``report EXPERIMENT [--tracking-uri URI] [--workdir DIR] [--parent RUN_ID] [--out DIR] [--metric KEY]
    [--mode min|max] [--baseline NAME]``."""
    report = verbs.add_parser(
        "report",
        help="compare the child runs (variants or trials) of an experiment: table and plots from MLflow",
        description="Read the child runs of an experiment's parent run from MLflow (default: the most recent "
        "parent run that has children) and compare them: varied params, the value at the last step of every "
        "metric, the best child or the tie. Prints the Markdown table; writes report.md, report.html, "
        "curves_<metric>.png for each validation metric the runs logged (stage starts marked) and "
        "objective_vs_<param>.png for each varied numeric param. When the children logged benchmark scores "
        "(eval/<task>/<metric>), a Table-3 table follows: one row per variant or trial, one column per benchmark "
        "grouped by ability, each score with its difference from the baseline row. Exit 2 with a message for an unknown "
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
    report.add_argument(
        "--baseline",
        default=None,
        metavar="NAME",
        help="row the benchmark table's deltas are taken against: a variant key or label, a trial id, a run "
        "name or id (default: an ablation's first variant in its file, else the first child)",
    )
    report.set_defaults(func=cmd_report)


__all__ = ["add_verb", "cmd_report"]
