"""``vlsa-platform data inspect``: check a LLaVA-format dataset before anyone pays for GPUs.

Reads every record with :func:`records.read_records`, opens and fully decodes every image with
:func:`records.load_image` (a thread pool; an image shared by several records is opened once), and reports:
samples read, usable, skipped with a reason each (counts per reason and the first few examples), text-only
samples, images checked, turn counts and token lengths.

Token lengths are those of the conversation in the LLaMA-3 chat layout the model trains on
(``<|begin_of_text|>``, a header per turn, ``<|eot_id|>`` after each), text only: the ``<image>`` placeholder
is left out, the visual tokens that replace it depend on the model (``visual_tokens_per_image`` in the plan).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..config.vocabulary import PRESETS
from ..model.markers import BOS_TOKEN, END_HEADER_TOKEN, EOT_TOKEN, IMAGE_PLACEHOLDER, START_HEADER_TOKEN
from .records import (
    DEFAULT_MAX_PIXELS,
    DatasetError,
    check_image,
    default_image_root,
    read_records,
    resolve_image,
)
from .types import SKIP_REASONS, BadSample, Record, Skip

__all__ = ["FileReport", "InspectReport", "dataset_files", "inspect_dataset", "load_inspect_tokenizer"]

_SUFFIXES = (".json", ".jsonl")


def _stats(values: list[int]) -> dict[str, float | int] | None:
    if not values:
        return None
    arr = np.asarray(values)
    return {
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 2),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
    }


@dataclass
class FileReport:
    """One dataset file's numbers (``error``: why it could not be read at all)."""

    path: str
    image_root: str | None
    samples_read: int = 0
    usable: int = 0
    skipped: int = 0
    error: str | None = None


@dataclass
class InspectReport:
    """What ``data inspect`` found; :meth:`to_dict` is the ``--json`` output, :meth:`to_text` the table."""

    path: str
    files: list[FileReport]
    samples_read: int = 0
    usable: int = 0
    text_only: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skip_examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images_checked: int = 0
    images_bad: int = 0
    turns: dict[str, float | int] | None = None
    tokens: dict[str, float | int] | None = None
    tokenizer: str | None = None

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    @property
    def file_errors(self) -> int:
        return sum(f.error is not None for f in self.files)

    @property
    def inspected(self) -> bool:
        """Whether at least one file could be read (the CLI's exit status 0)."""
        return any(f.error is None for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": [vars(f) for f in self.files],
            "file_errors": self.file_errors,
            "samples_read": self.samples_read,
            "usable": self.usable,
            "skipped": self.skipped,
            "skipped_by_reason": dict(self.skipped_by_reason),
            "skip_examples": self.skip_examples,
            "text_only": self.text_only,
            "image_samples": self.usable - self.text_only,
            "images_checked": self.images_checked,
            "images_bad": self.images_bad,
            "turns": self.turns,
            "tokens": None if self.tokens is None else {"tokenizer": self.tokenizer, **self.tokens},
        }

    def to_text(self) -> str:
        lines = [f"{self.path}: {len(self.files)} file{'s' if len(self.files) != 1 else ''}"]
        for f in self.files:
            if f.error is not None:
                lines.append(f"  {f.path}: ERROR {f.error}")
            else:
                lines.append(
                    f"  {f.path}: {f.samples_read} read, {f.usable} usable, {f.skipped} skipped"
                    f"  (images: {f.image_root})"
                )
        rows = [
            ["samples read", str(self.samples_read)],
            ["usable", str(self.usable)],
            ["  with an image", str(self.usable - self.text_only)],
            ["  text-only", str(self.text_only)],
            ["skipped", str(self.skipped)],
        ]
        for reason, count in sorted(self.skipped_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append([f"  {reason}", str(count)])
        rows.append(["images checked", f"{self.images_checked} ({self.images_bad} bad)"])
        width = max(len(r[0]) for r in rows)
        lines.append("")
        lines.extend(f"{name.ljust(width)}  {value}" for name, value in rows)
        for title, stats in (("turns per sample", self.turns), (f"tokens ({self.tokenizer})", self.tokens)):
            if stats is not None:
                lines.append(
                    f"{title}: min {stats['min']}  mean {stats['mean']}  p50 {stats['p50']:g}  "
                    f"p95 {stats['p95']:g}  max {stats['max']}"
                )
        if self.tokens is not None:
            lines.append("  (text tokens in the LLaMA-3 chat layout; visual tokens not included)")
        if self.skip_examples:
            lines.append("")
            lines.append("examples of skipped samples:")
            for reason, examples in sorted(self.skip_examples.items()):
                lines.append(f"  {reason} — {SKIP_REASONS.get(reason, '')}")
                for ex in examples:
                    rid = f" id {ex['id']!r}" if ex["id"] is not None else ""
                    lines.append(f"    {ex['file']} record {ex['index']}{rid}: {ex['detail']}")
        return "\n".join(lines)


def dataset_files(path: str | os.PathLike[str]) -> list[str]:
    """The dataset files ``path`` names: itself, or every ``*.json``/``*.jsonl`` directly in a folder (hidden
    files excluded), sorted. Raises :class:`DatasetError` when there is nothing to read."""
    name = str(path)
    if storage.is_s3(name):
        if name.endswith("/"):
            raise DatasetError(f"{name}: an s3:// prefix; name the dataset's JSON file")
        return [name]
    local = Path(name)
    if local.is_dir():
        found = sorted(
            str(p)
            for p in local.iterdir()
            if p.suffix in _SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            raise DatasetError(f"{name}: no *.json or *.jsonl files in this folder")
        return found
    if not local.exists():
        raise DatasetError(f"{name}: no such file or folder")
    if not local.is_file():
        raise DatasetError(f"{name}: not a file or folder")
    if not os.access(local, os.R_OK):
        raise DatasetError(f"{name}: not readable (permission denied)")
    return [name]


def load_inspect_tokenizer(name: str | None) -> Any:
    """``tiny`` (bundled), ``paper`` (LLaMA-3-8B-Instruct: a download), a local tokenizer folder, or
    ``None``/``none`` for no token statistics."""
    if name is None or name == "none":
        return None
    from ..model.tokenizer import load_tokenizer

    if name in PRESETS:
        return load_tokenizer(name)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _chat_text(record: Record) -> str:
    parts = [BOS_TOKEN]
    for turn in record.turns:
        text = turn.text.replace(IMAGE_PLACEHOLDER, "").strip()
        parts.append(f"{START_HEADER_TOKEN}{turn.role}{END_HEADER_TOKEN}\n\n{text}{EOT_TOKEN}")
    return "".join(parts)


def _token_lengths(tokenizer: Any, records: list[Record], batch: int = 4096) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer: skip building id lists
    out: list[int] = []
    for start in range(0, len(records), batch):
        texts = [_chat_text(r) for r in records[start : start + batch]]
        if backend is not None:
            out.extend(len(e) for e in backend.encode_batch(texts, add_special_tokens=False))
        else:
            out.extend(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return out


def inspect_dataset(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    tokenizer: Any = "tiny",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    check_images: bool = True,
    examples: int = 3,
    allow_absolute_paths: bool = False,
) -> InspectReport:
    """Inspect a dataset file or a folder of them.

    Args:
        path: a ``.json``/``.jsonl`` file (local or ``s3://``) or a local folder of them.
        image_root: where image paths resolve (local or ``s3://``); default: each file's folder.
        tokenizer: a tokenizer object, or a name for :func:`load_inspect_tokenizer` (``None``: no token stats).
        max_pixels: the image pixel limit (``image_too_large`` above it).
        workers: threads that open images (default: 4 per CPU, at most 32).
        check_images: open every image (``False``: records only).
        examples: how many skipped samples to show per reason.
        allow_absolute_paths: admit absolute image paths and ``s3://`` URLs (the dataset spec's field); off:
            they are ``absolute_image_path``. Paths leading out of the image root are skipped either way.

    Raises:
        DatasetError: ``path`` names nothing readable (a file that does not parse is reported, not raised).
    """
    files = dataset_files(path)
    tok = load_inspect_tokenizer(tokenizer) if isinstance(tokenizer, str) or tokenizer is None else tokenizer
    report = InspectReport(
        path=str(path), files=[], tokenizer=tokenizer if isinstance(tokenizer, str) else None
    )
    if tok is not None and report.tokenizer is None:
        report.tokenizer = getattr(tok, "name_or_path", None) or type(tok).__name__
    workers = workers or min(32, 4 * (os.cpu_count() or 1))

    skips = _Skips(examples)
    usable: list[Record] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for file in files:
            root = str(image_root) if image_root is not None else default_image_root(file)
            entry = FileReport(path=file, image_root=root)
            report.files.append(entry)
            try:
                records, bad = read_records(file, on_bad="skip", allow_absolute_paths=allow_absolute_paths)
            except (DatasetError, OSError) as err:
                entry.error = str(err)
                continue
            entry.samples_read = len(records) + len(bad)
            for skip in bad:
                skips.note(skip, file)
            good = records
            if check_images:
                good = _with_good_images(
                    records, root, file, pool, max_pixels, report, skips, allow_absolute_paths
                )
            entry.usable = len(good)
            entry.skipped = entry.samples_read - entry.usable
            usable.extend(good)

    report.samples_read = sum(f.samples_read for f in report.files)
    report.usable = len(usable)
    report.text_only = sum(r.image is None for r in usable)
    report.skipped_by_reason = dict(skips.reasons)
    report.skip_examples = skips.shown
    report.turns = _stats([len(r.turns) for r in usable])
    if tok is not None:
        report.tokens = _stats(_token_lengths(tok, usable))
    return report


@dataclass
class _Skips:
    """Skipped samples counted by reason, the first ``examples`` of each kept to show."""

    examples: int
    reasons: Counter[str] = field(default_factory=Counter)
    shown: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def note(self, skip: Skip, file: str) -> None:
        self.reasons[skip.reason] += 1
        bucket = self.shown.setdefault(skip.reason, [])
        if len(bucket) < self.examples:
            bucket.append({"file": file, "index": skip.index, "id": skip.id, "detail": skip.detail})


def _with_good_images(
    records: list[Record],
    root: str,
    file: str,
    pool: ThreadPoolExecutor,
    max_pixels: int,
    report: InspectReport,
    skips: _Skips,
    allow_absolute: bool,
) -> list[Record]:
    """The records whose image (if any) stays inside ``root`` and opens within the pixel limit; each distinct
    image is opened once (in ``pool``) and counted in ``report``, and every record whose image fails is noted in
    ``skips`` (one outside the root is never opened, nor counted as checked)."""
    where: dict[int, str | BadSample] = {}
    for i, r in enumerate(records):
        if r.image is not None:
            try:
                where[i] = resolve_image(root, r.image, allow_absolute=allow_absolute)
            except BadSample as err:
                where[i] = err
    locations = sorted({loc for loc in where.values() if isinstance(loc, str)})
    errors: dict[str, BadSample | None] = dict(
        zip(locations, pool.map(lambda loc: _check(loc, max_pixels), locations), strict=True)
    )
    report.images_checked += len(locations)
    report.images_bad += sum(e is not None for e in errors.values())
    good = []
    for i, r in enumerate(records):
        loc = where.get(i)
        err = errors[loc] if isinstance(loc, str) else loc
        if err is None:
            good.append(r)
        else:
            skips.note(err.for_record(r.dataset, r.index, r.id).to_skip(), file)
    return good


def _check(location: str, max_pixels: int) -> BadSample | None:
    try:
        check_image(None, location, max_pixels, allow_absolute=True)  # resolved (and admitted) already
    except BadSample as err:
        return err
    return None
