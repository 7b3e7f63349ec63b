"""``vlsa-platform data inspect``: a LLaVA-format dataset checked (records, every image, turn and token
statistics)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_OK


def cmd_data_inspect(args: argparse.Namespace) -> int:
    """Check a dataset (records, every image, turn and token statistics); exit 0 if it could be read."""
    from ..data.inspect import inspect_dataset
    from ..data.records import DatasetError

    try:
        report = inspect_dataset(
            args.path,
            args.image_root,
            tokenizer=None if args.tokenizer == "none" else args.tokenizer,
            max_pixels=args.max_pixels,
            workers=args.workers,
            allow_absolute_paths=args.allow_absolute_paths,
        )
    except DatasetError as err:
        print(f"vlsa-platform data inspect: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(report.to_dict()) if args.json else report.to_text())
    if not report.inspected:
        print(f"vlsa-platform data inspect: no file under {args.path} could be read", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def add_verb(verbs: Any) -> None:
    """``data inspect JSON_OR_DIR [--image-root DIR] [--json]``."""
    from ..data.records import DEFAULT_MAX_PIXELS

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
    inspect.add_argument(
        "--allow-absolute-paths",
        action="store_true",
        help="read image paths that are absolute or s3:// URLs (a dataset's allow_absolute_paths); default: "
        "skip them as absolute_image_path. Paths leading out of the image root are skipped either way",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object with the same numbers")
    inspect.set_defaults(func=cmd_data_inspect)


__all__ = ["add_verb", "cmd_data_inspect"]
