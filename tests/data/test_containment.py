"""Containment (docs/data.md): image paths stay inside the image root, only regular files of bounded size are
read, each refusal is a skip with its own reason (reader, loader, ``data inspect``), never a crash."""

from __future__ import annotations

import json
import os
import time

import pytest
from PIL import ImageFile

from vlsa_platform.cli import main
from vlsa_platform.data import containment
from vlsa_platform.data.dataset import VLSADataset
from vlsa_platform.data.records import (
    DatasetError,
    check_image,
    load_image,
    read_records,
    resolve_image,
)
from vlsa_platform.data.types import BadSample, Record, Turn
from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.model.tokenizer import load_tokenizer

from .helpers import conv, write_image, write_json


def _good(rid, image):
    return {"id": rid, "image": image, "conversations": conv(("human", "<image>\nWhat?"), ("gpt", "red"))}


@pytest.fixture
def layout(tmp_path):
    """``tmp/ds/{data.json, imgs/ok.jpg, imgs/a/, imgs/inside -> ok.jpg, imgs/escape -> ../../secret.jpg}``
    and ``tmp/secret.jpg``, a real image outside the root."""
    root = tmp_path / "ds" / "imgs"
    write_image(root / "ok.jpg")
    write_image(root / "a" / "b.jpg")
    secret = write_image(tmp_path / "secret.jpg")
    os.symlink(secret, root / "escape.jpg")
    os.symlink(root / "ok.jpg", root / "inside.jpg")
    os.symlink(tmp_path, root / "up")  # a symlinked folder leading out
    return tmp_path


# (image path as written, reason when absolute paths are off, reason when they are on; None = accepted)
STRING_CASES = [
    ("ok.jpg", None, None),
    ("a/../ok.jpg", None, None),
    ("../secret.jpg", "image_outside_root", "image_outside_root"),
    ("a/../../secret.jpg", "image_outside_root", "image_outside_root"),
    ("./../x.png", "image_outside_root", "image_outside_root"),
    ("/etc/passwd", "absolute_image_path", None),
    ("s3://bucket/key.png", "absolute_image_path", None),
    ("s3://bucket/../key.png", "absolute_image_path", "image_outside_root"),
    ("a\0b.png", "bad_record", "bad_record"),
]


@pytest.mark.parametrize("allow", [False, True])
def test_the_reader_skips_paths_that_cannot_stay_inside_the_root(tmp_path, allow):
    data = write_json(tmp_path / "d.json", [_good(f"r{i}", p) for i, (p, *_) in enumerate(STRING_CASES)])
    records, skips = read_records(data, allow_absolute_paths=allow)
    expected = {f"r{i}": case[2 if allow else 1] for i, case in enumerate(STRING_CASES)}
    assert [r.id for r in records] == [rid for rid, reason in expected.items() if reason is None]
    assert {s.id: s.reason for s in skips} == {rid: reason for rid, reason in expected.items() if reason}
    with pytest.raises(BadSample) as err:
        read_records(data, on_bad="fail", allow_absolute_paths=allow)
    assert err.value.reason == "image_outside_root" and err.value.id == "r2"


def test_the_loader_refuses_escapes_and_special_files(layout):
    root = layout / "ds" / "imgs"
    assert load_image(root, "inside.jpg").size == (64, 48)  # a symlink inside the root is fine
    assert load_image(root, "a/../ok.jpg").size == (64, 48)
    refused = {
        "escape.jpg": "image_outside_root",  # symlink to a file outside
        "up/secret.jpg": "image_outside_root",  # through a symlinked folder
        "../secret.jpg": "image_outside_root",
        str(layout / "secret.jpg"): "absolute_image_path",
        "a": "not_a_regular_file",
        "nope.jpg": "missing_image",
    }
    for path, reason in refused.items():
        with pytest.raises(BadSample) as err:
            load_image(root, path)
        assert err.value.reason == reason, (path, err.value)
    assert load_image(root, str(layout / "secret.jpg"), allow_absolute=True).size == (64, 48)
    assert check_image(None, str(layout / "secret.jpg"), allow_absolute=True) == (64, 48)
    # A dataset that may name any file also follows links out of its root (a root assembled from links).
    assert load_image(root, "escape.jpg", allow_absolute=True).size == (64, 48)
    assert load_image(root, "up/secret.jpg", allow_absolute=True).size == (64, 48)
    with pytest.raises(BadSample) as err:
        load_image(root, "../secret.jpg", allow_absolute=True)  # '..' above the root: never
    assert err.value.reason == "image_outside_root"


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_fifos_are_refused_without_reading(tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "pipe")
        os.mkfifo(special)  # opening it for reading would wait for a writer
    elif not os.path.exists(special):
        pytest.skip(f"no {special} here")
    start = time.monotonic()
    with pytest.raises(BadSample) as err:
        load_image(None, special, allow_absolute=True)
    assert err.value.reason == "not_a_regular_file" and time.monotonic() - start < 5
    assert "device" in err.value.detail or "FIFO" in err.value.detail


def test_a_file_over_the_byte_limit_is_too_large_unread(tmp_path, monkeypatch):
    # The constant covers an uncompressed RGBA image of the default pixel limit.
    assert containment.MAX_IMAGE_BYTES > 4 * containment.DEFAULT_MAX_PIXELS
    write_image(tmp_path / "big.jpg")
    size = (tmp_path / "big.jpg").stat().st_size
    monkeypatch.setattr(containment, "MAX_IMAGE_BYTES", size - 1)
    with pytest.raises(BadSample) as err:
        load_image(tmp_path, "big.jpg")
    assert err.value.reason == "image_too_large" and "MAX_IMAGE_BYTES" in err.value.detail
    monkeypatch.setattr(containment, "MAX_IMAGE_BYTES", size)
    assert load_image(tmp_path, "big.jpg").size == (64, 48)


def test_memory_error_is_not_an_unreadable_image(tmp_path, monkeypatch):
    write_image(tmp_path / "ok.jpg")

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(MemoryError):
        load_image(tmp_path, "ok.jpg")


def test_s3_roots_keep_keys_under_their_prefix():
    root = "s3://bucket/images"
    assert resolve_image(root, "a/./b.png") == "s3://bucket/images/a/b.png"
    assert resolve_image(root, "a/../b.png") == "s3://bucket/images/b.png"
    for path in ("../other/key.png", "a/../../key.png"):
        with pytest.raises(BadSample) as err:
            resolve_image(root, path)
        assert err.value.reason == "image_outside_root"
    with pytest.raises(BadSample) as err:
        resolve_image(root, "s3://bucket/../key.png", allow_absolute=True)
    assert err.value.reason == "image_outside_root"  # a ValueError from parse_s3 before: not any more


@pytest.mark.parametrize("text", ['{"id": "x", "conversations": []}\n', '{\n  "id": "x"\n}\n'])
def test_a_top_level_object_is_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "one.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"one\.json: the top level is a single JSON object"):
        read_records(path)
    lines = tmp_path / "one.jsonl"  # explicitly JSON Lines: one record per line, one line
    lines.write_text(json.dumps(_good("x", "ok.jpg")) + "\n")
    assert [r.id for r in read_records(lines)[0]] == ["x"]


def _inspect(folder, capsys, *flags):
    code = main(["data", "inspect", str(folder), "--json", "--tokenizer", "none", *flags])
    return code, json.loads(capsys.readouterr().out)


def test_data_inspect_counts_each_refusal(layout, capsys):
    ds = layout / "ds"
    os.mkfifo(ds / "imgs" / "pipe")
    write_json(
        ds / "data.json",
        [
            _good("ok", "imgs/ok.jpg"),
            _good("inside", "imgs/inside.jpg"),
            _good("dotdot", "../secret.jpg"),
            _good("deep", "imgs/a/../../../secret.jpg"),
            _good("symlink", "imgs/escape.jpg"),
            _good("abs", str(layout / "secret.jpg")),
            _good("zero", "/dev/zero"),
            _good("dir", "imgs/a"),
            _good("fifo", "imgs/pipe"),
            _good("s3", "s3://bucket/../key.png"),
        ],
    )
    code, out = _inspect(ds, capsys)
    assert code == 0 and out["samples_read"] == 10 and out["usable"] == 2
    assert out["skipped_by_reason"] == {
        "image_outside_root": 3,
        "absolute_image_path": 3,
        "not_a_regular_file": 2,
    }
    assert out["images_checked"] == 4  # ok, inside (the same file by another name), a, pipe

    code, out = _inspect(ds, capsys, "--allow-absolute-paths")
    assert code == 0 and out["usable"] == 4  # the absolute path and the link out of the root are read
    assert out["skipped_by_reason"] == {"image_outside_root": 3, "not_a_regular_file": 3}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def test_the_training_dataset_skips_and_allows_per_dataset(layout, tok):
    config = build_vlsa_config("tiny")
    root = str(layout / "ds" / "imgs")
    turns = (Turn("user", "<image>\nWhat?"), Turn("assistant", "red"))
    records = [
        Record("escape", "d", 0, "escape.jpg", turns),
        Record("abs", "d", 1, str(layout / "secret.jpg"), turns),
        Record("ok", "d", 2, "ok.jpg", turns),
    ]

    def dataset(**kw):
        return VLSADataset(
            records, tokenizer=tok, config=config, image_roots={"d": root}, max_length=2048, **kw
        )

    strict = dataset()
    assert strict[0].record_id == "ok"
    assert strict.skip_counts() == {"image_outside_root": 1, "absolute_image_path": 1}
    allowing = dataset(absolute_paths={"d"})  # also follows the link out of the root
    assert [allowing[i].record_id for i in range(3)] == ["escape", "abs", "ok"]
    assert allowing.skip_counts() == {}
