"""Where a Ray Train worker writes a checkpoint and how it reports it (``orchestration/run_checkpoints.py``),
with Ray Train's worker context stood in for (no cluster): written in place and reported without an upload
where the run storage is a file system the worker writes; staged otherwise, uploaded before the report returns
for a stage's final checkpoint and in the background for the others. The Ray runs of
``test_training_ray.py`` (local and S3 storage, a worker killed and resumed) exercise it for real."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.train as ray_train
from pyarrow import fs
from ray.train import CheckpointUploadMode
from ray.train.v2._internal.constants import VALIDATE_STORAGE_MARKER_FILENAME

from vlsa_platform.orchestration import run_checkpoints
from vlsa_platform.orchestration.run_checkpoints import CheckpointWriter, writable_here
from vlsa_platform.train import checkpoint_files

NAME = "checkpoint_2026-12-03_00-00-00.000000"


class _Storage:
    """The parts of Ray Train's ``StorageContext`` the writer reads."""

    def __init__(self, experiment: Path, filesystem: fs.FileSystem, validated: bool = True) -> None:
        self.experiment_fs_path = str(experiment)
        self.storage_filesystem = filesystem
        experiment.mkdir(parents=True, exist_ok=True)
        if validated:
            (experiment / VALIDATE_STORAGE_MARKER_FILENAME).touch()

    def make_default_checkpoint_dir_name(self) -> str:
        return NAME

    def build_checkpoint_path_from_name(self, name: str) -> str:
        return f"{self.experiment_fs_path}/{name}"


@pytest.fixture
def on(monkeypatch, tmp_path):
    """Install a stand-in run storage for the worker context; staging under ``tmp_path/tmp``."""
    import ray.train.collective

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(ray.train.collective, "broadcast_from_rank_zero", lambda data: data)

    def install(storage: _Storage) -> _Storage:
        context = SimpleNamespace(get_storage=lambda: storage)
        monkeypatch.setattr(ray_train, "get_context", lambda: context)
        return storage

    return install


def test_a_writable_local_storage_is_written_in_place_and_not_uploaded(on, tmp_path):
    storage = on(_Storage(tmp_path / "exp", fs.LocalFileSystem()))
    writer = CheckpointWriter()
    with writer.folder(final=False) as folder:
        assert folder == tmp_path / "exp" / NAME and folder.is_dir()
        (folder / "shard").write_text("x")
        checkpoint, options = writer.for_report(str(folder))
    assert options == {
        "checkpoint_dir_name": NAME,
        "checkpoint_upload_mode": CheckpointUploadMode.NO_UPLOAD,
        "delete_local_checkpoint_after_upload": False,
    }
    assert checkpoint.path == str(folder) and checkpoint.filesystem is storage.storage_filesystem
    assert (folder / "shard").exists() and not checkpoint_files.staging_root().exists()


def test_a_save_failing_before_its_report_leaves_no_folder_and_one_after_keeps_it(on, tmp_path):
    on(_Storage(tmp_path / "exp", fs.LocalFileSystem()))
    writer = CheckpointWriter()
    with pytest.raises(OSError), writer.folder(final=False) as folder:
        raise OSError("disk full")
    assert not folder.exists()
    with pytest.raises(RuntimeError), writer.folder(final=False) as folder:
        writer.for_report(str(folder))
        raise RuntimeError("after the report")  # the checkpoint is the run's now: kept
    assert folder.exists()


@pytest.mark.parametrize("validated", [True, False], ids=["s3", "unshared-local"])
def test_elsewhere_the_final_checkpoint_is_uploaded_at_once_and_the_others_in_the_background(
    on, tmp_path, validated
):
    filesystem = (
        fs.SubTreeFileSystem(str(tmp_path), fs.LocalFileSystem()) if validated else fs.LocalFileSystem()
    )
    storage = on(_Storage(tmp_path / "exp", filesystem, validated=validated))
    assert not writable_here(storage)
    writer = CheckpointWriter()
    with writer.folder(final=True) as final:
        assert checkpoint_files.is_staging(final)
        _, options = writer.for_report(str(final))
    assert options["checkpoint_upload_mode"] is CheckpointUploadMode.SYNC and not final.exists()
    with writer.folder(final=False) as background:
        _, options = writer.for_report(str(background))
    assert options["checkpoint_upload_mode"] is CheckpointUploadMode.ASYNC
    assert options["delete_local_checkpoint_after_upload"] and background.exists()  # Ray removes it
    assert options["checkpoint_dir_name"] == NAME
    with pytest.raises(OSError), writer.folder(final=False) as failed:
        raise OSError("disk full")
    assert not failed.exists()


def test_a_report_without_a_pending_checkpoint_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="no checkpoint pending"):
        CheckpointWriter().for_report(str(tmp_path))


def test_unreported_folders_are_removed_and_registered_or_marked_ones_kept(on, monkeypatch, tmp_path):
    on(_Storage(tmp_path / "exp", fs.LocalFileSystem()))
    registered, marked, left = (tmp_path / "exp" / f"checkpoint_{n}" for n in ("a", "b", "c"))
    for folder in (registered, marked, left):
        folder.mkdir()
    (tmp_path / "stage1.complete.json").write_text(f'{{"checkpoint": "{marked}"}}')
    reported = [SimpleNamespace(checkpoint=SimpleNamespace(path=str(registered)))]
    monkeypatch.setattr(ray_train, "get_all_reported_checkpoints", lambda **_: reported)
    assert run_checkpoints.remove_unreported_checkpoints(str(tmp_path)) == [left]
    assert registered.exists() and marked.exists()
