"""Loss-weight schedules (the schema's ScheduleConfig) and the LR schedule (HF's schedulers)."""

import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from vlsa_platform.config.schema import ScheduleConfig, StageLoss
from vlsa_platform.train.schedules import build_lr_scheduler, loss_weights, warmup_steps


def _loss(kind, target="rec_weight", start=1.0, end=0.0, llm=1.0, rec=2.0):
    return StageLoss(
        llm_weight=llm,
        rec_weight=rec,
        schedule=ScheduleConfig(kind=kind, target=target, start_factor=start, end_factor=end),
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [2.0, 2.0, 2.0]),
        ("linear", [2.0, 1.0, 0.0]),
        ("cosine", [2.0, 1.0, 0.0]),
    ],
)
def test_rec_weight_schedule_at_0_half_1(kind, expected):
    loss = _loss(kind)
    got = [loss_weights(loss, t) for t in (0.0, 0.5, 1.0)]
    assert [w for w, _ in got] == [1.0, 1.0, 1.0]
    assert [r for _, r in got] == pytest.approx(expected)


def test_cosine_differs_from_linear_between_ends_and_progress_is_clipped():
    cos, lin = _loss("cosine"), _loss("linear")
    assert loss_weights(cos, 0.25)[1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert loss_weights(lin, 0.25)[1] == pytest.approx(1.5)
    assert loss_weights(lin, 1.7) == loss_weights(lin, 1.0)
    assert loss_weights(lin, -1.0) == loss_weights(lin, 0.0)


def test_schedule_on_llm_weight_and_recon_off():
    loss = _loss("linear", target="llm_weight", start=0.0, end=1.0, llm=4.0, rec=0.5)
    assert loss_weights(loss, 0.0) == (0.0, 0.5)
    assert loss_weights(loss, 0.5) == (2.0, 0.5)
    assert loss_weights(loss, 1.0, recon=False) == (4.0, 0.0)


def test_unresolved_loss_is_refused():
    with pytest.raises(ValueError, match="not resolved"):
        loss_weights(StageLoss(), 0.0)


def _lrs(kind, total=20, warmup=0.1, peak=1e-3):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [param], "lr": peak}, {"params": [], "lr": 2 * peak}])
    sched = build_lr_scheduler(opt, kind, total_steps=total, warmup_ratio=warmup)
    seen = []
    for _ in range(total):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def test_warmup_then_cosine_matches_transformers():
    param = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.AdamW([param], lr=1e-3)
    ref = get_cosine_schedule_with_warmup(ref_opt, num_warmup_steps=2, num_training_steps=20)
    expected = []
    for _ in range(20):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    seen = _lrs("cosine")
    assert warmup_steps(20, 0.1) == 2 and warmup_steps(100, 0.03) == 3
    assert [s[0] for s in seen] == expected
    assert seen[0][0] == 0.0 and seen[2][0] == pytest.approx(1e-3)
    # Every group decays from its own peak (the per-part learning rates).
    assert [s[1] for s in seen] == pytest.approx([2 * e for e in expected])


def test_linear_and_constant_after_warmup():
    linear, constant = _lrs("linear"), _lrs("constant")
    assert linear[2][0] == pytest.approx(1e-3) and linear[-1][0] == pytest.approx(1e-3 / 18)
    assert [c[0] for c in constant[2:]] == pytest.approx([1e-3] * 18)
    with pytest.raises(ValueError, match="unknown lr_scheduler"):
        _lrs("step")
