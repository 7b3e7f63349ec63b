"""What a stage's compute costs on an accelerator class, before it runs: GPU-hours, wall time and price.

``GPU-hours = FLOPs / (bf16 peak x MFU) / 3600`` (every device of the stage at that rate), ``wall time =
GPU-hours / devices``, ``price = GPU-hours x hourly_usd``. The FLOPs are :mod:`.flops`'s model FLOPs; the MFU
is the class's ``mfu`` (``cluster.accelerators.NAME.mfu``, e.g. the GPU benchmark's measured figure) or
:data:`DEFAULT_MFU`. A class with no bf16 peak (CPU workers, a GPU of unknown class) gets no estimate; one with
no price gets hours but no price. The estimate leaves out what is not compute: data loading stalls, checkpoint
saves, validation passes, start-up and failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .accelerators import AcceleratorClass

DEFAULT_MFU = 0.40
"""MFU assumed where the experiment states none: the low end of what large bf16 training reaches on H100s
with 3D parallelism (38-43 %, "The Llama 3 Herd of Models", Dubey et al. 2024, Table 4) and below PaLM's
46 % on TPUs (Chowdhery et al. 2022, Table 3). A data-parallel ZeRO run of an 8B model with activation
recomputation on one node is unlikely to do better; set ``cluster.accelerators.NAME.mfu`` to a measured one."""

NOT_PRICED = "not priced"
"""What the plan says for a stage on a class without a bf16 peak or price."""


@dataclass(frozen=True)
class ComputeCost:
    """A stage's estimated compute on its class; ``None`` fields are what the class cannot price."""

    flops: float
    """Model FLOPs of the whole stage (FLOPs per sample x samples)."""
    devices: int
    mfu: float | None
    """Utilisation assumed; ``None`` without a bf16 peak."""
    gpu_hours: float | None
    wall_hours: float | None
    price_usd: float | None
    note: str = ""
    """Why a figure is missing (:data:`NOT_PRICED` and the reason), else empty."""

    def as_plan(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "devices": self.devices,
            "mfu": self.mfu,
            "gpu_hours": None if self.gpu_hours is None else round(self.gpu_hours, 3),
            "wall_hours": None if self.wall_hours is None else round(self.wall_hours, 3),
            "price_usd": None if self.price_usd is None else round(self.price_usd, 2),
            "note": self.note,
        }


def compute_cost(flops: float, accelerator: AcceleratorClass, devices: int) -> ComputeCost:
    """``flops`` of model compute spread over ``devices`` of ``accelerator`` (module docs)."""
    if accelerator.bf16_tflops is None:
        note = f"{NOT_PRICED}: {accelerator.name} workers have no bf16 peak in the accelerator table"
        return ComputeCost(flops, devices, None, None, None, None, note)
    mfu = accelerator.mfu if accelerator.mfu is not None else DEFAULT_MFU
    hours = flops / (accelerator.bf16_tflops * 1e12 * mfu) / 3600.0
    price = None if accelerator.hourly_usd is None else hours * accelerator.hourly_usd
    note = "" if price is not None else f"{NOT_PRICED}: {accelerator.name} has no hourly_usd"
    return ComputeCost(flops, devices, mfu, hours, hours / devices, price, note)


__all__ = ["DEFAULT_MFU", "NOT_PRICED", "ComputeCost", "compute_cost"]
