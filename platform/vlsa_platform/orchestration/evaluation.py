"""An export evaluated through lmms-eval in the evaluation environment, its scores logged to MLflow.

lmms-eval lives in its own interpreter (``make install-eval``: ``.venv/eval``; docs/evaluation.md), so this side
runs :mod:`vlsa_platform.lmms.run` there in a subprocess (:func:`run_lmms_eval`: the environment passed
through, so ``HF_HOME`` and the offline switches reach it; its output copied to ``lmms_eval.log`` and, when
asked, echoed; a timeout), reads the ``results.json`` it writes (:class:`~vlsa_platform.lmms.results.EvalResults`)
and logs it through the platform's :class:`~vlsa_platform.tracking.tracker.Tracker` (:func:`log_results`):
each score as ``eval/<task>/<metric>`` at the export's global step, a ``vlsa.eval.<task>.status`` tag per task
(and ``.error`` for a failed one), the whole output folder as the artifact folder ``eval/<stage>/``. The scores
of the tasks that finished are logged whatever happened to the others (a failed task, a timeout, a crash).

:func:`evaluate` is the on-demand step of ``vlsa-platform evaluate``: into a given MLflow run, or a new run of
the config's experiment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..lmms.results import FAILED, FINISHED, PENDING, REFUSAL_FILE, RESULTS_FILE, EvalResults
from ..tracking import names
from ..tracking.client import mlflow_client
from ..tracking.store import TrackingStore
from ..tracking.tracker import Tracker, git_commit

#: The evaluation environment's interpreter, when not ``<this environment>/eval/bin/python``.
EVAL_PYTHON_ENV = "VLSA_EVAL_PYTHON"
#: What the subprocess runs.
RUN_MODULE = "vlsa_platform.lmms.run"
#: The subprocess's output (stdout and stderr), in the output folder.
LOG_FILE = "lmms_eval.log"
#: Default limit on one evaluation's wall time.
DEFAULT_TIMEOUT_S = 6 * 3600.0
#: Seconds a timed-out evaluation gets between SIGTERM and SIGKILL.
_KILL_GRACE_S = 10.0
#: Longest error text kept in a tag (the whole traceback is an artifact).
_TAG_ERROR_CHARS = 500
#: Seconds to send what is queued for MLflow when the evaluation ends.
_CLOSE_TIMEOUT_S = 60.0

Echo = Callable[[str], None]


class EvaluationError(RuntimeError):
    """The evaluation could not run (its process died before evaluating anything)."""


class EvaluationInputError(EvaluationError):
    """Bad input, refused before any model loads: an unknown task, an export that is not the config's model,
    a bad config, an unknown MLflow run, no evaluation environment."""


def eval_python() -> Path:
    """The evaluation environment's interpreter: ``$VLSA_EVAL_PYTHON``, else ``<sys.prefix>/eval/bin/python``
    (``make install-eval`` builds ``.venv/eval`` inside the project's ``.venv``). Raises
    :class:`EvaluationInputError` when it is not there."""
    configured = os.environ.get(EVAL_PYTHON_ENV, "").strip()
    python = Path(configured) if configured else Path(sys.prefix) / "eval" / "bin" / "python"
    if not (python.is_file() and os.access(python, os.X_OK)):
        where = f"${EVAL_PYTHON_ENV}={configured}" if configured else str(python)
        raise EvaluationInputError(
            f"no evaluation environment: {where} is not an interpreter. `make install-eval` builds it "
            f"(.venv/eval, with lmms-eval); or point ${EVAL_PYTHON_ENV} at the python of an environment "
            "holding lmms-eval and this project"
        )
    return python


#: What :func:`check_tasks` runs.
TASK_CHECK_MODULE = "vlsa_platform.lmms.task_check"
#: Seconds lmms-eval gets to index its tasks for :func:`check_tasks`.
TASK_CHECK_TIMEOUT_S = 300.0


def check_tasks(
    tasks: Sequence[str], include_paths: Sequence[str | Path] = (), *, python: Path | None = None
) -> None:
    """Look ``tasks`` up in lmms-eval's task index in the evaluation environment, loading no model. Raises
    :class:`EvaluationInputError` naming the unknown ones (with the closest known names), or the missing
    environment."""
    python = python or eval_python()
    command = [str(python), "-m", TASK_CHECK_MODULE, "--tasks", *tasks]
    for folder in include_paths:
        command += ["--include-path", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TASK_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EvaluationError(f"lmms-eval did not list its tasks within {TASK_CHECK_TIMEOUT_S:g} s") from None
    if done.returncode == 0:
        return
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if done.returncode == 2 and lines:
        raise EvaluationInputError(lines[-1])
    raise EvaluationError(f"listing lmms-eval's tasks failed (exit {done.returncode}): {done.stderr[-2000:]}")


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and how (the arguments of :mod:`vlsa_platform.lmms.run`)."""

    export: Path
    """The exported stage: a checkpoint's ``model/`` folder."""
    config: Path
    """The run's experiment config (its ``config/resolved.yaml``, or the experiment file with ``scale``)."""
    tasks: tuple[str, ...]
    """lmms-eval task or group names, evaluated one at a time in this order."""
    scale: str | None = None
    limit: int | None = None
    """Documents per task (``None``: all)."""
    batch_size: int = 1
    device: str = "cpu"
    include_paths: tuple[Path, ...] = ()
    """Folders of more task files (beside lmms-eval's own and the platform's)."""
    timeout_s: float = DEFAULT_TIMEOUT_S

    def command(self, python: Path, out: Path) -> list[str]:
        command = [str(python), "-m", RUN_MODULE, "--export", str(self.export), "--config", str(self.config)]
        command += ["--tasks", *self.tasks, "--batch-size", str(self.batch_size), "--device", self.device]
        command += ["--out", str(out)]
        if self.scale:
            command += ["--scale", self.scale]
        if self.limit is not None:
            command += ["--limit", str(self.limit)]
        for folder in self.include_paths:
            command += ["--include-path", str(folder)]
        return command


@dataclass(frozen=True)
class ExportInfo:
    """What an export says of itself (``export.json``)."""

    stage: str | None
    global_step: int

    @classmethod
    def read(cls, export: Path) -> ExportInfo:
        from ..train.build import EXPORT_INFO_FILE  # train.build imports torch: not at the CLI's start

        try:
            info = json.loads((export / EXPORT_INFO_FILE).read_text())
        except (OSError, ValueError):
            info = {}
        return cls(stage=info.get("stage"), global_step=int(info.get("global_step") or 0))


def _copy_lines(stream: IO[str], log: IO[str], echo: Echo | None) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        if echo is not None:
            echo(line.rstrip("\n"))


def _run_logged(command: list[str], log_path: Path, timeout_s: float, echo: Echo | None) -> int | None:
    """Run ``command`` (its own process group), its output to ``log_path`` and ``echo``; its exit status, or
    ``None`` when it ran past ``timeout_s`` and was ended."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        ) as process,
    ):
        assert process.stdout is not None
        reader = threading.Thread(target=_copy_lines, args=(process.stdout, log, echo), daemon=True)
        reader.start()
        try:
            code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=_KILL_GRACE_S)
    return code


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def run_lmms_eval(
    request: EvalRequest, out: Path, *, python: Path | None = None, echo: Echo | None = None
) -> EvalResults:
    """Run :mod:`vlsa_platform.lmms.run` for ``request`` in the evaluation environment, writing into ``out``;
    its results, with the tasks it never finished (it timed out or died) marked failed and ``results.json``
    rewritten so. Raises :class:`EvaluationInputError` for a refused input (or an ``out`` that is not empty: what
    is in it would be taken for this evaluation's), :class:`EvaluationError` when it evaluated nothing."""
    python = python or eval_python()
    if out.exists() and any(out.iterdir()):
        raise EvaluationInputError(f"the output folder {out} is not empty: give a new one")
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG_FILE
    code = _run_logged(request.command(python, out), log, request.timeout_s, echo)
    if (out / REFUSAL_FILE).is_file():
        raise EvaluationInputError((out / REFUSAL_FILE).read_text().strip())
    ended = f"timed out after {request.timeout_s:g} s" if code is None else f"exited with status {code}"
    if not (out / RESULTS_FILE).is_file():
        raise EvaluationError(
            f"the evaluation process {ended} before evaluating anything; its log ends:\n{_tail(log)}"
        )
    results = EvalResults.read(out)
    for outcome in results.tasks.values():
        if outcome.status == PENDING:
            outcome.status, outcome.error = FAILED, f"not evaluated: the evaluation process {ended} first"
    results.write(out)
    return results


def log_results(tracker: Any, results: EvalResults, out: Path, *, step: int, artifact_dir: str) -> None:
    """Queue ``results`` on ``tracker`` (a :class:`Tracker`, or anything with its ``log_metrics``, ``set_tags``
    and ``log_artifact_file``): the scores as ``eval/<task>/<metric>`` at ``step``, each task's status tag
    (and error tag), and every file under ``out`` beneath ``artifact_dir``."""
    tracker.log_metrics(
        {names.eval_metric(score): value for score, value in results.scores.items()}, step=step
    )
    tags: dict[str, str] = {}
    for task, outcome in results.tasks.items():
        tags[names.eval_status_tag(task)] = FINISHED if outcome.status == FINISHED else FAILED
        if outcome.error:
            tags[names.eval_error_tag(task)] = outcome.error[:_TAG_ERROR_CHARS]
    tracker.set_tags(tags)
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        folder = path.relative_to(out).parent
        tracker.log_artifact_file(
            path, artifact_dir if folder == Path() else f"{artifact_dir}/{folder.as_posix()}"
        )


@dataclass
class EvaluationOutcome:
    """An evaluation's results and where they went."""

    results: EvalResults
    out: Path
    """The output folder (``results.json``, ``raw/``, ``errors/``, ``lmms_eval.log``)."""
    run_id: str | None = None
    """The MLflow run logged into (``None``: not tracked)."""
    step: int = 0
    """The step the scores were logged at (the export's global step)."""
    tracking: dict[str, int] = field(default_factory=dict)
    """The tracker's counts (``sent``, ``dropped``, ``duplicates``...); ``dropped`` > 0: not all was logged."""


def _check_run(store: TrackingStore, run_id: str) -> None:
    try:
        mlflow_client(store).get_run(run_id)
    except Exception as err:  # MLflow raises its own exception types for an unknown id or a bad store
        raise EvaluationInputError(f"no MLflow run {run_id} in {store.uri}: {err}") from None


def _new_run(request: EvalRequest, store: TrackingStore, info: ExportInfo) -> Tracker:
    """A run for an evaluation given no run: in the config's experiment, named after the export's stage, with
    the config as params."""
    from ..config.errors import ConfigError
    from ..config.loader import load_experiment

    try:
        config = load_experiment(request.config, scale=request.scale)  # type: ignore[arg-type]
    except ConfigError as err:
        raise EvaluationInputError(str(err)) from None
    tags = {
        **names.run_tags(scale=config.model.preset, git_commit=git_commit()),
        "vlsa.eval.export": str(request.export),
    }
    name = f"evaluate {info.stage or request.export.name} {time.strftime('%Y%m%d-%H%M%S')}"
    tracker = Tracker.start_parent(config.name, name, tags, store=store)
    tracker.log_config(config.resolved())
    return tracker


def evaluate(
    request: EvalRequest,
    out: Path,
    *,
    store: TrackingStore | None,
    run_id: str | None = None,
    echo: Echo | None = None,
) -> EvaluationOutcome:
    """Evaluate ``request`` into ``out`` and log it into MLflow run ``run_id`` (a new run of the config's
    experiment when ``None``; nothing logged when ``store`` is ``None``). The run is checked before the
    evaluation starts, and an input the evaluation refuses creates no run. Raises
    :class:`EvaluationInputError` and :class:`EvaluationError` (:func:`run_lmms_eval`)."""
    python = eval_python()
    info = ExportInfo.read(request.export)
    if store is not None and run_id is not None:
        _check_run(store, run_id)
    results = run_lmms_eval(request, out, python=python, echo=echo)
    outcome = EvaluationOutcome(results, out, step=info.global_step)
    if store is None:
        return outcome
    tracker = Tracker.for_run(run_id, store=store) if run_id else _new_run(request, store, info)
    log_results(
        tracker, results, out, step=info.global_step, artifact_dir=names.eval_artifact_dir(info.stage)
    )
    status = None if run_id else ("FAILED" if results.failed else "FINISHED")
    tracker.close(status=status, timeout=_CLOSE_TIMEOUT_S)
    outcome.run_id, outcome.tracking = tracker.run_id, tracker.stats()
    return outcome


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EVAL_PYTHON_ENV",
    "LOG_FILE",
    "RUN_MODULE",
    "EvalRequest",
    "EvaluationError",
    "EvaluationInputError",
    "EvaluationOutcome",
    "ExportInfo",
    "check_tasks",
    "eval_python",
    "evaluate",
    "log_results",
    "run_lmms_eval",
]
