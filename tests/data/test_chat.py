"""Chat tokenization: the template's ids exactly, labels on assistant tokens only, truncation (data/chat.py)."""

from __future__ import annotations

import pytest
import torch

from vlsa_platform.data.chat import encode_conversation
from vlsa_platform.data.types import BadSample, Turn
from vlsa_platform.model.markers import (
    EOT_TOKEN,
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    LABEL_GROUP_PX,
    LABEL_GROUP_TEXT,
    LABEL_GROUP_VQ,
    RESERVED_0_TOKEN,
)
from vlsa_platform.model.tokenizer import load_tokenizer

IMAGE = IMAGE_PLACEHOLDER

OCR_ANSWER = " ".join(
    f"Line {i}: the sign reads 'OPEN {i * 7} DAYS', price ${i}.{i:02d}, call 555-01{i:02d}."
    for i in range(40)
)

# One conversation per published shape (LLaVA-Pretrain captions, LLaVA-NeXT instructions, text-only ShareGPT,
# LLaVAR OCR answers), with the image placeholder at the start, the end and the middle of the first turn.
SHAPES = {
    "pretrain_caption": [
        Turn("user", f"{IMAGE}\nGive a brief description of the image."),
        Turn("assistant", "a red circle above a small blue square on a white background"),
    ],
    "multi_turn_instruction": [
        Turn("user", f"What is the man holding?\n{IMAGE}"),
        Turn("assistant", "He is holding a red umbrella."),
        Turn("user", "Why might he be doing that?"),
        Turn("assistant", " It is raining, so the umbrella keeps him dry.\n\n"),
        Turn("user", "How many people are there?"),
        Turn("assistant", "There are 3 people: two on the left and one on the right."),
    ],
    "text_only": [
        Turn("user", "Write a haiku about tokens."),
        Turn("assistant", "Bytes merge into words\nheaders wrap the turns in light\nlabels mark replies"),
        Turn("user", "Now count to five."),
        Turn("assistant", "1, 2, 3, 4, 5."),
    ],
    "ocr_long_answer": [
        Turn("user", f"Read the text {IMAGE} in this picture, line by line."),
        Turn("assistant", OCR_ANSWER),
    ],
    "system_prompt": [
        Turn("system", "You are a careful visual assistant."),
        Turn("user", f"  {IMAGE} What colour is the sky?  "),
        Turn("assistant", "Blue."),
    ],
}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def _n_images(turns):
    return sum(t.text.count(IMAGE) for t in turns)


def _template_ids(tok, turns, image_token, visual):
    """Token ids of the chat template's rendered text, each placeholder expanded to ``visual`` image tokens."""
    text = tok.apply_chat_template([{"role": t.role, "content": t.text} for t in turns], tokenize=False)
    return tok(text.replace(IMAGE, image_token * visual), add_special_tokens=False)["input_ids"]


def _labelled_runs(enc):
    """The labelled ids, split into contiguous runs (one per assistant turn)."""
    runs, current = [], []
    for i, label in zip(enc.input_ids.tolist(), enc.labels.tolist(), strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == i
            current.append(i)
    return [*runs, current] if current else runs


@pytest.mark.parametrize("image_token", [IMAGE, RESERVED_0_TOKEN])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_ids_equal_the_chat_template_and_labels_are_the_assistant_turns(tok, shape, image_token):
    turns = SHAPES[shape]
    visual = 7
    n_images = _n_images(turns)
    enc = encode_conversation(turns, tok, image_token, [visual] * n_images, max_length=4096)
    assert enc.input_ids.dtype == torch.long and not enc.truncated
    assert enc.input_ids.tolist() == _template_ids(tok, turns, image_token, visual)
    image_id = tok.convert_tokens_to_ids(image_token)
    assert int((enc.input_ids == image_id).sum()) == visual * n_images
    assert (enc.labels[enc.input_ids == image_id] == IGNORE_INDEX).all()

    answers = [t.text.strip() + EOT_TOKEN for t in turns if t.role == "assistant"]
    decoded = [tok.decode(run, skip_special_tokens=False) for run in _labelled_runs(enc)]
    assert decoded == answers
    assert (enc.label_groups == LABEL_GROUP_TEXT).all()


def test_label_groups_mark_grouped_turns(tok):
    turns = [
        *SHAPES["pretrain_caption"],
        Turn("user", "List the VQ codes of the 2x2 window at row 3, column 5."),
        Turn("assistant", "12 7 4095 33", group=LABEL_GROUP_VQ),
        Turn("user", "Mean colour of the top-left quarter, in 2x2 cells?"),
        Turn("assistant", "(255, 0, 0) (250, 3, 1) (0, 0, 255) (1, 2, 250)", group=LABEL_GROUP_PX),
    ]
    enc = encode_conversation(turns, tok, IMAGE, [5], max_length=4096)
    runs = _labelled_runs(enc)
    groups = enc.label_groups[enc.labels != IGNORE_INDEX].tolist()
    sizes = [len(r) for r in runs]
    expected = [LABEL_GROUP_TEXT] * sizes[0] + [LABEL_GROUP_VQ] * sizes[1] + [LABEL_GROUP_PX] * sizes[2]
    assert groups == expected
    assert (enc.label_groups[enc.labels == IGNORE_INDEX] == LABEL_GROUP_TEXT).all()
    vq_text = tok.decode(enc.input_ids[enc.label_groups == LABEL_GROUP_VQ], skip_special_tokens=False)
    assert vq_text == "12 7 4095 33" + EOT_TOKEN


def test_truncation_drops_whole_trailing_exchanges_first(tok):
    turns = SHAPES["multi_turn_instruction"]
    visual = 20
    full = encode_conversation(turns, tok, IMAGE, [visual], max_length=4096)
    two = encode_conversation(turns[:4], tok, IMAGE, [visual], max_length=4096)
    for max_length in (len(two), len(full) - 1):
        enc = encode_conversation(turns, tok, IMAGE, [visual], max_length=max_length)
        assert enc.truncated
        assert enc.input_ids.tolist() == two.input_ids.tolist()
        assert enc.labels.tolist() == two.labels.tolist()
        assert int((enc.input_ids == tok.convert_tokens_to_ids(IMAGE)).sum()) == visual


def test_truncation_then_cuts_the_last_answer_never_the_image(tok):
    turns = SHAPES["ocr_long_answer"]
    visual = 64
    full = encode_conversation(turns, tok, IMAGE, [visual], max_length=4096)
    eot = tok.convert_tokens_to_ids(EOT_TOKEN)
    for max_length in (len(full) - 1, len(full) // 2, visual + 30):
        enc = encode_conversation(turns, tok, IMAGE, [visual], max_length=max_length)
        assert len(enc) == max_length and enc.truncated
        assert int((enc.input_ids == tok.convert_tokens_to_ids(IMAGE)).sum()) == visual
        assert enc.input_ids.tolist() == full.input_ids[:max_length].tolist()
        labelled = enc.labels[enc.labels != IGNORE_INDEX]
        assert len(labelled) >= 1 and labelled[-1] != eot  # a cut answer does not teach the model to stop
        assert OCR_ANSWER.startswith(tok.decode(labelled))


def test_truncation_keeps_the_exchange_with_the_image_and_a_system_prompt(tok):
    turns = [Turn("system", "Be brief."), *SHAPES["multi_turn_instruction"]]
    first = encode_conversation(turns[:3], tok, IMAGE, [30], max_length=4096)
    enc = encode_conversation(turns, tok, IMAGE, [30], max_length=len(first) + 5)
    assert enc.input_ids.tolist() == first.input_ids.tolist()
    text = tok.decode(enc.input_ids, skip_special_tokens=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.")
    assert "umbrella" in text and "Why might" not in text


@pytest.mark.parametrize("shape", ["pretrain_caption", "ocr_long_answer", "system_prompt"])
def test_too_long_when_the_image_turn_cannot_fit(tok, shape):
    turns = SHAPES[shape]
    visual = 200
    full = encode_conversation(turns, tok, IMAGE, [visual], max_length=4096)
    answer_len = len(_labelled_runs(full)[0])
    shortest = len(full) - answer_len + 1  # prompt, image and one answer token
    enc = encode_conversation(turns, tok, IMAGE, [visual], max_length=shortest)
    assert len(enc) == shortest and int((enc.labels != IGNORE_INDEX).sum()) == 1
    for max_length in (shortest - 1, visual):
        with pytest.raises(BadSample) as err:
            encode_conversation(turns, tok, IMAGE, [visual], max_length=max_length)
        assert err.value.reason == "too_long"


def test_placeholder_count_must_match_the_images(tok):
    with pytest.raises(BadSample) as err:
        encode_conversation(SHAPES["pretrain_caption"], tok, IMAGE, [], max_length=4096)
    assert err.value.reason == "image_placeholder"
    with pytest.raises(BadSample):
        encode_conversation(SHAPES["text_only"], tok, IMAGE, [5], max_length=4096)


def test_unknown_image_token_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="no '<not_a_token>' token"):
        encode_conversation(SHAPES["text_only"], tok, "<not_a_token>", [], max_length=4096)
