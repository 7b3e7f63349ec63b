"""The frozen-target cache over a 4-trial tiny sweep: frozen-encoder calls and data-side time per step, with the
cache filled once before the first trial against without it.

The sweep is ``experiments/loss_ratio_sweep.yaml --scale tiny`` (four ``loss.rec_weight`` trials, three stages,
the bundled synthetic data, the tiny model's pretrained VAE). Each trial's stages run the real data side of a
training step in this process, as a stage's worker sets it up (``train.loop``): ``StageData`` micro-batches
through ``VLSADataset`` (image read once, tiles, cognition turns with VQ grids through the cache,
tokenization, collation) and the L_rec target's frozen part of the forward, ``ReconstructionObjective.encode``
(the frozen VAE on the pixels, or only the posterior sample from cached parameters). The trainable forward
and backward are the same in both modes and are not run.

- ``with``: ``orchestration.cache_fill.fill_for_submission`` fills one cache for every image the sweep's runs
  read (Ray Data on an embedded local Ray with ``--ray``, else in this process), then the trials read it.
- ``without``: no fill, each trial on a cache of its own: every trial's frozen encoders see every image it
  reads (VAE targets as pixels; VQ grids computed on a miss), as trials did before the fill existed.

Reported: per mode, the frozen-encoder calls per kind (fill and trials), the calls per distinct image, the
median data-side time per step (``step_ms``), and ``step_ratio = with / without``. Goals (issue 17): each image
encoded once per sweep; ``step_ratio`` at most 0.8. The fill's own time is reported apart (``fill_s``): it is
paid once per submission, not per step.

    .venv/bin/python benchmarks/cache_sweep.py [--steps 20] [--micro-batch 4] [--threads 2] [--ray]

Prints one JSON line on stdout, then a human-readable line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.config.schema import ExperimentConfig
from vlsa_platform.data.targets import TARGET_KINDS, CachedTargets, TargetCache
from vlsa_platform.orchestration.cache_fill import fill_for_submission, run_configs
from vlsa_platform.orchestration.training import target_cache_root
from vlsa_platform.train.batches import StageData, vq_targets
from vlsa_platform.train.build import build_model, build_tokenizer
from vlsa_platform.train.frozen_targets import latent_targets

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "loss_ratio_sweep.yaml"


def run_trial(
    trial: ExperimentConfig, model: torch.nn.Module, tokenizer, root: str, steps: int, micro_batch: int
) -> tuple[list[float], Counter[str], set[str]]:
    """Every stage of one trial: ``steps`` micro-batches' data side each. Returns the per-step times (s), the
    frozen-encoder calls by kind and the images read."""
    recon = model.reconstruction
    times: list[float] = []
    calls: Counter[str] = Counter()
    read: set[str] = set()
    for stage_name, stage in trial.stages.items():
        cache = TargetCache(root)
        vq = vq_targets(trial, stage_name, cache)
        latent = CachedTargets(cache, latent_targets(model))
        data = StageData(
            trial,
            stage,
            model.config,
            tokenizer,
            rank=0,
            world_size=1,
            micro_batch=micro_batch,
            by_modality=False,
            latent_cache=latent,
        )
        data.attach_cognition(stage_name, vq)
        order = data.plan.epoch(0).shard(0, 1)  # what the first micro-batches read (distinct images)
        for dataset, position in list(order)[: steps * micro_batch]:
            record = data.sources.records[dataset][position]
            if record.image:
                read.add(f"{dataset}/{record.image}")
        before = recon.vae_encoder_calls
        batches = data.batches()
        for _ in range(steps):
            started = time.perf_counter()
            tensors = next(batches).tensors
            if "recon_latent_params" in tensors:
                recon.encode(latent_params=tensors["recon_latent_params"])
            elif "recon_pixel_values" in tensors:
                recon.encode(pixels=tensors["recon_pixel_values"])
            times.append(time.perf_counter() - started)
        calls["vae"] += recon.vae_encoder_calls - before
        calls["vq"] += vq.frozen.encoder_calls["vq"] if vq is not None else 0
    return times, calls, read


def measure(mode: str, config: ExperimentConfig, trials, model, tokenizer, args, work: Path) -> dict:
    """One mode over the four trials."""
    fill: dict = {}
    root = target_cache_root(str(work / mode), config.name)
    if mode == "with":
        started = time.perf_counter()
        report = fill_for_submission(config, str(work / mode), use_ray=args.ray, say=lambda line: None)
        fill = {
            "images": report.images,
            "encoder_calls": {k: report.encoder_calls.get(k, 0) for k in TARGET_KINDS},
            "failed": len(report.failed),
            "fill_s": round(time.perf_counter() - started, 2),
        }
    times: list[float] = []
    calls: Counter[str] = Counter()
    read: set[str] = set()
    for i, trial in enumerate(trials):
        trial_root = root if mode == "with" else f"{root}-trial{i}"
        t, c, r = run_trial(trial, model, tokenizer, trial_root, args.steps, args.micro_batch)
        times += t
        calls.update(c)
        read |= r
    total = {k: calls[k] + fill.get("encoder_calls", {}).get(k, 0) for k in TARGET_KINDS}
    return {
        "fill": fill,
        "trial_encoder_calls": {k: calls[k] for k in TARGET_KINDS},
        "encoder_calls": total,
        "images_read": len(read),
        "step_ms": round(1000 * statistics.median(times), 2),
        "step_ms_raw": [round(1000 * t, 3) for t in times],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="micro-batches per stage per trial")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="fill with Ray Data on an embedded local Ray")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = load_experiment(SWEEP, scale="tiny", overrides=["data.loader_workers=0"])
    trials = run_configs(config)
    model = build_model(trials[0]).eval()  # the frozen VAE is every trial's (rec_weight changes no weight)
    tokenizer = build_tokenizer(trials[0])
    result: dict = {"benchmark": "cache_sweep", "trials": len(trials), "steps_per_stage": args.steps}
    result |= {"micro_batch": args.micro_batch, "threads": args.threads, "fill_with_ray": args.ray}
    with tempfile.TemporaryDirectory() as tmp:
        if args.ray:
            import ray

            ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
        for mode in ("without", "with"):
            result[mode] = measure(mode, config, trials, model, tokenizer, args, Path(tmp))
    with_, without = result["with"], result["without"]
    images = with_["fill"]["images"]
    result["images_in_sweep"] = images
    # With the cache: calls per image of the sweep (each is filled once, read or not); without: per image the
    # trials read (each trial encodes what it reads).
    denominators = {"with": images, "without": without["images_read"]}
    result["encoder_calls_per_image"] = {
        mode: {k: round(result[mode]["encoder_calls"][k] / max(1, n), 3) for k in TARGET_KINDS}
        for mode, n in denominators.items()
    }
    result["step_ratio"] = round(with_["step_ms"] / without["step_ms"], 3)
    result["goals"] = {"encoder_calls_per_image": 1.0, "step_ratio_at_most": 0.8}
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    per = result["encoder_calls_per_image"]
    print(
        f"{len(trials)} trials x {len(config.stages)} stages x {args.steps} steps, {images} images: encoder calls "
        f"per image with the cache {per['with']} (fill {with_['fill']['fill_s']} s), per image read without "
        f"{per['without']}; "
        f"data side {with_['step_ms']} ms/step with, {without['step_ms']} without (ratio {result['step_ratio']})"
    )


if __name__ == "__main__":
    main()
