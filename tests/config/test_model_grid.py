"""``model.grid_pinpoints``: LLaVA-NeXT's tile grids in the file, and the old ``max_grid`` refused by name."""

from __future__ import annotations

import pytest

from vlsa_platform.config import load_experiment
from vlsa_platform.config.errors import ConfigError
from vlsa_platform.config.model_section import DEFAULT_GRID_PINPOINTS
from vlsa_platform.train.build import vlsa_config_for

from .helpers import MINIMAL, line_of, write


def _with_model(tmp_path, line: str):
    return write(tmp_path, "x.yaml", MINIMAL.replace("  preset: tiny\n", f"  preset: tiny\n  {line}\n"))


def test_default_pinpoints_reach_the_model_config(tmp_path):
    config = load_experiment(write(tmp_path, "x.yaml", MINIMAL))
    assert config.model.grid_pinpoints == list(DEFAULT_GRID_PINPOINTS)
    assert {(1, 3), (3, 1), (2, 2), (1, 1)} <= set(DEFAULT_GRID_PINPOINTS)
    assert vlsa_config_for(config).grid_pinpoints == [list(g) for g in DEFAULT_GRID_PINPOINTS]


def test_pinpoints_from_the_file(tmp_path):
    config = load_experiment(_with_model(tmp_path, "grid_pinpoints: [[1, 1], [1, 3]]"))
    assert vlsa_config_for(config).grid_pinpoints == [[1, 1], [1, 3]]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("max_grid: [2, 2]", "model.max_grid", "replaced by grid_pinpoints"),
        ("grid_pinpoints: []", "model.grid_pinpoints", "at least 1 item"),
        ("grid_pinpoints: [[1, 2], [1, 2]]", "model.grid_pinpoints", "repeats the grid [1, 2]"),
        ("grid_pinpoints: [[0, 2]]", "model.grid_pinpoints.0.0", "greater than 0"),
    ],
)
def test_bad_pinpoints_name_the_field(tmp_path, line, field, message):
    path = _with_model(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    error = str(info.value)
    key = line.split(":")[0]
    assert f"x.yaml:{line_of(path, key)}: {field}: " in error and message in error
