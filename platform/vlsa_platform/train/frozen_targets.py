"""The frozen-target cache as a stage sees it: the frozen models it keys entries by, the images it reads, and
how many images its frozen encoders saw.

A cache entry is keyed by the frozen model's fingerprint (:mod:`..data.targets`), so a fill helps a stage only
when it used the very weights that stage holds. The builders here make them the way the stage does: the VQ-VAE
of the cognition questions as :func:`.batches.vq_targets` builds it, the VAE as :func:`.build.build_model`
loads it (the ``tiny`` preset's from the same build, so ``model.tiny_weights`` is followed whatever it says;
the ``paper`` preset's from the same source through the same loader), and the L_rec transform of the model's
own config. :func:`latent_targets` is the stage's side of the same key.

The fill that runs before a submission's first trial (``orchestration.cache_fill``) builds its models with
:func:`frozen_targets_for`; each stage logs :data:`ENCODER_CALLS_METRIC`, what its encoders still saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..config.schema import ExperimentConfig
from ..data.cognition import VQ_RESOLUTION
from ..data.targets import TARGET_KINDS, CachedTargets, FrozenTargets, build_frozen_targets, recon_transform
from .build import source_vae, vlsa_config_for

#: Metric (per target kind) of the images a stage's frozen encoders saw on all its ranks: VAE targets given as
#: pixels (a latent not in the cache) and VQ grids computed (not in the cache). Logged once per stage, at its
#: last step; with the cache filled before the first trial, 0.
ENCODER_CALLS_METRIC = "data/frozen_encoder_calls/{kind}"


def asks_vq(config: ExperimentConfig, stage: str) -> bool:
    """Stage ``stage``'s training data or the validation set asks VQ questions (so VQ grids are needed)."""
    validation = config.data.validation
    in_training = config.cognition_applies(stage) and config.data.cognition.p_vq > 0
    return in_training or (validation is not None and validation.cognition.p_vq > 0)


def target_kinds(config: ExperimentConfig) -> tuple[str, ...]:
    """The target kinds some stage of ``config`` reads from the cache: ``vq`` where VQ questions are asked,
    ``vae`` with the reconstruction branch."""
    wanted = {
        "vq": any(asks_vq(config, stage) for stage in config.stages),
        "vae": bool(config.model.recon),
    }
    return tuple(kind for kind in TARGET_KINDS if wanted[kind])


def frozen_vq(config: ExperimentConfig) -> FrozenTargets:
    """The VQ-VAE whose grids the cognition questions use (``model.weights.vq``; the ``tiny`` preset's drawn
    from the experiment's seed)."""
    return build_frozen_targets(
        config.model.preset, kinds=("vq",), vq_source=config.model.weights.vq, seed=config.seed
    )


def frozen_targets_for(
    config: ExperimentConfig | Mapping[str, Any], kinds: Iterable[str] = TARGET_KINDS, device: str = "cpu"
) -> FrozenTargets:
    """The frozen models of ``kinds`` as a stage of ``config`` keys its cache entries (the fill's builder:
    ``functools.partial(frozen_targets_for, config.raw_dict, kinds)`` is picklable for Ray actors).
    ``device``: where the encoders run (``cuda`` on a GPU actor); the fingerprints do not depend on it."""
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.model_validate(dict(config))
    kinds = tuple(kinds)
    vlsa = vlsa_config_for(config)
    vq = frozen_vq(config).vq_model if "vq" in kinds else None
    vae = source_vae(config) if "vae" in kinds else None
    targets = FrozenTargets(
        vq,
        vae,
        VQ_RESOLUTION[config.model.preset] if vq is not None else None,
        vlsa.recon_resolution if vae is not None else None,
        recon=recon_transform(vlsa) if vae is not None else None,
    )
    for model in (targets.vq_model, targets.vae):
        if model is not None:
            model.to(device)
    return targets


def latent_targets(model: torch.nn.Module) -> FrozenTargets | None:
    """The stage's side of the VAE key: its model's own frozen VAE with the L_rec transform of its config
    (``None`` without a reconstruction branch). Built before the strategy casts the model, so the fingerprint
    is of the float32 weights, as the fill's."""
    recon = getattr(model, "reconstruction", None)
    if recon is None:
        return None
    config = model.config
    return FrozenTargets(
        vae=recon.vae, recon_resolution=config.recon_resolution, recon=recon_transform(config)
    )


def encoder_calls(model: torch.nn.Module, vq: CachedTargets | None) -> dict[str, int]:
    """Images this process's frozen encoders saw, by kind: the model's VAE (targets given as pixels) and the
    cognition VQ lookup's VQ-VAE (grids computed on a miss; with ``data.loader_workers`` > 0 those run in
    the loader's processes and are not seen here)."""
    recon = getattr(model, "reconstruction", None)
    return {
        "vq": int(vq.frozen.encoder_calls["vq"]) if vq is not None else 0,
        "vae": int(recon.vae_encoder_calls) if recon is not None else 0,
    }


__all__ = [
    "ENCODER_CALLS_METRIC",
    "asks_vq",
    "encoder_calls",
    "frozen_targets_for",
    "frozen_vq",
    "latent_targets",
    "target_kinds",
]
