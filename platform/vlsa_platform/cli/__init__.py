"""``vlsa-platform``: the command line (argparse, one function per verb).

Verbs: ``validate`` (:mod:`.plan_verbs`), ``submit``, ``resume``, ``status``, ``logs``, ``stop``, ``ui``
(:mod:`.submission_verbs`), ``report`` (:mod:`.report_verbs`), ``evaluate`` (:mod:`.evaluate_verbs`),
``data inspect`` (:mod:`.data_verbs`); what they print in common is :mod:`.output`. Each verb parses, calls
orchestration (or the layer it reads) and renders.
Exit status (:mod:`vlsa_platform.exits`): 0 ok; 1 a submission whose trials failed (or that was stopped), an
evaluation with a failed task; 2 a bad experiment file, ``--set``, address, task name or usage (the message on
stderr, no traceback); 3 a cluster that cannot run a trial; 4 a cluster that cannot be reached, 5 one that
refuses the token; 130 interrupted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import data_verbs, evaluate_verbs, plan_verbs, report_verbs, submission_verbs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlsa-platform",
        description="Train VLSA as DeepSpeed stages on Ray, sweep its loss ratios, track it in MLflow.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    plan_verbs.add_verb(verbs)
    submission_verbs.add_verbs(verbs)
    report_verbs.add_verb(verbs)
    evaluate_verbs.add_verb(verbs)
    data_verbs.add_verb(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlsa-platform`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)
