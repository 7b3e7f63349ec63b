"""A stage's DeepSpeed settings derived from the accelerator class it lands on.

The experiment file fixes what the optimisation depends on — ``global_batch`` (and so the number of optimizer
steps and the learning-rate schedule) and ``num_workers`` — and may leave the rest open. For each open field,
:func:`derive_placement` picks, from the memory model of :mod:`.memory` and the class's memory:

1. ``zero_stage`` / ``offload``: the first of ZeRO-0, 1, 2, 3 (no offload), then ZeRO-1/2/3 with the optimizer
   on the host, then ZeRO-3 with parameters on the host too, that fits at the smallest micro-batch (1, or the
   file's ``micro_batch``). Offloading comes last because its cost (host memory, CPU Adam, PCIe traffic) is
   not modelled; a higher ZeRO stage only costs communication.
2. ``micro_batch``: the largest power of two that divides ``global_batch / num_workers`` and still fits.
3. ``grad_accum = global_batch / (micro_batch x num_workers)``, exact.

So the same stage on 8 A10Gs and on 8 H100s runs the same global batch and the same schedule, with more
accumulation steps and a higher ZeRO stage on the smaller card. Fields the file sets are kept; if the
estimate says they do not fit, the result carries a warning rather than a silent change. Workers without a
known accelerator class (``use_gpu: false`` or no ``accelerator_type``) get the defaults of
:meth:`~vlsa_platform.config.schema.Placement.resolved` (ZeRO-2, micro-batch 1), as ``--scale tiny`` expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config.errors import ConfigError
from .accelerators import ANY_GPU, CPU, AcceleratorClass, AcceleratorTable, cost_per_hour
from .memory import GIB, MemoryEstimate, Offload, StageNeeds, estimate

if TYPE_CHECKING:
    from ..config.schema import Placement

#: ZeRO stage and offload, in the order they are tried (fastest first).
ZERO_ORDER: tuple[tuple[int, Offload], ...] = (
    (0, "none"),
    (1, "none"),
    (2, "none"),
    (3, "none"),
    (1, "optimizer"),
    (2, "optimizer"),
    (3, "optimizer"),
    (3, "optimizer_and_params"),
)


@dataclass(frozen=True)
class ResolvedPlacement:
    """Every placement field filled in, with the memory estimate behind it."""

    accelerator: AcceleratorClass
    """The class the workers land on (:data:`~.accelerators.CPU` / :data:`~.accelerators.ANY_GPU` if none)."""
    accelerator_type: str | None
    """As written in the file (the class's name), ``None`` for CPU or any GPU."""
    use_gpu: bool
    num_workers: int
    zero_stage: int
    offload: Offload
    micro_batch: int
    grad_accum: int
    global_batch: int
    derived: tuple[str, ...] = ()
    """The fields the file left open and this derivation filled."""
    memory: MemoryEstimate | None = None
    """Per-worker estimate at these settings (a sanity number for CPU workers)."""
    fits: bool | None = None
    """``memory.total`` within the class's memory; ``None`` when the class's memory is not modelled."""
    warnings: tuple[str, ...] = field(default=())

    @property
    def hourly_usd(self) -> float | None:
        """Price of all the stage's workers for an hour (``None`` if the class has no price)."""
        return cost_per_hour(self.accelerator, self.num_workers)

    def as_plan(self) -> dict[str, Any]:
        """The plan's ``placement`` (DESIGN.md §4 keys first, then the derivation's)."""
        memory = self.accelerator.memory_gib
        hourly = self.hourly_usd
        return {
            "accelerator_type": self.accelerator_type,
            "use_gpu": self.use_gpu,
            "num_workers": self.num_workers,
            "zero_stage": self.zero_stage,
            "offload": self.offload,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "derived": list(self.derived),
            "memory_gib_per_gpu": None if self.memory is None else round(self.memory.total / GIB, 2),
            "memory_breakdown_gib": None if self.memory is None else self.memory.gib(),
            "host_gib_per_gpu": None if self.memory is None else round(self.memory.offloaded / GIB, 2),
            "accelerator_memory_gib": None if memory is None else round(memory, 2),
            "fits": self.fits,
            "hourly_usd": None if hourly is None else round(hourly, 2),
        }

    def scaling_config_kwargs(self) -> dict[str, Any]:
        """Arguments of Ray Train's ``ScalingConfig`` for this placement: ``accelerator_type`` makes Ray ask
        each worker for ``accelerator_type:<TYPE>`` (see :func:`~.accelerators.ray_resources`), which is also
        how a CPU-only local cluster simulates a class (``use_gpu`` false, the resource declared on the node)."""
        return {
            "num_workers": self.num_workers,
            "use_gpu": self.use_gpu,
            "accelerator_type": self.accelerator.ray_accelerator_type,
        }


def accelerator_for(
    placement: Placement, table: AcceleratorTable, where: str = "placement"
) -> AcceleratorClass:
    """The class a placement names; :data:`ANY_GPU` for ``use_gpu`` with no type; :data:`CPU` otherwise.
    Raises ``ConfigError`` naming ``WHERE.accelerator_type`` (and the known classes) for an unknown type."""
    if placement.accelerator_type is not None:
        return table.lookup(placement.accelerator_type, f"{where}.accelerator_type")
    return ANY_GPU if placement.use_gpu else CPU


def _powers_of_two_dividing(n: int) -> list[int]:
    """``[.., 4, 2, 1]``: the powers of two that divide ``n``, largest first."""
    out = [1]
    while n % (out[-1] * 2) == 0:
        out.append(out[-1] * 2)
    return out[::-1]


def derive_placement(
    placement: Placement,
    accelerator: AcceleratorClass,
    needs: StageNeeds | None = None,
    *,
    where: str = "placement",
) -> ResolvedPlacement:
    """Fill the open fields of ``placement`` for ``accelerator`` (see the module docs).

    Args:
        placement: the stage's placement as the file (after ``--scale``/``--set``) gives it.
        accelerator: the class it lands on (:func:`accelerator_for`).
        needs: the stage's memory needs (:func:`~.memory.stage_needs`); ``None`` = no memory model (defaults
            only, as for CPU workers).
        where: dotted path of the placement, for messages (``stages.stage3.placement``).

    Raises:
        ConfigError: naming the field when the batch arithmetic is impossible (``global_batch`` not a
            multiple of ``num_workers``, ``grad_accum`` that disagrees).
    """
    workers, global_batch = placement.num_workers, placement.global_batch
    if global_batch % workers:
        raise ConfigError(
            f"{where}.global_batch: global_batch {global_batch} is not a multiple of num_workers {workers}, so "
            "the workers cannot share it evenly"
        )
    per_worker = global_batch // workers
    use_gpu = placement.use_gpu if placement.use_gpu is not None else placement.accelerator_type is not None
    derived: list[str] = []

    micro = placement.micro_batch
    if micro is None and placement.grad_accum is not None:
        if per_worker % placement.grad_accum:
            raise ConfigError(
                f"{where}.grad_accum: global_batch {global_batch} / num_workers {workers} = {per_worker} is "
                f"not a multiple of grad_accum {placement.grad_accum}"
            )
        micro = per_worker // placement.grad_accum
        derived.append("micro_batch")

    def finish(zero: int, offload: Offload, micro_batch: int, warnings: list[str]) -> ResolvedPlacement:
        if per_worker % micro_batch:
            raise ConfigError(
                f"{where}.micro_batch: global_batch {global_batch} is not a multiple of micro_batch "
                f"{micro_batch} x num_workers {workers} = {micro_batch * workers}"
            )
        accum = per_worker // micro_batch
        if placement.grad_accum is not None and placement.grad_accum != accum:
            raise ConfigError(
                f"{where}.grad_accum: grad_accum {placement.grad_accum} disagrees with global_batch "
                f"{global_batch} / (micro_batch {micro_batch} x num_workers {workers}) = {accum}"
            )
        if placement.grad_accum is None:
            derived.append("grad_accum")
        memory = None
        if needs is not None:
            memory = estimate(
                needs, zero_stage=zero, offload=offload, num_workers=workers, micro_batch=micro_batch
            )
        fits = None
        if memory is not None and accelerator.memory_gib is not None:
            fits = memory.total <= accelerator.memory_gib * GIB
        order = ("zero_stage", "offload", "micro_batch", "grad_accum")
        return ResolvedPlacement(
            accelerator=accelerator,
            accelerator_type=placement.accelerator_type,
            use_gpu=use_gpu,
            num_workers=workers,
            zero_stage=zero,
            offload=offload,
            micro_batch=micro_batch,
            grad_accum=accum,
            global_batch=global_batch,
            derived=tuple(f for f in order if f in derived),
            memory=memory,
            fits=fits,
            warnings=tuple(warnings),
        )

    if needs is None or accelerator.memory_gib is None:
        # No memory to plan against: today's defaults (ZeRO-2, or 3 with parameter offload; micro-batch 1).
        offload: Offload = placement.offload or "none"
        zero = placement.zero_stage
        if zero is None:
            zero = 3 if offload == "optimizer_and_params" else 2
        derived += [f for f in ("zero_stage", "offload") if getattr(placement, f) is None]
        if micro is None:
            micro = 1
            derived.append("micro_batch")
        return finish(zero, offload, micro, [])

    budget = accelerator.memory_gib * GIB

    def total(zero: int, offload: Offload, micro_batch: int) -> float:
        return estimate(
            needs, zero_stage=zero, offload=offload, num_workers=workers, micro_batch=micro_batch
        ).total

    candidates = [
        (z, o)
        for z, o in ZERO_ORDER
        if (placement.zero_stage is None or z == placement.zero_stage)
        and (placement.offload is None or o == placement.offload)
    ]
    if not candidates:
        raise ConfigError(
            f"{where}.offload: offload {placement.offload} does not go with zero_stage {placement.zero_stage} "
            "(optimizer offload needs ZeRO >= 1, parameter offload ZeRO-3)"
        )
    smallest = micro or 1
    # Nothing fits: with the micro-batch open, the most memory-saving settings (the best the plan can offer);
    # with the file's micro-batch (the lever the warning points at), the fastest — offloading would not help.
    fallback = candidates[-1] if micro is None else candidates[0]
    zero, offload = next(((z, o) for z, o in candidates if total(z, o, smallest) <= budget), fallback)
    derived += [f for f in ("zero_stage", "offload") if getattr(placement, f) is None]
    if micro is None:
        derived.append("micro_batch")
        sizes = _powers_of_two_dividing(per_worker)
        micro = next((m for m in sizes if total(zero, offload, m) <= budget), 1)

    warnings: list[str] = []
    need = total(zero, offload, micro)
    if need > budget:
        fixed = [
            f"{f} {getattr(placement, f)}"
            for f in ("zero_stage", "offload", "micro_batch", "grad_accum")
            if getattr(placement, f) is not None
        ]
        if fixed:
            advice = (
                f"set in the file: {', '.join(fixed)}; leave them null to have them derived, or use more "
                "workers or a larger accelerator class"
            )
        else:
            advice = (
                "even with the most memory-saving settings; use more workers, a larger accelerator class, a "
                "shorter data.max_length or LoRA"
            )
        warnings.append(
            f"{where}: about {need / GIB:.1f} GiB per GPU at zero_stage {zero}, offload {offload}, micro_batch "
            f"{micro} (sequences of {needs.sequence_length} tokens) — more than {accelerator.name}'s "
            f"{accelerator.memory_gib:.1f} GiB ({advice})"
        )
    return finish(zero, offload, micro, warnings)


__all__ = ["ZERO_ORDER", "ResolvedPlacement", "accelerator_for", "derive_placement"]
