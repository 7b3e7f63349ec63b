"""Where cognition turns go (``data.cognition.stages``, ``ExperimentConfig.cognition_applies``) and the validation
set's own cognition questions (``data.validation.cognition``): the file's checks."""

from __future__ import annotations

import pytest

from vlsa_platform.cli import main
from vlsa_platform.config import ConfigError, load_experiment

from .helpers import MINIMAL, line_of, write

VALIDATION = "  validation: {dataset: d}\n"


def _file(tmp_path, data_lines: str):
    return write(tmp_path, "c.yaml", MINIMAL.replace(VALIDATION, data_lines))


def test_an_unknown_stage_in_cognition_stages_is_refused_naming_the_field(tmp_path, capsys):
    path = _file(tmp_path, "  cognition: {stages: [s1, s9]}\n" + VALIDATION)
    line = line_of(path, "s9")
    with pytest.raises(ConfigError, match=rf"c.yaml:{line}: data.cognition.stages.1: no stage named 's9'"):
        load_experiment(path)
    assert main(["validate", str(path)]) == 2
    assert "data.cognition.stages.1" in capsys.readouterr().err


def test_cognition_applies_to_the_last_stage_by_default_or_the_chosen_ones(tmp_path):
    config = load_experiment(_file(tmp_path, VALIDATION))
    assert [config.cognition_applies(s) for s in ("s1", "s2")] == [False, True]
    chosen = load_experiment(_file(tmp_path, "  cognition: {stages: [s1]}\n" + VALIDATION))
    assert [chosen.cognition_applies(s) for s in ("s1", "s2")] == [True, False]
    off = load_experiment(
        _file(tmp_path, "  cognition: {stages: [s1]}\n" + VALIDATION), overrides=["model.cognition=off"]
    )
    assert not any(off.cognition_applies(s) for s in ("s1", "s2"))


def test_the_validation_questions_have_their_own_settings(tmp_path):
    """Setting ``data.cognition`` leaves ``data.validation.cognition`` (the yardstick) as it was."""
    base = load_experiment(_file(tmp_path, VALIDATION))
    swept = base.with_values(
        {"data.cognition.p_vq": 0.1, "data.cognition.vq_window": 2, "model.cognition": False}
    )
    assert swept.data.validation == base.data.validation
    assert base.data.validation.cognition.vq_format == "text"


def test_special_vq_answers_in_validation_need_the_tokens_in_every_run(tmp_path):
    path = _file(tmp_path, "  validation: {dataset: d, cognition: {vq_format: special}}\n")
    with pytest.raises(
        ConfigError, match=r"data.validation.cognition.vq_format: special: a run without the <vq_i>"
    ):
        load_experiment(path)
    config = load_experiment(path, overrides=["data.cognition.vq_format=special"])
    assert config.data.validation.cognition.vq_format == "special"
    with pytest.raises(ConfigError, match=r"data.validation.cognition.vq_format"):
        load_experiment(path, overrides=["data.cognition.vq_format=special", "model.cognition=off"])
    # No VQ questions in validation: nothing to read.
    load_experiment(path, overrides=["data.validation.cognition.p_vq=0"])
