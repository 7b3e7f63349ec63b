"""Where a Ray Train worker writes its part of a checkpoint, and how it hands it to Ray Train.

Where a worker can write the run storage as a file system (a local folder, or a shared mount Ray validated on
its node: :func:`writable_here`), every rank writes its DeepSpeed files straight into the checkpoint's folder in
Ray's experiment directory (one name for all ranks, rank 0's) and reports it with
``CheckpointUploadMode.NO_UPLOAD``: nothing is staged or copied. On S3 each rank stages its files in local
temporary space; a stage's final checkpoint is uploaded before its report returns (``SYNC``: the next stage
reads its export, and the stage's marker names it), the others in the background (``ASYNC``; Ray deletes the
staging folder once it is uploaded, and training goes on meanwhile).

Why that is safe: Ray registers a checkpoint only once every rank's report arrived, each after its own upload,
so resume (``ray.train.get_checkpoint``) only ever sees whole checkpoints; a ``SYNC`` report waits for the
earlier background uploads (reports are processed in order), and a worker's training function returns only
after its uploads finished (Ray shuts the upload pool down with ``wait``). Folders of saves killed half-way are
never registered: :func:`remove_unreported_checkpoints` removes them when the next worker group starts
(staging folders of dead processes: ``train.checkpoint_files.remove_leaked_staging``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..train import checkpoint_files


def writable_here(run_storage: Any) -> bool:
    """Whether this worker writes Ray Train's run storage (``StorageContext``) as a file system: a local file
    system on which the experiment directory holds the marker Ray's controller wrote there (absent on a node
    that does not share that folder) and is writable."""
    from ray.train.v2._internal.constants import VALIDATE_STORAGE_MARKER_FILENAME

    if getattr(run_storage.storage_filesystem, "type_name", None) != "local":
        return False
    experiment = Path(run_storage.experiment_fs_path)
    return (experiment / VALIDATE_STORAGE_MARKER_FILENAME).is_file() and os.access(experiment, os.W_OK)


class CheckpointWriter:
    """One worker's checkpoints on Ray Train: the folder of the next one (:meth:`folder`), then what
    ``ray.train.report`` takes for it (:meth:`for_report`)."""

    def __init__(self) -> None:
        self._pending: tuple[str, Any, Any] | None = None
        """The checkpoint being written, until it is reported: its name, upload mode and (written in place)
        file system."""

    @contextlib.contextmanager
    def folder(self, final: bool) -> Iterator[Path]:
        """The next checkpoint's folder, named alike on every rank (rank 0's name; every rank calls it
        together): its own folder in the experiment directory where this worker can write the run storage;
        else a local staging folder, uploaded before the report returns when ``final`` (a stage's last) and in
        the background otherwise. A save that raises before its report leaves no folder behind."""
        import ray.train
        import ray.train.collective
        from ray.train import CheckpointUploadMode

        run_storage = ray.train.get_context().get_storage()
        name = ray.train.collective.broadcast_from_rank_zero(run_storage.make_default_checkpoint_dir_name())
        if writable_here(run_storage):
            self._pending = (name, CheckpointUploadMode.NO_UPLOAD, run_storage.storage_filesystem)
            target = run_storage.build_checkpoint_path_from_name(name)
            with checkpoint_files.direct_folder(target, lambda: self._pending is None) as folder:
                yield folder
        elif final:
            self._pending = (name, CheckpointUploadMode.SYNC, None)
            with checkpoint_files.staging_folder() as folder:
                yield folder
        else:
            self._pending = (name, CheckpointUploadMode.ASYNC, None)
            folder = checkpoint_files.new_staging_folder()
            try:
                yield folder
            except BaseException:
                if self._pending is not None:  # not reported: Ray is not uploading it
                    shutil.rmtree(folder, ignore_errors=True)
                raise

    def for_report(self, checkpoint_dir: str) -> tuple[Any, dict[str, Any]]:
        """The Ray checkpoint of a folder :meth:`folder` gave, and ``ray.train.report``'s options for it (its
        name, the upload mode; Ray deletes a staging folder it uploads in the background)."""
        import ray.train
        from ray.train import CheckpointUploadMode

        if self._pending is None:
            raise RuntimeError(
                f"{checkpoint_dir} was not given by CheckpointWriter.folder: no checkpoint pending"
            )
        (name, mode, filesystem), self._pending = self._pending, None  # reported from here on
        if mode is CheckpointUploadMode.NO_UPLOAD:
            checkpoint = ray.train.Checkpoint(path=checkpoint_dir, filesystem=filesystem)
        else:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        options = {
            "checkpoint_dir_name": name,
            "checkpoint_upload_mode": mode,
            "delete_local_checkpoint_after_upload": mode is CheckpointUploadMode.ASYNC,
        }
        return checkpoint, options


def remove_unreported_checkpoints(directory: str) -> list[Path]:
    """Rank 0, when a worker group starts: remove the checkpoint folders that saves written in place and killed
    half-way left in the experiment directory (never reported: no load reads them); returns them. Kept: every
    checkpoint Ray Train has registered, and every one a stage marker (``<stage>.complete.json``) in the run
    folder ``directory`` names. No save is under way then: each starts with a collective that waits for rank 0."""
    import ray.train
    from ray.train import CheckpointConsistencyMode

    run_storage = ray.train.get_context().get_storage()
    if not writable_here(run_storage):
        return []
    reported = ray.train.get_all_reported_checkpoints(consistency_mode=CheckpointConsistencyMode.COMMITTED)
    kept = [entry.checkpoint.path for entry in reported]
    markers = Path(directory).glob("*.complete.json")
    kept += [json.loads(marker.read_text())["checkpoint"] for marker in markers]
    return checkpoint_files.remove_unreported(run_storage.experiment_fs_path, kept)


__all__ = ["CheckpointWriter", "remove_unreported_checkpoints", "writable_here"]
