"""Where a training run's initial weights come from: hub ids, local folders or ``s3://`` prefixes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .. import storage
from ..model.configuration_vlsa import VLSAConfig
from ..model.modeling_vlsa import VLSAForConditionalGeneration
from ..model.pretrained import build_from_pretrained


def resolve_source(source: str, cache_dir: str | Path | None = None) -> str:
    """A source ``from_pretrained`` can read: ``s3://`` prefixes are mirrored into the local cache first."""
    return str(storage.materialize(source, cache_dir)) if storage.is_s3(source) else source


def load_initial_model(
    config: VLSAConfig,
    sources: Mapping[str, str | None],
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> VLSAForConditionalGeneration:
    """The model a first stage starts from: each sub-model from its source (hub id, local or ``s3://``)."""
    resolved = {part: resolve_source(src, cache_dir) if src else None for part, src in sources.items()}
    return build_from_pretrained(config, resolved, dtype=dtype)
