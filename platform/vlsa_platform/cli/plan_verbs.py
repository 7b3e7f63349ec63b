"""``vlsa-platform validate``: experiment files parsed, resolved and planned; nothing started (no Ray, no
MLflow). Also the ``--scale`` / ``--set`` options of every verb that loads an experiment file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_OK
from .output import problems, render_plan


def cmd_validate(args: argparse.Namespace) -> int:
    """Parse, resolve and print the plan of each file; start nothing (no Ray, no MLflow)."""
    from ..config.errors import ConfigError
    from ..config.loader import load_experiment
    from ..orchestration.plan import build_plan

    status = EXIT_OK
    for i, path in enumerate(args.files):
        try:
            plan = build_plan(load_experiment(path, scale=args.scale, overrides=args.set))
        except ConfigError as err:
            problems(err)
            status = EXIT_CONFIG
            continue
        if args.json:
            print(json.dumps(plan))
        else:
            print(("\n" if i else "") + render_plan(plan, path))
    return status


def scale_and_set(parser: argparse.ArgumentParser) -> None:
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


def add_verb(verbs: Any) -> None:
    """``validate FILE... [--scale paper|tiny] [--set KEY=VALUE] [--json]``."""
    validate = verbs.add_parser(
        "validate",
        help="check experiment files and print their plan (runs, stages, parameters, placement)",
        description="Parse and resolve experiment files and print the plan; starts nothing. "
        "Exit 2 with the offending field and its file:line for a bad file.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="experiment YAML file(s)")
    scale_and_set(validate)
    validate.add_argument(
        "--json",
        action="store_true",
        help="print the plan as one JSON object per file, one per line",
    )
    validate.set_defaults(func=cmd_validate)


__all__ = ["add_verb", "cmd_validate", "scale_and_set"]
