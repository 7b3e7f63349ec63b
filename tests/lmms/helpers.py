"""Helpers of the evaluation tests: the tiny recipe, a tiny model written as a stage's export, the local task's
documents, and the evaluation environment's interpreter."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.schema import ExperimentConfig
from vlsa_platform.lmms.synthetic_task import DOC_FILES, TASK_DIR
from vlsa_platform.train.build import WEIGHTS_FILE, build_model, vlsa_config_for, write_export

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "vlsa_paper.yaml"


def tiny_experiment(*overrides: str) -> ExperimentConfig:
    """The paper recipe at tiny scale (its bundled pretrained weights), with ``overrides``."""
    return load_experiment(PAPER, scale="tiny", overrides=list(overrides))


def export_tiny(folder: Path, *overrides: str) -> tuple[Path, Path]:
    """The tiny model (``--scale tiny``'s initial weights) written as a stage's export into ``folder/model``,
    and its resolved experiment config as ``folder/resolved.yaml`` (what the run's MLflow artifact holds).
    Returns ``(export, config)``."""
    experiment = tiny_experiment(*overrides)
    model = build_model(experiment)
    export = folder / "model"
    write_export(export, model.state_dict(), model.config, {"stage": "test", "global_step": 0})
    config = folder / "resolved.yaml"
    config.write_text(yaml.safe_dump(experiment.resolved(), sort_keys=False))
    return export, config


def fake_export(folder: Path, experiment: ExperimentConfig) -> tuple[Path, Path]:
    """An export folder with ``experiment``'s model config and weights that are not a safetensors file (reading
    them would fail: a check that passes or refuses has read none)."""
    folder.mkdir(parents=True, exist_ok=True)
    vlsa_config_for(experiment).save_pretrained(str(folder))
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    config = folder / "resolved.yaml"
    config.write_text(yaml.safe_dump(experiment.resolved()))
    return folder, config


def task_docs(kind: str) -> list[dict[str, Any]]:
    """The shipped documents of one local task (``vqa``, ``mc``, ``caption``)."""
    return [json.loads(line) for line in (TASK_DIR / DOC_FILES[kind]).read_text().splitlines()]


def eval_python() -> Path:
    """The evaluation environment's interpreter: ``$VLSA_EVAL_PYTHON``, else ``<this venv>/eval/bin/python``
    (``make install-eval`` builds it inside the project's venv)."""
    configured = os.environ.get("VLSA_EVAL_PYTHON")
    return Path(configured) if configured else Path(sys.prefix) / "eval" / "bin" / "python"
