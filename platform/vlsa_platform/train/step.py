"""One micro-batch of training: forward, the stage-weighted loss, backward, the (maybe) optimizer step.

``total = w_llm * loss_llm + w_rec * loss_rec`` (DESIGN.md §2; weights from :func:`.schedules.loss_weights`).
A part the batch does not produce (no labelled tokens, no image for L_rec) contributes 0 (a batch
with neither gives a zero loss that still steps, so every rank runs the same collectives). A micro-batch whose
graph reaches no trainable parameter (a text-only sample where only the vision side trains) takes zero terms
under ZeRO 0-2, so it still steps, and is skipped under ZeRO-3 (counted as ``skipped_no_grad``). A non-finite
total skips the micro-batch on every rank (no backward, no step: the accumulation window waits for the next
micro-batch) and is counted, so one bad batch cannot write NaNs into the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .strategy import DeepSpeedStrategy

#: The model output's loss parts reported as metrics (DESIGN.md §4).
LOSS_PARTS: tuple[str, ...] = ("llm", "rec", "vq", "px")


def _reached_parameters(loss: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``loss`` accumulates a gradient into."""
    seen_nodes, reached, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if variable is not None:
            reached.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


def _with_unused_parameters(loss: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """``loss + 0 * sum(p.sum())`` over the trainable parameters the loss does not reach.

    Needed only with several ranks under ZeRO-1/2: a batch without images on one rank leaves the vision path
    (and Epigone, the denoiser) without gradients there while another rank has them, so ZeRO's bucketed
    gradient reductions disagree in size (gloo aborts: "Received data size doesn't match expected size"). The
    zero terms give every trainable parameter a (zero) gradient on every rank, so the collectives match and
    the update is unchanged. ZeRO-2 needs more: the same graph on every rank (:func:`check_same_structure`);
    ZeRO-3 differs already in the forward.
    """
    reached = _reached_parameters(loss)
    unused = [p for p in module.parameters() if p.requires_grad and id(p) not in reached]
    if not unused:
        return loss
    return loss + 0.0 * torch.stack([p.sum() for p in unused]).sum().to(loss.dtype)


#: Batch keys whose presence decides which sub-modules the forward runs.
_STRUCTURE_KEYS = ("pixel_values", "recon_pixel_values", "recon_latent_params", "labels")


def _structure(batch: dict[str, Any], zero_stage: int) -> dict[str, bool]:
    """What each rank must agree on. ZeRO-3: every key of ``_STRUCTURE_KEYS`` (a pixel L_rec target runs the
    VAE encoder, a cached one does not, and ZeRO-3 gathers what runs). ZeRO-2: what decides the trainable
    graph, where the two forms of L_rec target are one (the VAE is frozen)."""
    has = {key: batch.get(key) is not None for key in _STRUCTURE_KEYS}
    if zero_stage == 3:
        return has
    return {
        "pixel_values": has["pixel_values"],
        "labels": has["labels"],
        "an L_rec target": has["recon_pixel_values"] or has["recon_latent_params"],
    }


def check_same_structure(batch: dict[str, Any], zero_stage: int = 3) -> None:
    """Raise on every rank unless every rank's ``batch`` has the same structure (one small all-reduce).

    Under ZeRO-3 every rank must run the same sub-modules in its forward: each module's parameters are
    all-gathered when it runs, so a rank without images skips the vision tower's gathers while the others wait
    in them (a mismatched collective: gloo aborts, NCCL hangs). Under ZeRO-2 the graphs must match for the
    backward: gradients are reduced bucket by bucket in the order they become ready, which differs between a
    text-only graph and an image graph (see ``DeepSpeedStrategy.needs_same_batch_structure``). Zero loss terms
    cannot help there, so the batches must agree (the data loader groups each epoch by modality); this check
    turns the abort, hang or silently mixed gradients into an error on every rank."""
    structure = _structure(batch, zero_stage)
    present = torch.tensor([float(value) for value in structure.values()])
    low, high = present.clone(), present.clone()
    if torch.distributed.get_backend() == "nccl":
        low, high = low.cuda(), high.cuda()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    differing = [key for key, lo, hi in zip(structure, low.tolist(), high.tolist(), strict=True) if lo != hi]
    if differing:
        raise ValueError(
            f"ZeRO-{zero_stage} needs the same batch structure on every rank, but {', '.join(differing)} is "
            "present on some ranks only (e.g. a micro-batch without images): give every rank's micro-batch "
            "images, or none"
        )


def _reaches_trainable(loss: torch.Tensor, batch: dict[str, Any], strategy: DeepSpeedStrategy) -> bool:
    """Whether ``loss``'s graph reaches a trainable parameter. A batch with images reaches every part on the
    image path (all but the LLM, and the LLM sits on every path), so only a text-only batch is checked (with
    gradient checkpointing the LLM's inputs require grad, so ``loss.requires_grad`` alone does not tell)."""
    if not loss.requires_grad:
        return False
    if batch.get("pixel_values") is not None:
        return True
    reached = _reached_parameters(loss)
    return any(p.requires_grad and id(p) in reached for p in strategy.engine.module.parameters())


def _all_finite(local_finite: bool) -> bool:
    """Whether the loss is finite on every rank (all ranks must agree to skip, or ZeRO's collectives hang);
    one rank decides alone."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local_finite
    if torch.distributed.get_world_size() == 1:
        return local_finite
    bad = torch.tensor([0.0 if local_finite else 1.0])
    if torch.distributed.get_backend() == "nccl":
        bad = bad.cuda()
    torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return float(bad) == 0.0


def train_step(
    strategy: DeepSpeedStrategy,
    batch: dict[str, Any],
    weights: tuple[float, float],
    stats: dict[str, int] | None = None,
    on_output: Callable[[Any], None] | None = None,
) -> dict[str, float]:
    """Train on one micro-batch; returns float metrics.

    Keys: ``loss/total``, ``loss/llm``, ``loss/rec``, ``loss/vq``, ``loss/px`` (NaN where the batch has no such
    part), ``lr`` (the first param group's) and ``lr/<group>``, ``optimizer_step`` (1.0 when the optimizer
    stepped), ``skipped_nonfinite`` (the running count in ``stats``, 1 or 0 without it) and, after a step,
    ``grad_norm``. ``stats`` (a dict the caller keeps across steps) accumulates ``skipped_nonfinite``.
    ``on_output`` is called with the model's output before the backward pass (e.g. to keep the L_rec latents
    for a reconstruction panel; detach what you keep).
    """
    w_llm, w_rec = weights
    if strategy.needs_same_batch_structure:
        check_same_structure(batch, strategy.zero_stage)
    out = strategy.forward(**batch)
    if on_output is not None:
        on_output(out)
    loss_llm, loss_rec = getattr(out, "loss_llm", None), getattr(out, "loss_rec", None)
    terms = [w * part for w, part in ((w_llm, loss_llm), (w_rec, loss_rec)) if part is not None and w != 0]
    # Nothing to learn from (no labelled token, no L_rec target, or zero weights): a zero loss still goes
    # through backward and step, so this rank stays in step with the others' collectives.
    total = torch.stack([t.float() for t in terms]).sum() if terms else out.logits.float().sum() * 0.0

    # One device-to-host copy for all values (each float() of a GPU tensor would be a synchronisation).
    parts = {"total": total, **{name: getattr(out, f"loss_{name}", None) for name in LOSS_PARTS}}
    present = {name: value for name, value in parts.items() if value is not None}
    values = dict(
        zip(present, torch.stack([v.detach().float() for v in present.values()]).tolist(), strict=True)
    )
    metrics: dict[str, float] = {f"loss/{name}": values.get(name, math.nan) for name in parts}
    stats = stats if stats is not None else {}
    reaches_trainable = _reaches_trainable(total, batch, strategy)
    if not _all_finite(math.isfinite(values["total"])):
        stats["skipped_nonfinite"] = stats.get("skipped_nonfinite", 0) + 1
        metrics["optimizer_step"] = 0.0
    elif not reaches_trainable and strategy.zero_stage == 3:
        # Nothing trainable in this micro-batch's graph (e.g. a text-only sample in a stage that trains only
        # the vision side). ZeRO-3 cannot take zero terms (its parameters are partitioned outside the
        # forward), so the micro-batch is skipped; every rank has the same structure here, so all skip.
        stats["skipped_no_grad"] = stats.get("skipped_no_grad", 0) + 1
        metrics["optimizer_step"] = 0.0
    else:
        if strategy.needs_all_parameters_in_graph or not reaches_trainable:
            total = _with_unused_parameters(total, strategy.engine.module)
        strategy.backward(total)
        stepped = strategy.step()
        metrics["optimizer_step"] = float(stepped)
        if stepped:
            norm = strategy.grad_norm()
            if norm is not None:
                metrics["grad_norm"] = norm
    metrics["skipped_nonfinite"] = float(stats.get("skipped_nonfinite", 0))
    metrics["skipped_no_grad"] = float(stats.get("skipped_no_grad", 0))
    lrs = strategy.learning_rates()
    metrics["lr"] = next(iter(lrs.values()))
    metrics.update({f"lr/{name}": value for name, value in lrs.items()})
    return metrics


__all__ = ["LOSS_PARTS", "check_same_structure", "train_step"]
