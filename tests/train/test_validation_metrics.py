"""``train.validate.evaluate`` through a DeepSpeed engine (one gloo rank, this package's ``dist``): every validation
metric in one pass (the metrics themselves: ``tests/eval``).

ZeRO-3 partitions the parameters even on one rank (each module gathers its own in its forward hook), so the
ZeRO-3 cases check that decoding works outside the model's forward: the vision tower, projector and LLM gather
in their hooks, anyres's ``image_newline`` (a parameter of the model itself) in ``evaluate``'s context, the VAE
for PSNR in ``strategy.gathered``.
"""

from __future__ import annotations

import math

import pytest
import torch

from vlsa_platform.eval.validation import GenerationSettings
from vlsa_platform.model.parts import set_trainable
from vlsa_platform.tracking import names
from vlsa_platform.train.batches import StageData
from vlsa_platform.train.build import build_model, build_tokenizer
from vlsa_platform.train.strategy import DeepSpeedStrategy, param_groups
from vlsa_platform.train.validate import evaluate

from ..eval.helpers import cognition_everywhere, tiny_experiment
from .distributed import join_gloo

VAL_KEYS = {
    names.VAL_LOSS_LLM,
    names.VAL_LOSS_REC,
    names.VAL_EXACT_MATCH,
    names.VAL_VQ_ACCURACY,
    names.VAL_PX_ACCURACY,
    names.VAL_PSNR,
}

CASES = {
    # name: (ZeRO stage, vision, recon, cognition)
    "zero2-sa-recon-cognition": (2, "sa_perceiver", True, True),
    "zero3-sa-recon-cognition": (3, "sa_perceiver", True, True),
    "zero3-anyres-plain": (3, "anyres", False, False),
}


def _prepared(dist, case: str):
    zero_stage, vision, recon, cognition = CASES[case]
    config = tiny_experiment(f"model.vision={vision}", f"model.recon={recon}", f"model.cognition={cognition}")
    stage = config.stages["stage3"]
    model = build_model(config)
    set_trainable(model, stage.trainable)
    tokenizer = build_tokenizer(config)
    strategy = DeepSpeedStrategy(zero_stage=zero_stage, micro_batch=2, grad_accum=1, world_size=1)
    strategy.prepare(model, param_groups(model, stage.lr, 0.0))
    data = StageData(
        config, stage, model.config, tokenizer, rank=0, world_size=1, micro_batch=2, by_modality=False
    )
    # Short cognition answers (a 2x2 VQ window, one pixel cell): decoding under ZeRO-3 on a CPU is slow.
    data.validation_cognition = (
        cognition_everywhere(config.seed, vq_window=2, px_grid=1) if cognition else None
    )
    generation = GenerationSettings.for_model(tokenizer, model, samples=2, extra_tokens=2)
    return strategy, data.validation_batches(), config.seed, generation


@pytest.fixture(scope="module")
def _one_thread():
    """Keep the CPU light (the machine's cores are shared), the same for every pass of the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(CASES))
def evaluated(request, dist, _one_thread):
    strategy, batches, seed, generation = _prepared(dist, request.param)
    rng = torch.get_rng_state()
    first = evaluate(strategy, batches, seed, generation, psnr_images=3)
    assert torch.equal(torch.get_rng_state(), rng), "validation must not move the training RNG"
    assert strategy.engine.training
    bare = evaluate(strategy, batches, seed)
    return CASES[request.param], first, bare, (strategy, batches, seed, generation)


def _finite_fraction(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def test_every_key_every_pass_with_nan_where_nothing_is_measured(evaluated):
    (_, _, recon, cognition), first, _, _ = evaluated
    assert set(first) == VAL_KEYS
    assert math.isfinite(first[names.VAL_LOSS_LLM]) and _finite_fraction(first[names.VAL_EXACT_MATCH])
    for key in (names.VAL_VQ_ACCURACY, names.VAL_PX_ACCURACY):
        assert _finite_fraction(first[key]) if cognition else math.isnan(first[key]), key
    for key in (names.VAL_LOSS_REC, names.VAL_PSNR):
        assert math.isfinite(first[key]) if recon else math.isnan(first[key]), key
    if recon:
        assert 0.0 < first[names.VAL_PSNR] < 60.0  # dB of a random-weight reconstruction


@pytest.mark.parametrize("evaluated", ["zero2-sa-recon-cognition"], indirect=True)
def test_passes_are_repeatable(evaluated):
    _, first, _, (strategy, batches, seed, generation) = evaluated
    again = evaluate(strategy, batches, seed, generation, psnr_images=3)
    assert first.keys() == again.keys()
    assert all(first[k] == again[k] or (math.isnan(first[k]) and math.isnan(again[k])) for k in first), (
        first,
        again,
    )


def test_without_generation_settings_only_the_losses_and_psnr(evaluated):
    (_, _, recon, _), first, bare, _ = evaluated
    assert set(bare) == VAL_KEYS
    for key in (names.VAL_EXACT_MATCH, names.VAL_VQ_ACCURACY, names.VAL_PX_ACCURACY):
        assert math.isnan(bare[key]), key
    assert bare[names.VAL_LOSS_LLM] == first[names.VAL_LOSS_LLM]
    if recon:  # every image rather than the first 3: another mean, measured all the same
        assert math.isfinite(bare[names.VAL_PSNR])


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    import copy
    import functools
    import json
    import os

    from vlsa_platform.data.dataset import VLSADataset, collate
    from vlsa_platform.data.records import dataset_location, read_records
    from vlsa_platform.eval.questions import samples_from_batch
    from vlsa_platform.eval.validation import Tally, decode_samples
    from vlsa_platform.train.metrics import all_reduce

    torch.set_num_threads(1)
    join_gloo(rank, 2, port, timeout_s=120)  # a hung collective fails after two minutes, not never
    config = tiny_experiment("model.vision=anyres", "model.recon=false")  # anyres: image_newline is gathered
    stage = config.stages["stage3"]
    model = build_model(config)
    plain = copy.deepcopy(model).eval()
    set_trainable(model, stage.trainable)
    tokenizer = build_tokenizer(config)
    strategy = DeepSpeedStrategy(zero_stage=3, micro_batch=1, grad_accum=1)
    strategy.prepare(model, param_groups(model, stage.lr, 0.0))
    settings = GenerationSettings.for_model(tokenizer, model, samples=2, extra_tokens=2)

    # Rank 0 decodes two image samples with a VQ and a pixel question each; rank 1 two other image samples with
    # none (it must keep in step with rank 0's cognition answers, and its answers have other lengths).
    validation = config.data.validation
    path, image_root = dataset_location(config.data.datasets[validation.dataset])
    records = [r for r in read_records(path, dataset=validation.dataset)[0] if r.image is not None]
    dataset = VLSADataset(
        records[2 * rank : 2 * rank + 2],
        tokenizer=tokenizer,
        config=model.config,
        image_roots={validation.dataset: image_root},
        max_length=config.data.max_length,
        cognition=cognition_everywhere(config.seed, vq_window=2, px_grid=1) if rank == 0 else None,
    )
    batch = collate([dataset[0], dataset[1]], tokenizer.pad_token_id)
    samples = samples_from_batch(batch, settings.image_token_id, settings.stop_ids[0])
    synced, alone = Tally(), Tally()
    sync = functools.partial(all_reduce, device=strategy.device, op=torch.distributed.ReduceOp.MAX)
    strategy.engine.eval()
    with strategy.gathered(strategy.engine.module, recurse=False):
        calls = decode_samples(strategy.engine.module, samples, settings, synced, sync=sync)
    decode_samples(plain, samples, settings, alone)

    # A whole validation pass on shards grouped by modality, as run_stage does under ZeRO-3.
    data = StageData(
        config, stage, model.config, tokenizer, rank=rank, world_size=2, micro_batch=1, by_modality=True
    )
    data.validation_cognition = cognition_everywhere(config.seed, vq_window=2, px_grid=1)
    metrics = evaluate(strategy, data.validation_batches(), config.seed, settings, psnr_images=2)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"calls": calls, "synced": vars(synced), "alone": vars(alone), "metrics": metrics}, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.e2e  # two processes with gloo, 15-30 s: with the e2e tests (make test's 10 minutes)
def test_two_ranks_zero3_decode_in_step(tmp_path):
    """Two gloo ranks under ZeRO-3 whose samples hold different answers (cognition answers on one rank only,
    other lengths): both make the same number of ``generate`` calls, each rank's scores are those of its own
    samples decoded alone by the plain model, and a whole ``evaluate`` pass ends with the same metrics on both."""
    import json

    import torch.multiprocessing as mp

    from vlsa_platform.tracking.store import free_port

    mp.spawn(_two_rank_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0]["calls"] == results[1]["calls"] == 3  # one per kind (text, VQ, pixels) on both ranks
    for result in results:
        assert result["synced"] == result["alone"]
    assert results[0]["synced"]["vq_total"] > 0 and results[1]["synced"]["vq_total"] == 0
    assert results[0]["metrics"].keys() == VAL_KEYS
    assert json.dumps(results[0]["metrics"]) == json.dumps(results[1]["metrics"])  # NaN-safe equality
    assert math.isfinite(results[0]["metrics"][names.VAL_EXACT_MATCH])
