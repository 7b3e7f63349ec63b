"""One validation pass's generation metrics and PSNR, as tallies that add up over batches and ranks.

What a pass measures (``train.validate.evaluate`` names and logs them; ``docs/training.md``, "Validation
metrics"):

- **Exact match** (``val/exact_match``): on each decoded sample, its first complete text answer is generated
  greedily from the prompt before it (:mod:`.generation`) and compared with the reference after normalisation
  (:mod:`.answers`); the fraction of such questions answered exactly.
- **VQ / pixel accuracy** (``val/vq_accuracy``, ``val/px_accuracy``): on each decoded sample, its first complete
  VQ answer and its first complete pixel answer (cognition turns, inserted into validation samples as into
  training ones: seeded by the run's seed and the record, epoch 0, so every pass asks the same questions) are
  generated greedily too and scored cell by cell (:mod:`.cognition_scores`): the fraction of window indices
  right, and of RGB values within ``PX_TOLERANCE``, over all decoded answers. Greedy decoding rather than
  teacher-forced argmax: it scores the answer the model would give, where an early mistake (a lost line break)
  costs the cells after it, as it would in use.
- **PSNR** (``val/psnr``): for the first validation images with an L_rec target (``psnr_images``), the frozen
  VAE's decoding of the denoised latent estimate ``z_hat`` (what the reconstruction panels show) against the
  ground-truth image, in dB with pixels in ``[0, 1]`` (:mod:`.psnr`), averaged over images (:meth:`Tally.add_psnr`;
  the decoding needs the training strategy, so ``train.validate`` does it).

Cost: ``samples`` decoded samples per pass (split over the ranks), each with up to three answers (one per kind)
of at most ``len(reference) + 1 + extra_tokens`` new tokens; the answers of one kind are decoded together,
``batch_size`` per ``generate`` call (left-padded prompts), so a pass makes about three calls per rank.

ZeRO-3 with several ranks (``sync`` given): every rank must run the same sub-modules the same number of times.
Each rank decodes the same number of samples (the smallest of the ranks' counts); for each answer kind, the
rows of a call are the sample positions where *any* rank decodes that kind — a rank whose sample lacks it
decodes one of the sample's other answers in that row and ignores the result — so every rank makes the same
calls, with images in the same rows (ZeRO-3 validation shards are grouped by modality: checked here), and
``synced_gpus`` keeps the decoding steps in step (:mod:`.generation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

from ..data.cognition import VQFormat
from ..model.markers import EOT_TOKEN, LABEL_GROUP_PX, LABEL_GROUP_TEXT, LABEL_GROUP_VQ
from .answers import exact_match
from .cognition_scores import PX_TOLERANCE, px_counts, vq_counts
from .generation import greedy_answers
from .questions import KINDS, HeldOutSample, samples_from_batch


@dataclass
class Tally:
    """Sums and counts of one pass (``correct``/``total`` pairs; PSNR sum over images / images)."""

    exact_correct: float = 0.0
    exact_total: float = 0.0
    vq_correct: float = 0.0
    vq_total: float = 0.0
    px_correct: float = 0.0
    px_total: float = 0.0
    psnr_sum: float = 0.0
    psnr_images: float = 0.0

    def to_tensor(self) -> torch.Tensor:
        """The fields as a float64 vector (for an all-reduce)."""
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> Tally:
        return cls(*(float(v) for v in values.tolist()))

    def add_psnr(self, values: torch.Tensor) -> None:
        """Add per-image PSNRs (``(N,)``)."""
        self.psnr_sum += float(values.double().sum())
        self.psnr_images += int(values.numel())

    def means(self) -> dict[str, float]:
        """``exact_match``, ``vq_accuracy``, ``px_accuracy`` (fractions) and ``psnr`` (dB): NaN where nothing
        was measured."""

        def ratio(num: float, den: float) -> float:
            return num / den if den else math.nan

        return {
            "exact_match": ratio(self.exact_correct, self.exact_total),
            "vq_accuracy": ratio(self.vq_correct, self.vq_total),
            "px_accuracy": ratio(self.px_correct, self.px_total),
            "psnr": ratio(self.psnr_sum, self.psnr_images),
        }


@dataclass(frozen=True)
class GenerationSettings:
    """How a pass decodes held-out answers.

    Attributes:
        samples: samples decoded per pass on this rank (the config's count over all ranks, divided).
        extra_tokens: new tokens allowed beyond the reference answer's length (and its stop token).
        image_token_id: the model's image token (where the image features go).
        stop_ids: tokens that end an answer (``<|eot_id|>`` first, then the LLM's other eos tokens).
        pad_token_id: the tokenizer's pad token (left of shorter prompts in a batch).
        decode: token ids -> text (the tokenizer's ``decode``).
        vq_format: how VQ answers are written (``data.cognition.vq_format``).
        px_tolerance: see ``cognition_scores.PX_TOLERANCE``.
        batch_size: answers decoded together in one ``generate`` call.
    """

    samples: int
    extra_tokens: int
    image_token_id: int
    stop_ids: tuple[int, ...]
    pad_token_id: int
    decode: Callable[[Sequence[int]], str]
    vq_format: VQFormat = "text"
    px_tolerance: int = PX_TOLERANCE
    batch_size: int = 8

    @classmethod
    def for_model(
        cls,
        tokenizer,
        model: torch.nn.Module,
        *,
        samples: int,
        extra_tokens: int,
        batch_size: int = 8,
        vq_format: VQFormat = "text",
        stop_token: str = EOT_TOKEN,
    ) -> GenerationSettings:
        """Settings from the tokenizer and the model (its image token, its LLM's eos tokens)."""
        stops = [tokenizer.convert_tokens_to_ids(stop_token)]
        eos = getattr(getattr(model.language_model, "generation_config", None), "eos_token_id", None)
        stops += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        return cls(
            samples=samples,
            extra_tokens=extra_tokens,
            image_token_id=int(model.config.image_token_id),
            stop_ids=tuple(dict.fromkeys(int(s) for s in stops)),
            pad_token_id=stops[0] if tokenizer.pad_token_id is None else int(tokenizer.pad_token_id),
            decode=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False),
            vq_format=vq_format,
            batch_size=batch_size,
        )


class SampleCollector:
    """Keeps the first ``settings.samples`` samples of a rank's validation batches, for decoding after the
    losses are done."""

    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self.samples: list[HeldOutSample] = []

    @property
    def full(self) -> bool:
        return len(self.samples) >= self.settings.samples

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        if self.full:
            return
        found = samples_from_batch(batch, self.settings.image_token_id, self.settings.stop_ids[0])
        self.samples.extend(found[: self.settings.samples - len(self.samples)])


def score_answer(
    tally: Tally, group: int, predicted: str, reference: str, settings: GenerationSettings
) -> None:
    """Add one generated answer's score to ``tally``."""
    if group == LABEL_GROUP_TEXT:
        tally.exact_correct += float(exact_match(predicted, reference))
        tally.exact_total += 1
        return
    try:
        if group == LABEL_GROUP_VQ:
            correct, total = vq_counts(predicted, reference, settings.vq_format)
            tally.vq_correct, tally.vq_total = tally.vq_correct + correct, tally.vq_total + total
        elif group == LABEL_GROUP_PX:
            correct, total = px_counts(predicted, reference, settings.px_tolerance)
            tally.px_correct, tally.px_total = tally.px_correct + correct, tally.px_total + total
    except ValueError:
        pass  # a reference that is not a grid (not written by the cognition module): nothing to score


def decode_samples(
    model: torch.nn.Module,
    samples: Sequence[HeldOutSample],
    settings: GenerationSettings,
    tally: Tally,
    *,
    device: torch.device | str | None = None,
    sync: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Decode each sample's first complete answer of each kind greedily and score it into ``tally``; returns
    the number of ``generate`` calls made.

    Answers of one kind are decoded together, ``settings.batch_size`` per call. ``sync``: under ZeRO-3 with
    several ranks, an all-reduce MAX over ranks of a float64 CPU vector (returning the result); every rank calls
    this function together and then makes the same calls with the same image structure (module docstring).
    """
    count = len(samples)
    if sync is not None:
        count = int(-sync(torch.tensor([-float(count)], dtype=torch.float64))[0])
    samples = list(samples[:count])
    if not samples:
        return 0
    slots = [[s.first(kind) for kind in KINDS] for s in samples]
    wanted = torch.tensor([[a is not None for a in row] for row in slots], dtype=torch.float64)
    if sync is not None:
        image = torch.tensor([float(s.has_image) for s in samples], dtype=torch.float64)
        reduced = sync(torch.cat([wanted.flatten(), image, -image]))
        wanted = reduced[: wanted.numel()].reshape(wanted.shape)
        highest, lowest = reduced[wanted.numel() : wanted.numel() + count], -reduced[wanted.numel() + count :]
        if not torch.equal(highest, lowest):
            position = int(torch.nonzero(highest != lowest)[0])
            raise ValueError(
                f"ZeRO-3 needs the same image structure on every rank, but validation sample {position} has an "
                "image on some ranks only: group the validation shards by modality"
            )
    calls = 0
    for k in range(len(KINDS)):
        # One row per sample position some rank decodes this kind at; a rank whose sample lacks it (only under
        # ``sync``) decodes one of the sample's other answers there (same image structure) and ignores it.
        rows = [(p, slots[p][k]) for p in range(count) if wanted[p, k]]
        for first in range(0, len(rows), settings.batch_size):
            chunk = rows[first : first + settings.batch_size]
            items = [(samples[p], answer or samples[p].answers[0]) for p, answer in chunk]
            budgets = [
                len(answer.reference) + 1 + settings.extra_tokens if answer is not None else 1
                for _, answer in chunk
            ]
            tokens = greedy_answers(
                model,
                items,
                budgets,
                stop_ids=settings.stop_ids,
                pad_token_id=settings.pad_token_id,
                device=device,
                synced=sync is not None,
            )
            calls += 1
            for (_, answer), answer_tokens in zip(chunk, tokens, strict=True):
                if answer is not None:
                    predicted, reference = (
                        settings.decode(answer_tokens),
                        settings.decode(answer.reference.tolist()),
                    )
                    score_answer(tally, answer.group, predicted, reference, settings)
    return calls


__all__ = ["GenerationSettings", "SampleCollector", "Tally", "decode_samples", "score_answer"]
