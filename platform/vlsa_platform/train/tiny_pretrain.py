"""The tiny preset's "published checkpoints": its sub-models pretrained on the bundled synthetic data.

The paper starts its LLM, vision encoder, VAE and MMDiT from published weights that already know images and
text (§4.1). At tiny scale there are none, so this step makes them, each with its own library's classes and
losses, as the upstream projects pretrain them:

- ``llm``: ``LlamaForCausalLM`` as a language model (its own causal-LM loss) on the training split's
  conversations, rendered with the tokenizer's chat template (``<image>`` dropped: no pixels here).
- ``vae``: ``AutoencoderKL`` as an autoencoder (reconstruction MSE plus a small KL term, as the SD VAE) on the
  training images' L_rec targets (:func:`..data.images.recon_target`, exactly what the frozen VAE encodes later).
- ``vision_encoder``: ``CLIPVisionModel`` with a linear probe on its layer ``vision_feature_layer`` patch
  tokens (what VLSA reads) that predicts the words of each image's caption (multi-label, binary cross-entropy):
  colours, shapes and their positions for the shape scenes, the subject for the photographs.
- ``denoiser``: ``SD3Transformer2DModel`` as a caption-to-image denoiser (:func:`pretrain_denoiser`); off by
  default (0 steps, docs/model.md says why).

The weights ship with the package (``model/presets/tiny/pretrained``, about 2 MB) together with the key they
were built for. The key is the SHA-256 of the sub-models' configs as the preset writes them, the image
geometry, the dataset's content (``train.json``, ``val.json`` and every image's decoded pixels),
:data:`RECIPE_VERSION`, the settings (steps, batch, learning rates, seed) and torch's version (a new
transformers or diffusers keeps it). When the bundled key is not the current one (the synthetic data or a tiny
config changed), the weights are built again on first use into ``<cache root>/tiny-pretrained-<key>`` (cache root:
``$VLSA_CACHE_DIR`` or ``~/.cache/vlsa-platform``; concurrent workers race safely: each writes a temporary
folder, the first rename wins) and a test fails until the bundle is rebuilt with
``python -m vlsa_platform.train.tiny_pretrain --bundle``. Plain ``python -m vlsa_platform.train.tiny_pretrain``
finds (or builds) the weights and prints each part's losses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .. import storage
from ..model.configuration_vlsa import VLSAConfig

#: The parts this step pretrains, in the order it trains them.
PRETRAINED_PARTS: tuple[str, ...] = ("llm", "vae", "vision_encoder", "denoiser")
#: What a cached folder holds when complete (written last, before the rename).
INFO_FILE = "pretrain.json"
#: The key a folder was built for (in the bundled folder and every cached one).
KEY_FILE = "key.txt"
#: Where the package keeps the weights built for the synthetic data it generates.
BUNDLED = Path(__file__).resolve().parents[1] / "model" / "presets" / "tiny" / "pretrained"
#: Bumped by every change to this module that changes what it trains (part of the key).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class PretrainSettings:
    """How long and how each part trains (all in the cache key)."""

    steps: dict[str, int] = field(
        default_factory=lambda: {"llm": 100, "vae": 60, "vision_encoder": 100, "denoiser": 0}
    )
    """Optimizer steps per part; a part with 0 steps is left out (no folder, random weights downstream)."""
    batch: dict[str, int] = field(
        default_factory=lambda: {"llm": 16, "vae": 8, "vision_encoder": 16, "denoiser": 16}
    )
    """Samples per step, per part."""
    lr: dict[str, float] = field(
        default_factory=lambda: {"llm": 3e-3, "vae": 2e-3, "vision_encoder": 2e-3, "denoiser": 2e-3}
    )
    """AdamW learning rate per part (constant after 10 % linear warm-up)."""
    kl_weight: float = 1e-4
    """Weight of the VAE's KL term (per latent element) against its per-pixel MSE."""
    seed: int = 0
    """Seed of every part's initial weights and sampling."""

    def active(self) -> tuple[str, ...]:
        """The parts with steps, in training order."""
        return tuple(p for p in PRETRAINED_PARTS if self.steps.get(p, 0) > 0)


def tiny_base_config() -> VLSAConfig:
    """The tiny preset's model config without added vocabulary (the VQ tokens are added when loading)."""
    from ..model.presets import build_vlsa_config

    return build_vlsa_config("tiny", attn_implementation="sdpa")


# ------------------------------------------------------------------------------------------------ the key


def dataset_digest(root: str | os.PathLike[str]) -> str:
    """SHA-256 of a LLaVA-format dataset folder's split files and the decoded pixels of every image they name
    (pixels, not file bytes: another PNG encoder writing the same image keeps the key)."""
    from ..data.synthetic import SPLIT_FILES

    base = Path(root)
    digest = hashlib.sha256()
    for name in sorted(SPLIT_FILES.values()):
        raw = (base / name).read_bytes()
        digest.update(name.encode() + b"\0" + raw)
        for rel in sorted({r["image"] for r in json.loads(raw) if r.get("image")}):
            with Image.open(base / rel) as image:
                rgb = image.convert("RGB")
            digest.update(f"{rel}\0{rgb.size}\0".encode() + rgb.tobytes())
    return digest.hexdigest()


def cache_key(config: VLSAConfig, data_digest: str, settings: PretrainSettings) -> str:
    """SHA-256 of what the pretrained weights depend on: the sub-model configs as the preset writes them (not
    as a library version expands them: a new transformers keeps the key), the image geometry, the data, the
    recipe's version and settings, torch's version."""
    from ..model.presets import tiny_configs

    payload = {
        "configs": tiny_configs(),
        "recon_resolution": config.recon_resolution,
        "grid_pinpoints": config.grid_pinpoints,
        "image_mean": config.image_mean,
        "image_std": config.image_std,
        "vision_feature_layer": config.vision_feature_layer,
        "data": data_digest,
        "recipe": RECIPE_VERSION,
        "settings": asdict(settings),
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ the data


def _records(root: Path, split: str) -> list[dict[str, Any]]:
    from ..data.synthetic import SPLIT_FILES

    return json.loads((root / SPLIT_FILES[split]).read_text(encoding="utf-8"))


def _texts(records: Sequence[dict[str, Any]], tokenizer: Any) -> list[str]:
    """Each conversation through the chat template, with the ``<image>`` placeholder dropped."""
    roles = {"human": "user", "gpt": "assistant"}
    out = []
    for record in records:
        turns = [
            {"role": roles[t["from"]], "content": t["value"].replace("<image>", "").strip()}
            for t in record["conversations"]
        ]
        out.append(tokenizer.apply_chat_template(turns, tokenize=False))
    return out


def _caption_words(record: dict[str, Any]) -> list[str] | None:
    """The words of an image's caption (a one-exchange record whose answer is a sentence), else ``None``."""
    turns = record["conversations"]
    if not record.get("image") or len(turns) != 2 or not turns[1]["value"].rstrip().endswith("."):
        return None
    return re.findall(r"[a-z]+", turns[1]["value"].lower())


def _batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over ``range(n)``."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


def _optimizer(model: torch.nn.Module, lr: float, steps: int) -> tuple[Any, Any]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    return opt, sched


def _fit(
    part: str,
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    evaluate: Callable[[], float],
    settings: PretrainSettings,
) -> dict[str, float]:
    """``part``'s AdamW steps of ``loss_fn(indices)``; the held-out loss before and after, the first and last
    training losses, and the wall-clock and CPU (all threads) seconds of the steps."""
    generator = torch.Generator().manual_seed(settings.seed)
    steps = settings.steps[part]
    opt, sched = _optimizer(model, settings.lr[part], steps)
    before = evaluate()
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    batches = _batches(n, min(settings.batch[part], n), generator)
    first = last = float("nan")
    for step in range(steps):
        loss = loss_fn(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    return {"val_before": before, "val_after": evaluate(), "train_first": first, "train_last": last,
            "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "steps": steps}  # fmt: skip


# ------------------------------------------------------------------------------------------------ the parts


def pretrain_llm(
    config: VLSAConfig, root: Path, settings: PretrainSettings, trained: dict[str, torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``LlamaForCausalLM`` trained with its own LM loss on the training conversations; val loss on ``val``."""
    from transformers import LlamaForCausalLM

    from ..model.tokenizer import load_tiny_tokenizer

    tokenizer = load_tiny_tokenizer()
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config.text_config)

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return enc["input_ids"], labels

    train_ids, train_labels = encode(_texts(_records(root, "train"), tokenizer))
    val_ids, val_labels = encode(_texts(_records(root, "val"), tokenizer))

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        width = int((train_labels[idx] != -100).sum(1).max())
        return model(input_ids=train_ids[idx, :width], labels=train_labels[idx, :width]).loss

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        return model(input_ids=val_ids, labels=val_labels).loss.item()

    return model, _fit("llm", model, loss_fn, len(train_ids), evaluate, settings)


def _load_images(root: Path, records: Sequence[dict[str, Any]]) -> list[Image.Image]:
    return [Image.open(root / r["image"]).convert("RGB") for r in records]


def pretrain_vae(
    config: VLSAConfig, root: Path, settings: PretrainSettings, trained: dict[str, torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``AutoencoderKL`` trained to reconstruct the training images' L_rec targets (MSE + ``kl_weight`` KL)."""
    from diffusers import AutoencoderKL

    from ..data.images import recon_target

    def targets(split: str) -> torch.Tensor:
        images = _load_images(root, [r for r in _records(root, split) if r.get("image")])
        return torch.stack([recon_target(img, config) for img in images]).float()

    train, val = targets("train"), targets("val")
    torch.manual_seed(settings.seed)
    model = AutoencoderKL.from_config(config.vae_config)
    generator = torch.Generator().manual_seed(settings.seed + 1)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        x = train[idx]
        posterior = model.encode(x).latent_dist
        recon = model.decode(posterior.sample(generator=generator)).sample
        return F.mse_loss(recon, x) + settings.kl_weight * posterior.kl().mean() / posterior.mean[0].numel()

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        return F.mse_loss(model.decode(model.encode(val).latent_dist.mode()).sample, val).item()

    return model, _fit("vae", model, loss_fn, len(train), evaluate, settings)


def pretrain_vision_encoder(
    config: VLSAConfig, root: Path, settings: PretrainSettings, trained: dict[str, torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``CLIPVisionModel`` with a linear probe on its ``vision_feature_layer`` patch tokens that predicts the
    caption words of each captioned training image (BCE); the probe is dropped afterwards."""
    from transformers import CLIPVisionModel

    from ..data.images import prepare_image

    def labelled(split: str) -> tuple[torch.Tensor, list[list[str]]]:
        pairs = [(r, w) for r in _records(root, split) if (w := _caption_words(r))]
        images = _load_images(root, [r for r, _ in pairs])
        return torch.stack([prepare_image(i, config, recon=False).lowres for i in images]), [
            w for _, w in pairs
        ]

    train_x, train_words = labelled("train")
    val_x, val_words = labelled("val")
    vocab = sorted({w for words in train_words for w in words})
    index = {w: i for i, w in enumerate(vocab)}

    def multi_hot(words: list[list[str]]) -> torch.Tensor:
        out = torch.zeros(len(words), len(vocab))
        for row, ws in enumerate(words):
            out[row, [index[w] for w in ws if w in index]] = 1.0
        return out

    train_y, val_y = multi_hot(train_words), multi_hot(val_words)
    torch.manual_seed(settings.seed)
    model = CLIPVisionModel(config.vision_config)
    width = config.vision_config.hidden_size * config.tokens_per_tile
    model.probe = torch.nn.Linear(width, len(vocab))  # trained with the tower, dropped before saving

    def logits(x: torch.Tensor) -> torch.Tensor:
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        return model.probe(hidden[:, 1:].flatten(1))  # CLS dropped, as VLSA reads it

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits(train_x[idx]), train_y[idx])

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        return F.binary_cross_entropy_with_logits(logits(val_x), val_y).item()

    stats = _fit("vision_encoder", model, loss_fn, len(train_x), evaluate, settings)
    del model.probe
    return model, stats


def _captions(root: Path, split: str) -> tuple[list[Image.Image], list[str]]:
    """The captioned images of ``split`` and their captions."""
    records = [r for r in _records(root, split) if _caption_words(r)]
    return _load_images(root, records), [r["conversations"][1]["value"] for r in records]


def pretrain_denoiser(
    config: VLSAConfig, root: Path, settings: PretrainSettings, trained: dict[str, torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``SD3Transformer2DModel`` trained as SD3 is, a text-to-image denoiser: L_rec (the model's own
    :class:`~..model.reconstruction.ReconstructionObjective`, rectified flow with SD3's timestep density and
    weighting) on the pretrained VAE's latents of the captioned training images, conditioned on the pretrained
    LLM's last hidden states of each caption (SD3's text-encoder states). An Epigone-shaped adapter between the
    two trains along and is dropped afterwards: VLSA's own Epigone starts fresh, as in the paper."""
    from ..data.images import recon_target
    from ..model.reconstruction import ReconstructionObjective
    from ..model.tokenizer import load_tiny_tokenizer

    tokenizer, llm = load_tiny_tokenizer(), trained["llm"].eval()

    @torch.no_grad()
    def encoded(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, captions = _captions(root, split)
        pixels = torch.stack([recon_target(img, config) for img in images]).float()
        params = trained["vae"].encode(pixels).latent_dist.parameters
        enc = tokenizer(captions, return_tensors="pt", padding=True, add_special_tokens=False)
        states = llm.model(**enc).last_hidden_state * enc["attention_mask"][..., None]
        pooled = states.sum(1) / enc["attention_mask"].sum(1, keepdim=True)
        return params, states, pooled

    train, val = encoded("train"), encoded("val")
    torch.manual_seed(settings.seed)
    objective = ReconstructionObjective(config)
    objective.vae = trained["vae"].requires_grad_(False).eval()
    model = objective.denoiser

    def rec_loss(params: torch.Tensor, states: torch.Tensor, pooled: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return objective(states, pooled, latent_params=params, generator=generator).loss

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return rec_loss(*(t[idx] for t in train), seed=int(idx[0]) + settings.seed)

    @torch.no_grad()
    def evaluate() -> float:
        objective.eval()
        return rec_loss(*val, seed=settings.seed).item()  # the same noise and timesteps every time

    stats = _fit("denoiser", objective, loss_fn, len(train[0]), evaluate, settings)
    return model, stats


_TRAINERS = {
    "llm": pretrain_llm,
    "vae": pretrain_vae,
    "vision_encoder": pretrain_vision_encoder,
    "denoiser": pretrain_denoiser,
}


# ------------------------------------------------------------------------------------------------ the cache


def pretrain_tiny(
    out_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    settings: PretrainSettings | None = None,
) -> dict[str, Any]:
    """Pretrain every active part on ``dataset`` and save each with ``save_pretrained`` under
    ``out_dir/<part>``; returns (and writes to ``pretrain.json``) each part's losses and seconds."""
    settings = settings or PretrainSettings()
    config, root, out = tiny_base_config(), Path(dataset), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"settings": asdict(settings), "parts": {}}
    trained: dict[str, torch.nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        for part in settings.active():
            model, stats = _TRAINERS[part](config, root, settings, trained)
            model.save_pretrained(str(out / part))
            trained[part] = model
            info["parts"][part] = stats
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _key_of(folder: Path) -> str | None:
    """The key a complete weights folder was built for (``None``: not a complete folder)."""
    if not (folder / INFO_FILE).is_file() or not (folder / KEY_FILE).is_file():
        return None
    return (folder / KEY_FILE).read_text().strip()


def current_key(
    settings: PretrainSettings | None = None,
    dataset: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The key of the weights for ``settings`` on ``dataset`` (default: the bundled synthetic dataset,
    generated into the cache root if it is not there yet)."""
    from ..data.synthetic import bundled_synthetic

    base = Path(cache_dir) if cache_dir is not None else storage.default_cache_dir()
    root = Path(dataset) if dataset is not None else bundled_synthetic(base)
    return cache_key(tiny_base_config(), dataset_digest(root), settings or PretrainSettings())


def tiny_pretrained(
    cache_dir: str | os.PathLike[str] | None = None,
    settings: PretrainSettings | None = None,
    dataset: str | os.PathLike[str] | None = None,
    bundled: Path | None = BUNDLED,
) -> Path:
    """The folder of the tiny preset's pretrained sub-models: the bundled one when it was built for the
    current key, else the cached one, built on first use (see the module docstring).

    ``dataset``: the data to pretrain on (default: the bundled synthetic dataset, generated into the cache).
    """
    from ..data.synthetic import bundled_synthetic

    settings = settings or PretrainSettings()
    base = Path(cache_dir) if cache_dir is not None else storage.default_cache_dir()
    root = Path(dataset) if dataset is not None else bundled_synthetic(base)
    key = current_key(settings, root, base)
    if bundled is not None and _key_of(bundled) == key:
        return bundled
    target = base / f"tiny-pretrained-{key[:16]}"
    if _key_of(target) == key:
        return target
    build(target, root, settings, key)
    return target


def build(target: Path, dataset: Path, settings: PretrainSettings, key: str) -> None:
    """Pretrain into a temporary folder beside ``target``, then rename it into place (the first rename wins;
    an incomplete ``target`` is replaced)."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        pretrain_tiny(tmp, dataset, settings)
        (tmp / KEY_FILE).write_text(key + "\n")
        if target.exists() and _key_of(target) is None:
            shutil.rmtree(target, ignore_errors=True)  # an interrupted layout
        try:
            os.rename(tmp, target)
        except OSError:
            if _key_of(target) != key:  # not another worker's complete copy: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_sources(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{part: local folder}`` of the pretrained tiny sub-models, for ``model.pretrained.build_from_pretrained``."""
    folder = tiny_pretrained(cache_dir)
    return {part: str(folder / part) for part in PRETRAINED_PARTS if (folder / part).is_dir()}


def main(argv: list[str] | None = None) -> int:
    """Find (or build) the tiny weights and print where they are and each part's losses; ``--bundle`` builds
    them into the package's folder (for a commit) when its key is not the current one."""
    parser = argparse.ArgumentParser(prog="python -m vlsa_platform.train.tiny_pretrain", description=__doc__)
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default $VLSA_CACHE_DIR or ~/.cache/…)"
    )
    parser.add_argument(
        "--bundle", action="store_true", help=f"rebuild the package's weights ({BUNDLED}) if stale"
    )
    args = parser.parse_args(argv)
    if args.bundle:
        key = current_key(cache_dir=args.cache_dir)
        if _key_of(BUNDLED) != key:
            from ..data.synthetic import bundled_synthetic

            base = Path(args.cache_dir) if args.cache_dir else storage.default_cache_dir()
            shutil.rmtree(BUNDLED, ignore_errors=True)
            build(BUNDLED, bundled_synthetic(base), PretrainSettings(), key)
        folder = BUNDLED
    else:
        folder = tiny_pretrained(args.cache_dir)
    info = json.loads((folder / INFO_FILE).read_text())
    print(folder)
    for part, stats in info["parts"].items():
        print(f"{part:15s} val {stats['val_before']:.4f} -> {stats['val_after']:.4f}  "
              f"({stats['steps']} steps, {stats['seconds']:.1f} s)")  # fmt: skip
    return 0


__all__ = [
    "BUNDLED",
    "INFO_FILE",
    "KEY_FILE",
    "PRETRAINED_PARTS",
    "RECIPE_VERSION",
    "PretrainSettings",
    "build",
    "cache_key",
    "current_key",
    "dataset_digest",
    "pretrain_denoiser",
    "pretrain_tiny",
    "tiny_base_config",
    "tiny_pretrained",
    "tiny_sources",
]

if __name__ == "__main__":
    raise SystemExit(main())
