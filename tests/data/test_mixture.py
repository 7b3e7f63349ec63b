"""Mixtures: sampling rules, weights, epoch order and validation holdout are deterministic and exact."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vlsa_platform.config.schema import MixtureEntry, ValidationSet
from vlsa_platform.data.mixture import MixturePlan, MixtureSource, build_mixture_plan, select


def test_select_rules():
    assert select(10, "all", 0).tolist() == list(range(10))
    assert select(10, "first:3", 0).tolist() == [0, 1, 2]
    assert select(10, "first:30%", 0).tolist() == [0, 1, 2]
    assert select(5, "first:100", 0).tolist() == [0, 1, 2, 3, 4]
    picked = select(1000, "random:100", 7, key="llava")
    assert (
        len(picked) == 100 and len(set(picked.tolist())) == 100 and picked.tolist() == sorted(picked.tolist())
    )
    assert len(select(1000, "random:25%", 7)) == 250
    assert select(list("abcdef"), "first:2", 0).tolist() == [0, 1]  # a sequence works as well as a length


def test_random_selection_is_seeded():
    a = select(1000, "random:100", 1, key="d")
    assert np.array_equal(a, select(1000, "random:100", 1, key="d"))
    assert not np.array_equal(a, select(1000, "random:100", 2, key="d"))
    assert not np.array_equal(a, select(1000, "random:100", 1, key="other"))


def test_bad_sampling_is_refused():
    with pytest.raises(ValueError, match="bad sampling"):
        select(10, "some:3", 0)


def _pairs(order):
    return list(order)


def test_epoch_order_is_a_deterministic_shuffle():
    plan = MixturePlan([MixtureSource("a", 50), MixtureSource("b", 30, "first:10")], seed=3)
    e0 = plan.epoch(0)
    assert len(plan) == len(e0) == 60
    assert sorted(_pairs(e0)) == sorted([("a", i) for i in range(50)] + [("b", i) for i in range(10)])
    assert _pairs(e0) == _pairs(
        MixturePlan([MixtureSource("a", 50), MixtureSource("b", 30, "first:10")], 3).epoch(0)
    )
    assert _pairs(e0) != _pairs(plan.epoch(1))  # reshuffled each epoch
    assert _pairs(e0) != _pairs(MixturePlan(plan.sources, seed=4).epoch(0))
    assert e0[0] == _pairs(e0)[0]


def test_weight_two_repeats_each_record_twice():
    plan = MixturePlan([MixtureSource("a", 20, weight=2.0), MixtureSource("b", 5)], seed=0)
    counts = Counter(plan.epoch(0))
    assert len(plan) == 45
    assert all(counts[("a", i)] == 2 for i in range(20))
    assert all(counts[("b", i)] == 1 for i in range(5))


def test_weight_half_takes_a_fresh_random_half_each_epoch():
    plan = MixturePlan([MixtureSource("a", 100, weight=0.5)], seed=0)
    halves = [{p for _, p in plan.epoch(e)} for e in range(3)]
    assert all(len(h) == 50 for h in halves)
    assert halves[0] != halves[1]
    assert halves[0] == {p for _, p in MixturePlan([MixtureSource("a", 100, weight=0.5)], seed=0).epoch(0)}


def test_fractional_weight_above_one():
    plan = MixturePlan([MixtureSource("a", 10, weight=1.5)], seed=0)
    counts = Counter(p for _, p in plan.epoch(0))
    assert len(plan) == 15 and sorted(counts.values()) == [1] * 5 + [2] * 5


def test_holdout_removes_validation_records_from_training():
    entries = [
        MixtureEntry(dataset="inst", sampling="all"),
        MixtureEntry(dataset="caps", sampling="all", weight=2),
    ]
    validation = ValidationSet(dataset="inst", sampling="random:10", holdout=True)
    plan, val = build_mixture_plan(entries, {"inst": 100, "caps": 20}, seed=5, validation=validation)
    assert len(val) == 10
    trained = {p for d, p in plan.epoch(0) if d == "inst"}
    assert trained == set(range(100)) - set(val.tolist())
    assert len(plan) == 90 + 40
    # the same validation records every time, and none held out without holdout
    _, again = build_mixture_plan(entries, {"inst": 100, "caps": 20}, seed=5, validation=validation)
    assert np.array_equal(val, again)
    keep = ValidationSet(dataset="inst", sampling="random:10", holdout=False)
    plan2, _ = build_mixture_plan(entries, {"inst": 100, "caps": 20}, seed=5, validation=keep)
    assert {p for d, p in plan2.epoch(0) if d == "inst"} == set(range(100))


def test_holdout_applies_before_sampling():
    plan = MixturePlan([MixtureSource("a", 10, "first:3")], seed=0, holdout={"a": [0, 2]})
    assert plan.picked(0).tolist() == [1, 3, 4]


def test_shards_are_disjoint_and_equal():
    order = MixturePlan([MixtureSource("a", 103)], seed=0).epoch(0)
    shards = [order.shard(r, 4) for r in range(4)]
    assert {len(s) for s in shards} == {25}
    seen = [pair for s in shards for pair in s]
    assert len(seen) == len(set(seen)) == 100
    with pytest.raises(ValueError):
        order.shard(4, 4)


def test_group_by_modality_gives_every_rank_one_modality_per_micro_step():
    """ZeRO-3 needs images on every rank or none at each micro-step: runs of micro_batch x world samples."""
    from vlsa_platform.data.mixture import group_by_modality

    plan = MixturePlan([MixtureSource("a", 50), MixtureSource("b", 23)], seed=3)
    order = plan.epoch(0)

    def has_image(dataset, position):  # "b" is text-only, and every 7th record of "a"
        return dataset == "a" and position % 7 != 0

    micro, world = 2, 3
    grouped = group_by_modality(order, has_image, micro * world)
    assert len(grouped) % (micro * world) == 0
    images = sum(has_image(d, p) for d, p in order)
    texts = len(order) - images
    assert len(grouped) == images - images % 6 + texts - texts % 6
    assert len(set(grouped)) == len(grouped) and set(grouped) <= set(order)  # no sample twice, none invented
    shards = [list(grouped.shard(r, world)) for r in range(world)]
    for k in range(len(shards[0]) // micro):
        kinds = {has_image(*pair) for shard in shards for pair in shard[k * micro : (k + 1) * micro]}
        assert len(kinds) == 1, k
    # Both modalities stay spread over the epoch (not all images first).
    first_text = next(i for i, pair in enumerate(grouped) if not has_image(*pair))
    assert first_text < len(grouped) // 2
