"""One evaluation of an export through lmms-eval, run by the evaluation environment's interpreter:
``python -m vlsa_platform.lmms.run --export DIR --config FILE --tasks T [T ...] --out DIR``.

``vlsa-platform evaluate`` (``orchestration.evaluation``) runs it in a subprocess and reads what it writes.

1. Before any model loads: every task name is looked up in lmms-eval's ``TaskManager`` (its own tasks, the
   platform's :data:`~vlsa_platform.lmms.TASKS_DIR` and each ``--include-path``) — an unknown one is refused,
   named, with the closest known names — and the export is checked against the config
   (:func:`.loading.check_export`). A refusal is written to ``refused.txt`` and on stderr; exit 2.
2. The model is built once; each task (or group) is then evaluated on its own
   (``lmms_eval.evaluator.simple_evaluate(model=..., tasks=[task])``), so a task that raises is recorded as
   failed, its traceback in ``errors/<task>.txt``, and the next one runs; the finished ones keep their scores.
3. ``results.json`` (:class:`.results.EvalResults`: each task's status, the flat scores) is rewritten after
   every task, so a process killed midway (timeout, out of memory) leaves the scores of the tasks before;
   ``raw/<task>.json`` holds lmms-eval's results of the task, ``raw/<task>.samples.json`` its logged samples.

Exit status: 0 every task finished; 1 one or more failed (the others' scores are in); 2 refused.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.errors import ConfigError
from ..exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from .loading import ExportError, check_export
from .results import (
    ERRORS_DIR,
    FAILED,
    FINISHED,
    RAW_DIR,
    REFUSAL_FILE,
    EvalResults,
    TaskOutcome,
    flat_scores,
)
from .task_check import task_manager, unknown_tasks


class Refused(ValueError):
    """The input cannot be evaluated (unknown task, bad export or config); nothing was loaded."""


def _resident_model(**kwargs: Any) -> Any:
    """The VLSA lmms-eval model, kept loaded across ``simple_evaluate`` calls.

    lmms-eval 0.7.3's ``evaluate`` ends with ``lm.clean()``, which deletes every ``nn.Module`` attribute of the
    model object (to free a GPU for a local judge model): a second task would find no model. Evaluating one
    task at a time with one load needs the weights to stay, so ``clean`` does nothing here; they go when the
    process ends.
    """
    from .model import VLSA

    class ResidentVLSA(VLSA):
        def clean(self) -> None:
            """Keep the model (see :func:`_resident_model`)."""

    return ResidentVLSA(**kwargs)


def _file_name(task: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", task).strip(".") or "_"


def _write_raw(out: Path, task: str, found: dict[str, Any]) -> None:
    """lmms-eval's results of ``task`` (samples apart), with what JSON cannot hold as text (lmms-eval's own
    ``handle_non_serializable``)."""
    from lmms_eval.utils import handle_non_serializable

    raw = out / RAW_DIR
    raw.mkdir(exist_ok=True)
    samples = found.pop("samples", None)
    text = json.dumps(found, indent=2, default=handle_non_serializable)
    (raw / f"{_file_name(task)}.json").write_text(text)
    if samples is not None:
        text = json.dumps(samples, default=handle_non_serializable)
        (raw / f"{_file_name(task)}.samples.json").write_text(text)


def _underlying(err: BaseException) -> BaseException:
    """The error behind tenacity's ``RetryError`` (lmms-eval retries a task's ``process_results``, so a task
    function that raises surfaces as ``RetryError[<Future ...>]``, which names nothing)."""
    attempt = getattr(err, "last_attempt", None)
    if attempt is not None and getattr(attempt, "failed", False):
        return _underlying(attempt.exception())
    return err


def record_failure(out: Path, task: str, err: BaseException) -> str:
    """Write the traceback (and the underlying error's) to ``errors/<task>.txt``; the error as one line."""
    errors = out / ERRORS_DIR
    errors.mkdir(exist_ok=True)
    cause = _underlying(err)
    text = "".join(traceback.format_exception(err))
    if cause is not err:
        text += "\nThe error behind it:\n" + "".join(traceback.format_exception(cause))
    (errors / f"{_file_name(task)}.txt").write_text(text)
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def _evaluate_each(
    model: Any, manager: Any, results: EvalResults, out: Path, args: argparse.Namespace
) -> None:
    """Evaluate the tasks one by one, writing ``results.json`` after each."""
    from lmms_eval.evaluator import simple_evaluate

    for task, outcome in results.tasks.items():
        start = time.monotonic()
        try:
            found = simple_evaluate(
                model=model,
                tasks=[task],
                limit=args.limit,
                batch_size=args.batch_size,
                device=args.device,
                task_manager=manager,
                log_samples=True,
                verbosity="WARNING",
            )
            if found is None:  # only a non-zero rank gets None; this is one process
                raise RuntimeError("lmms-eval returned no results")
            results.scores.update(flat_scores(found["results"]))
            _write_raw(out, task, found)
            outcome.status = FINISHED
        except Exception as err:  # a task's failure is its own: the next task still runs
            outcome.status, outcome.error = FAILED, record_failure(out, task, err)
            print(f"vlsa_platform.lmms.run: task {task} failed: {outcome.error}", file=sys.stderr)
        outcome.seconds = round(time.monotonic() - start, 3)
        results.write(out)


def evaluate(args: argparse.Namespace) -> EvalResults:
    """Check, load once, evaluate each task (module docstring). Raises :class:`Refused`."""
    tasks = list(dict.fromkeys(args.tasks))
    manager = task_manager(tasks, args.include_path)
    message = unknown_tasks(tasks, manager.all_tasks)
    if message:
        raise Refused(message)
    try:
        check_export(args.export, args.config, args.scale)
    except (ExportError, ConfigError) as err:
        raise Refused(str(err)) from None
    out: Path = args.out
    results = EvalResults(
        export=str(args.export),
        tasks={task: TaskOutcome() for task in tasks},
        limit=args.limit,
        lmms_eval_version=importlib.metadata.version("lmms-eval"),
    )
    results.write(out)
    try:
        model = _resident_model(
            pretrained=str(args.export),
            config=str(args.config),
            scale=args.scale,
            batch_size=args.batch_size,
            device=args.device,
        )
    except ExportError as err:  # the tensors' names or shapes differ from the config's model
        raise Refused(str(err)) from None
    _evaluate_each(model, manager, results, out, args)
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlsa_platform.lmms.run", description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, required=True, help="the exported stage (a checkpoint's model/)")
    p.add_argument("--config", type=Path, required=True, help="the run's experiment config (resolved.yaml)")
    p.add_argument(
        "--scale", choices=("paper", "tiny"), default=None, help="as the run had it, if not resolved"
    )
    p.add_argument("--tasks", nargs="+", required=True, help="lmms-eval task or group names")
    p.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    p.add_argument("--batch-size", type=int, default=1, help="questions per generate or forward call")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--include-path", type=Path, action="append", default=[], help="another folder of task files"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (results.json, raw/, errors/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = evaluate(args)
    except Refused as err:
        (args.out / REFUSAL_FILE).write_text(str(err))
        print(f"vlsa_platform.lmms.run: {err}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_FAILED if results.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Refused",
    "evaluate",
    "main",
    "parser",
    "record_failure",
]
