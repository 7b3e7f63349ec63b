"""The accelerator table: what the planner knows about each class of GPU a Ray cluster may offer.

One :class:`AcceleratorClass` per Ray accelerator type (the strings of ``ray.util.accelerators``, which Ray uses
for the ``accelerator_type:<TYPE>`` resource and the ``ray.io/accelerator-type`` node label). The placement
derivation (:mod:`.derive`) reads ``memory_gib``; ``bf16_tflops`` is there for MFU and time estimates;
``hourly_usd`` for cost estimates (the tracked metric ``cost/gpu_hours`` counts hours, not dollars); ``mfu``
(none built in: :data:`.cost.DEFAULT_MFU` applies) for an experiment's measured utilisation.

The numbers and where they come from:

============  ===========  ==========  ==========  ================================================================
class         memory GiB   bf16 TF/s   USD / h     sources
============  ===========  ==========  ==========  ================================================================
``A10G``      22.49        125         2.04        memory: 23028 MiB as ``nvidia-smi`` reports it (24 GB GDDR6).
                                                   bf16: NVIDIA's A10 datasheet, dense (250 with sparsity); NVIDIA
                                                   publishes no separate A10G sheet and some measure closer to 70 —
                                                   override it if MFU matters. Price: AWS ``g5.48xlarge`` / 8.
``L4``        22.49        121         1.67        23034 MiB; L4 datasheet 242 with sparsity -> 121 dense;
                                                   AWS ``g6.48xlarge`` / 8.
``A100``      40.0         312         4.10        Ray's auto-detected type for both A100 sizes: planned as the
                                                   smaller card. Use ``A100-80G`` for the 80 GB one.
``A100-40G``  40.0         312         4.10        40960 MiB; A100 datasheet (624 with sparsity);
                                                   AWS ``p4d.24xlarge`` / 8.
``A100-80G``  80.0         312         5.12        81920 MiB; as above; AWS ``p4de.24xlarge`` / 8.
``H100``      79.65        989         6.88        H100 SXM5 80 GB: 81559 MiB; datasheet 1979 with sparsity ->
                                                   989 dense; AWS ``p5.48xlarge`` / 8 after the 2025 price cut.
``H200``      140.4        989         7.91        H200 SXM 141 GB: 143771 MiB; same tensor cores as H100 SXM;
                                                   AWS ``p5en.48xlarge`` / 8 (rough).
============  ===========  ==========  ==========  ================================================================

Prices are rough on-demand list prices per GPU-hour (an 8-GPU instance divided by 8, us-east-1, 2025); spot,
reserved and other clouds differ by 2-3x, so an experiment file that cares sets its own in
``cluster.accelerators``. Memory is what the driver reports (the memory model adds its own overhead to the
estimate).

``A100-40G``/``A100-80G`` are not auto-detected by Ray (nodes report ``A100``); a cluster that mixes them
declares the resource itself (``ray start --resources='{"accelerator_type:A100-80G": 1}'``), as the ``infra/``
worker groups are to. This module imports nothing from Ray, so planning stays fast; a test checks the strings
against Ray's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config.errors import ConfigError

if TYPE_CHECKING:
    from ..config.schema import ClusterConfig

#: Prefix of the custom resource Ray gives nodes of an accelerator type (``ray._common.utils``).
RESOURCE_PREFIX = "accelerator_type:"
#: Node label Ray sets to the accelerator type (for ``label_selector`` placement).
ACCELERATOR_LABEL = "ray.io/accelerator-type"
#: Fraction of the ``accelerator_type:X`` resource a worker asks for (what Ray Train's ``ScalingConfig`` asks).
RESOURCE_FRACTION = 0.001

_MIB = 1.0 / 1024.0


@dataclass(frozen=True)
class AcceleratorClass:
    """One class of accelerator: the unit of the table, of placement and of price."""

    name: str
    """Name in experiment files (``stages.X.placement.accelerator_type``): the Ray accelerator type."""
    ray_accelerator_type: str | None
    """Ray's accelerator type string (``None`` for the CPU/any-GPU pseudo-classes)."""
    memory_gib: float | None
    """Device memory in GiB as the driver reports it; ``None`` = not modelled (CPU, unknown GPU)."""
    bf16_tflops: float | None
    """Dense bf16 tensor peak, TFLOP/s (no sparsity)."""
    hourly_usd: float | None
    """Price per device-hour; ``None`` = not priced."""
    interconnect: str = ""
    """A note on how devices of one node talk (NVLink, PCIe), which bounds how well ZeRO-3 scales."""
    mfu: float | None = None
    """Model FLOPs utilisation the cost estimate assumes here (``cluster.accelerators.NAME.mfu``); ``None`` =
    :data:`.cost.DEFAULT_MFU`."""

    @property
    def is_gpu(self) -> bool:
        """A known GPU class (memory modelled), as opposed to the CPU / any-GPU pseudo-classes."""
        return self.ray_accelerator_type is not None


#: Workers without an accelerator (``use_gpu: false``, e.g. ``--scale tiny``): nothing is derived from memory.
CPU = AcceleratorClass("CPU", None, None, None, None, "host memory; gloo")
#: ``use_gpu: true`` with no ``accelerator_type``: any GPU, memory unknown, nothing derived from memory.
ANY_GPU = AcceleratorClass("GPU", None, None, None, None, "unknown")

BUILTIN: dict[str, AcceleratorClass] = {
    c.name: c
    for c in (
        AcceleratorClass("A10G", "A10G", 23028 * _MIB, 125.0, 2.04, "PCIe Gen4, no NVLink (AWS g5)"),
        AcceleratorClass("L4", "L4", 23034 * _MIB, 121.0, 1.67, "PCIe Gen4, no NVLink (AWS g6)"),
        AcceleratorClass("A100", "A100", 40960 * _MIB, 312.0, 4.10, "either A100 size; planned as 40 GB"),
        AcceleratorClass("A100-40G", "A100-40G", 40960 * _MIB, 312.0, 4.10, "NVLink 3, 600 GB/s (p4d)"),
        AcceleratorClass("A100-80G", "A100-80G", 81920 * _MIB, 312.0, 5.12, "NVLink 3, 600 GB/s (p4de)"),
        AcceleratorClass("H100", "H100", 81559 * _MIB, 989.0, 6.88, "NVLink 4, 900 GB/s (p5)"),
        AcceleratorClass("H200", "H200", 143771 * _MIB, 989.0, 7.91, "NVLink 4, 900 GB/s (p5en)"),
    )
}


class AcceleratorTable(Mapping[str, AcceleratorClass]):
    """The built-in classes with an experiment's ``cluster.accelerators`` overrides laid over them."""

    def __init__(self, classes: Mapping[str, AcceleratorClass]) -> None:
        self._classes = dict(classes)

    def __getitem__(self, name: str) -> AcceleratorClass:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    @classmethod
    def from_config(cls, cluster: ClusterConfig | None = None) -> AcceleratorTable:
        """The table for an experiment: each ``cluster.accelerators.NAME`` entry replaces the fields it gives
        of the built-in class ``NAME``, or adds a class when all of ``memory_gb``, ``bf16_tflops`` and
        ``hourly_usd`` are given. Raises ``ConfigError`` naming the entry otherwise."""
        classes = dict(BUILTIN)
        for name, spec in (cluster.accelerators if cluster is not None else {}).items():
            given = {
                "memory_gib": spec.memory_gb,
                "bf16_tflops": spec.bf16_tflops,
                "hourly_usd": spec.hourly_usd,
                "mfu": spec.mfu,
            }
            given = {k: v for k, v in given.items() if v is not None}
            if name in classes:
                classes[name] = replace(classes[name], **given)
                continue
            missing = [
                key for key in ("memory_gb", "bf16_tflops", "hourly_usd") if getattr(spec, key) is None
            ]
            if missing:
                raise ConfigError(
                    f"cluster.accelerators.{name}: not a built-in accelerator class ({', '.join(BUILTIN)}); "
                    f"a new class needs memory_gb, bf16_tflops and hourly_usd (missing: {', '.join(missing)})"
                )
            classes[name] = AcceleratorClass(
                name, name, interconnect="declared in the experiment file", **given
            )
        return cls(classes)

    def lookup(self, name: str, field: str = "accelerator_type") -> AcceleratorClass:
        """The class called ``name``; ``ConfigError`` naming ``field`` and the known classes if there is none."""
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"{field}: unknown accelerator type {name!r} (known: {', '.join(self._classes)}; "
                "add one under cluster.accelerators with memory_gb, bf16_tflops and hourly_usd)"
            ) from None


def ray_resources(accelerator: AcceleratorClass) -> dict[str, float]:
    """The custom resource a worker asks for to land on ``accelerator`` — the one Ray Train's
    ``ScalingConfig(accelerator_type=...)`` adds (``{"accelerator_type:A10G": 0.001}``); empty for CPU/any GPU.
    A local cluster simulates a class by declaring that resource (``ray.init(resources=node_resources(...))``)."""
    if accelerator.ray_accelerator_type is None:
        return {}
    return {f"{RESOURCE_PREFIX}{accelerator.ray_accelerator_type}": RESOURCE_FRACTION}


def node_resources(accelerator: AcceleratorClass, count: int = 1) -> dict[str, float]:
    """The resource a node of ``accelerator`` offers (``count`` devices), to declare on nodes Ray does not
    auto-detect (``A100-80G``) or to simulate the class on a CPU-only local cluster."""
    if accelerator.ray_accelerator_type is None:
        return {}
    return {f"{RESOURCE_PREFIX}{accelerator.ray_accelerator_type}": float(count)}


def label_selector(accelerator: AcceleratorClass) -> dict[str, str] | None:
    """The Ray label selector for ``accelerator`` (``ScalingConfig(label_selector=...)``), or ``None``."""
    if accelerator.ray_accelerator_type is None:
        return None
    return {ACCELERATOR_LABEL: accelerator.ray_accelerator_type}


def cost_per_hour(accelerator: AcceleratorClass, num_workers: int) -> float | None:
    """Price of ``num_workers`` devices for an hour (``None`` when the class is not priced)."""
    if accelerator.hourly_usd is None:
        return None
    return accelerator.hourly_usd * num_workers


def gpu_hours(accelerator: AcceleratorClass, num_workers: int, seconds: float) -> float:
    """Device-hours used by ``num_workers`` workers for ``seconds`` (the ``cost/gpu_hours`` metric); 0 on CPU.

    A class simulated on CPU workers (``use_gpu: false`` with an ``accelerator_type``) counts as that class.
    Compared by value: a class read back from a stage's spec (``ResolvedPlacement.from_dict``) is a copy."""
    if accelerator == CPU:
        return 0.0
    return num_workers * seconds / 3600.0


__all__ = [
    "ACCELERATOR_LABEL",
    "ANY_GPU",
    "BUILTIN",
    "CPU",
    "RESOURCE_FRACTION",
    "RESOURCE_PREFIX",
    "AcceleratorClass",
    "AcceleratorTable",
    "cost_per_hour",
    "gpu_hours",
    "label_selector",
    "node_resources",
    "ray_resources",
]
