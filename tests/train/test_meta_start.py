"""A stage started from an export is built on ``meta`` and the export's tensors are put in place
(``train.build.load_exported_model``): at the paper's hidden sizes its host memory peaks near one copy of the
weights, and the model equals the old way's (random init on the CPU, then the export loaded over it) bit for bit,
including the non-persistent buffers it re-creates; LoRA, a bf16 export (its never-trained VAE from the
source's float32 weights instead of the export's rounding) and tied embeddings load as before, and an export
that does not fit is refused with a clear error.

The paper-size model has the paper preset's hidden sizes (LLaMA-3-8B 4096/14336, CLIP-L 1024/4096, SD3-medium
MMDiT 1536, its full VAE) with 1 LLM layer, 2 CLIP layers and 1 MMDiT layer, and a 16,384-token vocabulary
instead of 128,256: the full vocabulary alone would be 4.2 GB of embeddings, more than this test may use. It is
loaded in a fresh process so that its peak resident memory measures the load only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.data.targets import fingerprint
from vlsa_platform.model.configuration_vlsa import VLSAConfig
from vlsa_platform.model.lora import apply_lora
from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration
from vlsa_platform.model.parts import part_of
from vlsa_platform.model.presets import build_vlsa_config
from vlsa_platform.train.build import (
    build_model,
    load_exported_model,
    lora_settings_for,
    vlsa_config_for,
    write_export,
)

ROOT = Path(__file__).resolve().parents[2]
#: The issue's bound: peak host memory of a load at most this many times the weights' bytes.
MAX_PEAK_RATIO = 1.3
_BUFFERS_FILE = "non_persistent_buffers.pt"

# Run in a fresh interpreter: the growth of the resident set while the model is built from the export (the
# high-water mark VmHWM, reset once the imports are done; getrusage's ru_maxrss would keep the launching process's
# peak across exec), then every tensor compared with the export file and the reference's non-persistent buffers.
_CHILD = r"""
import json, sys
import torch
from safetensors import safe_open
from vlsa_platform.model.configuration_vlsa import VLSAConfig
from vlsa_platform.train.build import WEIGHTS_FILE, load_exported_model

def status_kib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])

export, buffers_file = sys.argv[1:3]
vlsa = VLSAConfig.from_pretrained(export)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak to the current resident set
base = status_kib("VmRSS")
model = load_exported_model(vlsa, export)
peak = status_kib("VmHWM")
state = model.state_dict()
differ = []
with safe_open(f"{export}/{WEIGHTS_FILE}", framework="pt") as f:
    keys = set(f.keys())
    differ += sorted(keys ^ set(state))
    differ += [k for k in sorted(keys & set(state)) if not torch.equal(state[k], f.get_tensor(k))]
buffers = torch.load(buffers_file)
mine = dict(model.named_non_persistent_buffers())
differ += [k for k in buffers if k not in mine or not torch.equal(mine[k], buffers[k])]
dtypes = sorted({str(p.dtype) for p in model.parameters()})
devices = sorted({p.device.type for p in (*model.parameters(), *model.buffers())})
print(json.dumps({"growth_bytes": (peak - base) * 1024, "differ": differ, "buffers": sorted(buffers),
                  "dtypes": dtypes, "devices": devices}))
"""


def _paper_few_layers() -> VLSAConfig:
    """The paper preset's VLSA (SA-Perceiver, reconstruction) with its hidden sizes and few layers."""
    vlsa = build_vlsa_config("paper", attn_implementation="sdpa")
    vlsa.text_config.num_hidden_layers = 1
    vlsa.text_config.vocab_size = 16384
    vlsa.vision_config.num_hidden_layers = 2
    vlsa.denoiser_config = {**vlsa.denoiser_config, "num_layers": 1}
    return vlsa


@pytest.fixture(scope="module")
def paper_export(tmp_path_factory) -> tuple[Path, int]:
    """The export of a paper-size model built the old way (random init on the CPU), with that model's
    non-persistent buffers beside it; returns the folder and the weights' bytes."""
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    reference = VLSAForConditionalGeneration(_paper_few_layers())
    state = reference.state_dict()
    write_export(out, state, reference.config, {"stage": "test"})
    torch.save(dict(reference.named_non_persistent_buffers()), out / _BUFFERS_FILE)
    return out, sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.e2e  # about 40 s here: a 2.4 GB model built, written and loaded (make test-e2e)
def test_a_paper_size_stage_loads_in_place_in_one_copy_and_equals_the_export(paper_export):
    export, weights_bytes = paper_export
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(export), str(export / _BUFFERS_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    ratio = result["growth_bytes"] / weights_bytes
    print(f"weights {weights_bytes / 2**30:.2f} GiB, peak RSS growth {ratio:.3f}x")
    assert ratio <= MAX_PEAK_RATIO
    assert result["differ"] == []
    assert {"language_model.model.rotary_emb.inv_freq", "vision_tower.embeddings.position_ids"} <= set(
        result["buffers"]
    )
    assert result["dtypes"] == ["torch.float32"]
    assert result["devices"] == ["cpu"]


def _tiny(*overrides: str):
    return load_experiment(
        ROOT / "experiments" / "vlsa_paper.yaml",
        scale="tiny",
        overrides=["model.tiny_weights=random", *overrides],
    )


def _old_way(vlsa: VLSAConfig, state: dict[str, torch.Tensor], config=None) -> VLSAForConditionalGeneration:
    """What a stage built before: random init on the CPU, LoRA, the export copied over it."""
    model = VLSAForConditionalGeneration(vlsa)
    lora = lora_settings_for(config) if config is not None else None
    if lora is not None:
        apply_lora(model, lora)
    model.load_state_dict(state, strict=True)
    return model


def test_a_lora_stage_from_a_bf16_export_matches_the_old_way(tmp_path):
    config = _tiny("model.lora.enabled=true")
    vlsa = vlsa_config_for(config)
    trained = build_model(config)
    state = {k: v.to(torch.bfloat16) for k, v in trained.state_dict().items()}  # as a bf16 run exports
    write_export(tmp_path, state, vlsa, {"stage": "stage1"})

    loaded = build_model(config, init_from=str(tmp_path))
    old = _old_way(vlsa, state, config)
    assert not any(p.is_meta for p in loaded.parameters())
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    source = dict(trained.named_parameters())
    vae_rounded = 0
    for (name, mine), (old_name, theirs) in zip(
        (*loaded.named_parameters(), *loaded.named_buffers()),
        (*old.named_parameters(), *old.named_buffers()),
        strict=True,
    ):
        assert name == old_name
        assert mine.requires_grad == theirs.requires_grad, name
        if part_of(name) == "vae" and name in source:
            # the never-trained VAE from its source's float32 weights, not the export's 16-bit rounding: the
            # frozen-target cache keys latents by them, as the fill and the first stage hold them
            assert torch.equal(mine, source[name]), name
            vae_rounded += not torch.equal(mine, theirs)
        else:
            assert torch.equal(mine, theirs), name
    assert vae_rounded > 0  # the export did round the VAE: the source is what was loaded
    assert fingerprint(loaded.reconstruction.vae) == fingerprint(trained.reconstruction.vae)
    # The re-created buffers work: the LLM (rotary embedding) and the vision tower (position ids) compute
    # what the old way's do.
    ids = torch.randint(0, vlsa.text_config.vocab_size, (2, 7))
    pixels = torch.randn(2, 3, vlsa.vision_config.image_size, vlsa.vision_config.image_size)
    with torch.no_grad():
        loaded.eval(), old.eval()
        assert torch.equal(
            loaded.language_model(input_ids=ids).logits, old.language_model(input_ids=ids).logits
        )
        assert torch.equal(loaded._encode(pixels), old._encode(pixels))


def test_tied_embeddings_are_tied_again(tmp_path):
    vlsa = build_vlsa_config("tiny", recon=False)
    vlsa.text_config.tie_word_embeddings = True
    reference = VLSAForConditionalGeneration(vlsa)
    llm = reference.language_model
    assert llm.lm_head.weight is llm.model.embed_tokens.weight
    write_export(tmp_path, {k: v.clone() for k, v in reference.state_dict().items()}, vlsa, {})

    loaded = load_exported_model(vlsa, str(tmp_path)).language_model
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, llm.lm_head.weight)


def test_an_export_with_a_missing_key_is_refused_clearly(tmp_path):
    config = _tiny()
    state = build_model(config).state_dict()
    gone = "multi_modal_projector.linear_2.weight"
    assert gone in state
    write_export(tmp_path, {k: v for k, v in state.items() if k != gone}, vlsa_config_for(config), {})

    with pytest.raises(ValueError, match=rf"does not fit this model \(missing \['{gone}'\]"):
        build_model(config, init_from=str(tmp_path))
