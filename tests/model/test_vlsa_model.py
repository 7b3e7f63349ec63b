"""Properties of the composed VLSA model at tiny width (DESIGN.md §2, issue 2's "what it must show")."""

import pytest
import torch

from vlsa_platform.model.modeling_vlsa import VLSAForConditionalGeneration
from vlsa_platform.model.parts import TRAINABLE_PARTS, frozen_state, part_of, set_trainable
from vlsa_platform.model.presets import build_vlsa_config

from .builders import make_batch, paper_geometry, random_images, tiny_model

STAGES = {
    "stage1": ["sa_perceiver", "projector", "epigone"],
    "stage2": ["sa_perceiver", "projector", "epigone", "denoiser", "vision_encoder"],
    "stage3": list(TRAINABLE_PARTS),
}


def _llm_inputs(model):
    """Capture the ``inputs_embeds`` the LLM receives."""
    seen = {}

    def hook(_module, _args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]

    model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(
    ("hw", "grid"), [((336, 336), [1, 1]), ((672, 672), [2, 2]), ((336, 1008), [1, 3]), ((1008, 336), [3, 1])]
)
def test_llm_receives_l_visual_tokens_at_paper_geometry(hw, grid):
    config = paper_geometry(build_vlsa_config("tiny", recon=False))
    torch.manual_seed(0)
    model = VLSAForConditionalGeneration(config).eval()
    batch, counts = make_batch(config, random_images([hw]), text_len=4)
    # A 1008 px wide strip is cut into LLaVA-NeXT's 1x3 grid, unshrunk; the SA-Perceiver still gives l tokens.
    assert batch["image_grids"][0].tolist() == [*grid, *hw]
    assert counts == [576]
    features, pooled = model.encode_images(
        batch["pixel_values"], batch["tile_pixel_values"], batch["image_grids"]
    )
    assert [f.shape[0] for f in features] == [576] and pooled.shape == (1, config.text_config.hidden_size)
    seen = _llm_inputs(model)
    with torch.no_grad():
        model(**batch)
    image_pos = batch["input_ids"][0] == config.image_token_id
    assert int(image_pos.sum()) == 576
    torch.testing.assert_close(seen["embeds"][0, image_pos], features[0])


def test_baseline_token_counts_at_paper_geometry():
    image = random_images([(672, 672)])
    for vision, expected in [("lowres", 576), ("anyres", 2928)]:
        config = paper_geometry(build_vlsa_config("tiny", vision=vision, recon=False))
        model = VLSAForConditionalGeneration(config).eval()
        batch, counts = make_batch(config, image, text_len=2)
        assert counts == [expected]
        with torch.no_grad():
            features, pooled = model.encode_images(
                batch["pixel_values"], batch["tile_pixel_values"], batch["image_grids"]
            )
        assert features[0].shape[0] == expected and pooled is None


def test_mismatched_image_tokens_are_a_clear_error():
    model = tiny_model()
    batch, _ = make_batch(model.config, random_images([(112, 112)]))
    batch["input_ids"][0, 1] = 7  # one visual position fewer than the image gives
    with pytest.raises(ValueError, match="image tokens"):
        model(**batch)


@pytest.mark.parametrize("stage", list(STAGES))
def test_gradients_reach_exactly_the_stage_parts_and_frozen_parts_stay_bitwise(stage):
    model = tiny_model()
    enabled = set_trainable(model, STAGES[stage])
    assert enabled == [p for p in TRAINABLE_PARTS if p in STAGES[stage]]
    frozen = frozen_state(model)
    assert all(part_of(n) not in STAGES[stage] for n in frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    batch, _ = make_batch(model.config, random_images([(150, 200), (112, 112)]))
    for _ in range(3):
        opt.zero_grad()
        model(**batch).loss.backward()
        reached = {
            part_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
        }
        assert reached == set(STAGES[stage])
        assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
        opt.step()
    for name, before in frozen.items():
        assert torch.equal(model.get_parameter(name), before), name


def test_tiny_model_overfits_one_batch():
    model = tiny_model()
    set_trainable(model, STAGES["stage3"])
    batch, _ = make_batch(model.config, random_images([(150, 200), (112, 112)]), text_len=8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(50):
        opt.zero_grad()
        # The same timestep and noise every step, so that L_rec is one fixed objective to overfit.
        out = model(**batch, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        opt.step()
        history.append((out.loss.item(), out.loss_llm.item(), out.loss_rec.item()))
    first, last = history[0], history[-1]
    assert last[0] <= 0.5 * first[0], history
    assert last[1] < first[1] and last[2] < first[2], history


def _config_fields(config):
    """The config as saved, less what saving itself records (the path and the weights' dtype)."""

    def strip(d):
        return {
            k: strip(v) if isinstance(v, dict) else v
            for k, v in d.items()
            if k not in ("_name_or_path", "dtype")
        }

    return strip(config.to_dict())


def test_save_pretrained_round_trip_reproduces_logits(tmp_path):
    model = tiny_model().eval()
    batch, _ = make_batch(model.config, random_images([(150, 200)]))
    with torch.no_grad():
        before = model(**batch, generator=torch.Generator().manual_seed(1))
    model.save_pretrained(tmp_path)
    loaded = VLSAForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert _config_fields(loaded.config) == _config_fields(model.config)
    with torch.no_grad():
        after = loaded(**batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.loss_rec, after.loss_rec)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_label_groups_give_token_level_loss_parts():
    model = tiny_model(recon=False, vision="lowres")
    batch, _ = make_batch(model.config, random_images([(112, 112)]))
    groups = torch.zeros_like(batch["labels"])
    labelled = (batch["labels"][0] != -100).nonzero().flatten()
    groups[0, labelled[:4]] = 1
    groups[0, labelled[4:6]] = 2
    with torch.no_grad():
        out = model(**batch, label_groups=groups)
    assert out.loss_rec is None and torch.equal(out.loss, out.loss_llm)
    assert out.loss_vq is not None and out.loss_px is not None
    with torch.no_grad():
        none = model(**batch, label_groups=torch.zeros_like(groups))
    assert none.loss_vq is None and none.loss_px is None


def test_text_only_batch():
    model = tiny_model()
    ids = torch.randint(10, 200, (2, 16))
    out = model(input_ids=ids, labels=ids)
    assert out.loss_rec is None and out.loss_llm is not None
