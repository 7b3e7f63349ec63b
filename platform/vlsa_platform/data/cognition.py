"""Cognition alignment (paper §3.2): VQ codebook-index and pixel-value questions added to image conversations.

Two kinds of question/answer pair are computed from the *original* image and inserted into a conversation:

- **VQ** (Eq. 5): the frozen VQ-VAE's encoder turns the image, resized whole to the VQ resolution (256 px at
  paper scale, giving ITHQ's 32x32 grid), into latents; diffusers' ``VectorQuantizer`` picks the nearest code
  of each latent (``vq_model.quantize``; we use its indices, not a re-derived search). The question names a
  random ``k x k`` window of that grid (zero-based row and column of its top-left cell and the grid's size);
  the answer lists the window's indices row by row, as decimal numbers (``vq_format: text``) or as added
  tokens ``<vq_0>``…``<vq_{n-1}>`` (``special``; :func:`add_vq_tokens`).
- **Pixels**: a random vertex ``(x, y)`` such that the box ``[x, x + W//2) x [y, y + H//2)`` (a quarter of the
  area; ``//`` is floor division, so for odd sides the box is the floor of half) lies inside the image. The
  box is cut into a ``g x g`` grid of cells with integer edges ``x + (j * bw) // g`` (columns) and
  ``y + (i * bh) // g`` (rows), ``bw = W // 2``, ``bh = H // 2``: cell ``(i, j)`` covers rows
  ``[y + i*bh//g, y + (i+1)*bh//g)`` and columns ``[x + j*bw//g, x + (j+1)*bw//g)``, so the cells tile the box
  exactly and differ in size by at most one pixel. The answer is each cell's mean R, G, B rounded to the
  nearest integer, **ties to even** (``numpy.rint``, Python's ``round``), as ``(r, g, b)`` triples row by
  row. Images with ``H < 2g`` or ``W < 2g`` (a cell would be empty) get no pixel question.
- **Coordinates in the pixel question** are pixel coordinates of the original image (origin top-left, x to
  the right, y down), and the question also states the image's size ``W x H`` and the box's size: the model
  sees a resized/tiled image, and with the size given it can place the box at any resolution, while the
  answer stays exact (normalised coordinates would have to be rounded, and the box would no longer be the one
  the numbers name).

Where the pairs go (``add_cognition_turns``): each pair is drawn independently (VQ with probability ``p_vq``,
pixels with ``p_px``) and placed at a uniformly random *turn boundary*: right after an assistant turn that
comes after the user turn holding ``<image>`` — between a completed answer and the next question, or at the
end. A pair never splits a user/assistant exchange and never precedes the image. When both pairs land on the
same boundary their order is random. Text-only samples get nothing.

Randomness: ``numpy.random.default_rng`` seeded by ``(seed, epoch, sha256(record_id), stream)``, with a stream
per decision family (VQ, pixels, order), so a record gets the same turns in the same epoch in any process or
worker, different ones in another epoch, and the VQ draws do not change when ``p_px`` does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..model.markers import IMAGE_PLACEHOLDER, LABEL_GROUP_PX, LABEL_GROUP_VQ
from .types import Record, Turn

if TYPE_CHECKING:
    from PIL import Image
    from transformers import PreTrainedTokenizerBase

VQFormat = Literal["text", "special"]

#: Side in pixels of the square image the VQ-VAE encodes, per model preset. ITHQ's VQ-VAE downsamples by 8
#: (four encoder blocks) and the paper's grid is 32x32, so 256 px; its ``config.json``'s ``sample_size`` (32)
#: is the latent side, not the input's, hence a stated constant.
VQ_RESOLUTION: dict[str, int] = {"paper": 256, "tiny": 64}

# -------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CognitionSettings:
    """What cognition turns a sample gets (mirrors ``config.schema.CognitionConfig``; no pydantic here).

    Attributes:
        p_vq: probability of a VQ question per image sample.
        p_px: probability of a pixel question per image sample.
        vq_window: ``k``, the side of the window of the VQ grid a question asks for.
        px_grid: ``g``, the pixel answer gives ``g x g`` cell means.
        vq_format: ``text`` (decimal indices) or ``special`` (``<vq_i>`` tokens).
    """

    p_vq: float = 0.5
    p_px: float = 0.5
    vq_window: int = 4
    px_grid: int = 2
    vq_format: VQFormat = "text"

    def __post_init__(self) -> None:
        for name in ("p_vq", "p_px"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.vq_window < 1 or self.px_grid < 1:
            raise ValueError("vq_window and px_grid must be positive")
        if self.vq_format not in ("text", "special"):
            raise ValueError(f"vq_format must be 'text' or 'special', got {self.vq_format!r}")

    @classmethod
    def from_config(cls, config: Any) -> CognitionSettings:
        """From a ``CognitionConfig`` (or anything with the same attributes)."""
        return cls(
            p_vq=float(config.p_vq),
            p_px=float(config.p_px),
            vq_window=int(config.vq_window),
            px_grid=int(config.px_grid),
            vq_format=config.vq_format,
        )


# --------------------------------------------------------------------------------------------------- VQ targets


def vq_downsample(vq_config: dict[str, Any]) -> int:
    """Input pixels per latent cell of a diffusers ``VQModel`` config (each encoder block but the last halves)."""
    return 2 ** (len(vq_config["block_out_channels"]) - 1)


def vq_pixels(image: Image.Image | np.ndarray, resolution: int) -> torch.Tensor:
    """``(3, R, R)`` float32 in ``[-1, 1]``: the whole image resized (PIL bicubic) to ``R x R``.

    The aspect ratio is not kept: the grid covers the whole picture, as the paper encodes ``X`` itself.
    """
    from PIL import Image

    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    if pil.size != (resolution, resolution):
        pil = pil.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(pil, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


@torch.no_grad()
def vq_indices(vq_model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Codebook indices ``(N, h', w')`` (long) of images ``(N, 3, R, R)`` in ``[-1, 1]`` (Eq. 5).

    ``vq_model`` is a diffusers ``VQModel``: ``encode(x).latents`` is the encoder + ``quant_conv`` output
    ``L`` (N, d', h', w'); ``quantize(L)`` returns ``(z_q, loss, (perplexity, min_encodings, indices))`` with
    the nearest code of each latent vector (``argmin cdist``) flattened in ``(N, h', w')`` order.
    """
    param = next(vq_model.parameters())
    latents = vq_model.encode(pixels.to(device=param.device, dtype=param.dtype)).latents
    _, _, (_, _, indices) = vq_model.quantize(latents)
    n, _, h, w = latents.shape
    return indices.reshape(n, h, w).long()


def vq_window(indices: np.ndarray | torch.Tensor, row: int, col: int, k: int) -> np.ndarray:
    """The ``(k, k)`` window of a ``(h', w')`` index grid whose top-left cell is ``(row, col)``."""
    grid = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if grid.ndim != 2:
        raise ValueError(f"expected an (h', w') grid, got shape {grid.shape}")
    if row < 0 or col < 0 or row + k > grid.shape[0] or col + k > grid.shape[1]:
        raise ValueError(f"window {k}x{k} at ({row}, {col}) does not fit a {grid.shape} grid")
    return grid[row : row + k, col : col + k].copy()


# ----------------------------------------------------------------------------------------------- pixel targets


def quarter_box(height: int, width: int) -> tuple[int, int]:
    """``(bh, bw) = (H // 2, W // 2)``: the box of a quarter of the image's area (floor for odd sides)."""
    return height // 2, width // 2


def cell_edges(start: int, length: int, g: int) -> list[int]:
    """The ``g + 1`` integer edges ``start + (i * length) // g`` cutting ``[start, start + length)`` in ``g``."""
    return [start + (i * length) // g for i in range(g + 1)]


def pixel_targets(image_uint8: np.ndarray, x: int, y: int, g: int) -> np.ndarray:
    """Mean RGB (0-255 ints, ties to even) of the ``g x g`` cells of the quarter box at vertex ``(x, y)``.

    Args:
        image_uint8: ``(H, W, 3)`` uint8 RGB.
        x, y: the box's top-left pixel (column, row).
        g: cells per side.

    Returns:
        ``(g, g, 3)`` int64, cell ``[i, j]`` = row ``i``, column ``j`` of the grid.
    """
    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    bh, bw = quarter_box(height, width)
    if bh < g or bw < g:
        raise ValueError(f"a {width}x{height} image is too small for a {g}x{g} grid in its quarter box")
    if not (0 <= x <= width - bw and 0 <= y <= height - bh):
        raise ValueError(f"vertex ({x}, {y}) puts the {bw}x{bh} box outside the {width}x{height} image")
    rows, cols = cell_edges(y, bh, g), cell_edges(x, bw, g)
    out = np.empty((g, g, 3), dtype=np.int64)
    for i in range(g):
        for j in range(g):
            cell = image[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].reshape(-1, 3)
            # The float64 mean of <= 2**44 uint8 values is exact enough that rint's tie rule decides real ties.
            out[i, j] = np.rint(cell.mean(axis=0, dtype=np.float64)).astype(np.int64)
    return out


# ----------------------------------------------------------------------------------------- phrasings, answers

#: VQ questions. Fields: ``k``, ``row``, ``col``, ``row_end``, ``col_end`` (inclusive), ``gh``, ``gw``.
VQ_QUESTIONS: tuple[str, ...] = (
    "The image is encoded by a VQ-VAE into a {gh}x{gw} grid of codebook indices (row 0 at the top, column 0 "
    "on the left). List the {k}x{k} block of indices whose top-left cell is row {row}, column {col}, one row "
    "per line.",
    "Give the VQ codebook indices of rows {row} to {row_end} and columns {col} to {col_end} of this image's "
    "{gh}x{gw} code grid (counting from 0), row by row.",
    "Which visual codes cover the {k}x{k} window starting at row {row}, column {col} of the image's {gh}x{gw} "
    "VQ grid? Write them row by row.",
    "Predict the codebook indices of the image region at rows {row}-{row_end}, columns {col}-{col_end} of its "
    "{gh}x{gw} VQ code grid (zero-based), one line per row.",
    "Quantize this image with the VQ-VAE and report the {k}x{k} patch of code indices at row {row}, column "
    "{col} of the {gh}x{gw} grid.",
)

#: Pixel questions. Fields: ``W``, ``H`` (image size), ``x``, ``y`` (vertex), ``bw``, ``bh`` (box size),
#: ``x_end``, ``y_end`` (inclusive last column/row of the box), ``g``.
PX_QUESTIONS: tuple[str, ...] = (
    "The image is {W}x{H} pixels. Take the box whose top-left corner is pixel (x={x}, y={y}) and which covers "
    "a quarter of the image ({bw}x{bh} pixels). Split it into a {g}x{g} grid and give the average RGB colour "
    "of each cell, row by row.",
    "Starting from the vertex ({x}, {y}) of this {W}x{H} image, consider the {bw}x{bh} region to its lower "
    "right. What is the mean (r, g, b) of each cell of a {g}x{g} split of that region?",
    "Report the mean RGB values (0-255) of the {g}x{g} cells of the quarter-size box with top-left corner "
    "x={x}, y={y} in this {W}x{H}-pixel image, row by row.",
    "In pixel coordinates of the {W}x{H} image (origin at the top-left), the box spanning x {x}-{x_end} and "
    "y {y}-{y_end} is divided into a {g}x{g} grid of cells. List the average colour of each cell as (r, g, b).",
    "Look at the quarter of this {W}x{H} image that begins at pixel ({x}, {y}) and extends {bw} pixels right "
    "and {bh} pixels down. Give the mean RGB of its {g}x{g} cells, one row of cells per line.",
)

_VQ_TOKEN_RE = re.compile(r"<vq_(\d+)>")
_TRIPLE_RE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


def vq_special_tokens(n: int) -> list[str]:
    """``["<vq_0>", …, "<vq_{n-1}>"]``: one added token per codebook entry."""
    return [f"<vq_{i}>" for i in range(n)]


def add_vq_tokens(tokenizer: PreTrainedTokenizerBase, n: int) -> int:
    """Add ``<vq_0>``…``<vq_{n-1}>`` to ``tokenizer`` (in order, so ``<vq_i>`` = ``<vq_0>``'s id + i).

    They are added as ordinary (non-special) added tokens: matched whole in any text, kept by ``decode``.
    Returns how many were added (0 if already there): resize the LLM by this (``extra_vocab``).
    """
    tokens = vq_special_tokens(n)
    vocab = tokenizer.get_vocab()
    present = [t in vocab for t in tokens]
    if all(present):
        return 0
    if any(present):
        raise ValueError("the tokenizer holds some of the <vq_i> tokens but not all; start from a fresh one")
    added = tokenizer.add_tokens(tokens, special_tokens=False)
    first = tokenizer.convert_tokens_to_ids(tokens[0])
    if tokenizer.convert_tokens_to_ids(tokens[-1]) != first + n - 1:  # contiguous ids, as extra_vocab assumes
        raise RuntimeError("the <vq_i> tokens did not get contiguous ids")
    return added


def format_vq_answer(window: np.ndarray, vq_format: VQFormat = "text") -> str:
    """Indices row by row, one row per line: ``"12 405 3 99"`` (text) or ``"<vq_12><vq_405>…"`` (special)."""
    rows = np.asarray(window).tolist()
    if vq_format == "text":
        return "\n".join(" ".join(str(v) for v in row) for row in rows)
    if vq_format == "special":
        return "\n".join("".join(f"<vq_{v}>" for v in row) for row in rows)
    raise ValueError(f"unknown vq_format {vq_format!r}")


def parse_vq_answer(text: str, vq_format: VQFormat = "text") -> np.ndarray:
    """The inverse of :func:`format_vq_answer` (for evaluation): ``(rows, cols)`` int64."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if vq_format == "text":
        rows = [[int(v) for v in line.split()] for line in lines]
    else:
        rows = [[int(v) for v in _VQ_TOKEN_RE.findall(line)] for line in lines]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"not a rectangular grid of indices: {text!r}")
    return _int64_grid(rows, text)


def format_px_answer(cells: np.ndarray) -> str:
    """``(g, g, 3)`` means as ``(r, g, b)`` triples, one line per row of cells: ``"(12, 40, 200) (13, 41, 199)"``."""
    return "\n".join(" ".join(f"({r}, {g}, {b})" for r, g, b in row) for row in np.asarray(cells).tolist())


def parse_px_answer(text: str) -> np.ndarray:
    """The inverse of :func:`format_px_answer`: ``(g_rows, g_cols, 3)`` int64."""
    rows = [
        [tuple(int(v) for v in m) for m in _TRIPLE_RE.findall(line)] for line in text.strip().splitlines()
    ]
    rows = [r for r in rows if r]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"not a grid of (r, g, b) triples: {text!r}")
    return _int64_grid(rows, text)


def _int64_grid(rows: list[Any], text: str) -> np.ndarray:
    """``rows`` as int64; a value beyond int64 (a generated answer can hold any digits) is no answer."""
    try:
        return np.array(rows, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"a value beyond int64 in {text[:200]!r}") from None


# ------------------------------------------------------------------------------------------------- insertion

_STREAM_VQ, _STREAM_PX, _STREAM_ORDER = 0, 1, 2


def record_rng(seed: int, epoch: int, record_id: str, stream: int = 0) -> np.random.Generator:
    """A generator fixed by ``(seed, epoch, record_id, stream)``, the same in every process.

    The record id enters through SHA-256 (Python's ``hash`` of a string differs between processes).
    """
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    words = [int(w) for w in np.frombuffer(digest[:16], dtype="<u4")]
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), *words, int(stream)]))


def insertion_points(turns: Sequence[Turn], placeholder: str = IMAGE_PLACEHOLDER) -> list[int]:
    """Indices ``i`` at which a new exchange may be inserted (before ``turns[i]``; ``len(turns)`` = the end).

    A point follows an assistant turn that comes after the first turn holding ``placeholder`` (the first user
    turn when none does), so a pair neither splits an exchange nor comes before the image.
    """
    image_at = next((i for i, t in enumerate(turns) if placeholder in t.text), None)
    if image_at is None:
        image_at = next((i for i, t in enumerate(turns) if t.role == "user"), 0)
    return [i for i in range(image_at + 1, len(turns) + 1) if turns[i - 1].role == "assistant"]


def _vq_pair(grid: np.ndarray, settings: CognitionSettings, rng: np.random.Generator) -> tuple[Turn, Turn]:
    gh, gw = grid.shape
    k = min(settings.vq_window, gh, gw)
    row, col = int(rng.integers(gh - k + 1)), int(rng.integers(gw - k + 1))
    template = VQ_QUESTIONS[int(rng.integers(len(VQ_QUESTIONS)))]
    question = template.format(k=k, row=row, col=col, row_end=row + k - 1, col_end=col + k - 1, gh=gh, gw=gw)
    answer = format_vq_answer(vq_window(grid, row, col, k), settings.vq_format)
    return Turn("user", question), Turn("assistant", answer, LABEL_GROUP_VQ)


def _px_pair(
    image: np.ndarray, settings: CognitionSettings, rng: np.random.Generator
) -> tuple[Turn, Turn] | None:
    height, width = image.shape[:2]
    g = settings.px_grid
    bh, bw = quarter_box(height, width)
    if bh < g or bw < g:
        return None
    x, y = int(rng.integers(width - bw + 1)), int(rng.integers(height - bh + 1))
    template = PX_QUESTIONS[int(rng.integers(len(PX_QUESTIONS)))]
    question = template.format(
        W=width, H=height, x=x, y=y, bw=bw, bh=bh, x_end=x + bw - 1, y_end=y + bh - 1, g=g
    )
    answer = format_px_answer(pixel_targets(image, x, y, g))
    return Turn("user", question), Turn("assistant", answer, LABEL_GROUP_PX)


VQGrid = np.ndarray | torch.Tensor | Callable[[], "np.ndarray | torch.Tensor | None"] | None


def add_cognition_turns(
    record_turns: Sequence[Turn],
    *,
    image_uint8: np.ndarray | None,
    vq_grid: VQGrid,
    settings: CognitionSettings,
    seed: int,
    epoch: int,
    record_id: str,
) -> tuple[Turn, ...]:
    """The conversation with its cognition question/answer pairs inserted (module docstring for the rules).

    Args:
        record_turns: the record's conversation.
        image_uint8: ``(H, W, 3)`` uint8 original image; ``None`` for a text-only sample (nothing is added).
        vq_grid: the image's ``(h', w')`` VQ index grid, or a zero-argument callable giving it (called only
            when a VQ question is drawn, so a cache is read only then); ``None``/a ``None`` result = no VQ pair.
        settings: probabilities, window and grid sizes, index format.
        seed, epoch, record_id: fix every random choice.

    Returns:
        The new turns; answers carry ``LABEL_GROUP_VQ`` / ``LABEL_GROUP_PX``.
    """
    turns = tuple(record_turns)
    if image_uint8 is None:
        return turns
    points = insertion_points(turns)
    if not points:
        return turns
    inserts: list[tuple[int, int, tuple[Turn, Turn]]] = []  # (point, order key, pair)

    rng_vq = record_rng(seed, epoch, record_id, _STREAM_VQ)
    if rng_vq.random() < settings.p_vq and vq_grid is not None:
        point = points[int(rng_vq.integers(len(points)))]
        grid = vq_grid() if callable(vq_grid) else vq_grid
        if grid is not None:
            grid = np.asarray(grid.cpu() if isinstance(grid, torch.Tensor) else grid)
            inserts.append((point, 0, _vq_pair(grid, settings, rng_vq)))

    rng_px = record_rng(seed, epoch, record_id, _STREAM_PX)
    if rng_px.random() < settings.p_px:
        point = points[int(rng_px.integers(len(points)))]
        pair = _px_pair(np.asarray(image_uint8), settings, rng_px)
        if pair is not None:
            inserts.append((point, 1, pair))

    if not inserts:
        return turns
    same_point = len(inserts) == 2 and inserts[0][0] == inserts[1][0]
    if same_point and record_rng(seed, epoch, record_id, _STREAM_ORDER).random() < 0.5:  # random order
        inserts = [(p, 1 - o, pair) for p, o, pair in inserts]
    inserts.sort(key=lambda item: (item[0], item[1]))
    out: list[Turn] = []
    pending = iter(inserts)
    nxt = next(pending, None)
    for i in range(len(turns) + 1):
        while nxt is not None and nxt[0] == i:
            out.extend(nxt[2])
            nxt = next(pending, None)
        if i < len(turns):
            out.append(turns[i])
    return tuple(out)


def as_uint8(image: Image.Image | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from a PIL image or an array."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {array.dtype} {array.shape}")
    return array


class CognitionHook:
    """The dataset's cognition hook: ``(record, image, epoch) -> turns`` with cognition pairs inserted.

    Args:
        settings: what to add.
        seed: the run's base seed.
        vq_lookup: ``(record, image) -> (h', w')`` VQ index grid (e.g. ``targets.CachedTargets.vq_lookup``);
            ``None`` = no VQ questions (pixel questions only).
    """

    def __init__(
        self,
        settings: CognitionSettings,
        seed: int,
        vq_lookup: Callable[[Record, Any], np.ndarray | torch.Tensor | None] | None = None,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.vq_lookup = vq_lookup

    def __call__(self, record: Record, image: Image.Image | np.ndarray | None, epoch: int) -> list[Turn]:
        if record.image is None or image is None:
            return list(record.turns)
        lookup = self.vq_lookup
        grid = None if lookup is None else (lambda: lookup(record, image))
        return list(
            add_cognition_turns(
                record.turns,
                image_uint8=as_uint8(image),
                vq_grid=grid,
                settings=self.settings,
                seed=self.seed,
                epoch=epoch,
                record_id=record.id,
            )
        )


__all__ = [
    "PX_QUESTIONS",
    "VQ_QUESTIONS",
    "VQ_RESOLUTION",
    "CognitionHook",
    "CognitionSettings",
    "add_cognition_turns",
    "add_vq_tokens",
    "as_uint8",
    "cell_edges",
    "format_px_answer",
    "format_vq_answer",
    "insertion_points",
    "parse_px_answer",
    "parse_vq_answer",
    "pixel_targets",
    "quarter_box",
    "record_rng",
    "vq_downsample",
    "vq_indices",
    "vq_pixels",
    "vq_special_tokens",
    "vq_window",
]
