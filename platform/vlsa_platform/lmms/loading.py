"""An exported stage, checked against its experiment config, then loaded for evaluation.

An export (``<checkpoint>/model/``, :func:`vlsa_platform.train.build.write_export`) holds the weights
(``model.safetensors``), the model config (``config.json``) and ``export.json`` (stage, step, placement) — not
the experiment config, which the tokenizer (preset, added VQ tokens), the LoRA adapters and ``data.max_length``
come from. So evaluation takes both: the export and the run's experiment config (the ``config/resolved.yaml``
artifact of its MLflow run, or the experiment file with the same ``scale``). :func:`check_export` compares the
export's model config with the one the experiment builds and raises :class:`ExportError` naming the differing
fields before any weight is read; :func:`load_export` then builds the model on ``meta`` and puts the export's
tensors in place (``train.build.build_model(init_from=...)``, which checks every tensor's shape first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..config.loader import load_experiment
from ..config.schema import ExperimentConfig
from ..model.configuration_vlsa import VLSAConfig
from ..model.modeling_vlsa import VLSAForConditionalGeneration
from ..train.build import WEIGHTS_FILE, build_model, build_tokenizer, vlsa_config_for

#: Model-config fields that say how the export was written, not what the model is.
_INCIDENTAL = frozenset(
    {"transformers_version", "_name_or_path", "attn_implementation", "_attn_implementation_autoset", "dtype"}
)
_CONFIG_FILE = "config.json"


class ExportError(ValueError):
    """The export is missing, incomplete, or not the model the experiment config describes."""


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export and what evaluating it needs.

    Attributes:
        experiment: the run's experiment config.
        model: the model with the export's weights, in eval mode, on its device.
        tokenizer: the LLM's tokenizer (VQ tokens added as the run had them).
    """

    experiment: ExperimentConfig
    model: VLSAForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase


def _describe(value: Any) -> str:
    return "a sub-config" if isinstance(value, dict) else "none" if value is None else repr(value)


def _differences(want: dict[str, Any], have: dict[str, Any], prefix: str = "") -> tuple[list[str], list[str]]:
    """``(own fields, nested ones)`` that differ, as ``field: the export has X, the experiment gives Y``."""
    own: list[str] = []
    nested: list[str] = []
    for key in sorted((set(want) | set(have)) - _INCIDENTAL):
        a, b = want.get(key), have.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner_own, inner_nested = _differences(a, b, f"{prefix}{key}.")
            nested += inner_own + inner_nested
        elif a != b:
            own.append(f"{prefix}{key}: the export has {_describe(b)}, the experiment gives {_describe(a)}")
    return own, nested


def config_differences(expected: VLSAConfig, found: dict[str, Any]) -> list[str]:
    """``field: the export has X, the experiment gives Y`` for each model-config field that differs, the
    top-level fields (vision mode, switches, vocabulary) before those of the sub-models' configs."""
    own, nested = _differences(json.loads(expected.to_json_string()), found)
    return own + nested


def check_export(pretrained: str | Path, config: str | Path, scale: str | None = None) -> ExperimentConfig:
    """The experiment config of ``config`` (with ``scale``), once the export at ``pretrained`` is known to be
    its model. Raises :class:`ExportError` (the export is missing, incomplete or another model) or
    ``config.errors.ConfigError`` (the config is invalid); reads no weight."""
    export = Path(pretrained)
    if not export.is_dir():
        raise ExportError(f"pretrained={pretrained}: no such folder (an exported stage: <checkpoint>/model)")
    absent = [name for name in (WEIGHTS_FILE, _CONFIG_FILE) if not (export / name).is_file()]
    if absent:
        raise ExportError(
            f"pretrained={pretrained} is not an exported stage: it lacks {', '.join(absent)} "
            "(an export is the model/ folder of a stage's final checkpoint)"
        )
    experiment = load_experiment(config, scale=scale)  # type: ignore[arg-type]
    found = json.loads((export / _CONFIG_FILE).read_text())
    differences = config_differences(vlsa_config_for(experiment), found)
    if differences:
        shown = "; ".join(differences[:6]) + (
            f"; and {len(differences) - 6} more" if len(differences) > 6 else ""
        )
        raise ExportError(
            f"the export {pretrained} is not the model of the experiment config {config}: {shown} "
            "(give the config of the run that wrote it)"
        )
    return experiment


def load_export(
    pretrained: str | Path,
    config: str | Path,
    *,
    scale: str | None = None,
    device: str | torch.device = "cpu",
) -> ExportedModel:
    """The export at ``pretrained`` as a model in eval mode on ``device`` (float32), with its tokenizer;
    :func:`check_export` first."""
    experiment = check_export(pretrained, config, scale)
    tokenizer = build_tokenizer(experiment)
    try:
        model = build_model(experiment, init_from=str(pretrained))
    except ValueError as err:  # the tensors' names or shapes differ (LoRA, another variant)
        raise ExportError(str(err)) from None
    return ExportedModel(experiment, model.to(device).eval(), tokenizer)


__all__ = ["ExportError", "ExportedModel", "check_export", "config_differences", "load_export"]
