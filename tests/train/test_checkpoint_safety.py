"""Checkpoints loaded without running pickled code, staged where a killed save can be cleaned up, and written
only where they fit (``train/checkpoint_files.py``, ``DeepSpeedStrategy.save/load``, ``loop._checkpoint``).

A planted pickle whose ``__reduce__`` would create a marker file replaces, in turn, every file of a real ZeRO
0/2/3 checkpoint of the tiny model (DeepSpeed's model and optimizer states, our RNG states): the load refuses
it naming the file and the pickled callable, and the marker never appears.
"""

from __future__ import annotations

import functools
import os
import pickle
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlsa_platform.config.schema import LearningRates
from vlsa_platform.model.parts import set_trainable
from vlsa_platform.tracking.store import free_port
from vlsa_platform.train import checkpoint_files, loop
from vlsa_platform.train.checkpoint_files import InsufficientSpaceError, UnsafeCheckpointError
from vlsa_platform.train.loop import CHECKPOINT_TAG, LocalContext
from vlsa_platform.train.schedules import build_lr_scheduler
from vlsa_platform.train.step import train_step
from vlsa_platform.train.strategy import DeepSpeedStrategy, param_groups

from ..model.builders import make_batch, random_images, tiny_model
from .distributed import join_gloo

STAGE1 = ["sa_perceiver", "projector", "epigone"]


class Payload:
    """Unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, bare: bool) -> None:
    """Replace ``path`` with a pickle of :class:`Payload`: as ``torch.save`` writes it (a zip archive, as
    DeepSpeed's files are) or as a bare protocol-4 pickle."""
    path.unlink()
    state = {"module": Payload(marker), "optimizer_state_dict": {}}
    if bare:
        path.write_bytes(pickle.dumps(state, protocol=4))
    else:
        torch.save(state, path)


def _prepare(strategy: DeepSpeedStrategy, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stage-1 parts of the tiny model under ``strategy``; returns a batch for it."""
    model = tiny_model(seed=seed)
    set_trainable(model, STAGE1)
    groups = param_groups(model, LearningRates(default=1e-2), weight_decay=0.01)
    factory = functools.partial(build_lr_scheduler, kind="constant", total_steps=20, warmup_ratio=0.0)
    strategy.prepare(model, groups, factory)
    return make_batch(model.config, random_images([(100, 100), (120, 90)], seed=0), text_len=8, seed=0)[0]


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


@pytest.fixture(scope="module", params=[0, 2, 3], ids=lambda z: f"zero{z}")
def saved(request, dist, tmp_path_factory):
    """A one-step engine, its checkpoint, the weights it holds and the RNG draws that follow it."""
    strategy = DeepSpeedStrategy(zero_stage=request.param, micro_batch=2, grad_accum=1, world_size=1)
    batch = _prepare(strategy)
    train_step(strategy, batch, (1.0, 1.0))
    folder = tmp_path_factory.mktemp(f"zero{request.param}")
    strategy.save(folder, client_state={"micro_step": 1}, tag=CHECKPOINT_TAG)
    draws = _draws()
    weights = strategy.full_state_dict()
    yield strategy, folder, weights, draws, batch
    strategy.release()


def test_every_planted_file_is_refused_and_nothing_runs(saved, tmp_path):
    strategy, folder, *_ = saved
    files = sorted((folder / CHECKPOINT_TAG).iterdir())
    assert {f.name for f in files} >= {"rng_rank0.pt"} and any("model_states" in f.name for f in files)
    marker = tmp_path / "marker"
    for file in files:
        for bare in (False, True):
            copy = tmp_path / f"{file.name}-{bare}"
            shutil.copytree(folder, copy)
            planted = copy / CHECKPOINT_TAG / file.name
            _plant(planted, marker, bare)
            expected = rf"refusing to load {re.escape(str(planted))}: it holds a pickled object of type posix\.system"
            with pytest.raises(UnsafeCheckpointError, match=expected):
                strategy.load(copy, tag=CHECKPOINT_TAG)
            # The loop's resume path (a worker handed this checkpoint) refuses it the same way.
            with pytest.raises(UnsafeCheckpointError, match=expected):
                loop._resume(None, LocalContext(checkpoints=[str(copy)]), strategy, None)
            assert not marker.exists(), f"the payload planted in {file.name} ran"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after each load


def test_a_saved_checkpoint_round_trips(saved):
    strategy, folder, weights, draws, batch = saved
    train_step(strategy, batch, (1.0, 1.0))  # move the weights and the RNG away from the checkpoint's
    assert strategy.load(folder, tag=CHECKPOINT_TAG)["micro_step"] == 1
    assert _draws() == draws
    loaded = strategy.full_state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_the_estimate_bounds_what_a_save_writes(saved, tmp_path):
    strategy, *_ = saved
    strategy.save(tmp_path, tag="t")
    written = sum(f.stat().st_size for f in (tmp_path / "t").iterdir())
    assert written <= strategy.checkpoint_bytes() <= 4 * written + 2**20


def test_a_full_file_system_refuses_the_save_before_writing(saved, tmp_path, monkeypatch):
    strategy, *_ = saved
    needed = strategy.checkpoint_bytes()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=needed - 1))
    target = tmp_path / "ckpt"
    with pytest.raises(InsufficientSpaceError) as refused:
        strategy.save(target, tag="t")
    message = str(refused.value)
    assert str(target) in message and f"{needed:,} bytes" in message and f"{needed - 1:,} bytes" in message
    assert not target.exists()
    # Through the loop: nothing reported, and its staging folder is gone.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ctx = LocalContext(root=str(tmp_path / "stored"))
    with pytest.raises(InsufficientSpaceError, match="vlsa-ckpt-staging"):
        loop._checkpoint(strategy, ctx, {}, {"global_step": 1}, model_export=False, spec=None)
    assert ctx.checkpoints == [] and list(checkpoint_files.staging_root().iterdir()) == []


def test_the_rng_file_holds_no_numpy_objects(saved):
    _, folder, *_ = saved
    assert (
        torch.serialization.get_unsafe_globals_in_checkpoint(folder / CHECKPOINT_TAG / "rng_rank0.pt") == []
    )


# ------------------------------------------------------------------------------------------------ staging


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_dead_processes_staging_folders_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = checkpoint_files.staging_root()
    host = socket.gethostname()
    dead = root / f"{host}-{_dead_pid()}-abc"
    mine = root / f"{host}-{os.getpid()}-def"
    elsewhere = root / f"other-host-{_dead_pid()}-ghi"
    for folder in (dead, mine, elsewhere):
        (folder / "global_step").mkdir(parents=True)
    assert checkpoint_files.remove_leaked_staging() == [dead]
    assert not dead.exists() and mine.exists() and elsewhere.exists()
    with checkpoint_files.staging_folder() as staging:
        assert staging.parent == root and staging.name.startswith(f"{host}-{os.getpid()}-")
    assert not staging.exists()


def test_a_failed_direct_save_leaves_no_folder(saved, tmp_path, monkeypatch):
    strategy, *_ = saved
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=strategy.checkpoint_bytes() - 1))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ctx = LocalContext(root=str(tmp_path / "stored"), direct=True)
    target = tmp_path / "stored" / "checkpoint_000000"
    with pytest.raises(InsufficientSpaceError, match=re.escape(str(target))):
        loop._checkpoint(strategy, ctx, {}, {"global_step": 1}, model_export=False, spec=None)
    assert ctx.checkpoints == [] and not target.exists() and not checkpoint_files.staging_root().exists()


def test_only_unreported_checkpoint_folders_are_removed(tmp_path):
    kept, left, other = (tmp_path / name for name in ("checkpoint_a", "checkpoint_b", "not_a_checkpoint"))
    for folder in (kept, left, other):
        (folder / "global_step").mkdir(parents=True)
    assert checkpoint_files.remove_unreported(tmp_path, [str(kept)]) == [left]
    assert kept.exists() and not left.exists() and other.exists()


def _save_then_die_saving(port: int, base: str, signal_file: str, direct: bool) -> None:
    """(A spawned process.) Save checkpoint A through the loop, train on, and start saving B: after B's first
    file is written, say so and hang (the parent kills it). ``direct``: written in place, not staged."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    tempfile.tempdir = base
    join_gloo(0, 1, port)
    strategy = DeepSpeedStrategy(zero_stage=2, micro_batch=2, grad_accum=1, world_size=1)
    batch = _prepare(strategy)
    train_step(strategy, batch, (1.0, 1.0))
    ctx = LocalContext(root=os.path.join(base, "stored"), direct=direct)
    loop._checkpoint(strategy, ctx, {}, {"global_step": 1}, model_export=False, spec=None)
    save_file(strategy.full_state_dict(), os.path.join(base, "a.safetensors"))
    train_step(strategy, batch, (1.0, 1.0))
    write = TorchCheckpointEngine.save

    def write_then_hang(self, state_dict, path):
        write(self, state_dict, path)
        Path(signal_file).write_text(path)
        time.sleep(600)

    TorchCheckpointEngine.save = write_then_hang
    loop._checkpoint(strategy, ctx, {}, {"global_step": 2}, model_export=False, spec=None)


@pytest.mark.e2e
@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
def test_a_kill_during_a_save_keeps_the_last_checkpoint_and_the_next_start_cleans_up(
    dist, tmp_path, monkeypatch, direct
):
    """Staged: B's staging folder is left and the next start removes it. Written in place (``direct``): B's
    folder is left in storage without its marker, never reported, and :func:`remove_unreported` removes it."""
    import torch.multiprocessing as mp

    signal_file = tmp_path / "b-started"
    child = mp.get_context("spawn").Process(
        target=_save_then_die_saving, args=(free_port(), str(tmp_path), str(signal_file), direct)
    )
    child.start()
    deadline = time.monotonic() + 300
    while not signal_file.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert signal_file.exists(), f"the child never started saving B (exit code {child.exitcode})"
    os.kill(child.pid, signal.SIGKILL)
    child.join()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stored = tmp_path / "stored"
    if direct:
        assert not checkpoint_files.staging_root().exists()  # nothing staged, not even A
        leaked = [stored / "checkpoint_000001"]
        assert not (leaked[0] / loop.PROGRESS_FILE).exists()  # the marker comes last: B is not a checkpoint
    else:
        leaked = list(checkpoint_files.staging_root().iterdir())
        assert [f.name.split("-")[-2] for f in leaked] == [str(child.pid)]
    assert Path(signal_file.read_text()).is_relative_to(leaked[0])  # B's first file, in the leaked folder

    # A loads into a fresh engine (other initial weights) and holds exactly the weights it was saved with.
    strategy = DeepSpeedStrategy(zero_stage=2, micro_batch=2, grad_accum=1, world_size=1)
    _prepare(strategy, seed=1)
    try:
        strategy.load(tmp_path / "stored" / "checkpoint_000000", tag=CHECKPOINT_TAG)
        loaded, saved = strategy.full_state_dict(), load_file(str(tmp_path / "a.safetensors"))
        assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    finally:
        strategy.release()

    if direct:  # the next worker group's start removes what no report registered
        assert checkpoint_files.remove_unreported(stored, [stored / "checkpoint_000000"]) == leaked
        return

    # The next stage start on this host removes the leaked folder before it sets the stage up.
    class SetUp(Exception):
        pass

    def set_up(spec, ctx):
        raise SetUp

    monkeypatch.setattr(loop, "_set_up", set_up)
    with pytest.raises(SetUp):
        loop.run_stage(None, LocalContext())
    assert not leaked[0].exists()
