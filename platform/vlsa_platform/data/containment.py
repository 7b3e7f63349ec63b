"""Containment: a record's image path stays inside its dataset's image root, and the reader reads only regular
files of bounded size (``docs/data.md``, "Containment").

A record's ``image`` is checked twice: from the string when the record is read (:func:`check_image_path`:
``..`` leading out, an absolute path or ``s3://`` URL unless the dataset sets ``allow_absolute_paths``) and
against the file system when the image is loaded (:func:`resolve_image`: a symlink resolving outside the root;
:func:`read_local`: a directory, device, FIFO or socket, or a file over :data:`MAX_IMAGE_BYTES`). Each refusal
is a :class:`~vlsa_platform.data.types.BadSample` with a reason of its own, skipped and counted like any bad
record, never an exception out of a loader.
"""

from __future__ import annotations

import functools
import os
import posixpath
import stat

from .. import storage
from .types import BadSample

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_IMAGE_BYTES", "check_image_path", "read_local", "resolve_image"]

#: Default pixel limit of ``records.load_image`` (width x height): larger images are ``image_too_large``.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: Largest image file ``records.load_image`` reads, in bytes (a larger one is ``image_too_large`` before it is
#: read, so a huge or endless file cannot exhaust a loader's memory): an uncompressed RGBA image of
#: :data:`DEFAULT_MAX_PIXELS` (4 bytes a pixel: 256 MiB) plus 1 MiB of headers and metadata; compressed images
#: of that many pixels are far smaller. Applies to local files and to the local cache of ``s3://`` objects.
MAX_IMAGE_BYTES = 4 * DEFAULT_MAX_PIXELS + 2**20


def check_image_path(path: str, allow_absolute: bool = False) -> None:
    """Refuse, from the string alone, an image path that cannot stay inside an image root.

    Raises:
        BadSample: ``absolute_image_path`` (an absolute path or ``s3://`` URL, unless ``allow_absolute``),
            ``image_outside_root`` (``..`` segments leading above the root; a malformed ``s3://`` URL) or
            ``bad_record`` (a NUL character, which no file name holds).
    """
    if path[:1] != "/" and ".." not in path and "\0" not in path and "://" not in path:
        return  # the common case, kept cheap: 558K records are read in seconds
    if "\0" in path:
        raise BadSample("bad_record", "'image' contains a NUL character")
    if storage.is_s3(path) or os.path.isabs(path):
        if not allow_absolute:
            raise BadSample("absolute_image_path", f"{path!r}: absolute paths are off for this dataset")
        if storage.is_s3(path):
            try:
                storage.parse_s3(path)
            except ValueError as err:
                raise BadSample("image_outside_root", str(err)) from None
    elif ".." in path and posixpath.normpath(path).split("/", 1)[0] == "..":
        raise BadSample("image_outside_root", f"{path!r} leads out of the image root")


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def resolve_image(
    image_root: str | os.PathLike[str] | None, rel_path: str, *, allow_absolute: bool = False
) -> str:
    """Where a record's image is read from, checked to stay inside ``image_root``.

    :func:`check_image_path` first; then a local path must still lie under the root once symlinks are
    resolved (unless ``allow_absolute``: a dataset that may name any file may also link out of its root), and an ``s3://`` key under the root's prefix (``a/./b`` and ``a//b`` are normalised to ``a/b`` first).
    ``image_root=None``: ``rel_path`` as it is (absolute paths still need ``allow_absolute``).

    Raises:
        BadSample: ``absolute_image_path``, ``image_outside_root`` or ``bad_record`` (without the record).
    """
    check_image_path(rel_path, allow_absolute)
    if storage.is_s3(rel_path) or os.path.isabs(rel_path) or image_root is None:
        return rel_path
    root = str(image_root)
    if storage.is_s3(root):
        location = storage.join(root, posixpath.normpath(rel_path))
        try:
            storage.parse_s3(location)
        except ValueError as err:
            raise BadSample("image_outside_root", str(err)) from None
        return location
    location = storage.join(root, rel_path)
    if allow_absolute:  # the dataset trusts its file system: links out of the root are followed
        return location
    real, real_root = os.path.realpath(location), _real_root(root)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise BadSample("image_outside_root", f"{location} resolves to {real}, outside {real_root}")
    return location


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(location: str, st: os.stat_result) -> None:
    """Refuse anything but a regular file of at most :data:`MAX_IMAGE_BYTES`."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise BadSample("not_a_regular_file", f"{location} is {kind}")
    if st.st_size > MAX_IMAGE_BYTES:
        raise BadSample(
            "image_too_large", f"{location}: {st.st_size} bytes > MAX_IMAGE_BYTES ({MAX_IMAGE_BYTES})"
        )


def read_local(location: str) -> bytes:
    """A local image file's bytes: a regular file of at most :data:`MAX_IMAGE_BYTES`, checked before it is
    opened (opening a FIFO would wait for a writer) and again on the open file (it may have been swapped)."""
    try:
        _check_regular(location, os.stat(location))
        fd = os.open(location, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(location, os.fstat(f.fileno()))
            data = f.read(MAX_IMAGE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise BadSample("missing_image", f"{location} does not exist") from None
    except OSError as err:  # permission denied, a symlink loop, a name too long...
        raise BadSample("unreadable_image", f"{location}: {err.strerror or err}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise BadSample("image_too_large", f"{location}: more than MAX_IMAGE_BYTES ({MAX_IMAGE_BYTES}) bytes")
    return data
