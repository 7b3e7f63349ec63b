"""``VLSA``: an exported VLSA stage as an lmms-eval model (``lmms-eval --model vlsa``).

Model arguments (``--model_args k=v,...``):

- ``pretrained``: the exported stage, a checkpoint's ``model/`` folder (:mod:`.loading`);
- ``config``: the run's experiment config — its ``config/resolved.yaml`` artifact, or the experiment file, then
  with ``scale`` as the run had it (``scale=tiny``);
- ``max_length`` (default the run's ``data.max_length``);
- ``batch_size`` (questions per ``generate`` or forward call, default 1) and ``device`` (default ``cpu``;
  ``cuda`` on a GPU node): the command's ``--batch_size`` and ``--device`` pass them.

A bad export or config is refused in the constructor, before any weight is read (:func:`.loading.check_export`).

Each question goes through the data layer as a validation record does (:mod:`.prompts`: LLaMA-3 chat
template, the run's vision mode and tiling), so the platform's ``val/exact_match`` and an lmms-eval exact-match
task over the same questions agree. The requests:

- ``generate_until``: greedy decoding (temperature 0, one beam: the paper's setting; a task asking for sampling
  or beams is told so in a warning and decoded greedily) of at most ``max_new_tokens`` (default 128) new tokens
  with :func:`~vlsa_platform.eval.generation.greedy_answers` — the model's own ``generate``, images spliced in,
  stopped at ``<|eot_id|>`` or an LLM eos token — and the text cut before the first ``until`` string. Requests
  with the same generation settings are decoded ``batch_size`` at a time (left-padded prompts).
- ``loglikelihood``: the continuation as the assistant's answer after the context; the sum of its tokens'
  log-probabilities (not counting the closing ``<|eot_id|>``) and whether each is the argmax (``is_greedy``);
  ``batch_size`` at a time (right-padded, one forward each). Multiple-choice tasks score their choices so.
- ``generate_until_multi_round``: one document at a time, each round a ``generate_until`` question; after a
  round the task's ``doc_to_text`` gives the next round's images and context, or says it is over.

One process: lmms-eval's data-parallel launch (``accelerate launch``) is not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from ..eval.generation import greedy_answers
from ..eval.validation import GenerationSettings
from .loading import load_export
from .prompts import PromptBuilder, QuestionError

#: New tokens when a task gives no ``max_new_tokens``.
DEFAULT_MAX_NEW_TOKENS = 128
#: Model arguments lmms-eval itself may pass, with no meaning here.
_IGNORED_ARGS = frozenset({"max_batch_size"})


def _visuals(doc_to_visual: Callable[[Any], Any], doc: Any) -> list[Any]:
    found = doc_to_visual(doc) if doc_to_visual is not None else None
    if found is None:
        return []
    return [v for v in (found if isinstance(found, list | tuple) else [found]) if v is not None]


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first of the ``until`` strings."""
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


class VLSA(lmms):
    """An exported VLSA stage (see the module docstring for its arguments and requests)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        config: str,
        scale: str | None = None,
        batch_size: int | str = 1,
        device: str = "cpu",
        max_length: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - _IGNORED_ARGS)
        if unknown:
            raise TypeError(
                f"unknown model arguments for vlsa: {', '.join(unknown)} (it takes pretrained, config, scale, "
                "batch_size, device, max_length)"
            )
        self.batch_size_per_call = int(batch_size)
        if self.batch_size_per_call < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        loaded = load_export(pretrained, config, scale=scale, device=self.device)
        self.experiment, self.model, self.tokenizer = loaded.experiment, loaded.model, loaded.tokenizer
        length = int(max_length) if max_length is not None else self.experiment.data.max_length
        self.prompts = PromptBuilder(self.tokenizer, self.model.config, length)
        self.settings = GenerationSettings.for_model(self.tokenizer, self.model, samples=1, extra_tokens=0)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_call

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _generate(self, questions: Sequence[tuple[str, list[Any]]], gen_kwargs: dict[str, Any]) -> list[str]:
        """Greedy answers to ``(context, images)`` questions sharing ``gen_kwargs``."""
        kwargs = dict(gen_kwargs or {})
        if (
            kwargs.get("do_sample")
            or float(kwargs.get("temperature") or 0) > 0
            or int(kwargs.get("num_beams") or 1) > 1
        ):
            logger.warning(f"vlsa decodes greedily (temperature 0, one beam); ignoring {kwargs}")
        budget = int(kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        items = [self.prompts.question(context, images) for context, images in questions]
        tokens = greedy_answers(
            self.model,
            items,
            [budget] * len(items),
            stop_ids=self.settings.stop_ids,
            pad_token_id=self.settings.pad_token_id,
            device=self.device,
        )
        return [_cut(self.settings.decode(answer), until) for answer in tokens]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, batched among requests with the same generation settings, in request order."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted((request.args[1] or {}).items())), []).append(i)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="vlsa generate")
        for indices in groups.values():
            for first in range(0, len(indices), self.batch_size_per_call):
                chunk = indices[first : first + self.batch_size_per_call]
                questions = []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    questions.append((context, _visuals(doc_to_visual, self._doc(task, split, doc_id))))
                for i, text in zip(chunk, self._generate(questions, requests[chunk[0]].args[1]), strict=True):
                    out[i] = text
                    self.cache_hook.add_partial(
                        "generate_until", (requests[i].args[0], requests[i].args[1]), text
                    )
                progress.update(len(chunk))
        progress.close()
        return [text or "" for text in out]

    def _continuation(self, target: Any, task: str, split: str, doc_id: int) -> str:
        return str(target(self._doc(task, split, doc_id)) if callable(target) else target)

    def _loglikelihoods(self, requests: Sequence[Instance]) -> list[tuple[float, bool]]:
        samples, continuations = [], []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            visuals = _visuals(doc_to_visual, self._doc(task, split, doc_id))
            continuations.append(self._continuation(target, task, split, doc_id))
            samples.append(self.prompts.encode(context, visuals, continuations[-1]))
        batch, held = self.prompts.collated(samples)
        cut = next((c for c, (_, a) in zip(continuations, held, strict=True) if not a.complete), None)
        if cut is not None:
            raise QuestionError(f"a question with its continuation {cut!r} does not fit max_length")
        skipped = ("labels", "label_groups", "recon_pixel_values", "recon_latent_params")
        inputs = {k: v.to(self.device) for k, v in batch.items() if k not in skipped}
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(**inputs).logits.float(), dim=-1).cpu()
        results = []
        for row, (_, answer) in enumerate(held):
            tokens = answer.reference
            positions = torch.arange(answer.start - 1, answer.start - 1 + len(tokens))
            scores = logprobs[row, positions]
            greedy = bool((scores.argmax(-1) == tokens).all())
            results.append((float(scores.gather(1, tokens[:, None]).sum()), greedy))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(log P(continuation | context, image), is_greedy)`` per request, ``batch_size`` per forward.

        Each pair is returned as the ``text`` of a ``GenerationResult``: lmms-eval 0.7.3's evaluator passes every
        response through ``unwrap_generation_output``, which turns a ``(float, bool)`` pair into its string (its
        multiple-choice scoring then fails to unpack it) but hands a ``GenerationResult``'s ``text`` on as it is.
        """
        out: list[GenerationResult] = []
        for first in tqdm(
            range(0, len(requests), self.batch_size_per_call),
            disable=self.rank != 0,
            desc="vlsa loglikelihood",
        ):
            chunk = requests[first : first + self.batch_size_per_call]
            for request, result in zip(chunk, self._loglikelihoods(chunk), strict=True):
                out.append(GenerationResult(text=result))  # type: ignore[arg-type]
                self.cache_hook.add_partial("loglikelihood", (request.args[0], request.args[1]), result)
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[tuple[str, ...]]:
        """Each document's rounds, one document at a time (module docstring)."""
        out = []
        for request in tqdm(requests, disable=self.rank != 0, desc="vlsa multi-round"):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            visuals, rounds, info, index = _visuals(doc_to_visual, doc), [], None, 0
            while True:
                rounds.append(self._generate([(context, visuals)], gen_kwargs)[0])
                index += 1
                visuals, context, terminal, rounds, info = doc_to_text(
                    doc, previous_output=list(rounds), round_idx=index, previous_round_info=info
                )
                rounds = list(rounds)
                visuals = [v for v in (visuals or []) if v is not None]
                if terminal:
                    break
            out.append(tuple(rounds))
        return out


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "VLSA"]
