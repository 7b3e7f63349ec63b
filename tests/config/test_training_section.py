"""The ``training`` section: the divergence policy ``training.on_nonfinite`` (defaults, limits, what is refused)."""

from __future__ import annotations

import pytest

from vlsa_platform.config import ConfigError, load_experiment

from .helpers import MINIMAL, line_of, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _with_training(tmp_path, block: str):
    return write(tmp_path, "x.yaml", MINIMAL + block)


def test_defaults_keep_todays_runs_working(tmp_path):
    config = load_experiment(write(tmp_path, "x.yaml", MINIMAL))
    assert (config.training.on_nonfinite.skip_limit, config.training.on_nonfinite.action) == (20, "stop")
    assert config.resolved()["training"] == {"on_nonfinite": {"skip_limit": 20, "action": "stop"}}


def test_stop_with_a_limit_from_the_file_and_from_set(tmp_path):
    path = _with_training(tmp_path, "training:\n  on_nonfinite: {skip_limit: 3, action: stop}\n")
    assert load_experiment(path).training.on_nonfinite.skip_limit == 3
    assert (
        load_experiment(
            path, overrides=["training.on_nonfinite.skip_limit=7"]
        ).training.on_nonfinite.skip_limit
        == 7
    )


def test_rollback_is_refused_as_not_built(tmp_path):
    path = _with_training(tmp_path, "training:\n  on_nonfinite:\n    action: rollback\n")
    with pytest.raises(ConfigError) as info:
        load_experiment("x.yaml")
    message = str(info.value)
    assert f"x.yaml:{line_of(path, 'rollback')}: training.on_nonfinite.action:" in message
    assert "'rollback' is not supported" in message and "not built yet" in message


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("training:\n  on_nonfinite: {skip_limit: 0}\n", "training.on_nonfinite.skip_limit"),
        ("training:\n  on_nonfinite: {skip_limit: -1}\n", "training.on_nonfinite.skip_limit"),
        ("training:\n  on_nonfinite: {skip_limit: 2.5}\n", "training.on_nonfinite.skip_limit"),
        ("training:\n  on_nonfinite: {action: halt}\n", "training.on_nonfinite.action"),
        ("training:\n  on_nonfinite: {skip_limt: 3}\n", "training.on_nonfinite.skip_limt: unknown key"),
        ("training:\n  nonfinite: {}\n", "training.nonfinite: unknown key"),
    ],
)
def test_bad_values_are_refused(tmp_path, block, expected):
    _with_training(tmp_path, block)
    with pytest.raises(ConfigError, match=expected):
        load_experiment("x.yaml")
