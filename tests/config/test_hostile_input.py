"""Hostile experiment files and ``--set`` items: each is refused fast, as a ConfigError naming the place (file
and line, or the ``--set`` item) and the field, never a traceback, an unbounded parse or an accepted inf."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlsa_platform.cli import main
from vlsa_platform.config.bounded_yaml import MAX_DEPTH, MAX_FILE_BYTES, MAX_SET_BYTES, MAX_VALUES
from vlsa_platform.config.errors import ConfigError
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.vocabulary import MAX_BATCH

from .helpers import MINIMAL, line_of, write


def alias_bomb() -> str:
    """Nine levels of ten aliases each (about 800 bytes): 10**9 values if every alias were copied."""
    lines = ["lvl0: &lvl0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"lvl{i}: &lvl{i} [" + ", ".join([f"*lvl{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def refused(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The message of the ConfigError ``load_experiment`` raises (that it comes at once, not after an
    unbounded parse, is what the bounds make true: no wall-clock assertion in tests, STYLE.md)."""
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides=overrides)
    return str(info.value)


def test_alias_bomb_is_refused_at_its_line(tmp_path):
    bomb = alias_bomb()
    assert 700 < len(bomb) < 900
    path = write(tmp_path, "x.yaml", MINIMAL + bomb)
    message = refused(path)
    # Level k holds about 10**(k + 1) values: refused inside the first level that takes the file past
    # MAX_VALUES, at the line that writes it.
    match = re.match(rf"{re.escape(str(path))}:(\d+): (lvl\d)\.\d+: ", message)
    assert match is not None, message
    assert int(match[1]) == line_of(path, f"{match[2]}: &{match[2]}") and match[2] in ("lvl3", "lvl4")
    assert f"passes {MAX_VALUES} values" in message


def test_aliases_within_the_bounds_are_expanded(tmp_path):
    text = MINIMAL.replace(
        "placement: {num_workers: 2, global_batch: 4}", "placement: &p {num_workers: 2, global_batch: 4}"
    )
    text = text.replace("placement: {num_workers: 2, micro_batch: 1, global_batch: 8}", "placement: *p")
    config = load_experiment(write(tmp_path, "x.yaml", text))
    assert config.stages["s1"].placement == config.stages["s2"].placement
    assert config.stages["s2"].placement.global_batch == 4


def test_self_containing_alias(tmp_path):
    path = write(tmp_path, "x.yaml", MINIMAL + "description: &d [1, *d]\n")
    message = refused(path)
    assert message.startswith(f"{path}:{line_of(path, 'description:')}: description.1: ")
    assert "contains itself" in message


def test_oversized_file_is_refused_without_parsing(tmp_path):
    keys = "".join(f"k{i}: {i}\n" for i in range(MAX_FILE_BYTES // 6))
    path = write(tmp_path, "x.yaml", MINIMAL + keys)
    assert path.stat().st_size > MAX_FILE_BYTES
    message = refused(path)
    cut = path.read_bytes()[:MAX_FILE_BYTES].count(b"\n") + 1
    assert message.startswith(f"{path}:{cut}: the file passes {MAX_FILE_BYTES // 1024} KiB")


def test_file_at_the_size_cap_loads(tmp_path):
    padding = MAX_FILE_BYTES - len(MINIMAL.encode())
    path = write(tmp_path, "x.yaml", MINIMAL + ("#" * 99 + "\n") * (padding // 100))
    assert MAX_FILE_BYTES - 100 < path.stat().st_size <= MAX_FILE_BYTES
    assert load_experiment(path).name == "t"


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 3000 + "]" * 3000,  # flow
        "{a: " * 3000 + "1" + "}" * 3000,
        "\n" + "".join(" " * (2 * i + 2) + "- \n" for i in range(MAX_DEPTH + 5)),  # block
    ],
    ids=["flow-list", "flow-map", "block"],
)
def test_deep_nesting_in_a_file(tmp_path, nested):
    path = write(tmp_path, "x.yaml", MINIMAL + "description: " + nested + "\n")
    message = refused(path)
    assert message.startswith(f"{path}:") and ": description." in message
    assert f"nested deeper than {MAX_DEPTH} levels" in message
    line = int(message.split(":")[1])
    assert line_of(path, "description:") <= line <= line_of(path, "description:") + MAX_DEPTH


def test_nesting_through_aliases(tmp_path):
    """Every level within the bound, but each alias adds its anchor's depth."""
    half = MAX_DEPTH // 2 + 1
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    path = write(tmp_path, "x.yaml", MINIMAL + text)
    message = refused(path)
    assert message.startswith(f"{path}:{line_of(path, 'b: ')}: b.0.") and "aliases expanded" in message


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_control_character_in_a_file(tmp_path, char):
    path = write(tmp_path, "x.yaml", MINIMAL.replace("steps: 2", f"steps: 2{char}"))
    message = refused(path)
    assert message.startswith(f"{path}:{line_of(path, 'steps: 2')}: invalid YAML: ")
    assert f"U+{ord(char):04X} is not allowed" in message


def test_scalar_its_tag_cannot_hold(tmp_path):
    path = write(tmp_path, "x.yaml", MINIMAL + "description: 2001-13-45\nseed: " + "1" * 5000 + "\n")
    assert refused(path).startswith(f"{path}:{line_of(path, 'description:')}: description: month")


@pytest.mark.parametrize(
    ("item", "wanted"),
    [
        ("description=" + "[" * 3000 + "]" * 3000, f"nested deeper than {MAX_DEPTH} levels"),
        ("description=" + "{a: " * 3000, f"nested deeper than {MAX_DEPTH} levels"),
        ("description=" + alias_bomb().replace("\n", ", ").join("{}"), f"passes {MAX_VALUES} values"),
        ("description=" + "x" * MAX_SET_BYTES, f"more than the {MAX_SET_BYTES} a --set item may have"),
        ("description=a\x00b", "not valid YAML"),
        ("description=2001-13-45", "not valid YAML"),
    ],
    ids=["deep-list", "deep-map", "alias-bomb", "too-long", "nul", "bad-date"],
)
def test_hostile_set_value(tmp_path, item, wanted):
    path = write(tmp_path, "x.yaml", MINIMAL)
    message = refused(path, (item,))
    assert message.startswith("--set 'description=") and wanted in message
    assert len(message) < 400  # the item is quoted cut short, not whole


@pytest.mark.parametrize("key", ["²", "stages.s1.mixture.²", "stages.s1.mixture.0\x00", "١"])
def test_set_key_that_is_not_a_name(tmp_path, key):
    path = write(tmp_path, "x.yaml", MINIMAL)
    message = refused(path, (f"{key}=1",))
    assert message.startswith(f"--set {key}=1: ") and ("unknown key" in message or "no item" in message)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999"])
def test_learning_rate_must_be_finite(tmp_path, value):
    path = write(tmp_path, "x.yaml", MINIMAL.replace("lr: {default: 1.0e-3}", f"lr: {{default: {value}}}"))
    message = refused(path)
    assert message.startswith(f"{path}:{line_of(path, 'lr: {default')}: stages.s1.lr.default: ")
    if value != "-.inf":  # below zero is refused first
        assert "finite number" in message


@pytest.mark.parametrize(
    "item",
    [
        "loss.rec_weight=.inf",
        "stages.s2.epochs=.inf",
        "stages.s1.lr.vision_encoder=.nan",
        "loss.schedule.end_factor=.inf",
        "cluster.accelerators.H100.memory_gb=.inf",
    ],
)
def test_every_float_field_is_finite(tmp_path, item):
    path = write(tmp_path, "x.yaml", MINIMAL)
    message = refused(path, (item,))
    key = item.split("=")[0]
    assert message.startswith(f"--set {item}: {key}: ") and "finite number" in message


def test_global_batch_has_an_upper_bound(tmp_path):
    path = write(tmp_path, "x.yaml", MINIMAL.replace("global_batch: 4}", f"global_batch: {10**30}}}"))
    message = refused(path)
    where = f"{path}:{line_of(path, 'global_batch: 1000')}: stages.s1.placement.global_batch: "
    assert message.startswith(where) and f"less than or equal to {MAX_BATCH}" in message
    ok = write(tmp_path, "ok.yaml", MINIMAL.replace("global_batch: 4}", f"global_batch: {MAX_BATCH}}}"))
    assert load_experiment(ok).stages["s1"].placement.global_batch == MAX_BATCH


@pytest.mark.parametrize(
    "item",
    [
        "stages.s1.steps=1000000000000",
        "stages.s1.placement.num_workers=10000000",
        "stages.s1.placement.micro_batch=100000000000",
        "data.loader_workers=1000000",
        "data.max_length=100000000000",
        "data.datasets.d.num_samples=1000000000000000",
        "seed=4294967296",
        "seed=-1",
        "tracking.log_every=1000000000000",
    ],
)
def test_integer_fields_have_sane_bounds(tmp_path, item):
    path = write(tmp_path, "x.yaml", MINIMAL)
    key = item.split("=")[0]
    assert refused(path, (item,)).startswith(f"--set {item}: {key}: Input should be")


def test_cli_validate_exits_2_without_traceback(tmp_path, capsys):
    files = {
        "bomb.yaml": MINIMAL + alias_bomb(),
        "deep.yaml": MINIMAL + "description: " + "[" * 3000 + "\n",
        "nul.yaml": MINIMAL + "description: a\x00\n",
        "inf.yaml": MINIMAL.replace("lr: {default: 1.0e-3}", "lr: {default: .inf}"),
    }
    for name, text in files.items():
        path = write(tmp_path, name, text)
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}:") and "Traceback" not in err
    path = write(tmp_path, "ok.yaml", MINIMAL)
    assert main(["validate", str(path), "--set", "²=1"]) == 2
    assert "--set ²=1: ²: unknown key" in capsys.readouterr().err


def test_cli_process_exits_2_on_deep_set_value(tmp_path):
    path = write(tmp_path, "ok.yaml", MINIMAL)
    deep = "description=" + "[" * 5000
    result = subprocess.run(
        [sys.executable, "-m", "vlsa_platform.cli", "validate", str(path), "--set", deep],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "nested deeper than" in result.stderr and "Traceback" not in result.stderr
