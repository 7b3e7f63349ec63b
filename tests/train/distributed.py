"""Joining a gloo process group on DeepSpeed's CPU accelerator: the package's ``dist`` fixture (one rank) and
the spawned two-rank workers."""

from __future__ import annotations

import datetime
import os
from typing import Any

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")


def join_gloo(rank: int, world_size: int, port: int, timeout_s: float | None = None) -> Any:
    """Set this process's rank variables, join the group (a hung collective fails after ``timeout_s``) and
    return the ``deepspeed`` module. DeepSpeed's shared-memory comm op (inference only) is not compiled."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DS_ACCELERATOR="cpu",
    )
    import deepspeed

    from vlsa_platform.train.strategy import skip_inference_comm_op

    skip_inference_comm_op()
    timeout = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    deepspeed.init_distributed(dist_backend="gloo", **timeout)
    return deepspeed
