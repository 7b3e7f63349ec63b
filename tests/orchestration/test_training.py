"""Run folders without Ray: a re-launch resumes only the config it started with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration.plan import expand_runs
from vlsa_platform.orchestration.training import (
    RUN_FILE,
    RunConflictError,
    _attach_tracking,
    claim_run_dir,
    config_digest,
    run_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_folder_is_claimed_by_one_config(tmp_path):
    config = load_experiment(ROOT / "experiments" / "vlsa_paper.yaml", scale="tiny")
    directory = run_dir(str(tmp_path), config.name, "main")
    assert Path(directory) == tmp_path / "vlsa-paper" / "main"
    assert claim_run_dir(directory, config) == {}

    _attach_tracking(directory, expand_runs(config)[0], "main", {}, None, None, {})
    recorded = json.loads((Path(directory) / RUN_FILE).read_text())
    assert recorded == {"config_sha256": config_digest(config), "run_id": None, "tracking_uri": None}
    assert claim_run_dir(directory, config) == recorded  # the same config resumes

    changed = config.with_values({"loss.rec_weight": 0.5})
    assert config_digest(changed) != config_digest(config)
    with pytest.raises(RunConflictError, match="another config"):
        claim_run_dir(directory, changed)
