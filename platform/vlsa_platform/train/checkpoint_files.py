"""Checkpoint files on a worker: loaded without running pickled code, staged where a kill leaves them findable,
and written only where they fit.

Safe loading. Every file a checkpoint load reads is unpickled by torch's weights-only unpickler, which builds
tensors, containers and numbers and refuses any other global, so a planted ``__reduce__`` is never called:

- our own files (each rank's RNG states) through :func:`load_weights_only`, with no allowlist: the RNG states
  are saved as tensors, ints, floats, strings and tuples (``strategy.rng_state`` turns numpy's key array into a
  list);
- DeepSpeed's files inside :func:`deepspeed_loads_weights_only`, which sets ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
  (torch reads it at every ``torch.load`` and then ignores a ``weights_only=False`` argument) and allowlists
  :func:`deepspeed_globals`, the three non-tensor types DeepSpeed's ZeRO-0/1/2/3 checkpoints hold (found by
  saving each stage's checkpoint of the tiny model and listing the globals of every file). Why the variable and
  not DeepSpeed's checkpoint-engine hook: DeepSpeed 0.19 routes model and ZeRO files through
  ``engine.checkpoint_engine.load`` but also calls ``torch.load(..., weights_only=False)`` directly (ZeRO-3 and
  universal-checkpoint paths, and a fresh ``TorchCheckpointEngine`` for MoE experts); a replaced engine would
  cover the files we read today only by the accident of which features we use, the variable covers every
  ``torch.load`` during the call, in this DeepSpeed version and the next. It is process-wide for the call's
  duration: a concurrent ``torch.load`` elsewhere in the process is also weights-only meanwhile (stricter,
  never looser).

A refusal is an :class:`UnsafeCheckpointError` naming the file and the pickled type no checkpoint contains.
Exported models are safetensors (``build.write_export`` / ``build.load_exported``), which hold no code at all.

Where a checkpoint is written. Where every worker can write the run storage as a file system (a local folder,
a shared mount), each rank writes straight into the checkpoint's final folder there (:func:`direct_folder`) and
nothing is copied. Elsewhere (S3) each checkpoint is written to ``<tmp>/vlsa-ckpt-staging/<host>-<pid>-<random>``
and handed to the worker context, which uploads it; the folder is removed afterwards, or, when the process was
killed meanwhile, by the next stage start on that host (:func:`remove_leaked_staging`: folders of this host's
dead processes). Free space is checked before writing (:func:`lacking_space`); the files of a direct save are
put on disk (:func:`sync_files`) and its ``progress.json`` renamed into place last (:func:`write_marker`)
before the checkpoint is reported (for one rank the marker is the commit point; with several, the worker
context's registration once every rank reported). A save killed half-way leaves a folder no report registered:
ignored by every load (they read reported checkpoints only) and removed by :func:`remove_unreported`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import pickletools
import shutil
import socket
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .. import durable

log = logging.getLogger(__name__)

STAGING_DIR = "vlsa-ckpt-staging"
"""The folder under the system's temporary folder that holds every checkpoint being staged on this host."""

_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NOT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_ENV_LOCK = threading.RLock()


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds a pickled object that weights-only loading refuses (nothing of it was run)."""


class InsufficientSpaceError(OSError):
    """The file system of a checkpoint's folder lacks the space its shard needs (nothing was written)."""

    def __init__(self, message: str, shortfall: int) -> None:
        super().__init__(message)
        self.shortfall = shortfall
        """Bytes missing."""


# ----------------------------------------------------------------------------------------------- safe loading


def deepspeed_globals() -> list[Any]:
    """The non-tensor types DeepSpeed writes into its checkpoints: the (no-op, outside fp16) loss scaler, the
    ZeRO stage enum and the fp32 fragment addresses of ZeRO-1/2 and bf16 optimizer states."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path: str | Path, allow: Iterable[Any] = ()) -> Any:
    """``torch.load`` of one file on the CPU with the weights-only unpickler (``allow``: extra types);
    :class:`UnsafeCheckpointError` naming the file when it holds anything else."""
    allowed = list(allow)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise refusal(Path(path), allowed, err) from err


@contextlib.contextmanager
def deepspeed_loads_weights_only() -> Iterator[None]:
    """Inside: every ``torch.load`` of this process is weights-only whatever its arguments, with
    :func:`deepspeed_globals` allowed (see the module's docstring); the environment is restored after."""
    with _ENV_LOCK:
        saved = {key: os.environ.pop(key, None) for key in (_FORCE, _FORCE_NOT)}
        os.environ[_FORCE] = "1"
        try:
            with torch.serialization.safe_globals(deepspeed_globals()):
                yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def refused_file(folder: Path, err: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """The refusal of the file under ``folder`` that weights-only loading rejected (``err``); DeepSpeed does not
    say which of its files it was reading, so each file's pickled globals are read statically (nothing runs)."""
    allowed = deepspeed_globals()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if _unsafe_globals(path, allowed):
            return refusal(path, allowed, err)
    detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return UnsafeCheckpointError(f"refusing to load the checkpoint in {folder}: {detail}")


def refusal(path: Path, allowed: list[Any], err: Exception) -> UnsafeCheckpointError:
    """The error for a file weights-only loading refused, naming the pickled types it holds that no checkpoint
    contains (read statically; the unpickler's message when none is found)."""
    unsafe = _unsafe_globals(path, allowed)
    if unsafe:
        kinds = ", ".join(unsafe)
        return UnsafeCheckpointError(
            f"refusing to load {path}: it holds a pickled object of type {kinds} that a checkpoint never "
            "contains (nothing of it was run)"
        )
    lines = [line for line in str(err).splitlines() if line.strip()]
    return UnsafeCheckpointError(f"refusing to load {path}: {lines[-1] if lines else err!r}")


def _unsafe_globals(path: Path, allowed: list[Any]) -> list[str]:
    """The globals (``module.name``) pickled in ``path`` that neither torch's weights-only unpickler nor
    ``allowed`` accepts: torch's own static reading for its zip archives, :func:`_pickled_globals` for any
    other file (a legacy ``torch.save`` or a bare pickle)."""
    try:
        with torch.serialization.safe_globals(allowed):
            if zipfile.is_zipfile(path):
                return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            with open(path, "rb") as handle:
                found = _pickled_globals(handle)
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile):
        return []
    from torch import _weights_only_unpickler as unpickler  # what get_unsafe_globals_in_checkpoint uses

    accepted = {*unpickler._get_allowed_globals(), *unpickler._get_user_allowed_globals()}
    accepted |= {f"{t.__module__}.{t.__qualname__}" for t in allowed}
    return sorted(found - accepted)


def _pickled_globals(stream: BinaryIO) -> set[str]:
    """The globals named in the consecutive pickles of ``stream`` (``GLOBAL``/``INST``, and ``STACK_GLOBAL``
    with its two strings, memoised or not), read with ``pickletools`` without building anything."""
    found: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str] = {}
    data = io.BufferedReader(stream) if not hasattr(stream, "peek") else stream
    with contextlib.suppress(ValueError, EOFError):  # the end of the pickles, or a legacy file's raw storage
        while data.peek(1):
            for op, arg, _ in pickletools.genops(data):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.add(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and "UNICODE" in name:
                    strings.append(arg)
                elif name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
    return found


# ------------------------------------------------------------------------------------------------ staging


def staging_root() -> Path:
    """``<tmp>/vlsa-ckpt-staging`` (``tempfile.gettempdir()``: ``$TMPDIR`` or ``/tmp``)."""
    return Path(tempfile.gettempdir()) / STAGING_DIR


def is_staging(folder: str | Path) -> bool:
    """Whether ``folder`` lies under :func:`staging_root` (a copy about to be uploaded, not the stored one)."""
    return Path(folder).absolute().is_relative_to(staging_root().absolute())


def _prefix() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-"


def new_staging_folder() -> Path:
    """A new, empty folder ``<host>-<pid>-<random>`` under :func:`staging_root`; the caller removes it (or
    hands it to an uploader that does)."""
    root = staging_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_prefix(), dir=root))


@contextlib.contextmanager
def staging_folder() -> Iterator[Path]:
    """A :func:`new_staging_folder`, removed on the way out."""
    folder = new_staging_folder()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def direct_folder(folder: str | Path, reported: Callable[[], bool]) -> Iterator[Path]:
    """``folder``, a checkpoint's final folder in run storage (created; every rank of a save writes its files
    into it), removed when the save inside raises before it was ``reported`` (once reported it is the run's
    checkpoint, whatever comes after), kept otherwise. A kill leaves it, unreported (:func:`remove_unreported`)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if not reported():
            shutil.rmtree(path, ignore_errors=True)
        raise


def sync_files(folder: str | Path) -> int:
    """Put every file under ``folder``, and the folders themselves, on disk (``fsync``); returns the files'
    bytes. A direct save calls it before its report, so a checkpoint is on disk once it is registered."""
    root = Path(folder)
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            # (suppressed: another rank's temporary file, renamed meanwhile)
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
                os.fsync(handle.fileno())
                total += os.fstat(handle.fileno()).st_size
        durable.sync_dir(Path(directory))
    return total


def write_marker(path: str | Path, text: str) -> None:
    """Write a checkpoint's marker (``progress.json``) atomically and durably: a whole file or none."""
    durable.replace_text(Path(path), text)


def remove_unreported(
    experiment_dir: str | Path, reported: Iterable[str | Path], prefix: str = "checkpoint_"
) -> list[Path]:
    """Remove the checkpoint folders (``prefix*``) directly under ``experiment_dir`` that are not among
    ``reported`` (the run's registered checkpoints): what saves killed half-way left. Returns them. Call it only
    while no save is under way in that folder."""
    root = Path(experiment_dir)
    keep = {Path(p).resolve() for p in reported}
    removed = []
    for folder in sorted(root.glob(f"{prefix}*")) if root.is_dir() else []:
        if folder.is_dir() and folder.resolve() not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d checkpoint folders of saves that never completed: %s", len(removed), removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leaked_staging(root: Path | None = None) -> list[Path]:
    """Remove the staging folders under ``root`` (:func:`staging_root`) of this host's processes that are gone
    (killed during a save); returns them. Folders of live processes and of other hosts (a temporary folder
    shared between machines or containers) are left alone; a dead pid reused since leaves its folder until
    that process ends too."""
    root = root or staging_root()
    host = socket.gethostname()
    removed = []
    for folder in sorted(root.glob(f"{host}-*-*")) if root.is_dir() else []:
        owner, _, pid = folder.name.rsplit("-", 1)[0].rpartition("-")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d checkpoint staging folders left by dead processes: %s", len(removed), removed)
    return removed


# ---------------------------------------------------------------------------------------------- free space


def lacking_space(folder: str | Path, needed: int) -> InsufficientSpaceError | None:
    """The error to raise when the file system of ``folder`` (or of its nearest existing parent) has fewer than
    ``needed`` bytes free; ``None`` when it has them."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free >= needed:
        return None
    return InsufficientSpaceError(
        f"not saving a checkpoint in {folder}: its shard needs about {needed:,} bytes "
        f"({needed / 2**30:.2f} GiB) and its file system has {free:,} bytes ({free / 2**30:.2f} GiB) free",
        shortfall=needed - free,
    )


__all__ = [
    "STAGING_DIR",
    "InsufficientSpaceError",
    "UnsafeCheckpointError",
    "deepspeed_globals",
    "deepspeed_loads_weights_only",
    "direct_folder",
    "is_staging",
    "lacking_space",
    "load_weights_only",
    "new_staging_folder",
    "refusal",
    "refused_file",
    "remove_leaked_staging",
    "remove_unreported",
    "staging_folder",
    "staging_root",
    "sync_files",
    "write_marker",
]
