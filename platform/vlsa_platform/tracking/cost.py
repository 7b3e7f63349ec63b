"""The ``cost/gpu_hours`` metric: device-hours from the accelerator table (``vlsa_platform.cluster``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cluster import AcceleratorClass, gpu_hours
from .names import COST_GPU_HOURS


class GpuHoursMeter:
    """Device-hours a stage's workers have used since the meter started, on top of ``already`` (what earlier
    stages or a run's earlier attempts used, e.g. restored from a checkpoint). CPU workers count 0
    (:func:`vlsa_platform.cluster.gpu_hours`)."""

    def __init__(
        self,
        accelerator: AcceleratorClass,
        num_workers: int,
        already: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accelerator = accelerator
        self.num_workers = num_workers
        self.already = already
        self._clock = clock
        self._start = clock()

    def value(self) -> float:
        """Device-hours so far."""
        return self.already + gpu_hours(self.accelerator, self.num_workers, self._clock() - self._start)

    def metrics(self) -> dict[str, float]:
        """``{"cost/gpu_hours": value}``, ready for :meth:`Tracker.log_metrics`."""
        return {COST_GPU_HOURS: self.value()}


__all__ = ["GpuHoursMeter"]
