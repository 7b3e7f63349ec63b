"""Held-out questions: the samples of a collated validation batch, each answer with the prompt before it.

A validation batch (``data.dataset.collate``) holds whole conversations, right-padded, with ``labels`` on every
assistant answer (its content tokens and the closing ``<|eot_id|>``) and ``label_groups`` telling text answers
(0) from VQ (1) and pixel (2) cognition answers. Each labelled run of positions is one answer; the prompt of an
answer is the sample's tokens before it — the conversation so far, with the earlier answers as written, up to
and including the assistant header — so greedy decoding from the prompt answers exactly the question the
reference answers. An answer the chat encoder cut to fit ``max_length`` (it has no ``<|eot_id|>``) is
*incomplete*: it is not scored, as its reference is not the whole answer.

:func:`prompt_batch` puts several prompts in one left-padded batch for one ``generate`` call.

Images go with their sample: the batch's images are in sample order, one per sample holding image tokens, and
the tiles of image ``i`` follow those of the images before it (``image_grids`` gives each one's count).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..model.markers import IGNORE_INDEX, LABEL_GROUP_PX, LABEL_GROUP_TEXT, LABEL_GROUP_VQ

#: The answer kinds, in the order a sample's answers are decoded (``HeldOutSample.first``).
KINDS: tuple[int, ...] = (LABEL_GROUP_TEXT, LABEL_GROUP_VQ, LABEL_GROUP_PX)


@dataclass(frozen=True)
class Answer:
    """One assistant answer of a sample.

    Attributes:
        start: position of its first token in the sample (the prompt is ``input_ids[:start]``).
        reference: its content token ids ``(n,)``, without the closing stop token.
        group: ``LABEL_GROUP_TEXT``, ``LABEL_GROUP_VQ`` or ``LABEL_GROUP_PX``.
        complete: whether it ends with the stop token (not cut by truncation).
    """

    start: int
    reference: torch.Tensor
    group: int
    complete: bool


@dataclass(frozen=True)
class HeldOutSample:
    """One validation sample as the model's inputs for generation (CPU tensors, batch dimension 1).

    Attributes:
        input_ids: ``(T,)`` the whole conversation, unpadded.
        answers: its answers, in order.
        pixel_values, tile_pixel_values, image_grids: its image (``(1, 3, S, S)``, ``(m, 3, S, S)``,
            ``(1, 4)``), or ``None`` for a text-only sample.
    """

    input_ids: torch.Tensor
    answers: tuple[Answer, ...]
    pixel_values: torch.Tensor | None = None
    tile_pixel_values: torch.Tensor | None = None
    image_grids: torch.Tensor | None = None

    @property
    def has_image(self) -> bool:
        return self.pixel_values is not None

    def first(self, group: int) -> Answer | None:
        """Its first complete answer of ``group``, or ``None``."""
        return next((a for a in self.answers if a.group == group and a.complete), None)

    def prompt(self, answer: Answer, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The inputs of the model's ``generate`` for ``answer``: the tokens before it and the image."""
        return prompt_batch([(self, answer)], pad_token_id=0, device=device)


def prompt_batch(
    items: Sequence[tuple[HeldOutSample, Answer]],
    pad_token_id: int,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """The inputs of the model's ``generate`` for several answers at once: their prompts left-padded with
    ``pad_token_id`` (``attention_mask`` 0 there; transformers derives the positions from it, so a padded row
    decodes as it would alone) and the images of the rows that have one, in row order."""
    if not items:
        raise ValueError("no prompts")
    prompts = [sample.input_ids[: answer.start] for sample, answer in items]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with_image = [sample for sample, _ in items if sample.has_image]
    if with_image:
        inputs.update(
            pixel_values=torch.cat([s.pixel_values for s in with_image]),
            tile_pixel_values=torch.cat([s.tile_pixel_values for s in with_image]),
            image_grids=torch.cat([s.image_grids for s in with_image]),
        )
    return {k: v.to(device) for k, v in inputs.items()} if device is not None else inputs


def _runs(mask: torch.Tensor) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each run of True in a 1-D bool tensor."""
    edges = torch.diff(
        mask.to(torch.int8), prepend=torch.zeros(1, dtype=torch.int8), append=torch.zeros(1, dtype=torch.int8)
    )
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return zip(starts, ends, strict=True)


def samples_from_batch(
    batch: dict[str, torch.Tensor], image_token_id: int, stop_id: int
) -> list[HeldOutSample]:
    """The samples of one collated batch (``input_ids``, ``attention_mask``, ``labels``, optional
    ``label_groups`` and images), each with its answers."""
    input_ids, labels = batch["input_ids"].cpu(), batch["labels"].cpu()
    mask = batch.get("attention_mask")
    lengths = mask.cpu().sum(1).tolist() if mask is not None else [input_ids.shape[1]] * input_ids.shape[0]
    groups = batch.get("label_groups")
    groups = groups.cpu() if groups is not None else torch.zeros_like(labels)
    grids = batch.get("image_grids")
    tile_counts = (grids[:, 0] * grids[:, 1]).tolist() if grids is not None else []
    tile_starts = [sum(tile_counts[:i]) for i in range(len(tile_counts))]
    samples, image = [], 0
    for row, length in enumerate(lengths):
        ids = input_ids[row, : int(length)].clone()
        answers = []
        for start, end in _runs(labels[row, : int(length)] != IGNORE_INDEX):
            complete = int(ids[end - 1]) == stop_id
            answers.append(
                Answer(
                    start,
                    ids[start : end - 1 if complete else end].clone(),
                    int(groups[row, start]),
                    complete,
                )
            )
        images: dict[str, torch.Tensor] = {}
        if bool((ids == image_token_id).any()):
            if grids is None or image >= len(tile_counts):
                raise ValueError(f"sample {row} holds image tokens but the batch has no image for it")
            first, count = tile_starts[image], tile_counts[image]
            images = {  # copies: a kept sample must not hold its whole batch's images alive
                "pixel_values": batch["pixel_values"][image : image + 1].cpu().clone(),
                "tile_pixel_values": batch["tile_pixel_values"][first : first + count].cpu().clone(),
                "image_grids": grids[image : image + 1].cpu().clone(),
            }
            image += 1
        samples.append(HeldOutSample(ids, tuple(answers), **images))
    return samples


__all__ = ["KINDS", "Answer", "HeldOutSample", "prompt_batch", "samples_from_batch"]
