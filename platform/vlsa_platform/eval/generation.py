"""Greedy answers from the model: transformers' ``generate`` on the LLM, the image features spliced in.

:meth:`VLSAForConditionalGeneration.generate` encodes the images and builds the prompts' embeddings with
``embed_inputs`` — the same splice its forward uses (Eq. 6) — and hands them to the LLM's ``generate``
(``inputs_embeds``). Decoding is greedy (``do_sample=False``, one beam). Several answers are decoded in one call
(their prompts left-padded, :func:`~.questions.prompt_batch`); rows are independent, so each row's answer is
the one it would get alone: its tokens up to its own budget, cut before the first stop token.

With ``synced=True`` (ZeRO-3 with several ranks) transformers' ``synced_gpus`` keeps the ranks in step: a rank
whose answers are done keeps running forward passes (their output ignored) until every rank's are, because
ZeRO-3 all-gathers each layer's parameters inside its forward and every rank must take part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .questions import Answer, HeldOutSample, prompt_batch


def greedy_answers(
    model: torch.nn.Module,
    items: Sequence[tuple[HeldOutSample, Answer]],
    budgets: Sequence[int],
    *,
    stop_ids: Sequence[int],
    pad_token_id: int,
    device: torch.device | str | None = None,
    synced: bool = False,
) -> list[list[int]]:
    """The token ids the model greedily answers each item's prompt with: at most its budget of new tokens, up to
    (not including) the first of ``stop_ids``.

    Args:
        model: a :class:`~vlsa_platform.model.modeling_vlsa.VLSAForConditionalGeneration` (or anything with its
            ``generate``), in eval mode.
        items: ``(sample, answer)`` pairs; the prompt is the sample's tokens before the answer.
        budgets: new tokens allowed per item.
        stop_ids: the tokens that end an answer (``<|eot_id|>``, the LLM's eos tokens).
        pad_token_id: fills the left of shorter prompts (and the tail of finished rows).
        synced: ``synced_gpus`` (ZeRO-3 with several ranks; every rank must call this together).
    """
    if len(budgets) != len(items):
        raise ValueError(f"{len(items)} items but {len(budgets)} budgets")
    if min(budgets, default=1) < 1:
        raise ValueError(f"every max_new_tokens budget must be positive, got {list(budgets)}")
    stops = list(dict.fromkeys(int(s) for s in stop_ids))
    with torch.no_grad():
        out = model.generate(
            **prompt_batch(items, pad_token_id, device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max(budgets),
            eos_token_id=stops,
            pad_token_id=pad_token_id,
            synced_gpus=synced,
        )
    answers = []
    for row, budget in zip(out.tolist(), budgets, strict=True):
        tokens = row[:budget]
        cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
        answers.append(tokens[:cut])
    return answers


def greedy_answer(
    model: torch.nn.Module,
    sample: HeldOutSample,
    answer: Answer,
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_token_id: int | None = None,
    device: torch.device | str | None = None,
    synced: bool = False,
) -> list[int]:
    """:func:`greedy_answers` for one answer."""
    pad = int(stop_ids[0]) if pad_token_id is None else pad_token_id
    return greedy_answers(
        model,
        [(sample, answer)],
        [max_new_tokens],
        stop_ids=stop_ids,
        pad_token_id=pad,
        device=device,
        synced=synced,
    )[0]


__all__ = ["greedy_answer", "greedy_answers"]
