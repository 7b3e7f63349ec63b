"""Accelerator classes -> DeepSpeed settings and cost (DESIGN.md §3: read by orchestration and the plan).

- :mod:`.accelerators`: the table of classes (memory, bf16 peak, price), overridable per experiment, and the
  Ray resources / labels that place workers on a class.
- :mod:`.memory`: per-GPU memory of a stage under DeepSpeed ZeRO (model states, activations, overhead).
- :mod:`.derive`: the open placement fields (ZeRO stage, offload, micro-batch, accumulation) of a stage on a
  class, keeping its global batch — and so its optimisation — the same on every class.

Nothing here imports Ray, DeepSpeed or torch: planning stays fast and starts nothing.
"""

from .accelerators import (
    ANY_GPU,
    BUILTIN,
    CPU,
    AcceleratorClass,
    AcceleratorTable,
    cost_per_hour,
    gpu_hours,
    label_selector,
    node_resources,
    ray_resources,
)
from .derive import ResolvedPlacement, accelerator_for, derive_placement
from .memory import MemoryEstimate, ModelDims, StageNeeds, estimate, model_state_bytes, stage_needs

__all__ = [
    "ANY_GPU",
    "BUILTIN",
    "CPU",
    "AcceleratorClass",
    "AcceleratorTable",
    "MemoryEstimate",
    "ModelDims",
    "ResolvedPlacement",
    "StageNeeds",
    "accelerator_for",
    "cost_per_hour",
    "derive_placement",
    "estimate",
    "gpu_hours",
    "label_selector",
    "model_state_bytes",
    "node_resources",
    "ray_resources",
    "stage_needs",
]
