"""Build the VLSA model on the ``meta`` device and put a full state dict into place.

A stage that starts from saved weights needs no random initialisation and no second copy: the structure is
built on ``meta`` (no memory, no init), the saved tensors become the parameters themselves
(``load_state_dict(assign=True)``), and what a state dict does not hold is re-created afterwards: the
non-persistent buffers (LLaMA's rotary ``inv_freq``, CLIP's ``position_ids``) through their sub-model's own
``_init_weights`` — the way transformers' ``from_pretrained`` re-creates them — and tied weights tied again.
Reading the tensors (the file format, remote storage) is the caller's (``train.build``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as hf_init

from .configuration_vlsa import VLSAConfig
from .lora import LoraSettings, apply_lora
from .modeling_vlsa import VLSAForConditionalGeneration

#: transformers' mark on a tensor that its init functions must leave alone (what ``from_pretrained`` sets on
#: loaded weights).
_LOADED_FLAG = "_is_hf_initialized"


def empty_model(config: VLSAConfig, lora: LoraSettings | None = None) -> VLSAForConditionalGeneration:
    """The model (with LoRA adapters when ``lora`` is given) on the ``meta`` device: its structure, parameter
    shapes and dtypes, no memory and no initialisation (transformers skips init on ``meta``)."""
    with torch.device("meta"):
        model = VLSAForConditionalGeneration(config)
        if lora is not None:
            apply_lora(model, lora)
    return model


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict's keys and shapes differ from a model's (empty when it fits)."""

    missing: list[str] = field(default_factory=list)
    """Keys the model has and the state dict lacks."""
    unexpected: list[str] = field(default_factory=list)
    """Keys the state dict has and the model lacks."""
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """``(key, model's shape, state dict's shape)`` for keys both have."""

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 3) -> str:
        """The first ``limit`` keys of each kind of difference, for an error message."""
        parts = [
            f"{what} {keys[:limit]}"
            for what, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("wrong shape (key, model, saved)", self.wrong_shape),
            )
            if keys
        ]
        return "; ".join(parts)


def compare_state(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> StateMismatch:
    """Compare ``model``'s state dict (on ``meta`` or not) with saved tensors' ``shapes`` by key."""
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    saved = {key: tuple(shape) for key, shape in shapes.items()}
    return StateMismatch(
        missing=sorted(set(expected) - set(saved)),
        unexpected=sorted(set(saved) - set(expected)),
        wrong_shape=sorted(
            (key, expected[key], saved[key])
            for key in set(expected) & set(saved)
            if expected[key] != saved[key]
        ),
    )


def assign_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Make ``state``'s tensors ``model``'s parameters and persistent buffers (no copy; every key must match,
    see :func:`compare_state`), then re-create the non-persistent buffers and tie tied weights.

    Tensors should already have the model's dtypes (:func:`target_dtypes`); the model may be on ``meta``.
    """
    model.load_state_dict(state, strict=True, assign=True)
    restore_buffers(model)
    if isinstance(model, PreTrainedModel):
        model.tie_weights()  # assign gave tied keys separate tensors: point them at one again
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"still on the meta device after loading: {left[:5]}")


def target_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """The dtype each state-dict key has in ``model`` (what a loaded tensor is cast to)."""
    return {key: t.dtype for key, t in model.state_dict().items()}


def restore_buffers(model: nn.Module) -> None:
    """Re-create every buffer still on ``meta`` (non-persistent buffers, which no state dict holds) on the CPU,
    with the ``_init_weights`` of the nearest transformers sub-model that owns it — as ``from_pretrained``
    does. Loaded tensors carry transformers' "initialised" flag meanwhile, so its init functions skip them.

    Raises ``RuntimeError`` naming a buffer that no such init writes.
    """
    owners = [(name, m) for name, m in model.named_modules() if isinstance(m, PreTrainedModel)]
    for name, module in model.named_modules():
        empty = {b: t for b, t in module.named_buffers(recurse=False) if t.is_meta}
        if not empty:
            continue
        fresh = {b: torch.empty_like(t, device="cpu") for b, t in empty.items()}
        for b, tensor in fresh.items():
            module.register_buffer(b, tensor, persistent=False)
        before = {b: t._version for b, t in fresh.items()}  # bumped by every in-place write
        owner = _owner(owners, name)
        if owner is not None:
            loaded = (t for b, t in module.state_dict(keep_vars=True).items() if b not in fresh)
            with _flagged(loaded), torch.no_grad(), hf_init.guard_torch_init_functions():
                owner._init_weights(module)
        unwritten = [
            f"{name}.{b}" for b, t in fresh.items() if getattr(module, b) is t and t._version == before[b]
        ]
        if unwritten:
            raise RuntimeError(
                f"non-persistent buffers {unwritten} ({type(module).__name__}) are not in the saved weights and "
                "no transformers _init_weights re-creates them: add their recipe to materialize.restore_buffers"
            )


def _owner(owners: list[tuple[str, PreTrainedModel]], name: str) -> PreTrainedModel | None:
    """The innermost transformers model whose module path contains ``name``."""
    inside = [
        (prefix, m) for prefix, m in owners if not prefix or name == prefix or name.startswith(prefix + ".")
    ]
    return max(inside, key=lambda pm: len(pm[0]))[1] if inside else None


@contextlib.contextmanager
def _flagged(tensors: Iterator[torch.Tensor]) -> Iterator[None]:
    """Mark ``tensors`` as loaded for transformers' guarded init functions, and unmark them after."""
    marked = [t for t in tensors if t is not None and not hasattr(t, _LOADED_FLAG)]
    for tensor in marked:
        setattr(tensor, _LOADED_FLAG, True)
    try:
        yield
    finally:
        for tensor in marked:
            delattr(tensor, _LOADED_FLAG)


__all__ = [
    "StateMismatch",
    "assign_state",
    "compare_state",
    "empty_model",
    "restore_buffers",
    "target_dtypes",
]
