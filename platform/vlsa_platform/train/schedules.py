"""What changes along a stage: the loss weights (DESIGN.md §2) and the learning rate.

``total = w_llm * L_llm + w_rec * L_rec``; a stage's :class:`~vlsa_platform.config.schema.ScheduleConfig` moves
one of the two weights by ``factor(t)``, ``t = step / stage steps`` (the factor's shape lives on the schema, so
the plan and the trainer agree). The learning rate follows LLaVA-NeXT's recipe through HF's schedulers:
``ceil(warmup_ratio * steps)`` linear-warmup steps, then ``cosine`` / ``linear`` decay to 0 or ``constant``.
The DeepSpeed engine steps the scheduler once per optimizer step (not per micro-batch).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler
from transformers import get_scheduler

from ..config.schema import StageLoss

#: ``lr_scheduler`` of a stage -> the name ``transformers.get_scheduler`` knows (warmup included in each).
_HF_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def loss_weights(loss: StageLoss, progress: float, *, recon: bool = True) -> tuple[float, float]:
    """``(w_llm, w_rec)`` at ``progress`` = step / stage steps in [0, 1] (clipped), as
    :meth:`~vlsa_platform.config.schema.EffectiveLoss.weights` gives them for ``loss.effective(recon)``."""
    return loss.effective(recon).weights(progress)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Linear-warmup steps for a stage: ``ceil(warmup_ratio * total_steps)`` (HF Trainer's rule)."""
    return math.ceil(total_steps * warmup_ratio)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_ratio: float
) -> LRScheduler:
    """The stage's LR schedule over ``total_steps`` optimizer steps, from ``transformers.get_scheduler``.

    Each param group decays from its own peak ``lr`` (the per-part rates). ``kind`` is the stage's
    ``lr_scheduler``: ``cosine``, ``linear`` (to 0 at the last step) or ``constant`` (after warmup).
    """
    if kind not in _HF_SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler {kind!r}; expected one of {sorted(_HF_SCHEDULERS)}")
    return get_scheduler(
        _HF_SCHEDULERS[kind],
        optimizer=optimizer,
        num_warmup_steps=warmup_steps(total_steps, warmup_ratio),
        num_training_steps=total_steps,
    )


__all__ = ["build_lr_scheduler", "loss_weights", "warmup_steps"]
