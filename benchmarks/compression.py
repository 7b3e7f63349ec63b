"""VLSA's compression, measured: the LLM's forward+backward per sample with anyres's visual sequence against
VLSA's (SA-Perceiver), the same LLM, the paper's tile geometry; and the visual tokens and LLM FLOPs per sample
at the paper's dimensions, from the bundled configs.

An image of ``--image`` px square (672: the paper's 2x2 grid of 336 px tiles) gives the LLM
``num_visual_tokens`` positions — anyres: the snapshot's 576 plus the unpadded tile features with a newline per
row (2,928 at 672x672); VLSA: 576 — plus ``--text-tokens`` of text (stated, default 64). Each mode's step runs
in a fresh process (so its peak resident memory is its own): ``--batch`` sequences of random embeddings through
a LLaMA of the paper's shape at reduced size (``--hidden``, ``--layers``: the paper's 4096 x 32 does not fit a
CPU benchmark; the width sets how much the attention scores weigh against the dense layers — about ``T / 6d`` —
so a narrow model overstates the speed-up: 1024 keeps anyres's share near 0.5, the paper's is 0.12), SDPA attention, causal-LM loss, backward; the median of ``--repeats`` timed steps after a
warm-up. FLOPs at paper dimensions: ``6 N T`` for the LLM's non-embedding parameters ``N`` (counted from the
paper's LLaMA-3-8B config on the meta device) plus the attention scores, ``12 L T^2 d`` per sequence for
forward and backward (``d`` the hidden size), for ``T`` tokens.

    .venv/bin/python benchmarks/compression.py [--image 672] [--text-tokens 64] [--hidden 1024] [--layers 2]
        [--batch 1] [--repeats 5] [--threads N]

Prints one JSON line, then a human-readable line. Goal (issue 17): VLSA's LLM step at least 3.5x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

MODES = ("anyres", "sa_perceiver")
GOAL_SPEEDUP = 3.5


def visual_tokens(mode: str, image: int) -> int:
    from vlsa_platform.model.modeling_vlsa import num_visual_tokens
    from vlsa_platform.model.presets import build_vlsa_config
    from vlsa_platform.model.tiling import plan_grid

    config = build_vlsa_config("paper", vision=mode, recon=False)
    grid = plan_grid(image, image, config.vision_config.image_size, config.grid_pinpoints)
    return num_visual_tokens(config, grid)


def paper_llm_flops(tokens: int) -> dict[str, float]:
    """Training FLOPs of one sequence of ``tokens`` through the paper's LLM (forward + backward)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlsa_platform.model.presets import build_vlsa_config

    text = build_vlsa_config("paper", recon=False).text_config
    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(**text.to_dict()))
    embeddings = sum(p.numel() for n, p in llm.named_parameters() if "embed_tokens" in n)
    params = sum(p.numel() for p in llm.parameters()) - embeddings
    dense = 6.0 * params * tokens
    attention = 12.0 * text.num_hidden_layers * tokens**2 * text.hidden_size
    return {
        "non_embedding_params": params,
        "dense": dense,
        "attention": attention,
        "total": dense + attention,
    }


def child(args: argparse.Namespace) -> dict[str, float]:
    """One mode's timed steps, in this (fresh) process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = visual_tokens(args.child, args.image) + args.text_tokens
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 3.5),
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        vocab_size=4096,
        max_position_embeddings=8192,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    embeds = torch.randn(args.batch, tokens, args.hidden)
    labels = torch.randint(0, config.vocab_size, (args.batch, tokens))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(args.repeats + 1):
        start = time.perf_counter()
        model(inputs_embeds=embeds, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)
        if step:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "tokens": tokens,
        "step_s": statistics.median(times),
        "step_s_raw": times,
        "ms_per_sample": statistics.median(times) / args.batch * 1000,
        "peak_rss_growth_mib_per_sample": (peak - before) / 1024 / args.batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=int, default=672)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    measured = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode]
        for key in ("image", "text_tokens", "hidden", "layers", "batch", "repeats", "threads"):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        measured[mode] = json.loads(out.strip().splitlines()[-1])
        measured[mode]["paper_llm_flops"] = paper_llm_flops(measured[mode]["tokens"])
    speedup = measured["anyres"]["step_s"] / measured["sa_perceiver"]["step_s"]
    flops_ratio = (
        measured["anyres"]["paper_llm_flops"]["total"] / measured["sa_perceiver"]["paper_llm_flops"]["total"]
    )
    result = {
        "benchmark": "compression",
        "modes": measured,
        "llm_step_speedup": round(speedup, 3),
        "paper_llm_flops_ratio": round(flops_ratio, 3),
        "goal_speedup": GOAL_SPEEDUP,
        "met": speedup >= GOAL_SPEEDUP,
        "settings": {k: v for k, v in vars(args).items() if k != "child"},
        "python": platform.python_version(),
        "cpu": platform.machine(),
    }
    print(json.dumps(result))
    any_, vlsa = measured["anyres"], measured["sa_perceiver"]
    print(
        f"compression: LLM fwd+bwd {any_['ms_per_sample']:.0f} ms/sample at {any_['tokens']} tokens (anyres) vs "
        f"{vlsa['ms_per_sample']:.0f} ms at {vlsa['tokens']} (VLSA): {speedup:.2f}x (goal >= {GOAL_SPEEDUP}); "
        f"paper-dimension LLM FLOPs {any_['paper_llm_flops']['total'] / 1e12:.1f} vs "
        f"{vlsa['paper_llm_flops']['total'] / 1e12:.1f} TFLOP per sample ({flops_ratio:.2f}x); peak RSS growth "
        f"{any_['peak_rss_growth_mib_per_sample']:.0f} vs {vlsa['peak_rss_growth_mib_per_sample']:.0f} MiB/sample"
    )


if __name__ == "__main__":
    main()
