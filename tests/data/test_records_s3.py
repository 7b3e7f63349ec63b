"""Reading a dataset and its images from ``s3://`` (a real SeaweedFS server, keys enforced)."""

from __future__ import annotations

import uuid

import pytest

from vlsa_platform import storage
from vlsa_platform.data.inspect import inspect_dataset
from vlsa_platform.data.records import load_image, read_records
from vlsa_platform.data.types import BadSample

from .helpers import conv, truncated_jpeg, write_image, write_json


@pytest.fixture
def s3_dataset(s3_server, monkeypatch, tmp_path):
    """A small dataset uploaded to s3://<bucket>/<unique>/: JSON under data/, images under images/."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("VLSA_CACHE_DIR", str(tmp_path / "cache"))
    local = tmp_path / "upload"
    write_image(local / "images" / "sub" / "a.jpg")
    write_image(local / "images" / "b.jpg")
    write_image(local / "images" / "bad.jpg", truncated_jpeg())
    write_json(
        local / "data" / "train.json",
        [
            {
                "id": "a",
                "image": "sub/a.jpg",
                "conversations": conv(("human", "<image>\nWhat?"), ("gpt", "A.")),
            },
            {
                "id": "b",
                "image": "b.jpg",
                "conversations": conv(("human", "Describe.\n<image>"), ("gpt", "B.")),
            },
            {"id": "t", "conversations": conv(("human", "Hi"), ("gpt", "Hello"))},
            {"id": "gone", "image": "missing.jpg", "conversations": conv(("human", "<image>"), ("gpt", "?"))},
            {"id": "bad", "image": "bad.jpg", "conversations": conv(("human", "<image>"), ("gpt", "?"))},
            {"id": "broken"},
        ],
    )
    prefix = f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}"
    storage.upload_dir(local, prefix)
    return prefix


def test_read_records_and_images_from_s3(s3_dataset, tmp_path):
    records, skips = read_records(f"{s3_dataset}/data/train.json", dataset="remote")
    assert [r.id for r in records] == ["a", "b", "t", "gone", "bad"]
    assert [(s.reason, s.id) for s in skips] == [("missing_key", "broken")]
    root = f"{s3_dataset}/images"
    img = load_image(root, "sub/a.jpg")
    assert img.mode == "RGB" and img.size == (64, 48)
    cached = list((tmp_path / "cache" / "s3-objects").rglob("a.jpg"))
    assert len(cached) == 1  # fetched once, kept locally
    assert load_image(root, "sub/a.jpg").size == (64, 48)
    with pytest.raises(BadSample) as info:
        load_image(root, "missing.jpg")
    assert info.value.reason == "missing_image"
    with pytest.raises(BadSample) as info:
        load_image(root, "bad.jpg")
    assert info.value.reason == "unreadable_image"


def test_inspect_an_s3_dataset(s3_dataset):
    report = inspect_dataset(f"{s3_dataset}/data/train.json", f"{s3_dataset}/images", tokenizer=None)
    assert (report.samples_read, report.usable, report.text_only) == (6, 3, 1)
    assert report.skipped_by_reason == {"missing_key": 1, "missing_image": 1, "unreadable_image": 1}
    # without an image root, images are looked for beside the JSON (data/): all missing
    beside = inspect_dataset(f"{s3_dataset}/data/train.json", tokenizer=None)
    assert beside.skipped_by_reason["missing_image"] == 4
