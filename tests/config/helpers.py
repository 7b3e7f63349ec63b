"""Small experiment files for config tests (tiny preset, bundled data: valid as written)."""

from __future__ import annotations

import textwrap
from pathlib import Path

MINIMAL = """\
name: t
model:
  preset: tiny
data:
  datasets:
    d: {path: "bundled:synthetic"}
    e: {path: "bundled:synthetic"}
  validation: {dataset: d}
stages:
  s1:
    trainable: [projector, epigone]
    steps: 2
    lr: {default: 1.0e-3}
    mixture:
      - {dataset: d}
    placement: {num_workers: 2, global_batch: 4}
  s2:
    trainable: all
    epochs: 1
    lr: {default: 2.0e-5, vision_encoder: 2.0e-6}
    mixture:
      - {dataset: e, sampling: "random:50%"}
    placement: {num_workers: 2, micro_batch: 1, global_batch: 8}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")
