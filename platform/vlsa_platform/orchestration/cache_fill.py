"""The frozen-target cache, filled once per submission before its first trial.

Every trial of a submission shares one cache (``training.target_cache_root`` of the trials' storage root:
``<storage>/runs/<submission id>/<experiment>/targets``). Before Tune starts the first
trial, :func:`fill_for_submission` lists every image the experiment's runs read (each stage's mixture picks and
the validation set, for every ablation variant and every value a sweep's finite domains take) and computes the
missing VQ grids and VAE posterior parameters with Ray Data (:func:`.targets.fill_uris`), with the very frozen
weights each run's model holds (:func:`..train.frozen_targets.frozen_targets_for`), so a trial's loader finds
every entry and its frozen encoders see no image again. Entries that exist are only checked. Runs whose frozen
models are the same share one pass; a run that differs (another ``model`` section or seed) gets its own, and
its entries are shared wherever the fingerprints agree.

The counts are printed on one line and logged on the submission's parent run (:data:`FILL_METRICS`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..config.schema import Domain, ExperimentConfig
from ..config.sweep_section import SEED_KEY
from ..data.mixture import build_mixture_plan
from ..data.records import image_location
from ..data.targets import TARGET_KINDS
from ..train.batches import DataSources
from ..train.frozen_targets import frozen_targets_for, target_kinds
from .plan import expand_runs
from .targets import FillReport, fill_uris
from .training import target_cache_root

log = logging.getLogger(__name__)

#: Parent-run metrics of the fill, logged at step 0 (a resumed submission's pass is printed; the parent run
#: keeps the first launch's counts, as a metric step is sent once).
FILL_IMAGES, FILL_COMPUTED, FILL_REUSED, FILL_FAILED = (
    "cache/images",
    "cache/computed",
    "cache/reused",
    "cache/failed",
)
FILL_METRICS = (FILL_IMAGES, FILL_COMPUTED, FILL_REUSED, FILL_FAILED)
#: Parent-run metric (per target kind) of the images the fill's frozen encoders saw.
FILL_ENCODED = "cache/encoded/{kind}"

#: Most sweep settings enumerated to find what the trials read (a larger grid fills for the first ones;
#: trials compute the rest on a miss).
MAX_SWEEP_SETTINGS = 64


def stage_images(config: ExperimentConfig) -> list[str]:
    """Locations of the distinct images ``config``'s stages read: every stage's mixture picks (before weights:
    each epoch's records are among them) and the validation records; local paths made absolute."""
    validation = config.data.validation
    datasets = [e.dataset for stage in config.stages.values() for e in stage.mixture]
    sources = DataSources.read(config, datasets + ([validation.dataset] if validation else []))
    sizes = {name: len(records) for name, records in sources.records.items()}
    seen: dict[str, None] = {}

    def add(dataset: str, positions: Iterable[int]) -> None:
        records = sources.records[dataset]
        for position in positions:
            rel = records[int(position)].image
            if rel:
                uri = image_location(sources.image_roots[dataset], rel)
                seen.setdefault(uri if storage.is_s3(uri) else os.path.abspath(uri), None)

    for stage in config.stages.values():
        plan, held_out = build_mixture_plan(stage.mixture, sizes, config.seed, validation)
        for i, source in enumerate(plan.sources):
            add(source.dataset, plan.picked(i))
        if validation is not None and held_out is not None:
            add(validation.dataset, held_out)
    return list(seen)


def _values(domain: Domain) -> list[Any]:
    """A domain's finite values, or a continuous one's two ends (what decides whether a target is needed)."""
    for finite in (domain.grid, domain.choice):
        if finite is not None:
            return list(finite)
    return list(domain.uniform or domain.loguniform or ())


def run_configs(config: ExperimentConfig) -> list[ExperimentConfig]:
    """The configs the submission's trials train (ablation variants; a sweep's settings over its domains'
    values and seeds, at most :data:`MAX_SWEEP_SETTINGS`; the one run otherwise)."""
    if config.sweep is None:
        return [run.config for run in expand_runs(config)]
    space = {key: _values(domain) for key, domain in config.sweep.search_space.items()}
    if config.sweep.seeds > 1:
        space[SEED_KEY] = config.sweep.seed_values(config.seed)
    settings = itertools.islice(itertools.product(*space.values()), MAX_SWEEP_SETTINGS)
    return [config.trial(dict(zip(space, values, strict=True))) for values in settings]


@dataclass
class _Pass:
    """Runs whose frozen models are the same: one fill over the images they read."""

    config: ExperimentConfig
    kinds: set[str] = field(default_factory=set)
    uris: dict[str, None] = field(default_factory=dict)


def frozen_identity(run: ExperimentConfig) -> str:
    """What a run's frozen models and L_rec transform depend on: the VAE's source and geometry (for the
    ``tiny`` preset's random weights, drawn from the seed in the model's build order, the whole ``model``
    section and the added vocabulary), the VQ-VAE's source and, for ``tiny``, the seed it is drawn from."""
    model = run.model
    tiny = model.preset == "tiny"
    if tiny and model.tiny_weights == "random":
        vae: Any = [model.model_dump(mode="json"), run.data.cognition.vq_format, run.seed]
    else:
        vae = [
            model.preset,
            model.tiny_weights,
            model.weights.vae,
            model.grid_pinpoints,
            model.recon_resolution,
        ]
    return json.dumps([vae, model.weights.vq, run.seed if tiny else None], sort_keys=True, default=str)


def _passes(config: ExperimentConfig) -> list[_Pass]:
    """The submission's runs grouped by :func:`frozen_identity`; a group's config is one that has the
    reconstruction branch when a member needs VAE targets (its model holds the VAE)."""
    passes: dict[str, _Pass] = {}
    images: dict[str, list[str]] = {}  # by what decides them: the records are read once per data setting
    for run in run_configs(config):
        kinds = target_kinds(run)
        if not kinds:
            continue
        group = passes.setdefault(frozen_identity(run), _Pass(run))
        if "vae" in kinds and not group.config.model.recon:
            group.config = run
        group.kinds.update(kinds)
        mixtures = {name: [e.model_dump(mode="json") for e in s.mixture] for name, s in run.stages.items()}
        data = json.dumps([run.data.model_dump(mode="json"), mixtures, run.seed], sort_keys=True, default=str)
        if data not in images:
            images[data] = stage_images(run)
        group.uris.update(dict.fromkeys(images[data]))
    return list(passes.values())


def _ray_options(use_ray: bool) -> dict[str, Any]:
    """Actor pool of the fill: one actor per GPU where the cluster has GPUs (the encoders run there), else
    one per CPU up to 4; in this process without a connected Ray cluster."""
    if not use_ray:
        return {"use_ray": False}
    import ray

    if not ray.is_initialized():
        return {"use_ray": False}

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"use_ray": True, "concurrency": min(gpus, 8), "num_gpus": 1.0, "device": "cuda"}
    return {"use_ray": True, "concurrency": max(1, min(4, int(resources.get("CPU", 1))))}


def _merge(total: FillReport, part: FillReport) -> None:
    total.images += part.images
    total.computed += part.computed
    total.reused += part.reused
    total.failed.extend(part.failed)
    for kind, n in part.encoder_calls.items():
        total.encoder_calls[kind] = total.encoder_calls.get(kind, 0) + n


def summary(report: FillReport, seconds: float) -> str:
    """The fill's one line."""
    calls = ", ".join(f"{k} {n}" for k, n in sorted(report.encoder_calls.items())) or "none"
    return (
        f"target cache: {report.images} images, {report.computed} entries computed, {report.reused} reused, "
        f"{len(report.failed)} failed (encoded: {calls}) in {seconds:.1f} s"
    )


def fill_for_submission(
    config: ExperimentConfig,
    storage_root: str,
    *,
    use_ray: bool = True,
    say: Callable[[str], None] = print,
    tracker: Any = None,
    batch_size: int = 16,
) -> FillReport:
    """Fill the experiment's frozen-target cache for every image its runs read, skipping existing entries.

    Args:
        config: the submission's experiment.
        storage_root: the trials' storage root (``SubmissionSpec.runs_root``; the cache is
            ``training.target_cache_root`` under it).
        use_ray: Ray Data on the connected cluster (:func:`_ray_options`; in this process when none is
            connected); else in this process.
        say: where the summary line goes.
        tracker: the parent run's tracker (``None``: nothing logged).
        batch_size: images per batch of the fill.
    """
    started = time.perf_counter()
    root = target_cache_root(storage_root, config.name)
    options = _ray_options(use_ray)
    device = options.pop("device", "cpu")
    total = FillReport()
    for group in _passes(config):
        kinds = tuple(sorted(group.kinds))
        build = functools.partial(frozen_targets_for, group.config.resolved(), kinds, device)
        _merge(total, fill_uris(list(group.uris), root, build, kinds=kinds, batch_size=batch_size, **options))
    say(summary(total, time.perf_counter() - started))
    if tracker is not None:
        counts = (total.images, total.computed, total.reused, len(total.failed))
        metrics = dict(zip(FILL_METRICS, map(float, counts), strict=True))
        metrics.update(
            {FILL_ENCODED.format(kind=k): float(total.encoder_calls.get(k, 0)) for k in TARGET_KINDS}
        )
        tracker.log_metrics(metrics, step=0)
    return total


def fill_before_trials(
    config: ExperimentConfig, runs_root: str, say: Callable[[str], None], tracker: Any = None
) -> FillReport | None:
    """:func:`fill_for_submission` as a submission runs it before its first trial: the fill saves work but is
    not needed for a correct run (a trial computes what it misses), so a failure is reported on one line
    and in the driver's log, and the trials start anyway; ``None`` then. Skipped (``None``) for a submission
    of one run, whose stages share what its first stage writes, and with ``data.prefill_targets: false``."""
    if not config.data.prefill_targets or (config.sweep is None and len(expand_runs(config)) < 2):
        return None
    try:
        return fill_for_submission(config, runs_root, say=say, tracker=tracker)
    except Exception as exc:
        log.warning("the frozen-target fill failed", exc_info=True)
        say(
            f"target cache: the fill failed ({type(exc).__name__}: {exc}); the trials compute the frozen "
            "targets they miss themselves"
        )
        return None


__all__ = [
    "FILL_ENCODED",
    "FILL_METRICS",
    "MAX_SWEEP_SETTINGS",
    "fill_before_trials",
    "fill_for_submission",
    "frozen_identity",
    "run_configs",
    "stage_images",
    "summary",
]
