"""The bundled synthetic dataset (``bundled:synthetic``): small enough for a 2-core CPU, learnable by the tiny
preset (CLIP-like tower at 112 px with 14 px patches, 2-layer 64-wide LLaMA, 1024-token vocabulary).

What it holds, in the published LLaVA format (read back by :mod:`records`, nothing special):

- **Shape scenes**: a plain light background, 112-224 px on each side, with

  - 1-3 **big** shapes of distinct kinds (circle, square, triangle), distinct colours (red, green, blue,
    yellow, purple, orange) and distinct positions (left, right, top, bottom, center: anchors at
    20 % / 50 % / 80 % of the width or height), which never reach the four corner regions;
  - 1-5 **small** shapes (10-14 px across, about one 14 px patch of the vision tower, whatever the canvas
    size: the fine detail) in the **corner regions** (top left, top right, bottom left, bottom right: the
    outer 30 % of the width and of the height), at most two per corner, never touching; their colours come
    from one or two of the six, so several share a colour, and any kind may repeat.

  Each scene is one record:

  - a caption, pretrain-style: ``<image>\\nDescribe the image.`` -> ``A red circle on the left and a blue
    square at the top. In the corners: two small red squares and a small green circle.`` (some prompts put
    ``<image>`` after the text, as in LLaVA-Pretrain);
  - a question with a short exact-match answer, either about the big shapes (colour of a shape ``red``,
    number ``2``, position ``left``, which shape has a colour ``circle``, is there a shape ``yes``/``no``) or,
    for 60 % of the questions, about the small ones (``How many small red squares are there?`` -> ``2``,
    ``What color is the small shape in the top left corner?`` -> ``red``, how many in a corner, what shape
    is alone in a corner, is there one in a corner, is there a small red circle);
  - a multi-turn conversation of 2-3 such questions.

- **Photographs** shipped with scikit-image (``skimage.data``: astronaut, coffee, chelsea, …, all in its wheel,
  no download), as random crops at most 224 px, captioned generically: real images for the reconstruction loss.
- **Text-only** questions (a few per cent), as LLaVA's instruction mix has.

``val.json`` is held out: its scenes' big shapes (the set of shape/colour/position triples) never occur in
``train.json``, its photographs are others, its text-only questions are others. Images live under
``images/shapes/`` and ``images/photos/`` (sub-folders exercise real datasets' paths). Everything is
deterministic for a seed, down to the PNG bytes. Every word is one the tiny tokenizer's corpus has.

:func:`bundled_synthetic` generates it once into the cache (``$VLSA_CACHE_DIR`` or ``~/.cache/vlsa-platform``,
under ``synthetic-v<VERSION>``) and reuses it; concurrent workers race safely (each writes a temporary folder,
the first rename wins).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .. import storage

__all__ = [
    "COLORS",
    "CORNERS",
    "POSITIONS",
    "SHAPES",
    "SPLIT_FILES",
    "SYNTHETIC_VERSION",
    "Scene",
    "Shape",
    "SmallShape",
    "bundled_synthetic",
    "draw_scene",
    "write_synthetic",
]

#: Bump when the generator's output changes: the cache folder is named after it.
SYNTHETIC_VERSION = 2

#: The JSON file of each split, in the dataset's folder.
SPLIT_FILES: dict[str, str] = {"train": "train.json", "val": "val.json"}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
#: Position name -> anchor (fraction of width, fraction of height).
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "center": (0.5, 0.5),
}
_PLACE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_PLACE["center"] = "in the center"
#: Corner region name -> (right side?, bottom side?). A corner region is the outer ``_CORNER_SPAN`` of the width
#: and of the height. A big shape (radius <= 15 % of the short side, centre within 3 % of an anchor) keeps at
#: least 32 % of the height from the top and bottom edges (left/right/center anchors) or 32 % of the width from
#: the left and right edges (top/bottom/center anchors), so a corner region holds only small shapes.
CORNERS: dict[str, tuple[bool, bool]] = {
    "top left": (False, False),
    "top right": (True, False),
    "bottom left": (False, True),
    "bottom right": (True, True),
}
_CORNER_SPAN = 0.3
#: Radius range of a small shape in pixels, whatever the canvas: 10-14 px across, about one 14 px patch of the
#: tiny vision tower (tiles are cut at the image's own resolution).
_SMALL_RADIUS = (5.0, 7.0)
_SMALL_PER_CORNER = 2
_SIDES = (112, 168, 224)
_NUMBER = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_FINE_SHARE = 0.6  # of the questions asked about a scene: those about the small shapes

_CAPTION_PROMPTS = (
    "Describe the image.",
    "Give a short caption for the image.",
    "What do you see in this image?",
    "Write one sentence that describes the scene.",
)

#: scikit-image's bundled photographs (in the wheel, no download) and their generic captions.
_PHOTOS: dict[str, str] = {
    "astronaut": "A picture of an astronaut.",
    "coffee": "A picture of a cup of coffee.",
    "chelsea": "A picture of a cat.",
    "camera": "A black and white picture of a man with a camera.",
    "hubble_deep_field": "A picture of stars and galaxies in space.",
    "immunohistochemistry": "A microscope picture of cells.",
    "colorwheel": "A picture of a color wheel.",
    "logo": "A picture of a logo.",
    "page": "A picture of a page of text.",
    "brick": "A picture of a brick wall.",
    "grass": "A picture of grass.",
    "moon": "A gray picture of the surface of the moon.",
    "clock": "A picture of a clock.",
    "retina": "A picture of the back of an eye.",
    "coins": "A gray picture of old coins.",
    "text": "A picture of text on a sign.",
    "rocket": "A picture of a rocket.",
    "gravel": "A picture of gravel.",
}
_VAL_PHOTOS = ("retina", "coins", "text", "rocket", "gravel")

#: Text-only questions with exact answers; the last ones are held out for validation.
_TEXT_QA: tuple[tuple[str, str], ...] = (
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a square have?", "4"),
    ("How many corners does a triangle have?", "3"),
    ("Is a circle round?", "yes"),
    ("Is a square round?", "no"),
    ("What color do you get when you mix blue and yellow?", "green"),
    ("What color do you get when you mix red and yellow?", "orange"),
    ("What color do you get when you mix red and blue?", "purple"),
    ("Which shape has three sides?", "triangle"),
    ("Which shape has no corners?", "circle"),
    ("How many corners does a square have?", "4"),
    ("Is a triangle round?", "no"),
)
_VAL_TEXT = 3


@dataclass(frozen=True)
class Shape:
    """One shape of a scene."""

    kind: str
    color: str
    position: str


@dataclass(frozen=True)
class SmallShape:
    """One small shape of a scene, in a corner region; centre and radius in pixels of the canvas."""

    kind: str
    color: str
    corner: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """A synthetic image: canvas size, background grey level, its big shapes (distinct kinds, colours and
    positions) and its small shapes (in the corners)."""

    width: int
    height: int
    background: int
    shapes: tuple[Shape, ...]
    jitter: tuple[tuple[float, float, float], ...]
    """Per big shape: (dx, dy) offset of the centre as a fraction of the side, and the size factor."""
    small: tuple[SmallShape, ...] = ()

    @property
    def signature(self) -> frozenset[Shape]:
        """The big shapes: validation holds out scenes whose signature a training scene has."""
        return frozenset(self.shapes)

    def corner_box(self, corner: str) -> tuple[int, int, int, int]:
        """The corner region as a pixel box ``(x0, y0, x1, y1)`` (end exclusive)."""
        right, bottom = CORNERS[corner]
        w, h = int(self.width * _CORNER_SPAN), int(self.height * _CORNER_SPAN)
        x0, y0 = (self.width - w if right else 0), (self.height - h if bottom else 0)
        return x0, y0, x0 + w, y0 + h


def _random_scene(rng: random.Random) -> Scene:
    k = rng.choices((1, 2, 3), weights=(0.25, 0.4, 0.35))[0]
    kinds = rng.sample(SHAPES, k)
    colors = rng.sample(list(COLORS), k)
    places = rng.sample(list(POSITIONS), k)
    shapes = tuple(Shape(*t) for t in zip(kinds, colors, places, strict=True))
    jitter = tuple(
        (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.11, 0.15)) for _ in shapes
    )
    scene = Scene(rng.choice(_SIDES), rng.choice(_SIDES), rng.randint(225, 250), shapes, jitter)
    return dataclasses.replace(scene, small=_small_shapes(scene, rng))


def _small_shapes(scene: Scene, rng: random.Random) -> tuple[SmallShape, ...]:
    """1-5 small shapes in the corner regions, at most two a corner, their boxes at least 3 px apart; colours
    from a palette of one or two, so several share one. A shape that finds no free spot is left out."""
    n = rng.choices((1, 2, 3, 4, 5), weights=(0.15, 0.25, 0.25, 0.2, 0.15))[0]
    palette = rng.sample(list(COLORS), rng.choice((1, 2, 2)))
    corners = [c for c in CORNERS for _ in range(_SMALL_PER_CORNER)]
    placed: list[SmallShape] = []
    for corner in rng.sample(corners, n):
        r = rng.uniform(*_SMALL_RADIUS)
        x0, y0, x1, y1 = scene.corner_box(corner)
        for _ in range(20):
            x, y = rng.uniform(x0 + r + 2, x1 - r - 2), rng.uniform(y0 + r + 2, y1 - r - 2)
            if all(abs(x - o.x) > r + o.radius + 3 or abs(y - o.y) > r + o.radius + 3 for o in placed):
                placed.append(SmallShape(rng.choice(SHAPES), rng.choice(palette), corner, x, y, r))
                break
    return tuple(placed)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: Any) -> None:
    """One shape within the box of half-side ``r`` around ``(cx, cy)``, its centre pixel filled."""
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        s = r * 0.9  # same visual weight as the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:
        draw.polygon(
            ((cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)), fill=fill
        )


def draw_scene(scene: Scene) -> Image.Image:
    """Render a scene (RGB, no anti-aliasing: every shape pixel has its exact colour). Big shapes of radius
    11-15 % of the short side around anchors 30 % of a side apart never overlap; small shapes sit in the
    corner regions, which big shapes never reach."""
    img = Image.new("RGB", (scene.width, scene.height), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    short = min(scene.width, scene.height)
    for shape, (dx, dy, size) in zip(scene.shapes, scene.jitter, strict=True):
        fx, fy = POSITIONS[shape.position]
        cx, cy = (fx + dx) * scene.width, (fy + dy) * scene.height
        _draw_shape(draw, shape.kind, cx, cy, size * short, COLORS[shape.color])
    for small in scene.small:
        _draw_shape(draw, small.kind, small.x, small.y, small.radius, COLORS[small.color])
    return img


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _caption(scene: Scene) -> str:
    text = _listing([f"a {s.color} {s.kind} {_PLACE[s.position]}" for s in scene.shapes])
    caption = text[0].upper() + text[1:] + "."
    groups: dict[tuple[str, str], int] = {}
    for s in scene.small:
        groups[(s.color, s.kind)] = groups.get((s.color, s.kind), 0) + 1
    parts = [
        f"a small {color} {kind}" if n == 1 else f"{_NUMBER[n]} small {color} {kind}s"
        for (color, kind), n in groups.items()
    ]
    return caption + (f" In the corners: {_listing(parts)}." if parts else "")


def _questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """The questions about the big shapes a scene answers, shuffled (short exact-match answers). "big" keeps
    them apart from the small shapes'."""
    present = {s.kind for s in scene.shapes}
    qa: list[tuple[str, str]] = [("How many big shapes are there?", str(len(scene.shapes)))]
    for s in scene.shapes:
        qa.append((f"What color is the big {s.kind}?", s.color))
        qa.append((f"Where is the big {s.kind}?", s.position))
        qa.append((f"Which big shape is {s.color}?", s.kind))
        qa.append((f"What big shape is {_PLACE[s.position]}?", s.kind))
    kind = rng.choice(SHAPES)
    qa.append((f"Is there a big {kind}?", "yes" if kind in present else "no"))
    rng.shuffle(qa)
    return qa


def _fine_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """The questions about the small shapes (counts, colours and shapes in a corner), shuffled."""
    small = scene.small
    count = lambda keep: str(sum(1 for s in small if keep(s)))  # noqa: E731
    qa = [("How many small shapes are there?", str(len(small)))]
    color, kind = rng.choice(list(COLORS)), rng.choice(SHAPES)  # may be absent: the answer is then 0 or no
    for c in sorted({s.color for s in small} | {color}):  # sorted: set order varies by process
        qa.append((f"How many small {c} shapes are there?", count(lambda s, c=c: s.color == c)))
    for k in sorted({s.kind for s in small} | {kind}):
        qa.append((f"How many small {k}s are there?", count(lambda s, k=k: s.kind == k)))
    for c, k in sorted({(s.color, s.kind) for s in small} | {(color, kind)}):
        qa.append(
            (f"How many small {c} {k}s are there?", count(lambda s, c=c, k=k: (s.color, s.kind) == (c, k)))
        )
    there = any((s.color, s.kind) == (color, kind) for s in small)
    qa.append((f"Is there a small {color} {kind}?", "yes" if there else "no"))
    for corner in CORNERS:
        inside = [s for s in small if s.corner == corner]
        qa.append((f"How many small shapes are in the {corner} corner?", str(len(inside))))
        qa.append((f"Is there a small shape in the {corner} corner?", "yes" if inside else "no"))
        if len(inside) == 1:
            qa.append((f"What color is the small shape in the {corner} corner?", inside[0].color))
            qa.append((f"What is the small shape in the {corner} corner?", inside[0].kind))
    rng.shuffle(qa)
    return qa


def _with_image(prompt: str, rng: random.Random, after: float = 0.0) -> str:
    """The first user turn: ``<image>\\n`` before the text, or (with probability ``after``) after it."""
    return f"{prompt}\n<image>" if rng.random() < after else f"<image>\n{prompt}"


def _conversation(scene: Scene, rng: random.Random) -> list[dict[str, str]]:
    kind = rng.random()
    if kind < 0.3:  # caption
        prompt = _with_image(rng.choice(_CAPTION_PROMPTS), rng, after=0.2)
        return [{"from": "human", "value": prompt}, {"from": "gpt", "value": _caption(scene)}]
    coarse, fine = _questions(scene, rng), _fine_questions(scene, rng)
    rounds = 1 if kind < 0.75 else rng.choice((2, 3))
    turns = []
    for i in range(rounds):
        q, a = (fine if fine and (rng.random() < _FINE_SHARE or not coarse) else coarse).pop()
        turns.append({"from": "human", "value": _with_image(q, rng) if i == 0 else q})
        turns.append({"from": "gpt", "value": a})
    return turns


def _photo(name: str) -> Image.Image:
    import skimage.data

    array = getattr(skimage.data, name)()
    img = Image.fromarray(array)
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def _crop(img: Image.Image, rng: random.Random, max_side: int = 224) -> Image.Image:
    """A random crop of 50-100 % of each side, resized to at most ``max_side`` (at least 112 on the long side)."""
    w, h = img.size
    cw, ch = round(w * rng.uniform(0.5, 1.0)), round(h * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = img.crop((x, y, x + cw, y + ch))
    scale = rng.choice((112, 168, 224)) / max(cw, ch)
    size = (max(16, round(cw * scale)), max(16, round(ch * scale)))
    return crop.resize(size, Image.Resampling.BICUBIC)


def _save(img: Image.Image, out_dir: Path, rel: str) -> str:
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", compress_level=1)  # no timestamps in PNGs: identical bytes for a seed
    return rel


def _split(
    out_dir: Path,
    split: str,
    num: int,
    rng: random.Random,
    scene_ok: Callable[[Scene], bool],
    photos: tuple[str, ...],
    crops_per_photo: int,
    text_qa: tuple[tuple[str, str], ...],
) -> tuple[list[dict[str, Any]], set[frozenset[Shape]]]:
    num_text = max(1, round(0.04 * num)) if num >= 10 else 0
    num_photo = min(len(photos) * crops_per_photo, round(0.065 * num))
    num_shapes = num - num_text - num_photo
    records: list[dict[str, Any]] = []
    signatures: set[frozenset[Shape]] = set()

    for i in range(num_shapes):
        scene = _random_scene(rng)
        while not scene_ok(scene):
            scene = _random_scene(rng)
        signatures.add(scene.signature)
        rel = _save(draw_scene(scene), out_dir, f"images/shapes/{split}_{i:05d}.png")
        records.append(
            {"id": f"synthetic-{split}-{i:05d}", "image": rel, "conversations": _conversation(scene, rng)}
        )

    cache: dict[str, Image.Image] = {}
    for i in range(num_photo):
        name = photos[i % len(photos)]
        if name not in cache:
            cache[name] = _photo(name)
        rel = _save(_crop(cache[name], rng), out_dir, f"images/photos/{split}_{name}_{i // len(photos)}.png")
        prompt = _with_image(rng.choice(_CAPTION_PROMPTS), rng, after=0.2)
        conversation = [{"from": "human", "value": prompt}, {"from": "gpt", "value": _PHOTOS[name]}]
        records.append(
            {"id": f"synthetic-{split}-photo-{i:03d}", "image": rel, "conversations": conversation}
        )

    for i in range(num_text):
        q, a = text_qa[i % len(text_qa)]
        conversation = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"id": f"synthetic-{split}-text-{i:03d}", "conversations": conversation})

    rng.shuffle(records)
    return records, signatures


def write_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_train: int = 600,
    num_val: int = 100,
    crops_per_photo: int = 3,
) -> Path:
    """Write the synthetic dataset (``train.json``, ``val.json``, ``images/…``) under ``out_dir``.

    Deterministic for ``(seed, num_train, num_val, crops_per_photo)``. The default size takes about a second.
    Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_photos = tuple(p for p in _PHOTOS if p not in _VAL_PHOTOS)
    train_text, val_text = _TEXT_QA[:-_VAL_TEXT], _TEXT_QA[-_VAL_TEXT:]

    train, seen = _split(
        out,
        "train",
        num_train,
        random.Random(f"{seed}:train"),
        lambda s: True,
        train_photos,
        crops_per_photo,
        train_text,
    )
    val, _ = _split(
        out,
        "val",
        num_val,
        random.Random(f"{seed}:val"),
        lambda s: s.signature not in seen,  # held out: no scene the training split has
        _VAL_PHOTOS,
        1,
        val_text,
    )
    for name, records in ((SPLIT_FILES["train"], train), (SPLIT_FILES["val"], val)):
        (out / name).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


_MARKER = ".complete"


def bundled_synthetic(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the bundled synthetic dataset, generated on first use (what ``bundled:synthetic`` means).

    Lives in ``<cache_dir or storage.default_cache_dir()>/synthetic-v<SYNTHETIC_VERSION>``. Written into a
    temporary sibling folder and renamed into place, so concurrent workers never see a half-written dataset:
    the first rename wins and the others discard theirs.
    """
    base = Path(cache_dir) if cache_dir is not None else storage.default_cache_dir()
    target = base / f"synthetic-v{SYNTHETIC_VERSION}"
    if (target / _MARKER).is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".synthetic-v{SYNTHETIC_VERSION}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        write_synthetic(tmp)
        (tmp / _MARKER).write_text(json.dumps({"version": SYNTHETIC_VERSION}) + "\n")
        if target.exists() and not (target / _MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # left by an older, interrupted layout
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _MARKER).is_file():  # not another worker's complete copy: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
