"""Held-out samples and their answers from a collated validation batch (eval/questions.py)."""

from __future__ import annotations

import torch

from vlsa_platform.data.dataset import VLSADataset, collate
from vlsa_platform.data.types import Record, Turn
from vlsa_platform.eval.questions import samples_from_batch
from vlsa_platform.model.markers import EOT_TOKEN, LABEL_GROUP_PX, LABEL_GROUP_TEXT, LABEL_GROUP_VQ
from vlsa_platform.train.batches import StageData, validation_cognition_hook
from vlsa_platform.train.build import build_tokenizer

from .helpers import tiny_experiment

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _split(batch, base_model, tokenizer):
    eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    return samples_from_batch(batch, base_model.config.image_token_id, eot)


def test_answers_prompts_and_images_per_sample(held_out_batch, base_model, tokenizer):
    batch, samples = held_out_batch
    held = _split(batch, base_model, tokenizer)
    assert len(held) == len(samples)
    for one, sample in zip(held, samples, strict=True):
        assert torch.equal(one.input_ids, sample.input_ids)
        # Every assistant turn is one answer, in order, with its group and its text as the reference.
        text = tokenizer.decode(sample.input_ids)
        turns = [t.split("<|eot_id|>")[0] for t in text.split(ASSISTANT_HEADER)[1:]]
        assert [tokenizer.decode(a.reference) for a in one.answers] == turns
        assert all(a.complete for a in one.answers)
        for answer in one.answers:
            assert tokenizer.decode(one.prompt(answer)["input_ids"][0]).endswith(ASSISTANT_HEADER)
            assert int(sample.label_groups[answer.start]) == answer.group
        # The sample's own image inputs (not a neighbour's).
        if sample.image is None:
            assert not one.has_image and "pixel_values" not in one.prompt(one.answers[0])
        else:
            assert torch.equal(one.pixel_values[0], sample.image.lowres)
            assert torch.equal(one.tile_pixel_values, sample.image.tiles)
            assert one.image_grids[0].tolist()[:2] == [sample.image.grid.rows, sample.image.grid.cols]
    with_image = [one for one in held if one.has_image]
    assert with_image and len(with_image) < len(held)
    for one in with_image:  # the cognition hook put a VQ and a pixel question in each
        assert {
            one.first(LABEL_GROUP_TEXT).group,
            one.first(LABEL_GROUP_VQ).group,
            one.first(LABEL_GROUP_PX).group,
        } == {
            0,
            1,
            2,
        }
    assert all(one.first(LABEL_GROUP_VQ) is None for one in held if not one.has_image)


def test_an_answer_cut_by_truncation_is_incomplete(base_model, tokenizer, held_out_batch):
    root = "unused"
    record = Record(
        "long",
        "toy",
        0,
        None,
        (Turn("user", "Say it."), Turn("assistant", "word " * 200)),
    )
    dataset = VLSADataset(
        [record], tokenizer=tokenizer, config=base_model.config, image_roots={"toy": root}, max_length=64
    )
    sample = dataset[0]
    assert sample.truncated
    (one,) = _split(collate([sample], tokenizer.pad_token_id), base_model, tokenizer)
    (answer,) = one.answers
    assert not answer.complete and one.first(LABEL_GROUP_TEXT) is None
    assert answer.start + len(answer.reference) == len(sample)


def test_validation_samples_get_the_same_cognition_questions_on_every_pass(base_model):
    """The validation set's own cognition hook (``data.validation.cognition``, as ``run_stage`` attaches it),
    seeded by the run's seed and each record: every pass asks the same questions, and a model without cognition
    (an ablation variant) is asked them too; both rates 0 = none."""
    config = tiny_experiment("data.validation.cognition.p_px=1.0")
    tokenizer = build_tokenizer(config)
    data = StageData(
        config,
        config.stages["stage3"],
        base_model.config,
        tokenizer,
        rank=0,
        world_size=1,
        micro_batch=2,
        by_modality=False,
    )
    data.attach_cognition("stage3")
    eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)

    def pixel_answers() -> list[tuple[int, str]]:
        held = [
            s
            for batch in data.validation_batches()
            for s in samples_from_batch(batch.tensors, base_model.config.image_token_id, eot)
        ]
        return [
            (i, tokenizer.decode(a.reference))
            for i, s in enumerate(held)
            for a in s.answers
            if a.group == LABEL_GROUP_PX
        ]

    first = pixel_answers()
    assert first and first == pixel_answers()
    data.validation_cognition = validation_cognition_hook(
        tiny_experiment("data.validation.cognition.p_px=1.0", "model.cognition=false")
    )
    assert pixel_answers() == first
    data.validation_cognition = validation_cognition_hook(
        tiny_experiment("data.validation.cognition.p_px=0", "data.validation.cognition.p_vq=0")
    )
    assert data.validation_cognition is None
    assert pixel_answers() == []
