"""An export checked against its experiment config before any weight is read (vlsa_platform/lmms/loading.py);
a benchmark question posed exactly as validation poses it (vlsa_platform/lmms/prompts.py). No lmms-eval here:
neither module imports it."""

from __future__ import annotations

import pytest
import torch
import yaml

from vlsa_platform.data.dataset import VLSADataset, collate
from vlsa_platform.data.records import load_image
from vlsa_platform.data.synthetic import bundled_synthetic
from vlsa_platform.data.types import Record, Turn
from vlsa_platform.eval.questions import samples_from_batch
from vlsa_platform.lmms.loading import ExportError, check_export
from vlsa_platform.lmms.prompts import PromptBuilder, QuestionError
from vlsa_platform.model.markers import EOT_TOKEN
from vlsa_platform.train.build import WEIGHTS_FILE, build_tokenizer, vlsa_config_for

from .helpers import fake_export, task_docs, tiny_experiment

VISION_MODES = ("anyres", "lowres", "sa_perceiver")


def test_an_export_of_another_model_is_refused_before_its_weights_are_read(tmp_path):
    run = tiny_experiment()
    export, config = fake_export(tmp_path, run)
    assert check_export(export, config).model.vision == run.model.vision  # its own config: accepted
    other = tiny_experiment("model.vision=lowres", "model.recon=false")
    other_config = tmp_path / "other.yaml"
    other_config.write_text(yaml.safe_dump(other.resolved()))
    with pytest.raises(ExportError, match=r"not the model of the experiment config .*vision_mode"):
        check_export(export, other_config)


def test_a_missing_or_incomplete_export_is_named(tmp_path):
    config = tmp_path / "resolved.yaml"
    config.write_text(yaml.safe_dump(tiny_experiment().resolved()))
    with pytest.raises(ExportError, match="no such folder"):
        check_export(tmp_path / "absent", config)
    (tmp_path / "model").mkdir()
    with pytest.raises(ExportError, match=f"lacks {WEIGHTS_FILE}, config.json"):
        check_export(tmp_path / "model", config)


def _validation_sample(experiment, tokenizer, vlsa, doc):
    """The doc's record as validation samples it (no cognition turns), and its first answer."""
    record = Record(
        doc["id"], "val", 0, doc["image"], (Turn("user", doc["question"]), Turn("assistant", doc["answer"]))
    )
    dataset = VLSADataset(
        [record],
        tokenizer=tokenizer,
        config=vlsa,
        image_roots={"val": str(bundled_synthetic())},
        max_length=experiment.data.max_length,
    )
    stop = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    (sample,) = samples_from_batch(collate([dataset[0]], tokenizer.pad_token_id), vlsa.image_token_id, stop)
    return sample, sample.answers[0]


@pytest.mark.parametrize("vision", VISION_MODES)
def test_a_question_has_the_prompt_tokens_and_image_tiles_of_validation(vision):
    experiment = tiny_experiment(f"model.vision={vision}", "model.recon=false")
    tokenizer, vlsa = build_tokenizer(experiment), vlsa_config_for(experiment)
    builder = PromptBuilder(tokenizer, vlsa, experiment.data.max_length)
    docs = task_docs("vqa")
    # An image placed first, one placed after the text, and a text-only question.
    chosen = [docs[0], next(d for d in docs if d["image"] is None)]
    chosen += [next(d for d in task_docs("caption") if not d["question"].startswith("<image>"))]
    for doc in chosen:
        images = [load_image(str(bundled_synthetic()), doc["image"])] if doc["image"] else []
        expected, answer = _validation_sample(experiment, tokenizer, vlsa, doc)
        got, stand_in = builder.question(doc["question"], images)
        assert torch.equal(got.input_ids[: stand_in.start], expected.input_ids[: answer.start])
        for name in ("pixel_values", "tile_pixel_values", "image_grids"):
            want, have = getattr(expected, name), getattr(got, name)
            assert (want is None and have is None) or torch.equal(want, have), name
        # The answer to score, as loglikelihood poses it: the reference tokens themselves.
        batch, [(_, scored)] = builder.collated([builder.encode(doc["question"], images, doc["answer"])])
        assert torch.equal(scored.reference, answer.reference) and scored.complete
        assert batch["input_ids"].shape[0] == 1


def test_a_question_without_placeholder_gets_the_image_first_and_bad_ones_are_refused():
    experiment = tiny_experiment()
    builder = PromptBuilder(
        build_tokenizer(experiment), vlsa_config_for(experiment), experiment.data.max_length
    )
    image = load_image(str(bundled_synthetic()), task_docs("vqa")[0]["image"])
    plain, _ = builder.question("What color is the big circle?", [image])
    placed, _ = builder.question("<image>\nWhat color is the big circle?", [image])
    assert torch.equal(plain.input_ids, placed.input_ids)
    with pytest.raises(QuestionError, match="one image per question, this one has 2"):
        builder.question("Which is bigger?", [image, image])
    with pytest.raises(QuestionError, match="holds <image> but comes with no image"):
        builder.question("<image>\nWhat is it?", [])
    short = PromptBuilder(builder.dataset.encoder.tokenizer, vlsa_config_for(experiment), 8)
    with pytest.raises(QuestionError, match="too_long"):
        short.question("What color is the big circle?", [image])
