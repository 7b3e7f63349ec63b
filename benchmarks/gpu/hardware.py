"""The device ``benchmarks/gpu`` measures on: its description, the bf16 dense peak MFU is taken against (the
accelerator table's class for ``torch.cuda.get_device_name``) and the attention kernel it can run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import torch

from vlsa_platform.cluster import BUILTIN
from vlsa_platform.cluster.accelerators import AcceleratorClass


def attention() -> str:
    """``flash_attention_2`` where ``flash_attn`` imports and a GPU is present, else ``sdpa`` (the file's
    ``auto`` asks only whether the package is installed; one built for another torch fails at import)."""
    if not torch.cuda.is_available():
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
    except Exception:  # ImportError, or an undefined symbol of a wheel built for another torch
        return "sdpa"
    return "flash_attention_2"


def accelerator_class(name: str, memory_gib: float) -> AcceleratorClass | None:
    """The accelerator table's class of a CUDA device name (``torch.cuda.get_device_name``), if known."""
    words = set(name.upper().replace("-", " ").split())  # "NVIDIA A100-SXM4-40GB": A100; "L40S" is no L4
    for cls in ("H200", "H100", "A10G", "L4"):
        if cls in words:
            return BUILTIN[cls]
    if "A100" in words:
        return BUILTIN["A100-80G" if memory_gib > 50 else "A100-40G"]
    return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_device(device: torch.device, peak_override: float | None) -> dict[str, Any]:
    """The device measured on and the bf16 dense peak MFU is taken against (``None`` on a CPU)."""
    info: dict[str, Any] = {
        "kind": device.type,
        "torch": torch.__version__,
        "attn_implementation": attention(),
        "flash_attn": _package_version("flash-attn") or _package_version("flash_attn"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
    }
    if device.type != "cuda":
        return {**info, "name": info["cpu"], "threads": torch.get_num_threads(), "bf16_tflops": None}
    props = torch.cuda.get_device_properties(device)
    memory_gib = props.total_memory / 2**30
    cls = accelerator_class(props.name, memory_gib)
    peak = peak_override if peak_override is not None else (cls.bf16_tflops if cls else None)
    note = "given by --peak-tflops" if peak_override is not None else "cluster.accelerators.BUILTIN"
    if peak_override is None and cls is not None and cls.name == "H100" and "SXM" not in props.name.upper():
        note += " (the H100 SXM's 989; a PCIe or NVL card peaks lower: pass --peak-tflops)"
    return {
        **info,
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(memory_gib, 2),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "accelerator_class": cls.name if cls else None,
        "bf16_tflops": peak,
        "bf16_tflops_from": note if peak is not None else "unknown card: pass --peak-tflops",
    }


__all__ = ["accelerator_class", "attention", "describe_device"]
