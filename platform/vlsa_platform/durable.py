"""Local files that survive a crash whole: written to a temporary file beside the target, put on disk
(``fsync``), renamed or linked into place, and the folder's entry put on disk too. After a crash or power loss
the name holds the old content or the whole new one, never a torn or empty file. ``storage`` writes its local
markers and manifests through :func:`replace_text`."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_copy(path: Path, text: str) -> Path:
    """A complete temporary file beside ``path`` holding ``text``, on disk before it is renamed or linked into
    place (the caller does that, then :func:`sync_dir`)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def sync_dir(folder: Path) -> None:
    """Put a folder's entries on disk (a rename or link into it)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably: :func:`temp_copy`, ``os.replace``, :func:`sync_dir`."""
    tmp = temp_copy(path, text)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_dir(path.parent)


__all__ = ["replace_text", "sync_dir", "temp_copy"]
