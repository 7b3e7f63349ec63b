"""What a submission's fill covers (runs, kinds, images) and what it reports, without computing targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform.config.loader import load_experiment
from vlsa_platform.orchestration import cache_fill
from vlsa_platform.orchestration.targets import FillReport
from vlsa_platform.orchestration.training import target_cache_root

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


def tiny(name: str, *overrides: str):
    return load_experiment(EXPERIMENTS / name, scale="tiny", overrides=list(overrides))


def test_a_sweep_fills_once_for_all_its_trials():
    config = tiny("loss_ratio_sweep.yaml")
    runs = cache_fill.run_configs(config)
    assert sorted(r.loss.rec_weight for r in runs) == [0.1, 0.3, 1.0, 3.0]
    (one,) = cache_fill._passes(config)  # rec_weight changes no frozen weight and no image
    assert one.kinds == {"vq", "vae"}
    assert list(one.uris) == cache_fill.stage_images(runs[0])
    assert all(Path(u).is_absolute() and Path(u).is_file() for u in one.uris)


def test_an_ablation_fills_for_its_variants_with_a_vae_from_one_that_has_it():
    config = tiny("ablation.yaml")
    passes = cache_fill._passes(config)
    assert len(passes) == 1  # the tiny preset's pretrained VAE and seeded VQ-VAE are every variant's
    assert passes[0].kinds == {"vq", "vae"} and passes[0].config.model.recon


def test_random_tiny_weights_depend_on_the_whole_model_section():
    base = tiny("vlsa_paper.yaml", "model.tiny_weights=random")
    other = tiny("vlsa_paper.yaml", "model.tiny_weights=random", "model.cognition=false")
    assert cache_fill.frozen_identity(base) != cache_fill.frozen_identity(other)
    pretrained = tiny("vlsa_paper.yaml"), tiny("vlsa_paper.yaml", "model.cognition=false")
    assert cache_fill.frozen_identity(pretrained[0]) == cache_fill.frozen_identity(pretrained[1])


class Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((dict(metrics), step))


def test_the_fill_prints_one_line_and_logs_its_counts_on_the_parent(tmp_path, monkeypatch):
    config = tiny("loss_ratio_sweep.yaml")
    calls = []

    def fake_fill(uris, root, build, **options):
        calls.append((len(uris), root, options))
        return FillReport(images=len(uris), computed=3, reused=len(uris) * 2 - 3, encoder_calls={"vae": 3})

    monkeypatch.setattr(cache_fill, "fill_uris", fake_fill)
    lines: list[str] = []
    tracker = Recorder()
    report = cache_fill.fill_for_submission(
        config, str(tmp_path), use_ray=False, say=lines.append, tracker=tracker
    )
    ((images, root, options),) = calls
    assert root == target_cache_root(str(tmp_path), config.name) and options["use_ray"] is False
    assert set(options["kinds"]) == {"vq", "vae"}
    assert len(lines) == 1 and lines[0].startswith(f"target cache: {images} images, 3 entries computed")
    ((metrics, step),) = tracker.logged
    assert step == 0 and metrics[cache_fill.FILL_IMAGES] == images == report.images
    assert metrics["cache/encoded/vae"] == 3 and metrics["cache/encoded/vq"] == 0


def test_a_failed_fill_is_reported_and_the_trials_start_anyway(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("the VAE's weights are not reachable")

    monkeypatch.setattr(cache_fill, "fill_uris", broken)
    lines: list[str] = []
    tracker = Recorder()
    result = cache_fill.fill_before_trials(
        tiny("loss_ratio_sweep.yaml"), str(tmp_path), lines.append, tracker
    )
    assert result is None and tracker.logged == []
    assert lines == [
        "target cache: the fill failed (OSError: the VAE's weights are not reachable); the trials compute the "
        "frozen targets they miss themselves"
    ]


def test_one_run_or_prefill_off_fills_nothing(tmp_path, monkeypatch):
    """A single run's stages share what its first stage writes; ``data.prefill_targets: false`` turns the
    pre-fill off for sweeps too."""
    monkeypatch.setattr(cache_fill, "fill_uris", lambda *a, **k: pytest.fail("nothing should be filled"))
    for config in (tiny("vlsa_paper.yaml"), tiny("loss_ratio_sweep.yaml", "data.prefill_targets=false")):
        lines: list[str] = []
        assert cache_fill.fill_before_trials(config, str(tmp_path), lines.append) is None and lines == []
