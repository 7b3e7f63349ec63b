"""Cognition targets and turn insertion (paper §3.2): pixel means, VQ indices, placement, formats."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from diffusers import VQModel

from vlsa_platform.config.schema import CognitionConfig
from vlsa_platform.data.cognition import (
    PX_QUESTIONS,
    VQ_QUESTIONS,
    CognitionHook,
    CognitionSettings,
    add_cognition_turns,
    add_vq_tokens,
    cell_edges,
    format_px_answer,
    format_vq_answer,
    insertion_points,
    parse_px_answer,
    parse_vq_answer,
    pixel_targets,
    vq_indices,
    vq_special_tokens,
    vq_window,
)
from vlsa_platform.data.types import Record, Turn
from vlsa_platform.model.markers import LABEL_GROUP_PX, LABEL_GROUP_TEXT, LABEL_GROUP_VQ
from vlsa_platform.model.presets import vq_config
from vlsa_platform.model.tokenizer import load_tiny_tokenizer

# ----------------------------------------------------------------------------------------------- fixtures


def _conversation(exchanges: int, system: bool = False) -> tuple[Turn, ...]:
    turns: list[Turn] = [Turn("system", "Be brief.")] if system else []
    for i in range(exchanges):
        question = f"<image>\nQuestion {i}?" if i == 0 else f"Question {i}?"
        turns += [Turn("user", question), Turn("assistant", f"Answer {i}.")]
    return tuple(turns)


def _image(height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _grid(seed: int = 0, size: int = 8, codes: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, codes, size=(size, size))


def _insert(turns, *, seed=0, epoch=0, record_id="r0", settings=None, image=None, grid=None):
    return add_cognition_turns(
        turns,
        image_uint8=_image() if image is None else image,
        vq_grid=_grid() if grid is None else grid,
        settings=settings or CognitionSettings(p_vq=1.0, p_px=1.0),
        seed=seed,
        epoch=epoch,
        record_id=record_id,
    )


def _inserted(original, out):
    """Positions (in ``out``) of the turns that are not in ``original``, checking the original order is kept."""
    extra, j = [], 0
    for i, turn in enumerate(out):
        if j < len(original) and turn == original[j]:
            j += 1
        else:
            extra.append(i)
    assert j == len(original), "original turns lost or reordered"
    return extra


# ---------------------------------------------------------------------------------------------- pixel targets


def _independent_pixel_means(image: np.ndarray, x: int, y: int, g: int) -> np.ndarray:
    """The documented rule written out plainly: quarter box W//2 x H//2, cell edges start + i*len//g, mean per
    channel with np.mean on the slice, rounded half to even (Python's round)."""
    height, width = image.shape[:2]
    bh, bw = height // 2, width // 2
    out = np.zeros((g, g, 3), dtype=np.int64)
    for i in range(g):
        top, bottom = y + (i * bh) // g, y + ((i + 1) * bh) // g
        for j in range(g):
            left, right = x + (j * bw) // g, x + ((j + 1) * bw) // g
            for c in range(3):
                out[i, j, c] = round(float(np.mean(image[top:bottom, left:right, c])))
    return out


@pytest.mark.parametrize(
    ("height", "width", "g"), [(37, 53, 2), (64, 64, 2), (9, 15, 3), (4, 4, 2), (20, 7, 1)]
)
def test_pixel_targets_match_an_independent_computation(height, width, g):
    image = _image(height, width, seed=height * width)
    rng = np.random.default_rng(1)
    vertices = {(0, 0), (width - width // 2, height - height // 2)}
    vertices |= {
        (int(rng.integers(width - width // 2 + 1)), int(rng.integers(height - height // 2 + 1)))
        for _ in range(5)
    }
    for x, y in vertices:
        np.testing.assert_array_equal(pixel_targets(image, x, y, g), _independent_pixel_means(image, x, y, g))


def test_pixel_cells_tile_the_quarter_box_and_ties_round_to_even():
    for length in range(2, 40):
        for g in (1, 2, 3):
            if length < g:
                continue
            edges = cell_edges(5, length, g)
            assert edges[0] == 5 and edges[-1] == 5 + length
            sizes = np.diff(edges)
            assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
    # 4x4 image: quarter box 2x2, g=1 -> one cell of 4 pixels.
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0:2, 0:2, 0] = [[0, 1], [0, 1]]  # mean 0.5 -> 0 (even)
    image[0:2, 0:2, 1] = [[1, 2], [1, 2]]  # mean 1.5 -> 2 (even)
    image[0:2, 0:2, 2] = [[2, 3], [2, 3]]  # mean 2.5 -> 2 (even)
    assert pixel_targets(image, 0, 0, 1).tolist() == [[[0, 2, 2]]]


def test_pixel_targets_refuse_bad_vertices_and_tiny_images():
    with pytest.raises(ValueError):
        pixel_targets(_image(10, 10), 6, 0, 2)  # box 5 wide from x=6 leaves the image
    with pytest.raises(ValueError):
        pixel_targets(_image(3, 10), 0, 0, 2)  # quarter box is 1 row: a 2x2 grid would have empty cells


# ------------------------------------------------------------------------------------------------ VQ targets


def test_vq_indices_are_the_quantizers_nearest_codes():
    torch.manual_seed(0)
    vq = VQModel.from_config(vq_config("tiny")).eval()
    with torch.no_grad():  # spread the codebook so that the nearest codes differ across the grid
        vq.quantize.embedding.weight.normal_(0.2, 0.25)
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    got = vq_indices(vq, pixels)

    with torch.no_grad():
        latents = vq.encode(pixels).latents  # (N, d', h', w')
    n, d, h, w = latents.shape
    flat = latents.permute(0, 2, 3, 1).reshape(-1, d)
    expected = torch.cdist(flat, vq.quantize.embedding.weight).argmin(dim=1).reshape(n, h, w)
    assert got.shape == (3, 8, 8) and got.dtype == torch.long
    assert torch.equal(got, expected)
    assert len(torch.unique(got)) > 3


def test_vq_window_slices_the_grid():
    grid = np.arange(64).reshape(8, 8)
    np.testing.assert_array_equal(vq_window(grid, 2, 3, 4), grid[2:6, 3:7])
    np.testing.assert_array_equal(vq_window(torch.from_numpy(grid), 4, 4, 4), grid[4:8, 4:8])
    with pytest.raises(ValueError):
        vq_window(grid, 5, 0, 4)


# ----------------------------------------------------------------------------------------- phrasing, formats


def test_templates_name_their_fields():
    vq_fields = {"k": 4, "row": 3, "col": 5, "row_end": 6, "col_end": 8, "gh": 32, "gw": 32}
    for template in VQ_QUESTIONS:
        text = template.format(**vq_fields)
        assert "3" in text and "5" in text and "32" in text
    px_fields = {
        "W": 640,
        "H": 480,
        "x": 17,
        "y": 29,
        "bw": 320,
        "bh": 240,
        "x_end": 336,
        "y_end": 268,
        "g": 2,
    }
    for template in PX_QUESTIONS:
        text = template.format(**px_fields)
        assert "17" in text and "29" in text and "640" in text and "480" in text
    assert len(set(VQ_QUESTIONS)) >= 4 and len(set(PX_QUESTIONS)) >= 4


def test_text_answers_round_trip():
    window = _grid(3)[:4, :4]
    text = format_vq_answer(window, "text")
    assert len(text.splitlines()) == 4
    np.testing.assert_array_equal(parse_vq_answer(text, "text"), window)
    cells = np.array([[[1, 2, 3], [255, 0, 9]], [[10, 20, 30], [40, 50, 60]]])
    assert format_px_answer(cells) == "(1, 2, 3) (255, 0, 9)\n(10, 20, 30) (40, 50, 60)"
    np.testing.assert_array_equal(parse_px_answer(format_px_answer(cells)), cells)


def test_special_vq_tokens_round_trip_through_the_tiny_tokenizer():
    tokenizer = load_tiny_tokenizer()
    before = len(tokenizer)
    assert add_vq_tokens(tokenizer, 64) == 64
    assert add_vq_tokens(tokenizer, 64) == 0  # idempotent
    assert len(tokenizer) == before + 64
    offset = tokenizer.convert_tokens_to_ids("<vq_0>")
    assert [tokenizer.convert_tokens_to_ids(t) for t in vq_special_tokens(64)] == list(
        range(offset, offset + 64)
    )

    window = _grid(5)[:4, :4]
    answer = format_vq_answer(window, "special")
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    code_ids = [i for i in ids if i >= offset]
    assert code_ids == [offset + int(v) for v in window.reshape(-1)]  # one token per index, in order
    assert len(ids) == 16 + 3  # plus the three newlines between rows
    decoded = tokenizer.decode(ids)
    assert decoded == answer
    np.testing.assert_array_equal(parse_vq_answer(decoded, "special"), window)


# ------------------------------------------------------------------------------------------------- insertion


def test_insertion_points_follow_answers_after_the_image():
    assert insertion_points(_conversation(3)) == [2, 4, 6]
    assert insertion_points(_conversation(2, system=True)) == [3, 5]
    turns = (
        Turn("user", "hi"),
        Turn("assistant", "hello"),
        Turn("user", "<image>\nlook"),
        Turn("assistant", "ok"),
    )
    assert insertion_points(turns) == [4]  # never before the turn holding the image


def test_pairs_are_inserted_whole_and_tagged():
    turns = _conversation(3, system=True)
    out = _insert(turns)
    extra = _inserted(turns, out)
    assert len(extra) == 4
    roles = [t.role for t in out]
    assert roles[0] == "system"
    assert roles[1:] == ["user", "assistant"] * 5  # still strictly alternating: no exchange is split
    for i in extra:
        if out[i].role == "user":
            assert out[i - 1].role == "assistant" and out[i].group == LABEL_GROUP_TEXT
            assert i > 2  # after the first exchange (which holds the image)
        else:
            assert out[i].group in (LABEL_GROUP_VQ, LABEL_GROUP_PX)
    assert sorted(out[i].group for i in extra if out[i].role == "assistant") == [
        LABEL_GROUP_VQ,
        LABEL_GROUP_PX,
    ]


def test_answers_are_the_targets_named_by_the_questions():
    image, grid = _image(12, 10, seed=4), _grid(6)
    for seed in range(20):
        out = _insert(_conversation(1), seed=seed, image=image, grid=grid)
        for q, a in itertools.pairwise(out):
            if a.group == LABEL_GROUP_VQ:
                got = parse_vq_answer(a.text)
                matches = [
                    (r, c)
                    for r in range(5)
                    for c in range(5)
                    if np.array_equal(grid[r : r + 4, c : c + 4], got)
                    and f"row {r}" in q.text.replace("rows", "row")
                ]
                assert matches, (q.text, a.text)
            elif a.group == LABEL_GROUP_PX:
                got = parse_px_answer(a.text)
                assert got.shape == (2, 2, 3)
                matches = [
                    (x, y)
                    for x in range(6)
                    for y in range(7)
                    if np.array_equal(pixel_targets(image, x, y, 2), got)
                    and str(x) in q.text
                    and str(y) in q.text
                ]
                assert matches, (q.text, a.text)
                assert "10x12" in q.text  # the image size is stated, so the coordinates are usable


def test_insertion_is_deterministic_and_varies_with_epoch():
    turns = _conversation(4)
    first = _insert(turns, seed=7, epoch=3, record_id="abc")
    assert _insert(turns, seed=7, epoch=3, record_id="abc") == first
    by_epoch = {_insert(turns, seed=7, epoch=e, record_id="abc") for e in range(8)}
    assert len(by_epoch) > 4
    assert (
        _insert(turns, seed=8, epoch=3, record_id="abc") != first
        or _insert(turns, seed=9, epoch=3, record_id="abc") != first
    )


_FRESH_PROCESS = """
import json, sys
import numpy as np
from vlsa_platform.data.cognition import CognitionSettings, add_cognition_turns
from vlsa_platform.data.types import Turn
turns = [Turn(**t) for t in json.loads(sys.argv[1])]
image = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
grid = np.random.default_rng(0).integers(0, 64, size=(8, 8))
out = [
    add_cognition_turns(turns, image_uint8=image, vq_grid=grid, settings=CognitionSettings(1.0, 1.0), seed=7,
                        epoch=e, record_id=f"id-{e}")
    for e in range(3)
]
print(json.dumps([[[t.role, t.text, t.group] for t in o] for o in out]))
"""


def test_insertion_is_the_same_in_a_fresh_process():
    turns = _conversation(4)
    arg = json.dumps([{"role": t.role, "text": t.text, "group": t.group} for t in turns])
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash than this process's
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, arg], capture_output=True, text=True, check=True, env=env
    )
    here = [
        [[t.role, t.text, t.group] for t in _insert(turns, seed=7, epoch=e, record_id=f"id-{e}")]
        for e in range(3)
    ]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == here


def test_insertion_spreads_over_every_boundary():
    turns = _conversation(3)  # boundaries after each answer: before turn 2, 4, and at the end
    settings = CognitionSettings(p_vq=1.0, p_px=0.0)
    counts: Counter[int] = Counter()
    n = 3000
    for i in range(n):
        out = _insert(turns, record_id=f"rec-{i}", settings=settings)
        extra = _inserted(turns, out)
        assert len(extra) == 2
        counts[sum(1 for t in out[: extra[0]] if t.role == "assistant")] += 1  # answers before the question
    assert set(counts) == {1, 2, 3}
    for c in counts.values():
        assert abs(c / n - 1 / 3) < 0.04, counts


def test_probabilities_are_respected():
    settings = CognitionSettings(p_vq=0.3, p_px=0.7)
    n, vq, px, both_orders = 4000, 0, 0, set()
    for i in range(n):
        out = _insert(_conversation(1), record_id=f"r{i}", settings=settings)
        groups = [t.group for t in out if t.group != LABEL_GROUP_TEXT]
        vq += LABEL_GROUP_VQ in groups
        px += LABEL_GROUP_PX in groups
        if len(groups) == 2:
            both_orders.add(tuple(groups))  # one boundary only: both pairs share it
    assert abs(vq / n - 0.3) < 0.04 and abs(px / n - 0.7) < 0.04
    assert both_orders == {(LABEL_GROUP_VQ, LABEL_GROUP_PX), (LABEL_GROUP_PX, LABEL_GROUP_VQ)}
    none = CognitionSettings(p_vq=0.0, p_px=0.0)
    assert all(
        _insert(_conversation(2), record_id=f"r{i}", settings=none) == _conversation(2) for i in range(50)
    )


def test_text_only_samples_get_nothing():
    turns = (Turn("user", "What is 2+2?"), Turn("assistant", "4"))
    out = add_cognition_turns(
        turns,
        image_uint8=None,
        vq_grid=_grid(),
        settings=CognitionSettings(1.0, 1.0),
        seed=0,
        epoch=0,
        record_id="t",
    )
    assert out == turns
    hook = CognitionHook(CognitionSettings(1.0, 1.0), seed=0, vq_lookup=lambda r, im: _grid())
    record = Record(id="t", dataset="d", index=0, image=None, turns=turns)
    assert hook(record, None, 0) == list(turns)


def test_hook_looks_up_vq_only_when_asked():
    calls = []

    def lookup(record, image):
        calls.append(record.id)
        return _grid()

    record = Record(id="x", dataset="d", index=0, image="a.png", turns=_conversation(2))
    hook = CognitionHook(CognitionSettings(p_vq=0.0, p_px=1.0), seed=0, vq_lookup=lookup)
    out = hook(record, _image(), epoch=0)
    assert calls == [] and sum(t.group == LABEL_GROUP_PX for t in out) == 1
    hook = CognitionHook(CognitionSettings(p_vq=1.0, p_px=0.0, vq_format="special"), seed=0, vq_lookup=lookup)
    out = hook(record, _image(), epoch=0)
    assert calls == ["x"] and "<vq_" in next(t.text for t in out if t.group == LABEL_GROUP_VQ)


def test_settings_map_from_the_config():
    cfg = CognitionConfig(p_vq=0.25, p_px=0.75, vq_window=3, px_grid=4, vq_format="special")
    assert CognitionSettings.from_config(cfg) == CognitionSettings(0.25, 0.75, 3, 4, "special")
    assert CognitionSettings.from_config(CognitionConfig()) == CognitionSettings()
    with pytest.raises(ValueError):
        CognitionSettings(p_vq=1.5)
