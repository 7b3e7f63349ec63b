"""The LLaVA-format readers and the image loader, on real files in tmp dirs."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from vlsa_platform.config.schema import DatasetConfig
from vlsa_platform.data.records import (
    DatasetError,
    check_image,
    dataset_location,
    load_image,
    parse_record,
    read_records,
)
from vlsa_platform.data.types import SKIP_REASONS, BadSample, Turn

from .helpers import conv, jpeg_bytes, png_header, truncated_jpeg, write_image, write_json, write_jsonl

# One record of each published shape.
PRETRAIN = {  # LLaVA-Pretrain (blip_laion_cc_sbu_558k.json): <image> at the END of the first turn
    "id": "004539375",
    "image": "00453/004539375.jpg",
    "conversations": conv(
        ("human", "Render a clear and concise summary of the photo.\n<image>"),
        ("gpt", "select luxury furniture 3 - inch gel memory foam mattress topper"),
    ),
}
INSTRUCT = {  # LLaVA-NeXT instructions: multi-turn, <image> first
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": conv(
        ("human", "<image>\nWhat are the colors of the bus in the image?"),
        ("gpt", "The bus in the image is white and red."),
        ("human", "What feature can be seen on the back of the bus?"),
        ("gpt", "The back of the bus features an advertisement."),
    ),
}
TEXT_ONLY = {
    "id": "sharegpt_1",
    "conversations": conv(("human", "Write a haiku."), ("gpt", "Autumn moonlight...")),
}
OCR = {  # LLaVAR: text-rich images, long OCR-grounded answers, integer ids
    "id": 17,
    "image": "llavar/finetune/003/0003517.jpg",
    "conversations": conv(
        ("human", "<image>\nWhat is written on the poster?"),
        ("gpt", "The poster says " + "GRAND OPENING SALE 50% OFF EVERYTHING " * 30),
    ),
}
CHAT_ROLES = {  # user/assistant spelling and a leading system turn
    "id": "chat-1",
    "image": "a/b/c/d.png",
    "conversations": conv(
        ("system", "You are a helpful assistant."),
        ("user", "Look at this: <image> What is it?"),
        ("assistant", "A cat."),
    ),
}


def test_published_shapes_read_unchanged(tmp_path):
    path = write_json(tmp_path / "data.json", [PRETRAIN, INSTRUCT, TEXT_ONLY, OCR, CHAT_ROLES])
    records, skips = read_records(path)
    assert skips == []
    assert [r.id for r in records] == ["004539375", "000000033471", "sharegpt_1", "17", "chat-1"]
    assert all(r.dataset == "data" for r in records)
    assert [r.index for r in records] == [0, 1, 2, 3, 4]

    pre, inst, text, ocr, chat = records
    assert pre.image == "00453/004539375.jpg"
    assert pre.turns == (
        Turn(
            "user", "Render a clear and concise summary of the photo.\n<image>"
        ),  # placeholder kept at the end
        Turn("assistant", "select luxury furniture 3 - inch gel memory foam mattress topper"),
    )
    assert [t.role for t in inst.turns] == ["user", "assistant", "user", "assistant"]
    assert inst.image == "coco/train2017/000000033471.jpg"
    assert text.image is None and len(text.turns) == 2
    assert len(ocr.turns[1].text) > 1000
    assert [t.role for t in chat.turns] == ["system", "user", "assistant"]
    assert chat.turns[1].text == "Look at this: <image> What is it?"


def test_jsonl_reads_the_same(tmp_path):
    rows = [PRETRAIN, INSTRUCT, TEXT_ONLY, OCR, CHAT_ROLES]
    from_list, _ = read_records(write_json(tmp_path / "a.json", rows), dataset="d")
    from_lines, _ = read_records(write_jsonl(tmp_path / "a.jsonl", [*rows[:2], "", *rows[2:]]), dataset="d")
    assert from_list == from_lines
    # a .json file holding one record per line is sniffed as JSON Lines
    sniffed, _ = read_records(write_jsonl(tmp_path / "b.json", rows), dataset="d")
    assert sniffed == from_list


def test_jsonl_lines_split_on_newlines_only(tmp_path):
    record = {"id": "u", "conversations": conv(("human", "a\u2028b\r"), ("gpt", "c\u2029d"))}
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\r\n" + json.dumps(TEXT_ONLY) + "\n")
    records, skips = read_records(path)
    assert skips == [] and records[0].turns[0].text == "a\u2028b\r" and records[1].id == "sharegpt_1"


def test_missing_id_gets_dataset_and_index(tmp_path):
    record = {k: v for k, v in TEXT_ONLY.items() if k != "id"}
    records, _ = read_records(write_json(tmp_path / "x.json", [TEXT_ONLY, record]))
    assert [r.id for r in records] == ["sharegpt_1", "x:1"]


def _with(**changes):
    out = json.loads(json.dumps(INSTRUCT))
    out.update(changes)
    return out


def _without(key):
    return {k: v for k, v in INSTRUCT.items() if k != key}


BAD_RECORDS = {
    "not_an_object": (["a", "list"], "bad_record"),
    "missing_conversations": (_without("conversations"), "missing_key"),
    "missing_from": (
        _with(conversations=[{"value": "<image>\nhi"}, {"from": "gpt", "value": "x"}]),
        "missing_key",
    ),
    "missing_value": (_with(conversations=[{"from": "human"}, {"from": "gpt", "value": "x"}]), "missing_key"),
    "conversations_not_list": (_with(conversations={"from": "human"}), "bad_record"),
    "value_not_string": (_with(conversations=conv(("human", "<image>\nhi"), ("gpt", 3))), "bad_record"),
    "id_wrong_type": (_with(id=["x"]), "bad_record"),
    "image_list": (_with(image=["a.jpg", "b.jpg"]), "bad_record"),
    "image_empty": (_with(image=""), "bad_record"),
    "empty_conversations": (_with(conversations=[]), "empty_conversation"),
    "empty_turn": (_with(conversations=conv(("human", "<image>\nhi"), ("gpt", "  "))), "empty_conversation"),
    "assistant_first": (_with(conversations=conv(("gpt", "<image>\nhi"), ("human", "x"))), "role_order"),
    "two_users": (
        _with(conversations=conv(("human", "<image>\nhi"), ("human", "again"), ("gpt", "x"))),
        "role_order",
    ),
    "ends_with_user": (
        _with(conversations=conv(("human", "<image>\nhi"), ("gpt", "x"), ("human", "y"))),
        "role_order",
    ),
    "unknown_role": (_with(conversations=conv(("human", "<image>\nhi"), ("bot", "x"))), "role_order"),
    "late_system": (_with(conversations=conv(("human", "<image>\nhi"), ("system", "x"))), "role_order"),
    "placeholder_missing": (_with(conversations=conv(("human", "hi"), ("gpt", "x"))), "image_placeholder"),
    "placeholder_repeated": (
        _with(conversations=conv(("human", "<image>\n<image>\nhi"), ("gpt", "x"))),
        "image_placeholder",
    ),
    "placeholder_in_later_turn": (
        _with(conversations=conv(("human", "hi"), ("gpt", "x"), ("human", "<image>"), ("gpt", "y"))),
        "image_placeholder",
    ),
    "placeholder_without_image": (
        {"id": "t", "conversations": conv(("human", "<image>\nhi"), ("gpt", "x"))},
        "image_placeholder",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_each_bad_record_is_skipped_with_its_reason(tmp_path, case):
    bad, reason = BAD_RECORDS[case]
    path = write_json(tmp_path / "ds.json", [PRETRAIN, bad, TEXT_ONLY])
    records, skips = read_records(path)
    assert [r.id for r in records] == ["004539375", "sharegpt_1"]
    (skip,) = skips
    assert (skip.dataset, skip.index, skip.reason) == ("ds", 1, reason)
    assert reason in SKIP_REASONS and skip.detail


@pytest.mark.parametrize("case", ["missing_conversations", "assistant_first", "placeholder_missing"])
def test_fail_raises_naming_the_record(tmp_path, case):
    bad, reason = BAD_RECORDS[case]
    path = write_json(tmp_path / "ds.json", [PRETRAIN, bad])
    with pytest.raises(BadSample) as info:
        read_records(path, dataset="llava_next", on_bad="fail")
    err = info.value
    assert (err.reason, err.dataset, err.index, err.id) == (reason, "llava_next", 1, "000000033471")
    assert (
        "llava_next" in str(err)
        and "record 1" in str(err)
        and "000000033471" in str(err)
        and reason in str(err)
    )


def test_jsonl_malformed_line_is_one_skip(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [PRETRAIN, '{"id": "broken", "conversations": [', TEXT_ONLY])
    records, skips = read_records(path)
    assert [r.id for r in records] == ["004539375", "sharegpt_1"]
    (skip,) = skips
    assert skip.reason == "bad_json" and skip.index == 1 and "line 2" in skip.detail
    with pytest.raises(BadSample, match="bad_json"):
        read_records(path, on_bad="fail")


def test_json_list_that_does_not_parse_is_one_error_naming_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": "b",, }\n]\n')
    with pytest.raises(DatasetError, match=r"broken\.json.*line 3, column 14"):
        read_records(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [("", "empty"), ('{\n "id": 1\n}\n', "single JSON object"), ("42", "int"), (b"\xff\xfe[", "UTF-8")],
)
def test_files_that_are_not_datasets(tmp_path, content, match):
    path = tmp_path / "x.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError, match=match):
        read_records(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_records(tmp_path / "nope.json")


def test_parse_record_alone():
    record = parse_record(INSTRUCT, "d", 7)
    assert record.index == 7 and record.turns[0].text.startswith("<image>")


# ------------------------------------------------------------------------------------------------- images


def test_load_image_from_sub_folder(tmp_path):
    write_image(tmp_path / "imgs" / "00453" / "004539375.jpg")
    img = load_image(tmp_path / "imgs", "00453/004539375.jpg")
    assert img.mode == "RGB" and img.size == (64, 48)
    assert check_image(str(tmp_path / "imgs"), "00453/004539375.jpg") == (64, 48)


def test_transparent_and_grey_images_become_rgb(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "grey.png")
    assert load_image(tmp_path, "clear.png").getpixel((0, 0)) == (255, 255, 255)  # over white
    assert load_image(tmp_path, "grey.png").getpixel((0, 0)) == (100, 100, 100)


BAD_IMAGES = {
    "missing_image": None,
    "unreadable_image": truncated_jpeg(),
    "garbage": b"this is not an image at all",
    "empty_file": b"",
    "zero_width": png_header(0, 32),
    "huge_header": png_header(100_000, 100_000),  # PIL's own bomb check fires
    "over_our_limit": png_header(9000, 9000),  # under PIL's limit, over the default 8192*8192
}
EXPECTED = {
    "missing_image": "missing_image",
    "unreadable_image": "unreadable_image",
    "garbage": "unreadable_image",
    "empty_file": "empty_image",
    "zero_width": "empty_image",
    "huge_header": "image_too_large",
    "over_our_limit": "image_too_large",
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_raise_their_reason(tmp_path, case):
    data = BAD_IMAGES[case]
    if data is not None:
        write_image(tmp_path / "sub" / "img.png", data)
    with pytest.raises(BadSample) as info:
        load_image(tmp_path, "sub/img.png")
    assert info.value.reason == EXPECTED[case]
    assert "sub/img.png" in info.value.detail
    named = info.value.for_record("ds", 4, "r4")
    assert "dataset 'ds' record 4 (id 'r4')" in str(named) and EXPECTED[case] in str(named)


def test_truncated_jpeg_header_still_parses(tmp_path):
    """The truncated file is caught by decoding (``load()``), not by opening."""
    data = truncated_jpeg()
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (96, 96)


def test_pixel_limit_is_a_parameter(tmp_path):
    write_image(tmp_path / "a.jpg", jpeg_bytes((64, 48)))
    with pytest.raises(BadSample, match="image_too_large"):
        load_image(tmp_path, "a.jpg", max_pixels=64 * 48 - 1)
    assert load_image(tmp_path, "a.jpg", max_pixels=64 * 48).size == (64, 48)


# --------------------------------------------------------------------------------------------- locations


def test_dataset_location_resolves_root_and_default_image_root(tmp_path):
    cfg = DatasetConfig(path="llava/train.json")
    assert dataset_location(cfg, str(tmp_path)) == (
        str(tmp_path / "llava/train.json"),
        str(tmp_path / "llava"),
    )
    cfg = DatasetConfig(path="s3://bucket/llava/train.json", image_root="s3://bucket/images")
    assert dataset_location(cfg, str(tmp_path)) == ("s3://bucket/llava/train.json", "s3://bucket/images")
    cfg = DatasetConfig(path="train.json", image_root="imgs")
    assert dataset_location(cfg, "s3://b/p") == ("s3://b/p/train.json", "s3://b/p/imgs")
