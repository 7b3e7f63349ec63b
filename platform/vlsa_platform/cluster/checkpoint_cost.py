"""What a stage's checkpoints cost its training: the bytes a save writes, the seconds training waits for it at a
measured bandwidth, and that wait as a fraction of the training time between two checkpoints.

**Bytes** (bf16 mixed precision, Adam; DeepSpeed's checkpoint layout, as ``train.strategy`` saves it). Per rank,
for ``T`` trained and ``P`` parameters in all over ``N`` workers:

=========  ===========================================  ============================================
ZeRO       optimizer states (fp32 master, Adam m and v)   module weights (bf16)
=========  ===========================================  ============================================
0          ``12 T`` on rank 0                             ``2 P`` on rank 0
1, 2       ``12 T / N`` on every rank                     ``2 P`` on rank 0
3          ``12 T / N`` on every rank                     ``2 P / N`` on every rank (an upper bound:
                                                          DeepSpeed writes placeholders for partitioned
                                                          weights unless told to gather them)
=========  ===========================================  ============================================

The ranks of a node share its disk (or its link to a shared file system), so the time a save takes is the bytes
of the node that holds rank 0 (the most) over that node's write bandwidth: ``ranks_per_node`` ranks at once.

**Stall.** Where DeepSpeed writes straight into run storage (a local folder or a shared mount:
``orchestration.training``'s direct path), training waits for the write alone. On S3 a checkpoint is first
written to local staging space, then uploaded in the background while training goes on: training waits for
the local write, and the upload must finish before the next checkpoint (one upload at a time) or the saves queue
up (:attr:`CheckpointStall.upload_keeps_up`). A stage's final checkpoint is uploaded before the next stage
starts; that one-off wait is left out of the fraction (it is once a stage, not once an interval).

``fraction = save_seconds / (checkpoint_every x step_seconds)``; the goal is at most :data:`STALL_GOAL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STALL_GOAL = 0.05
"""The most of a stage's training time its checkpoints may stall it (issue 17)."""

ADAM_STATE_BYTES = 12
"""Bytes per trained parameter in the optimizer states: fp32 master weight, Adam's m and v."""

WEIGHT_BYTES = 2
"""Bytes per parameter of the module's bf16 weights."""

DEFAULT_WRITE_BYTES_PER_S = 3.5e8
"""A node's save bandwidth assumed where none is given: the lower of the ``benchmarks/checkpoint_io.py``
measurements of a DeepSpeed save written in place on the 2-core development VM (327 MB checkpoint, fsync
included): 356 MB/s with other jobs running, 667 MB/s with fewer (the same disk's sequential write: 0.76 to
1.24 GB/s). A GPU node's local NVMe is several times faster; give the cluster's measured figure where there is
one."""


def rank_checkpoint_bytes(trained: float, total: float, zero_stage: int, num_workers: int) -> list[float]:
    """Bytes each rank writes for one checkpoint (rank 0 first; the module docs' table)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, not {zero_stage}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, not {num_workers}")
    n = num_workers
    states = ADAM_STATE_BYTES * trained
    weights = WEIGHT_BYTES * total
    if zero_stage == 0:
        return [states + weights] + [0.0] * (n - 1)
    if zero_stage == 3:
        return [(states + weights) / n] * n
    return [states / n + weights] + [states / n] * (n - 1)


@dataclass(frozen=True)
class CheckpointStall:
    """A stage's checkpoint cost at given bandwidths (module docs)."""

    rank_bytes: float
    """Bytes the busiest rank (rank 0) writes per checkpoint."""
    node_bytes: float
    """Bytes the node holding rank 0 writes per checkpoint (its ``ranks_per_node`` ranks)."""
    save_seconds: float
    """Training's wait per checkpoint: the node's bytes over its write bandwidth."""
    interval_seconds: float
    """Training time between two checkpoints (``checkpoint_every x step_seconds``)."""
    upload_seconds: float | None
    """Background upload of a checkpoint's bytes (all nodes, over the upload bandwidth); ``None``: written in
    place, nothing uploaded."""

    @property
    def fraction(self) -> float:
        """The stall as a fraction of the training time between checkpoints."""
        return self.save_seconds / self.interval_seconds

    @property
    def within_goal(self) -> bool:
        return self.fraction <= STALL_GOAL

    @property
    def upload_keeps_up(self) -> bool:
        """Each background upload ends before the next checkpoint (else saves queue up in staging space)."""
        return self.upload_seconds is None or self.upload_seconds <= self.interval_seconds

    def as_plan(self) -> dict[str, Any]:
        """The figures as the plan shows them."""
        return {
            "rank_gb": round(self.rank_bytes / 1e9, 3),
            "node_gb": round(self.node_bytes / 1e9, 3),
            "save_s": round(self.save_seconds, 2),
            "interval_s": round(self.interval_seconds, 1),
            "stall_fraction": round(self.fraction, 4),
            "stall_goal": STALL_GOAL,
            "upload_s": None if self.upload_seconds is None else round(self.upload_seconds, 1),
            "upload_keeps_up": self.upload_keeps_up,
        }


def checkpoint_stall(
    *,
    trained: float,
    total: float,
    zero_stage: int,
    num_workers: int,
    checkpoint_every: int,
    step_seconds: float,
    write_bytes_per_s: float,
    ranks_per_node: int = 8,
    upload_bytes_per_s: float | None = None,
) -> CheckpointStall:
    """The checkpoint stall of a stage.

    Args:
        trained: trained parameters (``StageNeeds.trained_params``); total: all parameters of the model.
        zero_stage, num_workers: the stage's placement.
        checkpoint_every: optimizer steps between checkpoints (the stage's ``checkpoint_every``).
        step_seconds: one optimizer step's time (e.g. the cost estimate's wall time over the stage's steps).
        write_bytes_per_s: a node's write bandwidth to where DeepSpeed writes (run storage, or staging space on
            S3), e.g. ``benchmarks/checkpoint_io.py``'s measured figure.
        ranks_per_node: workers per node (capped at ``num_workers``).
        upload_bytes_per_s: S3 run storage: the upload bandwidth of the whole cluster; ``None``: written in place.
    """
    if checkpoint_every < 1 or step_seconds <= 0 or write_bytes_per_s <= 0:
        raise ValueError("checkpoint_every, step_seconds and write_bytes_per_s must be positive")
    per_rank = rank_checkpoint_bytes(trained, total, zero_stage, num_workers)
    on_node = per_rank[: max(1, min(ranks_per_node, num_workers))]
    node_bytes = sum(on_node)
    upload = None if upload_bytes_per_s is None else sum(per_rank) / upload_bytes_per_s
    return CheckpointStall(
        rank_bytes=per_rank[0],
        node_bytes=node_bytes,
        save_seconds=node_bytes / write_bytes_per_s,
        interval_seconds=checkpoint_every * step_seconds,
        upload_seconds=upload,
    )


def stage_checkpoint_stall(
    stage: Mapping[str, Any],
    checkpoint_every: int,
    write_bytes_per_s: float = DEFAULT_WRITE_BYTES_PER_S,
    *,
    ranks_per_node: int = 8,
    upload_bytes_per_s: float | None = None,
) -> CheckpointStall | None:
    """:func:`checkpoint_stall` of one stage of the plan (``orchestration.plan``'s stage: ``params_trainable``,
    ``params_total``, ``placement``, ``steps``, ``estimate.wall_hours``), its step time the estimated wall time
    over its steps; ``None`` where the plan has no wall-time estimate (a class without a bf16 peak)."""
    wall_hours = (stage.get("estimate") or {}).get("wall_hours")
    if not wall_hours or not stage.get("steps"):
        return None
    placement = stage["placement"]
    return checkpoint_stall(
        trained=float(stage["params_trainable"]),
        total=float(stage["params_total"]),
        zero_stage=int(placement["zero_stage"]),
        num_workers=int(placement["num_workers"]),
        checkpoint_every=checkpoint_every,
        step_seconds=wall_hours * 3600.0 / int(stage["steps"]),
        write_bytes_per_s=write_bytes_per_s,
        ranks_per_node=ranks_per_node,
        upload_bytes_per_s=upload_bytes_per_s,
    )


__all__ = [
    "DEFAULT_WRITE_BYTES_PER_S",
    "STALL_GOAL",
    "CheckpointStall",
    "checkpoint_stall",
    "rank_checkpoint_bytes",
    "stage_checkpoint_stall",
]
