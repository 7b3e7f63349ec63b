"""A benchmark question as the platform's validation poses it: the same chat tokens, the same image tiles.

A question (lmms-eval's context string and its images) becomes a one-exchange conversation — the user turn,
then an assistant turn holding the answer to score, or a one-character stand-in when the answer is to be
generated — and goes through the data layer exactly as a validation record does: the image through
:func:`~vlsa_platform.data.images.prepare_image` (the vision mode and grid of the model config: anyres,
lowres or SA-Perceiver), the turns through the LLaMA-3 chat encoder (:class:`~vlsa_platform.data.dataset.
VLSADataset`), the sample through ``collate`` and :func:`~vlsa_platform.eval.questions.samples_from_batch`.
The prompt of the assistant turn is then what :func:`~vlsa_platform.eval.generation.greedy_answers` decodes
from, as for ``val/exact_match``.

The ``<image>`` placeholder stays where the context puts it; a context with an image but no placeholder gets
it in front (``<image>\\n`` + context, as LLaVA's evaluation does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from ..data.dataset import Sample, VLSADataset, collate
from ..data.records import to_rgb
from ..data.types import BadSample, Record, Turn
from ..eval.questions import Answer, HeldOutSample, samples_from_batch
from ..model.configuration_vlsa import VLSAConfig
from ..model.markers import EOT_TOKEN, IMAGE_PLACEHOLDER

#: The assistant turn's content when only its prompt is wanted (it is never part of a prompt).
STAND_IN_ANSWER = "?"
_DATASET = "lmms-eval"


class QuestionError(ValueError):
    """A question the model cannot be asked (several images, a placeholder without an image, too long)."""


class PromptBuilder:
    """Questions as held-out samples of one model.

    Args:
        tokenizer: the LLM's tokenizer.
        config: the model config (image token, vision geometry).
        max_length: ``data.max_length`` of the run (the longest sample, visual tokens included).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: VLSAConfig, max_length: int) -> None:
        self._image: Image.Image | None = None
        self.dataset = VLSADataset(
            [],
            tokenizer=tokenizer,
            config=config,
            image_roots={_DATASET: ""},
            max_length=max_length,
            on_bad_sample="fail",
            image_loader=self._load,
        )
        self.image_token_id = int(config.image_token_id)
        self.stop_id = int(tokenizer.convert_tokens_to_ids(EOT_TOKEN))
        self.pad_token_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_id
        )

    def _load(self, root: str, path: str, max_pixels: int, **_: object) -> Image.Image:
        assert self._image is not None
        return to_rgb(self._image)

    def encode(self, context: str, images: Sequence[Image.Image], answer: str | None = None) -> Sample:
        """The sample of ``context`` with at most one image, answered by ``answer`` (``None``: a stand-in)."""
        if len(images) > 1:
            raise QuestionError(f"the VLSA model takes one image per question, this one has {len(images)}")
        if images and IMAGE_PLACEHOLDER not in context:
            context = f"{IMAGE_PLACEHOLDER}\n{context}"
        if not images and IMAGE_PLACEHOLDER in context:
            raise QuestionError(
                f"the question holds {IMAGE_PLACEHOLDER} but comes with no image: {context!r}"
            )
        turns = (Turn("user", context), Turn("assistant", STAND_IN_ANSWER if answer is None else answer))
        record = Record(
            id="question", dataset=_DATASET, index=0, image="image" if images else None, turns=turns
        )
        self._image = images[0] if images else None
        try:
            return self.dataset.encode(record)
        except BadSample as err:
            raise QuestionError(f"{err} (question {context[:80]!r})") from None
        finally:
            self._image = None

    def collated(
        self, samples: Sequence[Sample]
    ) -> tuple[dict[str, torch.Tensor], list[tuple[HeldOutSample, Answer]]]:
        """The samples as one batch (``collate``: right-padded, the model's forward inputs) and each as the
        validation code sees it, with its (only) answer."""
        batch = collate(samples, self.pad_token_id)
        held = samples_from_batch(batch, self.image_token_id, self.stop_id)
        return batch, [(sample, sample.answers[0]) for sample in held]

    def question(self, context: str, images: Sequence[Image.Image]) -> tuple[HeldOutSample, Answer]:
        """The held-out sample to generate an answer for (its prompt is everything before the answer)."""
        return self.collated([self.encode(context, images)])[1][0]


__all__ = ["STAND_IN_ANSWER", "PromptBuilder", "QuestionError"]
