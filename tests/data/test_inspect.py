"""``vlsa-platform data inspect`` on a folder mixing good records with each kind of bad input."""

from __future__ import annotations

import json
import re

import pytest

from vlsa_platform.cli import main
from vlsa_platform.data.inspect import inspect_dataset
from vlsa_platform.data.records import read_records
from vlsa_platform.model.tokenizer import load_tokenizer

from .helpers import conv, png_header, truncated_jpeg, write_image, write_json, write_jsonl


def _rec(rid, image=None, *pairs):
    out = {"id": rid, "conversations": conv(*pairs)}
    if image is not None:
        out["image"] = image
    return out


def _good(rid, image):
    return _rec(rid, image, ("human", "<image>\nWhat color is the circle?"), ("gpt", "red"))


@pytest.fixture
def messy(tmp_path):
    """A folder: good.json (good + bad images + bad records), more.jsonl (good + a malformed line),
    broken.json (not JSON at all), a hidden file and a non-JSON file that are ignored."""
    root = tmp_path / "ds"
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        write_image(root / "imgs" / name)
    write_image(root / "imgs" / "bad" / "truncated.jpg", truncated_jpeg())
    write_image(root / "imgs" / "bad" / "empty.png", b"")
    write_image(root / "imgs" / "bad" / "huge.png", png_header(100_000, 100_000))
    write_json(
        root / "good.json",
        [
            _good("g1", "imgs/a/1.jpg"),
            _good("g2", "imgs/a/2.jpg"),
            _good("g2-again", "imgs/a/2.jpg"),  # the same image in two records: opened once
            _rec("t1", None, ("human", "Hello?"), ("gpt", "Hi."), ("human", "Bye?"), ("gpt", "Bye.")),
            _good("missing", "imgs/a/nope.jpg"),
            _good("trunc", "imgs/bad/truncated.jpg"),
            _good("empty", "imgs/bad/empty.png"),
            _good("huge", "imgs/bad/huge.png"),
            {"id": "nokey", "image": "imgs/a/1.jpg"},
            _rec("emptyconv", "imgs/a/1.jpg"),
            _rec("order", "imgs/a/1.jpg", ("gpt", "<image>\nx"), ("human", "y")),
        ],
    )
    write_jsonl(
        root / "more.jsonl", [_good("j1", "imgs/b/3.jpg"), '{"id": "half', _good("j2", "imgs/b/3.jpg")]
    )
    (root / "broken.json").write_text('[{"id": 1,}')
    (root / ".hidden.json").write_text("not read")
    (root / "notes.txt").write_text("not read")
    return root


EXPECTED_REASONS = {
    "missing_image": 1,
    "unreadable_image": 1,
    "empty_image": 1,
    "image_too_large": 1,
    "missing_key": 1,
    "empty_conversation": 1,
    "role_order": 1,
    "bad_json": 1,
}


def test_inspect_counts_and_reasons(messy):
    report = inspect_dataset(messy)
    assert [f.path.rsplit("/", 1)[-1] for f in report.files] == ["broken.json", "good.json", "more.jsonl"]
    assert report.file_errors == 1 and "line 1" in report.files[0].error
    assert report.samples_read == 11 + 3
    assert report.skipped_by_reason == EXPECTED_REASONS
    assert report.skipped == 8
    assert report.usable == 6  # g1, g2, g2-again, t1, j1, j2
    assert report.text_only == 1
    assert report.images_checked == 7  # a/1 a/2 nope truncated empty huge, b/3 (shared images once)
    assert report.images_bad == 4
    assert report.turns == {"min": 2, "mean": 2.33, "p50": 2.0, "p95": 3.5, "max": 4}
    example = report.skip_examples["missing_image"][0]
    assert example["index"] == 4 and example["id"] == "missing" and "nope.jpg" in example["detail"]
    assert report.skip_examples["bad_json"][0]["index"] == 1
    assert report.inspected


def test_token_lengths_are_the_chat_layout(tmp_path):
    rec = _rec("x", "i.jpg", ("human", "Please describe.\n<image>"), ("gpt", "A red circle on the left."))
    write_image(tmp_path / "i.jpg")
    report = inspect_dataset(write_json(tmp_path / "d.json", [rec]))
    tok = load_tokenizer("tiny")
    (record,), _ = read_records(tmp_path / "d.json")
    messages = [{"role": t.role, "content": t.text.replace("<image>", "")} for t in record.turns]
    expected = len(
        tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    )
    assert report.tokens["min"] == report.tokens["max"] == expected


def test_cli_table_and_json_agree(messy, capsys):
    assert main(["data", "inspect", str(messy)]) == 0
    text = capsys.readouterr().out
    for reason in EXPECTED_REASONS:
        assert reason in text
    assert re.search(r"^samples read\s+14$", text, re.M) and re.search(r"^usable\s+6$", text, re.M)
    assert "good.json record 4 id 'missing'" in text  # an example names file, record index and id
    assert main(["data", "inspect", str(messy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    report = inspect_dataset(messy).to_dict()
    assert out == report
    assert (out["samples_read"], out["usable"], out["skipped"], out["text_only"]) == (14, 6, 8, 1)
    assert out["skipped_by_reason"] == EXPECTED_REASONS
    assert out["tokens"]["tokenizer"] == "tiny" and out["tokens"]["min"] > 0


def test_cli_image_root_and_single_file(messy, tmp_path, capsys):
    moved = write_json(tmp_path / "elsewhere" / "one.json", [_good("g1", "a/1.jpg")])
    assert main(["data", "inspect", str(moved), "--image-root", str(messy / "imgs"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["usable"], out["images_checked"], out["skipped"]) == (1, 1, 0)
    # without the root, the image is looked for beside the JSON
    assert main(["data", "inspect", str(moved), "--json", "--tokenizer", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped_by_reason"] == {"missing_image": 1} and out["tokens"] is None


@pytest.mark.parametrize("what", ["missing", "empty_dir", "unparseable"])
def test_cli_exit_2_when_nothing_can_be_read(tmp_path, capsys, what):
    target = tmp_path / "x.json"
    if what == "empty_dir":
        target = tmp_path / "empty"
        target.mkdir()
    elif what == "unparseable":
        target.write_text("[1, 2,")
    assert main(["data", "inspect", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err
