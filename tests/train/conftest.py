"""One one-rank gloo process group for every test of this package that needs one (DeepSpeed on its CPU
accelerator). DeepSpeed keeps the first process group it saw, so modules must not each make and destroy their
own; this fixture makes it once and tears it down (restoring the environment) after the package's tests."""

from __future__ import annotations

import os

import pytest
import torch

from vlsa_platform.tracking.store import free_port

from .distributed import ENV, join_gloo


@pytest.fixture(scope="package")
def dist():
    """The gloo group (world size 1); yields the ``deepspeed`` module."""
    saved = {k: os.environ.get(k) for k in ENV}
    if torch.distributed.is_initialized():
        import deepspeed
    else:
        deepspeed = join_gloo(0, 1, free_port())
    yield deepspeed
    torch.distributed.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
