"""Accelerator classes -> DeepSpeed settings and cost (DESIGN.md §3: read by orchestration and the plan).

- :mod:`.accelerators`: the table of classes (memory, bf16 peak, price), overridable per experiment, and the
  Ray resources / labels that place workers on a class.
- :mod:`.memory`: per-GPU memory of a stage under DeepSpeed ZeRO (model states, activations, overhead).
- :mod:`.flops`: training FLOPs per sample of a stage, by part (from parameter counts and dimensions).
- :mod:`.cost`: a stage's estimated GPU-hours, wall time and price on its class (bf16 peak, MFU, price).
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
from .cost import DEFAULT_MFU, NOT_PRICED, ComputeCost, compute_cost
from .derive import ResolvedPlacement, accelerator_for, derive_placement
from .flops import PartFlops, SampleFlops, sample_flops
from .memory import MemoryEstimate, ModelDims, StageNeeds, estimate, model_state_bytes, stage_needs

__all__ = [
    "ANY_GPU",
    "BUILTIN",
    "CPU",
    "DEFAULT_MFU",
    "NOT_PRICED",
    "AcceleratorClass",
    "AcceleratorTable",
    "ComputeCost",
    "MemoryEstimate",
    "ModelDims",
    "PartFlops",
    "ResolvedPlacement",
    "SampleFlops",
    "StageNeeds",
    "accelerator_for",
    "compute_cost",
    "cost_per_hour",
    "derive_placement",
    "estimate",
    "gpu_hours",
    "label_selector",
    "model_state_bytes",
    "node_resources",
    "ray_resources",
    "sample_flops",
    "stage_needs",
]
