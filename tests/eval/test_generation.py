"""Greedy answers from the model and their scores (eval/generation.py, eval/validation.py).

The tiny model has random weights, so to know what it answers, a test *teaches* it: the LLM is fitted on one
teacher-forced sample (images spliced in as in the forward) until its next-token argmax along the sample's
answers is the answers themselves. Greedy decoding from a prompt then
gives exactly the reference answer — if, and only if, ``generate`` builds the same embeddings as the forward.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vlsa_platform.eval.generation import greedy_answer, greedy_answers
from vlsa_platform.eval.questions import HeldOutSample, samples_from_batch
from vlsa_platform.eval.validation import GenerationSettings, SampleCollector, Tally, decode_samples
from vlsa_platform.model.markers import LABEL_GROUP_TEXT, LABEL_GROUP_VQ


def _settings(tokenizer, model, samples: int = 8) -> GenerationSettings:
    return GenerationSettings.for_model(tokenizer, model, samples=samples, extra_tokens=4)


def _held(held_out_batch, settings) -> list[HeldOutSample]:
    batch, _ = held_out_batch
    return samples_from_batch(batch, settings.image_token_id, settings.stop_ids[0])


def teach(model, sample: HeldOutSample, steps: int = 400) -> None:
    """Fit the LLM (teacher forcing, images spliced in as in the forward) until its argmax after each answer
    position is the sample's next token, with a margin."""
    features = None
    if sample.has_image:
        with torch.no_grad():
            features, _ = model.encode_images(
                sample.pixel_values, sample.tile_pixel_values, sample.image_grids
            )
    ids = sample.input_ids.unsqueeze(0)
    positions = [p for a in sample.answers for p in range(a.start - 1, a.start + len(a.reference))]
    targets = sample.input_ids[[p + 1 for p in positions]]
    optimizer = torch.optim.Adam(model.language_model.parameters(), lr=5e-3)
    for _ in range(steps):
        logits = model.language_model(inputs_embeds=model.embed_inputs(ids, features)).logits[0, positions]
        others = logits.scatter(1, targets[:, None], -math.inf).amax(-1)
        if (logits.gather(1, targets[:, None])[:, 0] - others).min() > 1.0:  # argmax right, with a margin
            break
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    else:
        raise AssertionError(f"the model did not learn the sample (loss {loss.item():.3f})")
    model.requires_grad_(False)


def test_greedy_answer_follows_the_forward_with_the_image_spliced_in(model, tokenizer, held_out_batch):
    settings = _settings(tokenizer, model)
    sample = next(s for s in _held(held_out_batch, settings) if s.has_image)
    answer = sample.first(LABEL_GROUP_TEXT)
    tokens = greedy_answer(model, sample, answer, max_new_tokens=6, stop_ids=settings.stop_ids)
    assert len(tokens) == 6  # random weights: no end of turn
    # Teacher forcing the prompt plus the answer: each answer token is the argmax after the one before.
    ids = torch.cat([sample.input_ids[: answer.start], torch.tensor(tokens)]).unsqueeze(0)
    with torch.no_grad():
        out = model(
            input_ids=ids,
            pixel_values=sample.pixel_values,
            tile_pixel_values=sample.tile_pixel_values,
            image_grids=sample.image_grids,
        )
    assert out.logits[0, answer.start - 1 : -1].argmax(-1).tolist() == tokens
    # The image matters: another image (its colours inverted) gives another answer.
    other = dataclasses.replace(
        sample, pixel_values=-sample.pixel_values, tile_pixel_values=-sample.tile_pixel_values
    )
    assert greedy_answer(model, other, answer, max_new_tokens=6, stop_ids=settings.stop_ids) != tokens


def test_scores_are_perfect_for_the_models_own_answers_and_drop_for_others(model, tokenizer, held_out_batch):
    settings = _settings(tokenizer, model)
    sample = next(s for s in _held(held_out_batch, settings) if s.has_image)
    teach(model, sample)
    tally = Tally()
    assert decode_samples(model, [sample], settings, tally) == 3  # a text, a VQ and a pixel answer
    means = tally.means()
    assert (means["exact_match"], means["vq_accuracy"], means["px_accuracy"]) == (1.0, 1.0, 1.0)
    assert math.isnan(means["psnr"])
    assert (tally.exact_total, tally.vq_total, tally.px_total) == (1, 16, 12)

    # The same prompts with other references: the model's answers no longer match.
    def other_reference(group: int, text: str) -> HeldOutSample:
        ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False))
        answers = tuple(
            dataclasses.replace(a, reference=ids) if a.group == group else a for a in sample.answers
        )
        return dataclasses.replace(sample, answers=answers)

    vq_text = tokenizer.decode(sample.first(LABEL_GROUP_VQ).reference)
    first_number = vq_text.split()[0]
    one_cell_off = vq_text.replace(first_number, str(int(first_number) + 1), 1)
    wrong = Tally()
    decode_samples(model, [other_reference(LABEL_GROUP_TEXT, "a purple elephant")], settings, wrong)
    decode_samples(model, [other_reference(LABEL_GROUP_VQ, one_cell_off)], settings, wrong)
    assert wrong.exact_correct == 1 and wrong.exact_total == 2  # only the untouched sample's answer matches
    assert (wrong.vq_correct, wrong.vq_total) == (16 + 15, 32)


def test_collector_keeps_the_first_samples_and_a_random_model_scores_low(model, tokenizer, held_out_batch):
    settings = _settings(tokenizer, model, samples=3)
    batch, _ = held_out_batch
    collector = SampleCollector(settings)
    collector.add(batch)
    collector.add(batch)  # already full: ignored
    expected = _held(held_out_batch, settings)[:3]
    assert len(collector.samples) == 3
    assert all(
        torch.equal(a.input_ids, b.input_ids) for a, b in zip(collector.samples, expected, strict=True)
    )
    tally = Tally()
    decode_samples(model, collector.samples, settings, tally)
    means = tally.means()
    assert means["exact_match"] == 0.0 and tally.exact_total == 3
    assert 0.0 <= means["vq_accuracy"] < 0.5 and 0.0 <= means["px_accuracy"] < 0.5


def test_a_batch_decodes_each_row_as_alone(model, tokenizer, held_out_batch):
    """Left-padded prompts of different lengths, with and without an image, in one call: each row's answer is
    the one it gets alone (its own budget, cut at its own stop)."""
    settings = _settings(tokenizer, model)
    held = _held(held_out_batch, settings)
    items = [(s, a) for s in held for a in s.answers[:2]]
    assert len({a.start for _, a in items}) > 1 and {s.has_image for s, _ in items} == {True, False}
    budgets = [3 + i for i in range(len(items))]
    alone = [
        greedy_answer(model, s, a, max_new_tokens=b, stop_ids=settings.stop_ids)
        for (s, a), b in zip(items, budgets, strict=True)
    ]
    together = greedy_answers(
        model, items, budgets, stop_ids=settings.stop_ids, pad_token_id=settings.pad_token_id
    )
    assert together == alone
    assert [len(t) for t in together] == budgets  # random weights: no end of turn


@pytest.mark.parametrize("budget", [0, -1])
def test_greedy_answer_needs_a_budget(model, tokenizer, held_out_batch, budget):
    settings = _settings(tokenizer, model)
    sample = _held(held_out_batch, settings)[0]
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_answer(model, sample, sample.answers[0], max_new_tokens=budget, stop_ids=settings.stop_ids)
