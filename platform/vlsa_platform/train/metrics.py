"""A worker's training metrics on their way to rank 0's tracker: the per-micro-batch losses of a log window
averaged over every rank (:class:`MetricWindow`), sums over ranks (:func:`all_reduce`) and the run's counts of
skipped records (:func:`skipped_totals`)."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from ..data.types import SKIP_REASONS
from ..tracking import names
from .step import LOSS_PARTS


def all_reduce(tensor: torch.Tensor, device: torch.device, op: Any = None) -> torch.Tensor:
    """Sum (or ``op``) over ranks (a no-op without a process group); NCCL needs the tensor on the GPU."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    on = tensor.to(device) if torch.distributed.get_backend() == "nccl" else tensor
    torch.distributed.all_reduce(on, op=torch.distributed.ReduceOp.SUM if op is None else op)
    return on.cpu()


class MetricWindow:
    """Sums and counts of the per-micro-batch metrics since the last log, averaged over every rank."""

    KEYS = tuple(f"loss/{part}" for part in ("total", *LOSS_PARTS))

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros(len(self.KEYS))
        self.counts = np.zeros(len(self.KEYS))
        self.micro_batches = 0
        self.samples = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, float], samples: int) -> None:
        for i, key in enumerate(self.KEYS):
            value = metrics.get(key, math.nan)
            if math.isfinite(value):
                self.sums[i] += value
                self.counts[i] += 1
        self.micro_batches += 1
        self.samples += samples

    def reduce(self, device: torch.device) -> dict[str, float]:
        """Means over all ranks (NaN for a part no rank had), and ``throughput/samples_per_s``."""
        packed = torch.tensor([*self.sums, *self.counts, float(self.samples)], dtype=torch.float64)
        packed = all_reduce(packed, device)
        n = len(self.KEYS)
        sums, counts, samples = packed[:n], packed[n : 2 * n], float(packed[-1])
        out = {key: float(sums[i] / counts[i]) if counts[i] else math.nan for i, key in enumerate(self.KEYS)}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out[names.THROUGHPUT] = samples / elapsed
        return out


def skipped_totals(counts: Counter[str], device: torch.device) -> dict[str, int]:
    """Each skip reason's count summed over all ranks (every rank calls it together)."""
    vector = torch.tensor([float(counts.get(reason, 0)) for reason in SKIP_REASONS], dtype=torch.float64)
    totals = all_reduce(vector, device)
    return {reason: int(n) for reason, n in zip(SKIP_REASONS, totals.tolist(), strict=True)}


__all__ = ["MetricWindow", "all_reduce", "skipped_totals"]
