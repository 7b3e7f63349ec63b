"""The bundled synthetic dataset: deterministic, published format, read back with zero skips, held-out val, and
questions about the small shapes whose answers the drawn pixels give."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from scipy import ndimage

from vlsa_platform.config.schema import SYNTHETIC_DATASET, DatasetConfig
from vlsa_platform.data import synthetic
from vlsa_platform.data.records import dataset_location, load_image, read_records
from vlsa_platform.data.synthetic import (
    COLORS,
    CORNERS,
    POSITIONS,
    SHAPES,
    Scene,
    bundled_synthetic,
    write_synthetic,
)

SMALL = {"num_train": 120, "num_val": 30, "crops_per_photo": 1}


def _tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The small dataset and the scene each shape image was drawn from (``draw_scene`` is wrapped to see them;
    the generator draws a split's scenes in image order, train first)."""
    drawn: list[Scene] = []
    real = synthetic.draw_scene
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "draw_scene", lambda scene: drawn.append(scene) or real(scene))
        root = write_synthetic(tmp_path_factory.mktemp("syn") / "out", seed=0, **SMALL)
    names = sorted(p.relative_to(root).as_posix() for p in (root / "images" / "shapes").iterdir())
    order = sorted(names, key=lambda n: (not n.startswith("images/shapes/train_"), n))
    assert len(order) == len(drawn)
    return root, dict(zip(order, drawn, strict=True))


@pytest.fixture(scope="module")
def small(generated):
    return generated[0]


def test_deterministic_for_a_seed(small, tmp_path):
    again = write_synthetic(tmp_path / "again", seed=0, **SMALL)
    assert _tree(small) == _tree(again)
    other = write_synthetic(tmp_path / "other", seed=1, **SMALL)
    assert (other / "train.json").read_bytes() != (small / "train.json").read_bytes()


def test_deterministic_across_processes(small, tmp_path):
    """Same bytes in a process with another string-hash seed (no set order leaks into the output)."""
    code = f"from vlsa_platform.data.synthetic import write_synthetic; write_synthetic({str(tmp_path)!r}, **{SMALL})"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _tree(small) == _tree(tmp_path)


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
    vocabulary = set(COLORS) | set(POSITIONS) | set(SHAPES) | {str(n) for n in range(6)} | {"yes", "no"}
    short = [
        t.text for r in records if r.image and "shapes/" in r.image for t in r.turns if t.role == "assistant"
    ]
    answers = [a for a in short if not a.endswith(".")]  # captions are sentences; the rest exact-match words
    assert answers and set(answers) <= vocabulary
    assert {"2", "red", "left"} & set(answers)
    captions = [a for a in short if a.endswith(".")]
    assert any(" In the corners: " in c and " small " in c for c in captions)


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


# The small-shape questions, as patterns; each answer is read off the image's corner regions below.
FINE = {
    "total": r"How many small shapes are there\?",
    "color_count": r"How many small (\w+) shapes are there\?",
    "kind_count": r"How many small (circle|square|triangle)s are there\?",
    "color_kind_count": r"How many small (\w+) (circle|square|triangle)s are there\?",
    "color_kind_there": r"Is there a small (\w+) (circle|square|triangle)\?",
    "corner_count": r"How many small shapes are in the (.+) corner\?",
    "corner_there": r"Is there a small shape in the (.+) corner\?",
    "corner_color": r"What color is the small shape in the (.+) corner\?",
    "corner_kind": r"What is the small shape in the (.+) corner\?",
}


def _pixel_shapes(img, scene):
    """(corner, colour, kind) of each blob in the corner regions of a PNG: colour by exact pixel value, kind by
    how much of its bounding box it fills (square 1.0, circle ~0.78, triangle ~0.52)."""
    pixels = np.asarray(img)
    names = {rgb: name for name, rgb in COLORS.items()}
    found = []
    for corner in CORNERS:
        x0, y0, x1, y1 = scene.corner_box(corner)
        region = pixels[y0:y1, x0:x1]
        mask = (region != pixels[0, 0]).any(-1)
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))  # 8-connected: a thin apex stays whole
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            blob = labels[box] == i
            (color,) = {names[tuple(int(v) for v in p)] for p in region[box][blob]}  # one exact colour
            fill = blob.sum() / blob.size
            found.append(
                (corner, color, "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle")
            )
    return found


def _answer(kind, groups, found):
    count = lambda keep: str(sum(1 for f in found if keep(*f)))  # noqa: E731
    yes = lambda c: "yes" if c != "0" else "no"  # noqa: E731
    return {
        "total": lambda: str(len(found)),
        "color_count": lambda: count(lambda _, c, __: c == groups[0]),
        "kind_count": lambda: count(lambda _, __, k: k == groups[0]),
        "color_kind_count": lambda: count(lambda _, c, k: (c, k) == groups),
        "color_kind_there": lambda: yes(count(lambda _, c, k: (c, k) == groups)),
        "corner_count": lambda: count(lambda r, _, __: r == groups[0]),
        "corner_there": lambda: yes(count(lambda r, _, __: r == groups[0])),
        "corner_color": lambda: next(c for r, c, _ in found if r == groups[0]),
        "corner_kind": lambda: next(k for r, _, k in found if r == groups[0]),
    }[kind]()


def test_small_shapes_are_drawn_where_the_scene_says(generated):
    root, scenes = generated
    assert sum(len(s.small) for s in scenes.values()) >= 2 * len(scenes)
    for rel, scene in scenes.items():
        pixels = np.asarray(load_image(root, rel))
        assert 1 <= len(scene.small) <= 5
        for s in scene.small:
            x, y = round(s.x), round(s.y)
            for dx, dy in ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)):
                assert tuple(pixels[y + dy, x + dx]) == COLORS[s.color], (rel, s)
        found = _pixel_shapes(load_image(root, rel), scene)  # nothing merged, dropped or intruding
        assert sorted(found) == sorted((s.corner, s.color, s.kind) for s in scene.small), rel


def test_small_shape_answers_match_the_pixels(generated):
    root, scenes = generated
    checked = {kind: 0 for kind in FINE}
    for split in ("train", "val"):
        records, _ = read_records(root / f"{split}.json")
        for r in records:
            if r.image is None or r.image not in scenes:
                continue
            found = _pixel_shapes(load_image(root, r.image), scenes[r.image])
            turns = [t.text.replace("<image>", "").strip() for t in r.turns]
            for question, answer in zip(turns[::2], turns[1::2], strict=True):
                for kind, pattern in FINE.items():
                    if match := re.fullmatch(pattern, question):
                        assert answer == _answer(kind, match.groups(), found), (r.image, question)
                        checked[kind] += 1
    assert all(checked.values()), checked


def test_fine_questions_in_both_splits_of_the_bundle(bundle_root):
    target = bundled_synthetic(bundle_root)
    for split in ("train", "val"):
        records, _ = read_records(target / f"{split}.json")
        questions = [
            t.text.replace("<image>", "").strip() for r in records for t in r.turns if t.role == "user"
        ]
        for kind, pattern in FINE.items():
            assert any(re.fullmatch(pattern, q) for q in questions), (split, kind)
        fine = sum(1 for q in questions if " small " in q)
        assert 0.3 * len(questions) < fine < 0.8 * len(questions)  # a real share, big-shape questions kept


def test_val_scenes_are_held_out(generated):
    _, scenes = generated
    train = {s.signature for rel, s in scenes.items() if "/train_" in rel}
    val = [s.signature for rel, s in scenes.items() if "/val_" in rel]
    assert val and not train & set(val)
