"""Whether lmms-eval knows some task names, without loading any model: run by the evaluation environment's
interpreter before a submission trains anything (``python -m vlsa_platform.lmms.task_check --tasks T [T ...]
[--include-path DIR ...]``).

Exit 0 when every name is a task or group of lmms-eval, of the platform (:data:`~vlsa_platform.lmms.TASKS_DIR`)
or under an ``--include-path`` (:func:`task_manager`); exit 2 with the unknown ones and their closest known
names on stderr. Imports no model code (torch, transformers), so it answers in seconds.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exits import EXIT_CONFIG, EXIT_OK
from . import TASKS_DIR

#: Close matches shown for an unknown task name.
SUGGESTIONS = 5


def unknown_tasks(tasks: Sequence[str], known: Sequence[str]) -> str | None:
    """A message naming each of ``tasks`` not in ``known``, with its closest known names; ``None`` if all are."""
    problems = []
    for task in tasks:
        if task in known:
            continue
        close = difflib.get_close_matches(task, known, n=SUGGESTIONS, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"{task}{hint}")
    if not problems:
        return None
    return (
        f"unknown lmms-eval task{'s' if len(problems) > 1 else ''}: {'; '.join(problems)} — known tasks are "
        "lmms-eval's own, the platform's (vlsa_synthetic_vqa, vlsa_synthetic_mc, vlsa_synthetic_caption, the "
        "group vlsa_synthetic) and those under --include-path"
    )


def task_manager(tasks: Sequence[str], include_paths: Sequence[Path]) -> Any:
    """lmms-eval's ``TaskManager`` over the platform's tasks and ``include_paths`` only, when that knows every
    one of ``tasks`` (indexing lmms-eval's hundreds of task files takes seconds); else over lmms-eval's own too."""
    from lmms_eval.tasks import TaskManager

    folders = [str(TASKS_DIR), *map(str, include_paths)]
    local = TaskManager("WARNING", include_path=folders, include_defaults=False)
    if all(task in local.all_tasks for task in tasks):
        return local
    return TaskManager("WARNING", include_path=folders)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vlsa_platform.lmms.task_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--tasks", nargs="+", required=True, help="lmms-eval task or group names")
    p.add_argument(
        "--include-path", type=Path, action="append", default=[], help="another folder of task files"
    )
    args = p.parse_args(argv)
    tasks = list(dict.fromkeys(args.tasks))
    message = unknown_tasks(tasks, task_manager(tasks, args.include_path).all_tasks)
    if message:
        print(message, file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SUGGESTIONS", "main", "task_manager", "unknown_tasks"]
