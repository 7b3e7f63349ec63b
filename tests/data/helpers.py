"""Builders for dataset files and images, real files in tmp dirs (shared by the data tests)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image


def conv(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """``conv(("human", "hi"), ("gpt", "hello"))`` -> LLaVA's ``conversations`` list."""
    return [{"from": who, "value": text} for who, text in pairs]


def write_json(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2))
    return path


def write_jsonl(path: Path, lines: list[Any | str]) -> Path:
    """Objects are dumped; strings are written as they are (to plant malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    img = Image.new("RGB", size, color)
    # some structure so the entropy-coded data is long enough to cut in the middle
    for x in range(0, size[0], 4):
        for y in range(0, size[1], 3):
            img.putpixel((x, y), ((x * 7) % 256, (y * 11) % 256, 90))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_image(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes() if data is None else data)
    return path


def truncated_jpeg() -> bytes:
    """A real JPEG cut in the middle of its entropy-coded data (its header still parses)."""
    data = jpeg_bytes((96, 96))
    return data[: len(data) // 2]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (no real pixel data): for zero and enormous sizes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
