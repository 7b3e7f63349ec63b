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
:func:`_memoryless_defaults` (ZeRO-2, micro-batch 1), as ``--scale tiny`` expects.

The :class:`ResolvedPlacement` is the one placement object from the plan to the worker: the orchestration
derives it once per run, hands it to each stage's workers (:meth:`~ResolvedPlacement.to_dict` /
:meth:`~ResolvedPlacement.from_dict` across the Ray boundary), and the training strategy takes it as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

#: The fields a file may leave open, in the order the plan lists the derived ones.
OPEN_FIELDS = ("zero_stage", "offload", "micro_batch", "grad_accum")


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

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (the accelerator class and memory estimate as nested dicts): what crosses
        the Ray boundary in a stage's spec. :meth:`from_dict` reads it back as an equal object."""
        data = asdict(self)
        data["derived"], data["warnings"] = list(self.derived), list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedPlacement:
        """The placement :meth:`to_dict` wrote (equal to the one it was written from)."""
        memory = data.get("memory")
        return cls(
            **{
                **data,
                "accelerator": AcceleratorClass(**data["accelerator"]),
                "memory": None if memory is None else MemoryEstimate(**memory),
                "derived": tuple(data.get("derived", ())),
                "warnings": tuple(data.get("warnings", ())),
            }
        )

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


# ------------------------------------------------------------------------------------------ batch arithmetic


def _per_worker(placement: Placement, where: str) -> int:
    """Samples per worker per optimizer step; ``ConfigError`` unless the workers share the batch evenly."""
    workers, global_batch = placement.num_workers, placement.global_batch
    if global_batch % workers:
        raise ConfigError(
            f"{where}.global_batch: global_batch {global_batch} is not a multiple of num_workers {workers}, so "
            "the workers cannot share it evenly"
        )
    return global_batch // workers


def _micro_batch_given(placement: Placement, per_worker: int, where: str) -> int | None:
    """The micro-batch the file fixes: as written, or from its ``grad_accum``; ``None`` = open."""
    if placement.micro_batch is not None or placement.grad_accum is None:
        return placement.micro_batch
    if per_worker % placement.grad_accum:
        raise ConfigError(
            f"{where}.grad_accum: global_batch {placement.global_batch} / num_workers {placement.num_workers} "
            f"= {per_worker} is not a multiple of grad_accum {placement.grad_accum}"
        )
    return per_worker // placement.grad_accum


def _grad_accum(placement: Placement, per_worker: int, micro_batch: int, where: str) -> int:
    """``global_batch / (micro_batch x num_workers)``; ``ConfigError`` if not whole or not the file's."""
    workers, global_batch = placement.num_workers, placement.global_batch
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
    return accum


# ------------------------------------------------------------------------------------ ZeRO stage and offload


def _memoryless_defaults(placement: Placement, micro: int | None) -> tuple[int, Offload, int]:
    """``(zero_stage, offload, micro_batch)`` with no memory to plan against (CPU workers, any GPU): the file's
    fields, else ZeRO-2 (3 with parameter offload), no offload, micro-batch 1."""
    offload: Offload = placement.offload or "none"
    zero = placement.zero_stage
    if zero is None:
        zero = 3 if offload == "optimizer_and_params" else 2
    return zero, offload, 1 if micro is None else micro


def _candidates(placement: Placement, where: str) -> list[tuple[int, Offload]]:
    """The entries of :data:`ZERO_ORDER` the file's ``zero_stage`` and ``offload`` allow."""
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
    return candidates


def _fitted(
    placement: Placement,
    accelerator: AcceleratorClass,
    needs: StageNeeds,
    micro: int | None,
    per_worker: int,
    where: str,
) -> tuple[int, Offload, int, tuple[str, ...]]:
    """``(zero_stage, offload, micro_batch, warnings)``: the fastest settings whose estimate fits the class's
    memory (module docs), with a warning when even they do not."""
    assert accelerator.memory_gib is not None
    budget = accelerator.memory_gib * GIB

    workers = placement.num_workers

    def total(zero: int, offload: Offload, micro_batch: int) -> float:
        return estimate(
            needs, zero_stage=zero, offload=offload, num_workers=workers, micro_batch=micro_batch
        ).total

    candidates = _candidates(placement, where)
    smallest = micro or 1
    # Nothing fits: with the micro-batch open, the most memory-saving settings (the best the plan can offer);
    # with the file's micro-batch (the lever the warning points at), the fastest — offloading would not help.
    fallback = candidates[-1] if micro is None else candidates[0]
    zero, offload = next(((z, o) for z, o in candidates if total(z, o, smallest) <= budget), fallback)
    if micro is None:
        sizes = _powers_of_two_dividing(per_worker)
        micro = next((m for m in sizes if total(zero, offload, m) <= budget), 1)
    need = total(zero, offload, micro)
    if need <= budget:
        return zero, offload, micro, ()
    warning = _overflow_warning(placement, accelerator, needs, (zero, offload, micro), need, where)
    return zero, offload, micro, (warning,)


def _overflow_warning(
    placement: Placement,
    accelerator: AcceleratorClass,
    needs: StageNeeds,
    settings: tuple[int, Offload, int],
    need: float,
    where: str,
) -> str:
    """The plan's warning when the estimate at ``settings`` (zero stage, offload, micro-batch) exceeds the
    class's memory, pointing at the lever: the fields the file fixed, or more/larger devices."""
    zero, offload, micro = settings
    fixed = [f"{f} {getattr(placement, f)}" for f in OPEN_FIELDS if getattr(placement, f) is not None]
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
    return (
        f"{where}: about {need / GIB:.1f} GiB per GPU at zero_stage {zero}, offload {offload}, micro_batch "
        f"{micro} (sequences of {needs.sequence_length} tokens) — more than {accelerator.name}'s "
        f"{accelerator.memory_gib:.1f} GiB ({advice})"
    )


# ----------------------------------------------------------------------------------------------- the whole


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
    per_worker = _per_worker(placement, where)
    micro = _micro_batch_given(placement, per_worker, where)
    warnings: tuple[str, ...] = ()
    if needs is None or accelerator.memory_gib is None:
        zero, offload, micro = _memoryless_defaults(placement, micro)
    else:
        zero, offload, micro, warnings = _fitted(placement, accelerator, needs, micro, per_worker, where)
    accum = _grad_accum(placement, per_worker, micro, where)
    memory = None
    if needs is not None:
        memory = estimate(
            needs, zero_stage=zero, offload=offload, num_workers=placement.num_workers, micro_batch=micro
        )
    fits = None
    if memory is not None and accelerator.memory_gib is not None:
        fits = memory.total <= accelerator.memory_gib * GIB
    use_gpu = placement.use_gpu if placement.use_gpu is not None else placement.accelerator_type is not None
    return ResolvedPlacement(
        accelerator=accelerator,
        accelerator_type=placement.accelerator_type,
        use_gpu=use_gpu,
        num_workers=placement.num_workers,
        zero_stage=zero,
        offload=offload,
        micro_batch=micro,
        grad_accum=accum,
        global_batch=placement.global_batch,
        derived=tuple(f for f in OPEN_FIELDS if getattr(placement, f) is None),
        memory=memory,
        fits=fits,
        warnings=warnings,
    )


__all__ = ["OPEN_FIELDS", "ZERO_ORDER", "ResolvedPlacement", "accelerator_for", "derive_placement"]
