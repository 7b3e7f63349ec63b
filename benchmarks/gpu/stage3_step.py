"""VLSA's stage III on one GPU at the paper's dimensions: tokens/s, MFU and peak memory for VLSA (SA-Perceiver,
with L_rec) and anyres at 672x672, and the platform's step against a plain PyTorch loop at that size.

The model is ``experiments/vlsa_paper.yaml``'s (LLaMA-3-8B's widths and vocabulary, CLIP-L/336, SD3-medium's
MMDiT) with fewer LLM layers (``--llm-layers``; the vision tower and MMDiT whole unless reduced), random weights
built on the device, bf16, flash-attention-2 where ``flash_attn`` imports (SDPA otherwise), the file's
activation checkpointing, micro-batch and accumulation (``measure.py``). MFU = model FLOPs per step
(``cluster.flops``, the plan's accounting) / step time / the card's bf16 dense peak
(``cluster.accelerators.BUILTIN``, from ``torch.cuda.get_device_name``). Goal (issue 17): VLSA's MFU >= 0.45.

Without CUDA (or with ``--tiny``) the same code runs the file's ``--scale tiny`` model for a couple of steps
on the CPU (fp32, SDPA): the same JSON keys, MFU ``null``.

    benchmarks/gpu/run.sh            # = .venv/bin/python benchmarks/gpu/stage3_step.py --all
    .venv/bin/python benchmarks/gpu/stage3_step.py [--tiny] [--llm-layers 8] [--out FILE] [--budget-s 420]

Everything runs in one child process that this one stops at ``--budget-s`` (default 420 s: well under 8
minutes); each part stops timing when its share of the budget is spent. Writes one JSON file (``--out``;
default ``$OUT/results-<gpu>.json`` when ``$OUT`` is set, else ``benchmarks/gpu/results-<gpu>.json``, a tiny
run's to the temporary directory) and prints it as one line, then a summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PARTS = ("sa_perceiver", "anyres", "overhead", "overhead_tiny")
#: Each part's share of the budget (cumulative ends are normalised over the parts run, to 95% of it).
SHARES = {"sa_perceiver": 0.36, "anyres": 0.27, "overhead": 0.23, "overhead_tiny": 0.09}
GOAL_MFU = 0.45
GOAL_OVERHEAD = 1.05
GOAL_OVERHEAD_TINY = 1.10
"""Issue 17's goal for the tiny model (``--scale tiny``), where a step is launch-bound and host overhead shows."""
#: Fixed settings: (GPU at paper widths, CPU fallback at tiny widths).
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "llm_layers": (8, None),
    "vision_layers": (None, None),
    "denoiser_layers": (None, None),
    "vocab": (None, None),
    "overhead_llm_layers": (2, None),
    "overhead_denoiser_layers": (2, None),
    "overhead_vocab": (32768, None),
    "micro_batch": (None, 2),
    "grad_accum": (None, 1),
    "warmup": (2, 1),
    "steps": (8, 2),
    "overhead_warmup": (3, 1),
    "overhead_steps": (5, 2),
    "overhead_rounds": (3, 1),
    "budget_s": (420.0, 300.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every part (the default; run.sh passes it)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--tiny", action="store_true", help="the CPU fallback's tiny model (automatic on a CPU)"
    )
    size.add_argument(
        "--paper", action="store_true", help="the paper widths even on a CPU (slow: to check the code path)"
    )
    parser.add_argument("--out", type=Path, help="the JSON file to write")
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--zero-stage", type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument(
        "--peak-tflops", type=float, help="bf16 dense peak (default: the accelerator table's)"
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--checkpointing", dest="checkpointing", action="store_true", default=None)
    check.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    for name, (gpu, cpu) in DEFAULTS.items():
        shown = ["the file's" if x is None else str(x) for x in (gpu, cpu)]
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float if name == "budget_s" else int,
            help=f"default: {shown[0]} (paper widths), {shown[1]} (tiny)",
        )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and not args.tiny and not args.paper:
        import torch  # only to choose the defaults: the parent touches no device

        args.tiny = not torch.cuda.is_available()
    for name, (gpu, cpu) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, cpu if args.tiny else gpu)
    bad = [n for n in DEFAULTS if isinstance(getattr(args, n), int | float) and getattr(args, n) <= 0]
    if bad:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in bad)} must be positive")
    return args


def settings_dict(args: argparse.Namespace) -> dict[str, Any]:
    """What the child measures with (``measure.Settings``' fields)."""

    def dims(prefix: str, vision: int | None) -> dict[str, int | None]:
        return {
            "llm_layers": getattr(args, f"{prefix}llm_layers"),
            "vision_layers": vision,
            "denoiser_layers": getattr(args, f"{prefix}denoiser_layers"),
            "vocab": getattr(args, f"{prefix}vocab"),
        }

    keys = ("micro_batch", "grad_accum", "text_tokens", "checkpointing", "warmup", "steps", "overhead_warmup")
    return {
        "tiny": args.tiny,
        "dims": dims("", args.vision_layers),
        "overhead_dims": dims("overhead_", args.vision_layers),
        **{k: getattr(args, k) for k in keys},
        "overhead_steps": args.overhead_steps,
        "overhead_rounds": args.overhead_rounds,
        "zero_stage": args.zero_stage,
        "peak_tflops": args.peak_tflops,
    }


def part_ends(parts: list[str], start: float, budget: float) -> dict[str, float]:
    """Each part's soft end (seconds since the epoch): its cumulative share of 95% of the budget."""
    total = sum(SHARES[p] for p in parts)
    ends, done = {}, 0.0
    for part in parts:
        done += SHARES[part] / total
        ends[part] = start + 0.95 * budget * done
    return ends


def child(spec: dict[str, Any]) -> None:
    """Measure each part in this process; print one JSON line per part as it finishes."""
    sys.path.insert(0, str(HERE))
    from measure import Settings, measure_device, measure_mode, measure_overhead, release
    from workload import Dims

    raw = spec["settings"]
    settings = Settings(**{**raw, "dims": Dims(**raw["dims"]), "overhead_dims": Dims(**raw["overhead_dims"])})
    if settings.tiny:
        settings = Settings(**{**settings.as_dict(), "dims": Dims(), "overhead_dims": Dims()})
    print(json.dumps({"part": "device", "result": measure_device(settings)}), flush=True)
    for part in spec["parts"]:
        end = spec["ends"][part]
        try:
            if time.time() > end:
                raise TimeoutError("not started: the budget's share for it was spent by the parts before")
            if part == "overhead_tiny":  # the same two loops on the file's tiny model
                result = measure_overhead(replace(settings, tiny=True, overhead_dims=Dims()), end)
            elif part == "overhead":
                result = measure_overhead(settings, end)
            else:
                result = measure_mode(part, settings, end)
            print(json.dumps({"part": part, "result": result}), flush=True)
        except Exception as exc:  # one part failing (out of memory, a missing kernel) leaves the others
            print(json.dumps({"part": part, "error": f"{type(exc).__name__}: {exc}"[:2000]}), flush=True)
        release()  # what a failed part held (its frames went with the exception)


def _derive(mode: dict[str, Any], peak_tflops: float | None) -> None:
    """Medians, tokens/s and MFU of one mode's raw step times, in place."""
    times = mode.get("step_s_raw") or []
    if not times:
        return
    step_s = statistics.median(times)
    samples = mode["micro_batch"] * mode["grad_accum"]
    achieved = mode["flops_per_sample"] * samples / step_s
    mode["step_s"] = step_s
    mode["samples_per_s"] = samples / step_s
    mode["tokens_per_s"] = mode["llm_tokens_per_sample"] * samples / step_s
    mode["achieved_tflops"] = achieved / 1e12
    mode["mfu"] = None if not peak_tflops else achieved / (peak_tflops * 1e12)


def assemble(lines: list[dict[str, Any]], args: argparse.Namespace, wall_s: float, errors: dict) -> dict:
    """The JSON file's content from the child's lines."""
    device = next((x["result"] for x in lines if x["part"] == "device"), {})
    results = {x["part"]: x["result"] for x in lines if "result" in x and x["part"] != "device"}
    errors.update({x["part"]: x["error"] for x in lines if "error" in x})
    for mode in ("sa_perceiver", "anyres"):
        if mode in results:
            _derive(results[mode], device.get("bf16_tflops"))
    vlsa, overhead = results.get("sa_perceiver", {}), results.get("overhead", {})
    tiny = results.get("overhead_tiny", {})
    return {
        "benchmark": "gpu_stage3",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tiny": args.tiny,
        "device": device,
        "settings": {**settings_dict(args), "budget_s": args.budget_s, "parts": args.parts},
        "modes": {m: results[m] for m in ("sa_perceiver", "anyres") if m in results},
        "overhead": overhead or None,
        "vlsa_mfu": vlsa.get("mfu"),
        "goal_mfu": GOAL_MFU,
        "mfu_met": None if vlsa.get("mfu") is None else vlsa["mfu"] >= GOAL_MFU,
        "overhead_ratio": overhead.get("ratio"),
        "goal_overhead": GOAL_OVERHEAD,
        "overhead_met": None if overhead.get("ratio") is None else overhead["ratio"] <= GOAL_OVERHEAD,
        "overhead_tiny": tiny or None,
        "overhead_tiny_ratio": tiny.get("ratio"),
        "goal_overhead_tiny": GOAL_OVERHEAD_TINY,
        "overhead_tiny_met": None if tiny.get("ratio") is None else tiny["ratio"] <= GOAL_OVERHEAD_TINY,
        "errors": errors,
        "wall_s": round(wall_s, 1),
    }


def run_child(args: argparse.Namespace, start: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The child, stopped at the budget; its JSON lines (those printed before a stop too) and errors."""
    spec = {
        "settings": settings_dict(args),
        "parts": args.parts,
        "ends": part_ends(args.parts, start, args.budget_s),
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    errors: dict[str, str] = {}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.budget_s, check=False)
        stdout, stderr = done.stdout, done.stderr
        if done.returncode != 0:
            errors["child"] = f"exit {done.returncode}: {stderr[-1500:]}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
        errors["child"] = f"stopped at the {args.budget_s:.0f} s budget"
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"part"')]
    for part in args.parts:
        if not any(x["part"] == part for x in lines):
            errors.setdefault(part, "not measured: " + errors.get("child", "no result")[-300:])
    return lines, errors


def slug(name: str) -> str:
    """A file-name part from a device name: ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``."""
    words = ["".join(c for c in w if c.isalnum()) for w in name.replace("NVIDIA", "").lower().split()]
    return "-".join(w for w in words if w) or "device"


def default_out(result: dict[str, Any]) -> Path:
    """``$OUT/results-<gpu>.json``, else ``benchmarks/gpu/`` (a tiny run's: the temporary directory)."""
    name = f"results-{'tiny-' if result['tiny'] else ''}{slug(result['device'].get('name') or 'device')}.json"
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / name
    return (Path(tempfile.gettempdir()) / "vlsa-gpu-bench" if result["tiny"] else HERE) / name


def summary(result: dict[str, Any]) -> str:
    def mode(name: str) -> str:
        m = result["modes"].get(name)
        if not m or "tokens_per_s" not in m:
            return f"{name}: not measured ({result['errors'].get(name, '?')[:120]})"
        mfu = "n/a (no peak)" if m["mfu"] is None else f"{m['mfu']:.1%}"
        memory = (
            m["peak_gpu_memory_gib"] if m["peak_gpu_memory_gib"] is not None else m["process_peak_rss_gib"]
        )
        return (
            f"{name}: {m['tokens_per_s']:,.0f} tokens/s ({m['llm_tokens_per_sample']} per sample), MFU {mfu}, "
            f"step {m['step_s']:.3f} s, peak {memory:.1f} GiB"
        )

    def overhead(over: dict[str, Any] | None) -> str:
        if not over:
            return "not measured"
        return (
            f"{over['ratio']:.3f}x ({over['plain_ms_per_step']:.1f} vs {over['platform_ms_per_step']:.1f} ms)"
        )

    goal = (
        "no MFU on a CPU"
        if result["vlsa_mfu"] is None
        else f"VLSA stage-III MFU {result['vlsa_mfu']:.1%}: {'met' if result['mfu_met'] else 'MISSED'}"
    )
    return (
        f"gpu_stage3 on {result['device'].get('name')}{' (tiny)' if result['tiny'] else ''}: "
        f"{mode('sa_perceiver')}; {mode('anyres')}; platform/plain {overhead(result['overhead'])} (goal <= "
        f"{GOAL_OVERHEAD}), tiny model {overhead(result['overhead_tiny'])} (goal <= {GOAL_OVERHEAD_TINY}). "
        f"Goal: VLSA MFU >= {GOAL_MFU:.0%} — {goal}. {result['wall_s']} s."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    start = time.time()
    lines, errors = run_child(args, start)
    result = assemble(lines, args, time.time() - start, errors)
    out = args.out or default_out(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    print(summary(result))
    print(f"wrote {out}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
