"""The bundled synthetic dataset: deterministic, published format, read back with zero skips, held-out val."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from vlsa_platform.config.schema import SYNTHETIC_DATASET, DatasetConfig
from vlsa_platform.data.records import dataset_location, load_image, read_records
from vlsa_platform.data.synthetic import COLORS, POSITIONS, SHAPES, bundled_synthetic, write_synthetic

SMALL = {"num_train": 120, "num_val": 30, "crops_per_photo": 1}


def _tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "out", seed=0, **SMALL)


def test_deterministic_for_a_seed(small, tmp_path):
    again = write_synthetic(tmp_path / "again", seed=0, **SMALL)
    assert _tree(small) == _tree(again)
    other = write_synthetic(tmp_path / "other", seed=1, **SMALL)
    assert (other / "train.json").read_bytes() != (small / "train.json").read_bytes()


def test_reads_back_with_zero_skips(small):
    for split, size in (("train", 120), ("val", 30)):
        records, skips = read_records(small / f"{split}.json")
        assert skips == [] and len(records) == size
        for r in records:
            if r.image is not None:
                assert r.image.startswith(("images/shapes/", "images/photos/"))
                img = load_image(small, r.image)
                assert min(img.size) >= 16 and max(img.size) <= 224


def test_contents(small):
    records, _ = read_records(small / "train.json")
    text_only = [r for r in records if r.image is None]
    photos = [r for r in records if r.image and "photos/" in r.image]
    multi = [r for r in records if len(r.turns) > 2]
    assert text_only and photos and multi
    assert any(
        r.turns[0].text.endswith("\n<image>") for r in records
    )  # <image> after the prompt, as in LLaVA-Pretrain
    vocabulary = set(COLORS) | set(POSITIONS) | set(SHAPES) | {"1", "2", "3", "4", "yes", "no"}
    short = [
        t.text for r in records if r.image and "shapes/" in r.image for t in r.turns if t.role == "assistant"
    ]
    answers = [a for a in short if not a.endswith(".")]  # captions are sentences; the rest exact-match words
    assert answers and set(answers) <= vocabulary
    assert {"2", "red", "left"} & set(answers)


def test_val_shares_no_image_with_train(small):
    train, _ = read_records(small / "train.json")
    val, _ = read_records(small / "val.json")
    paths = {r.image for r in train if r.image}, {r.image for r in val if r.image}
    assert not paths[0] & paths[1]
    digest = lambda rel: hashlib.sha256((small / rel).read_bytes()).hexdigest()  # noqa: E731
    assert not {digest(p) for p in paths[0]} & {digest(p) for p in paths[1]}
    val_questions = {t.text for r in val for t in r.turns if r.image is None and t.role == "user"}
    train_questions = {t.text for r in train for t in r.turns if r.image is None and t.role == "user"}
    assert val_questions and not val_questions & train_questions


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory):
    """One cache folder for the bundle tests (generating the default size twice would only cost time)."""
    return tmp_path_factory.mktemp("cache")


def test_bundled_is_generated_once_and_shared(bundle_root):
    tmp_path = bundle_root
    results = []
    threads = [threading.Thread(target=lambda: results.append(bundled_synthetic(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    (target,) = set(results)
    assert target.parent == tmp_path and target.name.startswith("synthetic-v")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary folders left behind
    stamp = (target / "train.json").stat().st_mtime_ns
    assert bundled_synthetic(tmp_path) == target and (target / "train.json").stat().st_mtime_ns == stamp
    assert len(json.loads((target / "train.json").read_text())) == 600
    assert len(json.loads((target / "val.json").read_text())) == 100


def test_bundled_dataset_location(bundle_root, monkeypatch):
    tmp_path = bundle_root
    monkeypatch.setenv("VLSA_CACHE_DIR", str(tmp_path))
    path, root = dataset_location(DatasetConfig(path=SYNTHETIC_DATASET))
    assert path.endswith("train.json") and path.startswith(str(tmp_path))
    val, _ = dataset_location(DatasetConfig(path=SYNTHETIC_DATASET, split="val"))
    assert val.endswith("val.json")
    records, skips = read_records(path)
    assert skips == [] and len(records) == 600
    load_image(root, next(r.image for r in records if r.image))
    with pytest.raises(ValueError, match="splits"):
        dataset_location(DatasetConfig(path=SYNTHETIC_DATASET, split="test"))
