"""A submission: one Ray Tune experiment whose trials are the child runs of one MLflow parent run.

``run_submission`` is what ``vlsa-platform submit`` runs, on this machine (an embedded local Ray) or inside a
Ray job on a cluster (:mod:`.entry`). It

1. serves the tracking store to many writers (a local SQLite store gets one local ``mlflow server``,
   :func:`~vlsa_platform.tracking.store.shared_store`);
2. creates the parent run (experiment = the file's ``name``, run name = the submission id) with the resolved
   config, or re-attaches to it when resuming;
3. fills the experiment's frozen-target cache for every image its runs read, with Ray Data, skipping entries
   that exist (:mod:`.cache_fill`; counts on one line and on the parent run), so no trial encodes an image;
4. runs the trials as a ``ray.tune.Tuner`` (:mod:`.sweep` for the search space and searcher, :mod:`.decisions` for the scheduler): each
   trial is a small function trainable that calls :func:`.training.run_training` for its run, whose stages are
   Ray Train ``TorchTrainer`` s reporting to Tune through ``TuneReportCallback`` — only at validation points,
   so every Tune result carries the sweep's metric;
5. closes the parent run (``FINISHED``, or ``FAILED`` when a trial failed, ``KILLED`` when interrupted) and
   marks trials that ASHA stopped early (child run ``KILLED``, tag ``vlsa.early_stopped``).

Layout in the run storage (``storage.path``; default ``<workdir>/storage``)::

    <storage>/tune/<submission id>/            Tune's experiment folder (what ``resume`` restores)
    <storage>/runs/<submission id>/<experiment>/<trial>/   each trial's run (training.run_dir)

A submission's record (:mod:`.ledger`) keeps its id, where it runs, its storage and its parent run, so
``status``, ``logs``, ``stop`` and ``resume`` find it again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .. import storage
from ..config.schema import ExperimentConfig
from ..tracking import names
from ..tracking.report.queries import first_values
from ..tracking.store import LocalTrackingServer, TrackingStore, resolve_store, shared_store
from ..tracking.tracker import Tracker, git_commit
from . import eval_step
from .decisions import scheduler, worker_clock
from .plan import estimated_run_hours, expand_runs, model_numbers, remember_model_numbers, stage_placements
from .progress import ProgressCallback, ValidationReportCallback
from .submission_types import ClusterResourceError, SubmissionResult, SubmissionSpec, TrialOutcome
from .sweep import num_samples, param_space, search_algorithm, trial_run
from .training import run_dir, run_training

log = logging.getLogger(__name__)

PARENT_FILE = "vlsa_parent_run.json"
"""In Tune's experiment folder: the submission's MLflow parent run (what a resumed cluster job attaches to)."""
TRIAL_DRIVER_RESOURCES = {"memory": float(256 * 2**20)}
"""What each trial's driver reserves (the function that starts its stages' TorchTrainers and waits on them; the
trainers' workers reserve their own CPUs and GPUs): memory, not CPU. Even a fraction of a CPU per driver would
leave a whole-CPU worker of the last trial that fits without its CPU (two trials on a 2-CPU machine: 2.1 CPUs),
so trials the cluster fits would run one after the other."""
TAG_KIND = "vlsa.kind"
TAG_SUBMISSION = "vlsa.submission"


# ---------------------------------------------------------------------------------------------- the trial


def _trial(
    params: dict[str, Any],
    *,
    spec: dict[str, Any],
    tracking_uri: str,
    parent_run_id: str,
    model_numbers: Any = None,
    launch: str | None = None,
) -> None:
    """A Tune trial: train its run through every stage (resuming what an earlier attempt left; a stage that
    diverged in this ``launch`` of the submission is not trained again by Tune's retry)."""
    from ray import tune

    sub = SubmissionSpec.from_dict(spec)
    config = sub.experiment_config()
    if model_numbers is not None:  # the driver planned this model already: no model imports here
        remember_model_numbers(config, model_numbers)
    trial_id = tune.get_context().get_trial_id()
    chosen = trial_run(config, params, trial_id)
    metric = config.sweep.metric if config.sweep is not None else names.VAL_LOSS_LLM
    tags = {names.TAG_TRIAL_ID: trial_id, TAG_SUBMISSION: sub.submission_id}
    clock = worker_clock(config)
    evaluation = eval_step.for_trial(chosen.run.config, tracking_uri, metric, clock)
    # ASHA on a benchmark score: the trial's driver reports each evaluation and waits for its decisions
    # (eval_step); the workers report nothing Tune sees and wait for nothing
    scored = evaluation is not None and evaluation.metric is not None
    asha = config.sweep is not None and config.sweep.scheduler.kind == "asha" and not scored
    run_training(
        chosen.run,
        storage_root=sub.runs_root,
        store=TrackingStore(uri=tracking_uri),
        parent_run_id=parent_run_id,
        run_name=chosen.run.name,
        tags=tags,
        callbacks=[ValidationReportCallback(metric)],
        # ASHA posts its decisions (decisions.scheduler): a stopped trial trains no step past its rung
        await_decisions=metric if asha else None,
        rung_clock=clock,  # ASHA's clock in every report; waits only where it decides
        launch=launch,
        after_stage=evaluation,
    )


# --------------------------------------------------------------------------------------------- the driver


def trial_resources(config: ExperimentConfig) -> dict[str, float]:
    """The most any stage of a run (or its evaluation step) asks of the cluster at once (CPU, GPU,
    ``accelerator_type:X``), for bounding concurrency and failing fast on a cluster that cannot run it."""
    need: dict[str, float] = {}
    for run in expand_runs(config):
        for placement in stage_placements(run).values():
            per_worker = {"CPU": float(1 + config.data.loader_workers)}
            if placement.use_gpu:
                per_worker["GPU"] = 1.0
            kwargs = placement.scaling_config_kwargs()
            if kwargs.get("accelerator_type"):
                per_worker[f"accelerator_type:{kwargs['accelerator_type']}"] = 0.001
            for key, value in per_worker.items():
                need[key] = max(need.get(key, 0.0), value * placement.num_workers)
    if config.evaluate is not None:  # the evaluation step runs between stages: the larger of the two
        options = eval_step.evaluation_resources(config.evaluate, config)
        evaluation = {
            "CPU": float(options["num_cpus"]),
            "GPU": float(options["num_gpus"]),
            **options["resources"],
        }
        for key, value in evaluation.items():
            if value:
                need[key] = max(need.get(key, 0.0), value)
    return need


def _fits(cluster: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many trials needing ``need`` fit in ``cluster`` at once (0: none)."""
    counts = []
    for key, amount in need.items():
        have = float(cluster.get(key, 0.0))
        if key.startswith("accelerator_type:"):
            counts.append(1_000_000 if have > 0 else 0)
        else:
            counts.append(int(have // amount) if amount > 0 else 1_000_000)
    return min(counts) if counts else 1


def wait_for_resources(
    need: Mapping[str, float], timeout_s: float, say: Callable[[str], None] = print
) -> int:
    """Wait (at most ``timeout_s``) until the cluster can hold one trial; return how many fit at once.
    Raises :class:`ClusterResourceError` naming what is missing."""
    import time

    import ray

    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        cluster = ray.cluster_resources()
        fits = _fits(cluster, need)
        if fits > 0:
            return fits
        missing = {
            key: amount
            for key, amount in need.items()
            if float(cluster.get(key, 0.0)) < (amount if not key.startswith("accelerator_type:") else 1e-9)
        }
        described = ", ".join(
            f"accelerator class {k.split(':', 1)[1]}" if k.startswith("accelerator_type:") else f"{v:g} {k}"
            for k, v in missing.items()
        )
        if time.monotonic() >= deadline:
            have = ", ".join(f"{k}={v:g}" for k, v in sorted(cluster.items()) if not k.startswith("node:"))
            raise ClusterResourceError(
                f"the cluster cannot run a trial: it needs {described} (the cluster has {have}); waited "
                f"{timeout_s:.0f}s for it to appear (--resource-timeout)"
            )
        if not told:
            say(f"waiting up to {timeout_s:.0f}s for the cluster to offer {described}")
            told = True
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def _parent_run(sub: SubmissionSpec, config: ExperimentConfig, store: TrackingStore) -> Tracker:
    if sub.parent_run_id:
        tracker = Tracker.for_run(sub.parent_run_id, store=store)
        tracker.reopen()
        tracker.set_tags({TAG_SUBMISSION: sub.submission_id})
        return tracker
    tags = {
        **names.run_tags(scale=config.model.preset, git_commit=git_commit()),
        TAG_KIND: config.kind,
        TAG_SUBMISSION: sub.submission_id,
    }
    tracker = Tracker.start_parent(config.name, sub.submission_id, tags=tags, store=store)
    tracker.log_config(config.resolved())
    # what ``report`` sets beside each child's measured cost/gpu_hours
    tracker.log_params(
        names.estimate_params(estimated_run_hours(config), per_variant=config.ablation is not None)
    )
    tracker.log_text(config.description or config.name, "description.txt")
    return tracker


DRIVER_ENV = {
    # Trials report only results that carry the metric (progress.ValidationReportCallback); Tune's own
    # bookkeeping results do not, and its strict check would reject them.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Tune's own tables stay off (verbose=0 on the legacy reporter); progress.ProgressCallback prints.
    "RAY_AIR_NEW_OUTPUT": "0",
    # MLflow prints "View run ... at <url>" for every run it ends; the summary names the parent run.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@contextlib.contextmanager
def _driver_env() -> Iterator[None]:
    """:data:`DRIVER_ENV` for the duration of a submission."""
    old = {key: os.environ.get(key) for key in DRIVER_ENV}
    os.environ.update(DRIVER_ENV)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_submission(
    sub: SubmissionSpec,
    *,
    resume: bool = False,
    say: Callable[[str], None] = print,
    on_parent: Callable[[str, str], None] | None = None,
    tracking_server: LocalTrackingServer | None = None,
) -> SubmissionResult:
    """Run (or, with ``resume``, continue) a submission on the connected Ray cluster.

    Args:
        sub: the submission.
        resume: restore the Tune experiment at ``sub.tune_path`` (finished trials are not run again;
            interrupted and failed ones continue from their last checkpoint).
        say: where progress lines go.
        on_parent: called with ``(parent run id, tracking URI)`` as soon as the parent run exists.
        tracking_server: the local store's server (``tracking.store.server_for``), launched by the caller
            before Ray so that both come up together; the caller stops it. ``None``: started here as needed.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("run_submission needs a Ray cluster: call ray.init() first")
    config = sub.experiment_config()
    fits = wait_for_resources(trial_resources(config), sub.resource_timeout_s, say)
    wanted = config.sweep.max_concurrent_trials if config.sweep is not None else None
    concurrent = min(fits, wanted) if wanted else fits

    store = resolve_store(sub.tracking_uri, sub.workdir)
    parent_file = storage.join(sub.tune_path, PARENT_FILE)
    if resume and not sub.parent_run_id and storage.exists(parent_file):
        # a cluster job's resume: the client never learnt the parent run the first job created
        sub.parent_run_id = json.loads(storage.read_text(parent_file)).get("parent_run_id")
    with _driver_env(), shared_store(store, tracking_server) as served:
        parent = _parent_run(sub, config, served)
        sub.parent_run_id = parent.run_id
        storage.write_text(parent_file, json.dumps({"parent_run_id": parent.run_id}))
        if on_parent is not None:
            on_parent(parent.run_id, store.uri)
        metric = config.sweep.metric if config.sweep is not None else names.VAL_LOSS_LLM
        mode = config.sweep.mode if config.sweep is not None else "min"
        progress = ProgressCallback(config, sub, served.uri, parent.run_id, metric=metric, mode=mode, say=say)
        status = "FAILED"
        interrupted = False
        trials: list[TrialOutcome] = []
        try:
            # Before the first trial: every image the runs read gets its frozen targets once, for all trials.
            from .cache_fill import fill_before_trials  # the data and model stack, only when one runs

            fill_before_trials(config, sub.runs_root, say, tracker=parent)
            tuner = _tuner(sub, config, served.uri, parent.run_id, progress, resume, concurrent, say)
            say(
                f"{config.kind} {sub.submission_id}: up to {concurrent} trial"
                f"{'s' if concurrent != 1 else ''} at once (the cluster fits {fits})"
            )
            trials = _with_first_values(progress.outcomes(tuner.fit()), served.uri, parent.run_id, metric)
            interrupted = any(t.status in ("not run", "interrupted") for t in trials)
            status = "FAILED" if any(t.status == "failed" for t in trials) else "FINISHED"
            if interrupted:
                status = "KILLED"
        except KeyboardInterrupt:
            interrupted = True
            status = "KILLED"
            raise
        finally:
            progress.close_stopped_children()
            parent.set_tags({"vlsa.status": status.lower()})
            parent.close(status=status, timeout=30)
    return SubmissionResult(sub, parent.run_id, store.uri, trials, interrupted=interrupted)


def _with_first_values(
    trials: list[TrialOutcome], tracking_uri: str, parent_run_id: str, metric: str
) -> list[TrialOutcome]:
    """``trials`` with :attr:`TrialOutcome.first` holding ``metric`` at each trial's first validation, read
    from its MLflow run's history (right across a resume, unlike what this launch's callbacks saw); left
    empty where MLflow cannot say: tracking must never end a sweep."""
    try:
        first = first_values(tracking_uri, parent_run_id, metric)
    except Exception as err:
        log.warning("could not read the first %s of the trials from MLflow: %s", metric, err)
        return trials
    for trial in trials:
        if trial.trial_id in first:
            trial.first = {metric: first[trial.trial_id]}
    return trials


def _tuner(
    sub: SubmissionSpec,
    config: ExperimentConfig,
    tracking_uri: str,
    parent_run_id: str,
    progress: ProgressCallback,
    resume: bool,
    concurrent: int,
    say: Callable[[str], None],
) -> Any:
    """The submission's ``tune.Tuner``: restored from ``sub.tune_path`` when resuming one that Tune can
    restore, else new (its searcher running at most ``concurrent`` trials at once); ``progress`` its callback."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            spec=sub.to_dict(),
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
            model_numbers=model_numbers(config),
            launch=uuid.uuid4().hex,  # this driver's launch (submit or resume): see run_training
        ),
        TRIAL_DRIVER_RESOURCES,
    )
    fs = storage.arrow_filesystem(sub.tune_root)
    if resume and tune.Tuner.can_restore(sub.tune_path, storage_filesystem=fs):
        say(f"resuming {sub.submission_id} from {sub.tune_path}")
        tuner = tune.Tuner.restore(
            _tune_location(sub.tune_path),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            restart_errored=False,
            storage_filesystem=fs,
            param_space=param_space(config),
        )
        # Tune restores the callbacks it pickled; this launch's (terminal, tracking server) replace them.
        tuner._local_tuner.get_run_config().callbacks = [progress]
        return tuner
    return tune.Tuner(
        trainable,
        param_space=param_space(config),
        tune_config=tune.TuneConfig(
            metric=progress.metric,
            mode=progress.mode,
            search_alg=search_algorithm(config, concurrent),
            scheduler=scheduler(config, functools.partial(run_dir, sub.runs_root, config.name)),
            num_samples=num_samples(config),
        ),
        run_config=tune.RunConfig(
            name=sub.submission_id,
            storage_path=_tune_location(sub.tune_root),
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=config.storage.max_failures),
            callbacks=[progress],
            verbose=0,
        ),
    )


def _tune_location(path: str) -> str:
    """Tune's ``storage_path`` for a location: the bucket/prefix without ``s3://`` (with its filesystem)."""
    return path[len("s3://") :] if storage.is_s3(path) else path


__all__ = [
    "ClusterResourceError",
    "SubmissionResult",
    "SubmissionSpec",
    "TrialOutcome",
    "run_submission",
    "trial_resources",
    "wait_for_resources",
]
