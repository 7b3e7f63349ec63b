"""One one-rank gloo process group for every test of this package that needs one (DeepSpeed on its CPU
accelerator). DeepSpeed keeps the first process group it saw, so modules must not each make and destroy their
own; this fixture makes it once and tears it down (restoring the environment) after the package's tests."""

from __future__ import annotations

import os

import pytest
import torch

from vlsa_platform.tracking.store import free_port

_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")


@pytest.fixture(scope="package")
def dist():
    """The gloo group (world size 1); yields the ``deepspeed`` module."""
    saved = {k: os.environ.get(k) for k in _DIST_ENV}
    os.environ.update(
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        DS_ACCELERATOR="cpu",
    )
    import deepspeed

    if not torch.distributed.is_initialized():
        from vlsa_platform.train.strategy import skip_inference_comm_op

        skip_inference_comm_op()
        deepspeed.init_distributed(dist_backend="gloo")
    yield deepspeed
    torch.distributed.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
