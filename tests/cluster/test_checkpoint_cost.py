"""The checkpoint stall estimate (``cluster/checkpoint_cost.py``): bytes per rank by ZeRO stage, the node's
bytes, and the stall against the interval."""

from __future__ import annotations

import pytest

from vlsa_platform.cluster.checkpoint_cost import (
    STALL_GOAL,
    checkpoint_stall,
    rank_checkpoint_bytes,
    stage_checkpoint_stall,
)

T, P, N = 8e9, 10e9, 8


@pytest.mark.parametrize(
    ("zero", "rank0", "other"),
    [
        (0, 12 * T + 2 * P, 0.0),
        (2, 12 * T / N + 2 * P, 12 * T / N),
        (3, (12 * T + 2 * P) / N, (12 * T + 2 * P) / N),
    ],
)
def test_bytes_per_rank_follow_the_zero_stage(zero, rank0, other):
    per_rank = rank_checkpoint_bytes(T, P, zero, N)
    assert len(per_rank) == N and per_rank[0] == pytest.approx(rank0) and per_rank[1] == pytest.approx(other)
    # every ZeRO stage stores the same states in all: the optimizer states once, the weights once
    assert sum(per_rank) == pytest.approx(12 * T + 2 * P)


def test_the_stall_is_the_node_bytes_over_the_bandwidth_against_the_interval():
    stall = checkpoint_stall(
        trained=T,
        total=P,
        zero_stage=3,
        num_workers=16,
        checkpoint_every=100,
        step_seconds=2.0,
        write_bytes_per_s=1e9,
        ranks_per_node=8,
    )
    node = 8 * (12 * T + 2 * P) / 16  # half the ranks on rank 0's node
    assert stall.node_bytes == pytest.approx(node) and stall.save_seconds == pytest.approx(node / 1e9)
    assert stall.fraction == pytest.approx(node / 1e9 / 200.0)
    assert stall.within_goal == (stall.fraction <= STALL_GOAL) and stall.upload_keeps_up
    slow = checkpoint_stall(
        trained=T,
        total=P,
        zero_stage=3,
        num_workers=16,
        checkpoint_every=100,
        step_seconds=2.0,
        write_bytes_per_s=1e9,
        upload_bytes_per_s=1e8,
    )
    assert slow.upload_seconds == pytest.approx((12 * T + 2 * P) / 1e8) and not slow.upload_keeps_up
    assert slow.as_plan()["stall_fraction"] == round(slow.fraction, 4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="zero_stage"):
        rank_checkpoint_bytes(T, P, 4, N)
    with pytest.raises(ValueError, match="positive"):
        checkpoint_stall(
            trained=T,
            total=P,
            zero_stage=2,
            num_workers=N,
            checkpoint_every=0,
            step_seconds=1.0,
            write_bytes_per_s=1e9,
        )


def test_a_plan_stage_gives_its_step_time_from_the_estimate():
    stage = {
        "params_trainable": T,
        "params_total": P,
        "placement": {"zero_stage": 3, "num_workers": N},
        "steps": 1000,
        "estimate": {"wall_hours": 10.0},
    }
    stall = stage_checkpoint_stall(stage, 100, write_bytes_per_s=1e9)
    assert stall is not None and stall.interval_seconds == pytest.approx(100 * 36.0)
    assert stall.save_seconds == pytest.approx((12 * T + 2 * P) / 1e9)
    assert stage_checkpoint_stall({**stage, "estimate": {"wall_hours": None}}, 100) is None
