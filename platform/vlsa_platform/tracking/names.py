"""The MLflow names DESIGN.md §4 fixes — one source of truth for metrics, params, tags and artifacts.

Acceptance checks and ``report`` query MLflow by these strings, so code that logs or reads a run imports them
from here instead of spelling them out. :func:`flatten_params` turns the resolved config
(:meth:`ExperimentConfig.resolved`) into MLflow params: dotted keys (``stages.stage2.loss.rec_weight``), lists
and mappings as JSON, every key and value within MLflow's limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from ..config.schema import METRICS as _SCHEMA_METRICS

# ------------------------------------------------------------------------------------------------ metrics

LOSS_TOTAL = "loss/total"
"""The optimised loss: ``llm_weight * loss/llm + rec_weight * loss/rec``."""
LOSS_LLM = "loss/llm"
"""Next-token cross-entropy over all supervised tokens."""
LOSS_REC = "loss/rec"
"""Flow-matching reconstruction loss L_rec (Eq. 3) of the SD3 denoiser."""
LOSS_VQ = "loss/vq"
"""Token-level part of the LLM loss on the VQ-codebook answer tokens (cognition alignment)."""
LOSS_PX = "loss/px"
"""Token-level part of the LLM loss on the pixel-value answer tokens (cognition alignment)."""
LR = "lr"
"""Learning rate of the first parameter group after the schedule (each group also as ``lr/<group>``)."""
STAGE = "stage"
"""Index of the running stage (0-based, in the order the experiment file writes them)."""
THROUGHPUT = "throughput/samples_per_s"
"""Training samples per second over all workers since the last log."""
VAL_LOSS_LLM = "val/loss_llm"
"""``loss/llm`` on the held-out validation samples (mean over every rank's validation micro-batches)."""
VAL_LOSS_REC = "val/loss_rec"
"""``loss/rec`` on the held-out validation samples, with the same timesteps and noise on every pass."""
VAL_EXACT_MATCH = "val/exact_match"
"""Fraction of held-out questions whose greedily decoded answer equals the reference (after normalising case,
whitespace and trailing punctuation; ``vlsa_platform.eval.answers``)."""
VAL_VQ_ACCURACY = "val/vq_accuracy"
"""Fraction of the VQ window indices right in greedily decoded VQ cognition answers (an unparsable answer counts
as all wrong); NaN when the decoded validation samples hold no VQ question."""
VAL_PX_ACCURACY = "val/px_accuracy"
"""Fraction of RGB values within 8 (of 255) of the truth in greedily decoded pixel cognition answers (an
unparsable answer counts as all wrong); NaN when the decoded validation samples hold no pixel question."""
VAL_PSNR = "val/psnr"
"""Reconstruction PSNR in dB (pixels in [0, 1]) of the frozen VAE's decoding of the denoised latent estimate
against the validation image, averaged over images; NaN without ``recon``."""
COST_GPU_HOURS = "cost/gpu_hours"
"""Device-hours used so far (``vlsa_platform.cluster.gpu_hours``; 0 on CPU workers)."""

EVAL_PREFIX = "eval/"
"""Benchmark scores from lmms-eval (``vlsa-platform evaluate``): ``eval/<task>/<metric>`` (:func:`eval_metric`)."""


def eval_metric(score: str) -> str:
    """Metric key of an evaluation score named ``<task>/<metric>`` (``vlsa_platform.lmms.results``):
    ``eval/vlsa_synthetic_vqa/exact_match``."""
    return clean_key(EVAL_PREFIX + score)


# Every fixed metric key, in DESIGN §4's order (skipped-sample counts, :func:`skipped_metric`, come on top).
# The experiment schema owns the tuple (a sweep's ``metric`` must be one of them); the names above spell it.
METRICS = _SCHEMA_METRICS

SKIPPED_PREFIX = "data/skipped/"
SKIPPED_TOTAL = SKIPPED_PREFIX + "total"
"""Samples the data pipeline skipped so far, all reasons together."""

# --------------------------------------------------------------------------------------------------- tags

TAG_VARIANT = "vlsa.variant"
"""Ablation variant name (child runs of an ablation)."""
TAG_TRIAL_ID = "vlsa.trial_id"
"""Ray Tune trial id (child runs of a sweep)."""
TAG_SCALE = "vlsa.scale"
"""``paper`` or ``tiny``."""
TAG_GIT_COMMIT = "vlsa.git_commit"
"""Commit of the code that ran (``unknown`` outside a git checkout)."""
TAG_PARENT_RUN = "mlflow.parentRunId"
"""MLflow's own tag that nests a child run under its parent in the UI."""
TAG_RUN_NAME = "mlflow.runName"
TAG_FAILURE = "vlsa.failure"
"""Why the run's training stopped (set by the worker before it raises, e.g. a stage that diverged: its stage,
step and count of non-finite micro-batches in a row; ``training.on_nonfinite``)."""


def eval_status_tag(task: str) -> str:
    """Tag of an evaluated task's status (``finished`` or ``failed``): ``vlsa.eval.<task>.status``."""
    return clean_key(f"vlsa.eval.{path_part(task)}.status")


def eval_error_tag(task: str) -> str:
    """Tag of a failed task's error, one line (its traceback is an artifact): ``vlsa.eval.<task>.error``."""
    return clean_key(f"vlsa.eval.{path_part(task)}.error")


def shared_stage_tags(stage: str, run_id: str | None, run_name: str, prefix: str) -> dict[str, str]:
    """Tags of a run that adopted stage ``stage`` from the run that trained it (``run_id``, ``run_name``) instead
    of training it (a shared stage prefix; ``prefix`` = its folder in the run storage)."""
    base = f"vlsa.shared.{path_part(stage)}"
    tags = {f"{base}.run_name": run_name, f"{base}.prefix": prefix}
    if run_id:
        tags[f"{base}.run_id"] = run_id
    return tags


# ------------------------------------------------------------------------------------------------ params

ESTIMATE_GPU_HOURS = "estimate.gpu_hours"
"""Param of the parent run: the plan's estimated device-hours of one child run (every trial of a sweep is
planned alike; ``orchestration.estimate``), to set beside its measured ``cost/gpu_hours``. An ablation logs one
per variant, ``estimate.gpu_hours.<variant>``. Absent when the plan cannot price the run (CPU workers)."""


def estimate_params(by_run: Mapping[str, float | None], per_variant: bool) -> dict[str, str]:
    """The parent run's :data:`ESTIMATE_GPU_HOURS` params from ``{run name: estimated GPU-hours}`` (one key per
    variant when ``per_variant``, else the one run's); runs without an estimate are left out."""
    out = {}
    for run, hours in by_run.items():
        if hours is not None:
            out[f"{ESTIMATE_GPU_HOURS}.{run}" if per_variant else ESTIMATE_GPU_HOURS] = f"{hours:.6g}"
    return out


def estimated_gpu_hours(parent_params: Mapping[str, str], variant: str | None) -> float | None:
    """A child run's estimated device-hours as its parent logged them (:func:`estimate_params`): the
    variant's, else the one every child shares; ``None`` when there is none."""
    text = parent_params.get(f"{ESTIMATE_GPU_HOURS}.{variant}") if variant else None
    text = text if text is not None else parent_params.get(ESTIMATE_GPU_HOURS)
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- artifacts

ARTIFACT_RESOLVED_CONFIG = "config/resolved.yaml"
"""The resolved experiment config (``ExperimentConfig.resolved()``) as YAML."""
DEEPSPEED_DIR = "deepspeed"
RECON_DIR = "recon"
EVAL_DIR = "eval"
"""Artifact folder of an evaluation's output (``results.json``, lmms-eval's raw results, failed tasks'
tracebacks): ``eval/<stage>/`` for an export of a named stage (:func:`eval_artifact_dir`)."""


def eval_artifact_dir(stage: str | None = None) -> str:
    """``eval/<stage>`` (``eval`` when the export names no stage)."""
    return EVAL_DIR if not stage else f"{EVAL_DIR}/{path_part(stage)}"


def deepspeed_artifact(stage: str) -> str:
    """Artifact path of a stage's DeepSpeed config: ``deepspeed/<stage>.json``."""
    return f"{DEEPSPEED_DIR}/{path_part(stage)}.json"


def recon_artifact(step: int, stage: str | None = None) -> str:
    """Artifact path of the reconstruction panel at global ``step``: ``recon/step_000100.png``
    (``recon/<stage>/step_000100.png`` when a stage is named)."""
    folder = RECON_DIR if stage is None else f"{RECON_DIR}/{path_part(stage)}"
    return f"{folder}/step_{int(step):06d}.png"


def skipped_metric(reason: str) -> str:
    """Metric key of the skipped-sample count for ``reason``: ``data/skipped/missing_image``."""
    word = re.sub(r"[^\w]+", "_", reason.strip().lower()).strip("_") or "unknown"
    return SKIPPED_PREFIX + word


def path_part(name: str) -> str:
    """``name`` as one safe path segment (no slashes, no ``..``): artifact folders, run-storage folders."""
    part = re.sub(r"[^\w.\-]+", "_", name).strip(".") or "_"
    return part


def run_tags(
    *,
    scale: str | None = None,
    variant: str | None = None,
    trial_id: str | None = None,
    git_commit: str | None = None,
) -> dict[str, str]:
    """The ``vlsa.*`` tags of a run, leaving out the ones not given."""
    values = {TAG_SCALE: scale, TAG_VARIANT: variant, TAG_TRIAL_ID: trial_id, TAG_GIT_COMMIT: git_commit}
    return {key: str(value) for key, value in values.items() if value is not None}


# ------------------------------------------------------------------------------------------------- params

# MLflow's limits (mlflow.utils.validation: MAX_PARAM_VAL_LENGTH, MAX_ENTITY_KEY_LENGTH) and its key
# alphabet (validate_param_and_metric_name: slashes, word characters, ``.``, ``-``, space and ``:``).
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250
TRUNCATED_MARKER = "...[truncated {} chars]"
"""Appended to a value cut to :data:`MAX_PARAM_VALUE_LENGTH` (``{}`` = characters removed)."""
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def clean_key(key: str) -> str:
    """``key`` made acceptable to MLflow: characters outside its alphabet become ``_``, path-like forms that
    MLflow rejects (``a//b``, ``./a``, a leading ``/``) are normalised, and a key over 250 characters keeps
    its start and gains a short hash of the whole so distinct long keys stay distinct."""
    clean = _BAD_KEY_CHARS.sub("_", key)
    if clean != posixpath.normpath(clean) or clean in {"", "."} or clean.startswith(("/", "..")):
        clean = "/".join(p if p not in {"", ".", ".."} else "_" for p in clean.split("/")) or "_"
    if len(clean) > MAX_KEY_LENGTH:
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        clean = f"{clean[: MAX_KEY_LENGTH - 11]}~{digest}"
    return clean


def param_value(value: Any) -> str:
    """A param value as MLflow stores it: strings as they are, other scalars and lists as JSON, cut to
    :data:`MAX_PARAM_VALUE_LENGTH` with :data:`TRUNCATED_MARKER` at the end."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)  # JSON has no inf/nan; "inf" reads better than "Infinity"
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    if len(text) <= MAX_PARAM_VALUE_LENGTH:
        return text
    # The marker's length depends on the number it shows; settle the cut so the result is exactly the limit.
    cut = len(text) - MAX_PARAM_VALUE_LENGTH
    while len(text) - cut + len(TRUNCATED_MARKER.format(cut)) > MAX_PARAM_VALUE_LENGTH:
        cut += 1
    return text[: len(text) - cut] + TRUNCATED_MARKER.format(cut)


def flatten_params(resolved: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved config as MLflow params: ``{"stages": {"stage2": {"loss": {"rec_weight": 0.5}}}}`` ->
    ``{"stages.stage2.loss.rec_weight": "0.5"}``.

    Nested mappings recurse (an empty one is kept as ``"{}"`` so the key still shows); lists, ``None`` and
    booleans are JSON (``[1,2]``, ``null``, ``true``); keys and values respect MLflow's rules
    (:func:`clean_key`, :func:`param_value`). Two keys that clean to the same name keep the first value.
    """
    out: dict[str, str] = {}
    for key, value in resolved.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            for sub_key, sub_value in flatten_params(value, dotted).items():
                out.setdefault(sub_key, sub_value)
        else:
            out.setdefault(
                clean_key(dotted), param_value(dict(value) if isinstance(value, Mapping) else value)
            )
    return out


__all__ = [
    "ARTIFACT_RESOLVED_CONFIG",
    "COST_GPU_HOURS",
    "DEEPSPEED_DIR",
    "ESTIMATE_GPU_HOURS",
    "EVAL_DIR",
    "EVAL_PREFIX",
    "LOSS_LLM",
    "LOSS_PX",
    "LOSS_REC",
    "LOSS_TOTAL",
    "LOSS_VQ",
    "LR",
    "MAX_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "METRICS",
    "RECON_DIR",
    "SKIPPED_PREFIX",
    "SKIPPED_TOTAL",
    "STAGE",
    "TAG_FAILURE",
    "TAG_GIT_COMMIT",
    "TAG_PARENT_RUN",
    "TAG_RUN_NAME",
    "TAG_SCALE",
    "TAG_TRIAL_ID",
    "TAG_VARIANT",
    "THROUGHPUT",
    "TRUNCATED_MARKER",
    "VAL_EXACT_MATCH",
    "VAL_LOSS_LLM",
    "VAL_LOSS_REC",
    "VAL_PSNR",
    "VAL_PX_ACCURACY",
    "VAL_VQ_ACCURACY",
    "clean_key",
    "deepspeed_artifact",
    "estimate_params",
    "estimated_gpu_hours",
    "eval_artifact_dir",
    "eval_error_tag",
    "eval_metric",
    "eval_status_tag",
    "flatten_params",
    "param_value",
    "path_part",
    "recon_artifact",
    "run_tags",
    "shared_stage_tags",
    "skipped_metric",
]
