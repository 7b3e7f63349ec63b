"""``benchmarks/gpu``: the GPU script's CPU fallback end to end (the same code, the tiny model), ``run.sh``'s
syntax, the MFU arithmetic and device table look-up, and ``bench.py``'s GPU rows with and without a result."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "benchmarks" / "gpu"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CPU-fallback run of every part, as ``run.sh`` starts it, with one timed step each."""
    out = tmp_path_factory.mktemp("gpu-bench") / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    command = [str(GPU / "run.sh"), "--tiny", "--steps", "1", "--overhead-steps", "1", "--out", str(out)]
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert json.loads(printed[-1]) == result  # the JSON line printed is the file
    return result


@pytest.mark.e2e  # a subprocess of the whole script (20-50 s here): with the e2e tests
def test_cpu_fallback_measures_every_part_with_no_mfu(tiny: dict[str, Any]) -> None:
    assert tiny["errors"] == {}
    assert tiny["tiny"] is True and tiny["device"]["kind"] == "cpu"
    assert tiny["device"]["bf16_tflops"] is None and tiny["device"]["attn_implementation"] == "sdpa"
    assert set(tiny["modes"]) == {"sa_perceiver", "anyres"}
    assert tiny["vlsa_mfu"] is None and tiny["mfu_met"] is None and tiny["goal_mfu"] == 0.45
    for mode in tiny["modes"].values():
        assert mode["mfu"] is None and mode["peak_gpu_memory_gib"] is None
        assert mode["tokens_per_s"] > 0 and mode["process_peak_rss_gib"] > 0 and mode["step_s_raw"]
        assert mode["step_s"] == statistics.median(mode["step_s_raw"])
        samples = mode["micro_batch"] * mode["grad_accum"]
        assert mode["tokens_per_s"] == pytest.approx(mode["llm_tokens_per_sample"] * samples / mode["step_s"])
        assert mode["flops_per_sample"] == pytest.approx(sum(mode["flops_per_sample_by_part"].values()))


@pytest.mark.e2e  # a subprocess of the whole script (20-50 s here): with the e2e tests
def test_cpu_fallback_anyres_sees_more_tokens_and_vlsa_trains_the_denoiser(tiny: dict[str, Any]) -> None:
    vlsa, anyres = tiny["modes"]["sa_perceiver"], tiny["modes"]["anyres"]
    assert vlsa["image_px"] == anyres["image_px"] == 224  # a 2x2 grid of the tiny tower's 112 px tiles
    assert anyres["visual_tokens_per_image"] > vlsa["visual_tokens_per_image"]
    assert anyres["llm_tokens_per_sample"] > vlsa["llm_tokens_per_sample"]
    assert anyres["flops_per_sample_by_part"]["llm"] > vlsa["flops_per_sample_by_part"]["llm"]
    assert "denoiser" in vlsa["parts_trained"] and vlsa["loss_weights"]["rec"] > 0
    assert "denoiser" not in anyres["flops_per_sample_by_part"] and anyres["loss_weights"]["rec"] == 0


@pytest.mark.e2e  # a subprocess of the whole script (20-50 s here): with the e2e tests
def test_cpu_fallback_overhead_is_the_ratio_of_the_medians(tiny: dict[str, Any]) -> None:
    over = tiny["overhead"]
    assert over["plain_s_raw"] and len(over["plain_s_raw"]) == len(over["platform_s_raw"])
    ratio = statistics.median(over["platform_s_raw"]) / statistics.median(over["plain_s_raw"])
    assert tiny["overhead_ratio"] == over["ratio"] == pytest.approx(ratio, abs=1e-4)
    assert tiny["overhead_met"] == (over["ratio"] <= tiny["goal_overhead"])
    small = tiny["overhead_tiny"]  # the tiny model's part: the same loops (on a CPU, the same model)
    assert small["plain_s_raw"] and tiny["overhead_tiny_ratio"] == small["ratio"] and small["ratio"] > 0
    assert tiny["goal_overhead_tiny"] == 1.1 and tiny["overhead_tiny_met"] == (small["ratio"] <= 1.1)


def test_run_sh_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(GPU / "run.sh")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert os.access(GPU / "run.sh", os.X_OK)


def test_mfu_is_model_flops_over_time_over_the_peak() -> None:
    script = _load(GPU / "stage3_step.py", "gpu_stage3_step")
    mode = {"step_s_raw": [2.0, 1.0, 3.0], "micro_batch": 4, "grad_accum": 4, "flops_per_sample": 25e12}
    mode["llm_tokens_per_sample"] = 641
    script._derive(mode, 989.0)
    assert mode["step_s"] == 2.0
    assert mode["tokens_per_s"] == 641 * 16 / 2.0
    assert mode["mfu"] == pytest.approx(25e12 * 16 / 2.0 / 989e12)
    script._derive(mode, None)
    assert mode["mfu"] is None
    assert script.slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"


def test_bf16_peak_comes_from_the_accelerator_table() -> None:
    hardware = _load(GPU / "hardware.py", "gpu_hardware")
    assert hardware.accelerator_class("NVIDIA H100 80GB HBM3", 79.6).name == "H100"
    assert hardware.accelerator_class("NVIDIA H200", 139.8).name == "H200"
    assert hardware.accelerator_class("NVIDIA A100-SXM4-40GB", 39.4).name == "A100-40G"
    assert hardware.accelerator_class("NVIDIA A100-SXM4-80GB", 79.2).name == "A100-80G"
    assert hardware.accelerator_class("NVIDIA L4", 22.5).name == "L4"
    assert hardware.accelerator_class("NVIDIA L40S", 44.4) is None  # not the L4's peak
    assert hardware.accelerator_class("NVIDIA GeForce RTX 4090", 23.6) is None
    assert hardware.accelerator_class("NVIDIA H200", 139.8).bf16_tflops == 989.0


def _gpu_result(mfu: float, ratio: float, tiny: bool = False) -> dict[str, Any]:
    mode = {"mfu": mfu, "tokens_per_s": 12345.0, "peak_gpu_memory_gib": 50.0}
    return {
        "benchmark": "gpu_stage3",
        "date": "2026-12-03T09:00:00+00:00",
        "tiny": tiny,
        "device": {"kind": "cpu" if tiny else "cuda", "name": "NVIDIA H100 80GB HBM3"},
        "modes": {"sa_perceiver": mode, "anyres": {**mode, "mfu": mfu / 2}},
        "vlsa_mfu": mfu,
        "overhead_ratio": ratio,
        "overhead_tiny_ratio": 1.12,
        "errors": {},
    }


def test_bench_rows_say_no_gpu_without_a_result_and_show_one_when_committed(tmp_path: Path) -> None:
    bench = _load(ROOT / "benchmarks" / "bench.py", "bench_for_gpu_rows")
    assert bench.gpu_results(tmp_path) == []
    empty = bench.gpu_rows([])
    assert len(empty) == len(bench.GPU_FIGURES)
    assert all(bench.NO_GPU in row for row in empty)

    (tmp_path / "results-tiny-x86-64.json").write_text(json.dumps(_gpu_result(0.5, 1.0, tiny=True)))
    assert bench.gpu_results(tmp_path) == []  # a CPU fallback run is no GPU figure
    (tmp_path / "results-h100-80gb-hbm3.json").write_text(json.dumps(_gpu_result(0.40, 1.02)))
    rows = bench.gpu_rows(bench.gpu_results(tmp_path))
    by_name = {row.split(" | ")[0].lstrip("| "): row for row in rows}
    mfu = by_name["GPU stage III MFU, VLSA (672x672, paper widths)"]
    assert "0.400" in mfu and ">= 0.45" in mfu and "**missed**" in mfu and "NVIDIA H100" in mfu
    overhead = next(row for name, row in by_name.items() if name.startswith("platform step"))
    assert "1.02 x" in overhead and "<= 1.05" in overhead and "| met |" in overhead
    small = by_name["platform step / plain PyTorch step, GPU bf16 ZeRO-0 (tiny model)"]
    assert "1.12 x" in small and "<= 1.1" in small and "**missed**" in small
    assert not any(bench.NO_GPU in row for row in rows)
