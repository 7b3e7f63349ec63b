"""Starting a stage from the previous stage's export, at the paper's hidden sizes: time and peak host memory.

The model is the paper preset's VLSA (SA-Perceiver, reconstruction) with its hidden sizes — LLaMA-3-8B's
4096/14336, CLIP-L's 1024/4096, SD3-medium's MMDiT at 1536 and its whole VAE — and few layers (``--llm-layers``,
``--vision-layers``, ``--denoiser-layers``) and a ``--vocab``-token vocabulary (the full 128,256 alone is 4.2 GB
of embeddings): what fits a CPU benchmark and still has the paper's tensor shapes. It is built once, exported
with ``train.build.write_export``, then loaded in a fresh process two ways:

- ``meta``: ``train.build.load_exported_model``, what a stage does (built on ``meta``, each tensor read once and
  put in place; ``model/materialize.py``);
- ``cpu_init``: the way before (the model built with random initialisation on the CPU, the export loaded over
  it with ``train.build.load_exported``).

Each child reports its wall time to a loaded model and its peak resident memory above what it held after the
imports (``VmHWM`` reset through ``/proc/self/clear_refs``). Goal (issue 17): peak at most 1.3x the weights.
DeepSpeed's set-up and the first step come after this and are not counted here.

    .venv/bin/python benchmarks/stage_start.py [--llm-layers 1] [--vision-layers 2] [--denoiser-layers 1]
        [--vocab 16384] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile

GOAL_RATIO = 1.3
CHILD = r"""
import json, sys, time
from vlsa_platform.model.configuration_vlsa import VLSAConfig
from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration
from vlsa_platform.train.build import load_exported, load_exported_model

def kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])

mode, export = sys.argv[1:3]
vlsa = VLSAConfig.from_pretrained(export)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = kib("VmRSS")
start = time.perf_counter()
if mode == "meta":
    model = load_exported_model(vlsa, export)
else:
    model = VLSAForConditionalGeneration(vlsa)
    load_exported(model, export)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_growth_bytes": (kib("VmHWM") - base) * 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-layers", type=int, default=1)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--denoiser-layers", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=1, help="loads per way (the median is kept)")
    args = parser.parse_args()

    import torch

    from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration
    from vlsa_platform.model.presets import build_vlsa_config
    from vlsa_platform.train.build import write_export

    vlsa = build_vlsa_config("paper", attn_implementation="sdpa")
    vlsa.text_config.num_hidden_layers = args.llm_layers
    vlsa.text_config.vocab_size = args.vocab
    vlsa.vision_config.num_hidden_layers = args.vision_layers
    vlsa.denoiser_config = {**vlsa.denoiser_config, "num_layers": args.denoiser_layers}
    with tempfile.TemporaryDirectory(prefix="vlsa-start-") as tmp:
        torch.manual_seed(0)
        model = VLSAForConditionalGeneration(vlsa)
        state = model.state_dict()
        weights = sum(t.numel() * t.element_size() for t in state.values())
        write_export(tmp, state, model.config, {"stage": "bench"})
        del model, state
        ways = {}
        for mode in ("meta", "cpu_init"):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, tmp], check=True, capture_output=True, text=True
                ).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            ways[mode] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "peak_growth_bytes": statistics.median(r["peak_growth_bytes"] for r in runs),
                "raw": runs,
            }
            ways[mode]["peak_ratio"] = round(ways[mode]["peak_growth_bytes"] / weights, 3)
    result = {
        "benchmark": "stage_start",
        "weights_bytes": weights,
        "ways": ways,
        "goal_peak_ratio": GOAL_RATIO,
        "met": ways["meta"]["peak_ratio"] <= GOAL_RATIO,
        "settings": vars(args),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    meta, old = ways["meta"], ways["cpu_init"]
    print(
        f"stage start from an export ({weights / 2**30:.2f} GiB of weights, paper hidden sizes): on meta "
        f"{meta['seconds']:.1f} s, peak {meta['peak_ratio']:.2f}x the weights (goal <= {GOAL_RATIO}); the way "
        f"before {old['seconds']:.1f} s, {old['peak_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
