"""Readers for LLaVA-format datasets as published, and the image loader.

A dataset is a JSON list of records or a JSON Lines file (one record per line), local or ``s3://``::

    {"id": "004539375", "image": "00453/004539375.jpg",
     "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\\n<image>"},
                       {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]}

- ``from``: ``human``/``gpt`` (also ``user``/``assistant``, any case), an optional leading ``system``;
- ``image`` is optional (text-only records have none) and relative to the dataset's image root (sub-folders
  allowed); the ``<image>`` placeholder stands once, anywhere in the first user turn, and stays where it is.

Containment: an image path stays inside its image root. ``..`` leading out, an absolute path or ``s3://`` URL
(unless the dataset sets ``allow_absolute_paths``), a symlink resolving outside the root, a directory, device,
FIFO or socket, and a file over :data:`MAX_IMAGE_BYTES` are skipped with a reason each, never read
(``docs/data.md``, "Containment").

:func:`read_records` normalises records to :class:`~vlsa_platform.data.types.Record` and turns each bad one
into a :class:`~vlsa_platform.data.types.Skip` (``on_bad="skip"``) or raises
:class:`~vlsa_platform.data.types.BadSample` naming the record (``on_bad="fail"``). Reading does no image I/O
(558K records read in seconds); images are checked when loaded, by :func:`load_image`. A JSON list that does
not parse is one error for the whole file (:class:`DatasetError`, with the position); in JSON Lines each line
stands alone.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import io
import json
import os
import struct
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from .. import storage
from ..config.vocabulary import SYNTHETIC_DATASET
from ..model.markers import IMAGE_PLACEHOLDER
from .containment import DEFAULT_MAX_PIXELS, MAX_IMAGE_BYTES, check_image_path, read_local, resolve_image
from .synthetic import SPLIT_FILES, bundled_synthetic
from .types import BadSample, Record, Skip, Turn

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIGEST_INFO",
    "MAX_IMAGE_BYTES",
    "BadSample",
    "DatasetError",
    "check_image",
    "dataset_location",
    "default_image_root",
    "file_digest_of",
    "image_digest",
    "image_location",
    "load_image",
    "open_image",
    "parse_record",
    "read_records",
    "resolve_image",
    "to_rgb",
]

OnBad = Literal["skip", "fail"]

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MISSING = object()

# PIL warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS and raises above twice that. A warning is
# easy to miss in a data pipeline: make it an error, which load_image turns into ``image_too_large``.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


#: Key of ``Image.info`` under which :func:`load_image` leaves the :func:`image_digest` of the bytes it decoded,
#: so the frozen-target cache keys the image without reading its file again (one read per image).
DIGEST_INFO = "vlsa.sha256"


def image_digest(data: bytes) -> str:
    """SHA-256 (hex) of an image file's bytes: the image part of a frozen-target cache key."""
    return hashlib.sha256(data).hexdigest()


def file_digest_of(image: Image.Image) -> str | None:
    """The :func:`image_digest` :func:`load_image` recorded on ``image``, ``None`` for an image from elsewhere."""
    value = image.info.get(DIGEST_INFO)
    return value if isinstance(value, str) else None


class DatasetError(ValueError):
    """A dataset file cannot be read at all (not found, not JSON, not a list); the message names the file."""


# ---------------------------------------------------------------------------------------------- records


def parse_record(obj: Any, dataset: str, index: int, *, allow_absolute: bool = False) -> Record:
    """Normalise one published record; raise :class:`BadSample` naming the record if it is bad (also an image
    path leading out of the image root, or an absolute one unless ``allow_absolute``: :func:`check_image_path`)."""
    if type(obj) is not dict:
        raise BadSample(
            "bad_record", f"expected an object, got {type(obj).__name__}", dataset=dataset, index=index
        )
    rid = obj.get("id")
    if rid is None:
        rid = f"{dataset}:{index}"
    elif type(rid) is not str:
        if type(rid) is not int:
            raise BadSample(
                "bad_record",
                f"'id' must be a string or an integer, got {type(rid).__name__}",
                dataset=dataset,
                index=index,
            )
        rid = str(rid)
    try:
        return _parse_body(obj, dataset, index, rid, allow_absolute)
    except BadSample as err:
        raise err.for_record(dataset, index, rid) from None


def _role(speaker: Any, i: int) -> str:
    if not isinstance(speaker, str):
        raise BadSample("bad_record", f"turn {i}: 'from' must be a string")
    role = _ROLES.get(speaker.strip().lower())
    if role is None:
        raise BadSample("role_order", f"turn {i}: unknown role {speaker!r}")
    return role


def _parse_body(obj: dict[str, Any], dataset: str, index: int, rid: str, allow_absolute: bool) -> Record:
    # One pass, no work beyond the checks: 558K records must read in seconds.
    image = obj.get("image")
    if image is not None and (type(image) is not str or not image.strip()):
        if isinstance(image, list):
            raise BadSample("bad_record", "'image' is a list: multi-image records are not supported")
        raise BadSample("bad_record", "'image' must be a non-empty string (a path)")
    if image is not None:
        check_image_path(image, allow_absolute)
    conversation = obj.get("conversations", _MISSING)
    if conversation is _MISSING:
        raise BadSample("missing_key", "no 'conversations'")
    if type(conversation) is not list:
        raise BadSample("bad_record", f"'conversations' must be a list, got {type(conversation).__name__}")
    if not conversation:
        raise BadSample("empty_conversation", "'conversations' is empty")

    turns = []
    placeholders = 0
    first_user_has_it = False
    expected = "user"
    start = 0
    for i, turn in enumerate(conversation):
        if type(turn) is not dict:
            raise BadSample("bad_record", f"turn {i} is not an object")
        speaker = turn.get("from", _MISSING)
        text = turn.get("value", _MISSING)
        if speaker is _MISSING or text is _MISSING:
            raise BadSample("missing_key", f"turn {i} has no {'from' if speaker is _MISSING else 'value'!r}")
        role = _ROLES.get(speaker) if type(speaker) is str else None
        if role is None:
            role = _role(speaker, i)
        if type(text) is not str:
            raise BadSample("bad_record", f"turn {i}: 'value' must be a string")
        if not text or text.isspace():
            raise BadSample("empty_conversation", f"turn {i} ({speaker}) has empty text")
        if role == "system" and i == 0:
            start = 1
        elif role != expected:
            raise BadSample(
                "role_order", f"turn {i} is {role}, expected {expected} (user first, then alternating)"
            )
        else:
            expected = "assistant" if role == "user" else "user"
        if IMAGE_PLACEHOLDER in text:
            n = text.count(IMAGE_PLACEHOLDER)
            placeholders += n
            first_user_has_it = first_user_has_it or (i == start and n == 1)
        turns.append(Turn(role, text))  # type: ignore[arg-type]

    if len(turns) == start:
        raise BadSample("empty_conversation", "only a system turn")
    if expected != "user":
        raise BadSample("role_order", "the conversation ends with a user turn (nothing to answer)")
    if image is None:
        if placeholders:
            raise BadSample("image_placeholder", f"{IMAGE_PLACEHOLDER} in a text-only record (no 'image')")
    elif placeholders != 1:
        detail = f"appears {placeholders} times" if placeholders else "is missing from an image record"
        raise BadSample("image_placeholder", f"{IMAGE_PLACEHOLDER} {detail}")
    elif not first_user_has_it:
        raise BadSample("image_placeholder", f"{IMAGE_PLACEHOLDER} is not in the first user turn")
    return Record(id=rid, dataset=dataset, index=index, image=image, turns=tuple(turns))


def _local_copy(path: str | os.PathLike[str]) -> Path:
    """A local file for ``path`` (``s3://`` objects are mirrored into the cache by :mod:`storage`)."""
    try:
        local = Path(storage.materialize(path)) if storage.is_s3(path) else Path(path)
    except storage.NotFoundError as err:
        raise DatasetError(str(err)) from err
    if not local.is_file():
        raise DatasetError(f"{path}: no such file" if not local.exists() else f"{path}: not a file")
    return local


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _json_lines(text: str) -> Iterable[tuple[int, Any, json.JSONDecodeError | None]]:
    """``(line number (1-based), value, error)`` for each non-blank line."""
    decoder = json.JSONDecoder()
    # split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, decoder.decode(line), None
        except json.JSONDecodeError as err:
            yield lineno, None, err


def read_records(
    path: str | os.PathLike[str],
    dataset: str | None = None,
    on_bad: OnBad = "skip",
    *,
    allow_absolute_paths: bool = False,
) -> tuple[list[Record], list[Skip]]:
    """Read a LLaVA-format dataset (JSON list or JSON Lines; a local path or ``s3://``).

    Args:
        path: the file. ``.jsonl``/``.ndjson`` are JSON Lines; other files are sniffed (a JSON list, else
            one record per line).
        dataset: name used in records and messages; default: the file's stem.
        on_bad: ``"skip"`` collects bad records as :class:`Skip`; ``"fail"`` raises :class:`BadSample` for the
            first one, naming the dataset, record index, id and reason.
        allow_absolute_paths: admit absolute image paths and ``s3://`` URLs (the dataset spec's
            ``allow_absolute_paths``); off: such records are ``absolute_image_path``. Paths with ``..`` leading
            out of the image root are ``image_outside_root`` either way.

    Returns:
        ``(records, skips)``. ``Record.index`` is the record's position in the file (for JSON Lines, among
        the non-blank lines).

    Raises:
        DatasetError: the file is missing, not UTF-8, a JSON list that does not parse (with its line and
            column), JSON that is not a list of records, or one JSON object (outside ``.jsonl``/``.ndjson``).
    """
    name = str(path)
    dataset = dataset or Path(name.rstrip("/")).stem
    text = _decode(_local_copy(path).read_bytes(), name)
    with _gc_paused():
        return _read(text, name, dataset, on_bad, allow_absolute_paths)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small objects are made (none form cycles): with it
    running, reading LLaVA-Pretrain's 558K records takes about twice as long."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(
    text: str, name: str, dataset: str, on_bad: OnBad, allow_absolute: bool
) -> tuple[list[Record], list[Skip]]:
    """:func:`read_records` after the file's text is in memory."""
    records: list[Record] = []
    skips: list[Skip] = []

    def bad(err: BadSample) -> None:
        if on_bad == "fail":
            raise err
        skips.append(err.to_skip())

    items = _items(text, name)
    if isinstance(items, list):
        for index, obj in enumerate(items):
            try:
                records.append(parse_record(obj, dataset, index, allow_absolute=allow_absolute))
            except BadSample as err:
                bad(err)
        return records, skips

    for index, (lineno, obj, error) in enumerate(items):
        if error is not None:
            detail = f"line {lineno}, column {error.colno}: {error.msg}"
            bad(BadSample("bad_json", detail, dataset=dataset, index=index))
            continue
        try:
            records.append(parse_record(obj, dataset, index, allow_absolute=allow_absolute))
        except BadSample as err:
            detail = f"line {lineno}: {err.detail}" if err.detail else f"line {lineno}"
            bad(BadSample(err.reason, detail, dataset=dataset, index=index, id=err.id))
    return records, skips


def _items(text: str, name: str) -> list[Any] | Iterable[tuple[int, Any, json.JSONDecodeError | None]]:
    """The records of a JSON list, or an iterator over JSON Lines."""
    stripped = text.lstrip()
    if name.lower().endswith(_JSONL_SUFFIXES):
        return _json_lines(text)
    if not stripped:
        raise DatasetError(f"{name}: the file is empty (expected a JSON list of records)")
    if stripped[0] == "[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{name}: not valid JSON at line {err.lineno}, column {err.colno} (character {err.pos}): {err.msg}"
            ) from None
        return value
    if stripped[0] == "{":
        try:
            json.loads(text)  # JSON Lines of two or more records fail at the second ("Extra data"): cheap
        except json.JSONDecodeError:
            return _json_lines(text)
        # One object, pretty-printed or on one line: not a dataset (reading it as one record hides the mistake).
        raise DatasetError(
            f"{name}: the top level is a single JSON object, not a list of records; wrap the records in a "
            "JSON list, or name the file .jsonl for one record per line"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{name}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    raise DatasetError(
        f"{name}: JSON {type(value).__name__}; expected a list of records or one record per line"
    )


# ------------------------------------------------------------------------------------------------ places


def _parent(location: str) -> str:
    if storage.is_s3(location):
        return location.rstrip("/").rsplit("/", 1)[0]
    return str(Path(location).resolve().parent)


def default_image_root(path: str | os.PathLike[str]) -> str:
    """Where a dataset's image paths resolve when no image root is given: the JSON file's folder."""
    return _parent(str(path))


def image_location(image_root: str | os.PathLike[str] | None, rel_path: str) -> str:
    """The full location of a record's image: ``rel_path`` under ``image_root`` (an absolute local path or
    an ``s3://`` one is used as it is). A plain join: :func:`resolve_image` also checks containment."""
    if storage.is_s3(rel_path) or os.path.isabs(rel_path) or image_root is None:
        return rel_path
    return storage.join(str(image_root), rel_path)


def dataset_location(config: Any, root: str | None = None) -> tuple[str, str]:
    """``(json path, image root)`` of a ``config.schema.DatasetConfig``.

    ``bundled:synthetic`` resolves to :func:`~vlsa_platform.data.synthetic.bundled_synthetic` (generated once
    into the cache): ``train.json``, or ``val.json`` with ``split: val``. Relative paths resolve against
    ``root`` (``data.root``), else the working directory; the image root defaults to the JSON's folder.
    """
    if config.path == SYNTHETIC_DATASET:
        base = bundled_synthetic()
        split = (config.split or "train").lower()
        if split not in ("train", "val", "validation"):
            raise ValueError(f"{SYNTHETIC_DATASET} has splits 'train' and 'val', not {config.split!r}")
        path = str(base / SPLIT_FILES["train" if split == "train" else "val"])
        return path, str(_resolve(config.image_root, root) if config.image_root else base)
    path = _resolve(config.path, root)
    image_root = _resolve(config.image_root, root) if config.image_root else default_image_root(path)
    return path, image_root


def _resolve(location: str, root: str | None) -> str:
    if storage.is_s3(location) or os.path.isabs(location) or root is None:
        return location
    return storage.join(root, location)


# ------------------------------------------------------------------------------------------------ images


@functools.lru_cache(maxsize=4)
def _client(_key: tuple[Any, ...]) -> storage.S3Client:
    return storage.s3_client()


def _shared_client() -> storage.S3Client:
    """One boto3 client per process and S3 settings (clients are thread-safe; creating one costs ~50 ms)."""
    env = os.environ
    key = (
        os.getpid(),
        env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_PROFILE"),
    )
    return _client(key)


def _read_image_bytes(location: str, cache: bool | str | os.PathLike[str]) -> bytes:
    """The bytes of one image file; ``s3://`` objects are fetched on demand and kept in a local cache."""
    if not storage.is_s3(location):
        return read_local(location)
    bucket, key = storage.parse_s3(location)
    cached: Path | None = None
    if cache:
        base = storage.default_cache_dir() if cache is True else Path(cache)
        cached = base / "s3-objects" / bucket / key
        try:
            return read_local(str(cached))
        except BadSample:
            pass
    try:
        data = storage.read_bytes(location, client=_shared_client())
    except storage.NotFoundError:
        raise BadSample("missing_image", f"{location} does not exist") from None
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}.part")
        tmp.write_bytes(data)
        os.replace(tmp, cached)  # atomic: concurrent readers see the old state or the whole file
    return data


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF or BMP header PIL refused to open (it rejects zero sizes)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    return None


def open_image(data: bytes, location: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully (``load()``: truncation shows only then), or raise :class:`BadSample`."""
    if not data:
        raise BadSample("empty_image", f"{location} is an empty file (0 bytes)")
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # PIL must not object to an image within our own limit
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadSample("image_too_large", f"{location}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError) as err:
        size = _header_size(data)
        if size is not None and 0 in size:
            raise BadSample("empty_image", f"{location}: {size[0]}x{size[1]} pixels") from None
        raise BadSample("unreadable_image", f"{location}: {err}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadSample("empty_image", f"{location}: {width}x{height} pixels")
    if width * height > max_pixels:
        raise BadSample(
            "image_too_large", f"{location}: {width}x{height} = {width * height} pixels > {max_pixels}"
        )
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadSample("image_too_large", f"{location}: {err}") from None
    except MemoryError:
        # This process is short of memory (the image is within the pixel and byte limits): not the image's
        # fault, and a skip would hide it while every later image fails the same way. Let it stop the worker.
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, zlib.error…
        raise BadSample("unreadable_image", f"{location}: {type(err).__name__}: {err}") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, transparent areas over white (plain ``convert("RGB")`` would show whatever colour they hide)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    image_root: str | os.PathLike[str] | None,
    rel_path: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    cache: bool | str | os.PathLike[str] = True,
    allow_absolute: bool = False,
) -> Image.Image:
    """Open, fully decode and convert a record's image to RGB; ``image.info[DIGEST_INFO]`` holds the SHA-256 of
    the file's bytes (:func:`file_digest_of`).

    Args:
        image_root: folder (local or ``s3://``) the path is relative to; ``None``: ``rel_path`` as it is.
        rel_path: ``Record.image``.
        max_pixels: width x height limit (checked from the header, before decoding).
        cache: for ``s3://`` images, keep fetched objects under ``<cache root>/s3-objects/<bucket>/<key>``
            (``True``: :func:`storage.default_cache_dir`; a path: that folder; ``False``: no cache). Dataset
            images are treated as immutable: a cached object is not checked against the server again.
        allow_absolute: read an absolute ``rel_path`` (or ``s3://`` URL) as it is (the dataset spec's
            ``allow_absolute_paths``); off: ``absolute_image_path``.

    Raises:
        BadSample: ``missing_image``, ``unreadable_image`` (corrupt or truncated), ``empty_image``,
            ``image_too_large`` (pixels, or bytes over :data:`MAX_IMAGE_BYTES`), ``not_a_regular_file``,
            ``image_outside_root`` or ``absolute_image_path`` (:func:`resolve_image`) — without the record: see
            :meth:`BadSample.for_record`.
        storage.StorageError: the server could not be reached or refused the credentials (not the image's
            fault, so not a skip).
        MemoryError: the process ran out of memory on an image within the limits (not the image's fault).
    """
    location = resolve_image(image_root, rel_path, allow_absolute=allow_absolute)
    data = _read_image_bytes(location, cache)
    image = to_rgb(open_image(data, location, max_pixels))
    image.info[DIGEST_INFO] = image_digest(data)  # hashed from the bytes just read: no second read to key it
    return image


def check_image(
    image_root: str | os.PathLike[str] | None,
    rel_path: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    cache: bool | str | os.PathLike[str] = True,
    allow_absolute: bool = False,
) -> tuple[int, int]:
    """Open and fully decode an image like :func:`load_image`, without converting it; return ``(width,
    height)``. Raises what :func:`load_image` raises."""
    location = resolve_image(image_root, rel_path, allow_absolute=allow_absolute)
    with open_image(_read_image_bytes(location, cache), location, max_pixels) as img:
        return img.size
