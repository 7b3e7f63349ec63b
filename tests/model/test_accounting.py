"""Planning numbers at paper scale, from the bundled configs on the meta device (no download)."""

import pytest

from vlsa_platform.model.accounting import parameter_counts, visual_tokens_per_image
from vlsa_platform.model.lora import LoraSettings
from vlsa_platform.model.presets import build_vlsa_config, vq_config


@pytest.fixture(scope="module")
def paper_counts():
    return parameter_counts(build_vlsa_config("paper", vision="sa_perceiver", recon=True))


def test_paper_sub_models_have_the_published_sizes(paper_counts):
    assert paper_counts["llm"][0] == 8_030_261_248  # LLaMA-3-8B
    assert paper_counts["vision_encoder"][0] == 303_507_456  # CLIP-ViT-L/14-336 vision tower
    assert 2.0e9 < paper_counts["denoiser"][0] < 2.1e9  # SD3-medium MMDiT
    assert paper_counts["vae"] == (83_819_683, 0)  # frozen
    # Epigone: 4096 -> 256 -> 4096 (token head) plus the pooled head 4096 -> 2048, with biases.
    epigone = (4096 * 256 + 256) + (256 * 4096 + 4096) + (4096 * 2048 + 2048)
    assert paper_counts["epigone"] == (epigone, epigone)
    # SA-Perceiver: five d x d projections of d = 1024 plus the query.
    assert paper_counts["sa_perceiver"][0] == 5 * 1024 * 1024 + 1024
    # mlp2x_gelu: 1024 -> 4096 -> 4096.
    assert paper_counts["projector"][0] == (1024 * 4096 + 4096) + (4096 * 4096 + 4096)


def test_variants_have_only_their_parts():
    anyres = parameter_counts(build_vlsa_config("paper", vision="anyres", recon=False))
    assert set(anyres) == {"vision_encoder", "projector", "llm"}
    # The newline token belongs to the projector part.
    assert anyres["projector"][0] == (1024 * 4096 + 4096) + (4096 * 4096 + 4096) + 4096


def test_visual_tokens_per_variant():
    assert visual_tokens_per_image(build_vlsa_config("paper", vision="sa_perceiver")) == 576
    assert visual_tokens_per_image(build_vlsa_config("paper", vision="lowres", recon=False)) == 576
    assert visual_tokens_per_image(build_vlsa_config("paper", vision="anyres", recon=False)) == 2928


def test_lora_and_extra_vocab_counts():
    config = build_vlsa_config("tiny", vision="lowres", recon=False)
    plain = parameter_counts(config)
    lora = parameter_counts(config, LoraSettings(r=4))
    assert lora["llm"][0] > plain["llm"][0] and lora["llm"][1] == lora["llm"][0] - plain["llm"][0]
    grown = parameter_counts(build_vlsa_config("tiny", vision="lowres", recon=False, extra_vocab=10))
    hidden = config.text_config.hidden_size
    assert grown["llm"][0] - plain["llm"][0] == 2 * 10 * hidden  # input embeddings and LM head


def test_vq_configs_build():
    assert vq_config("paper")["num_vq_embeddings"] == 4096
    with pytest.raises(ValueError, match="unknown model preset"):
        vq_config("huge")


def test_vq_models_build_and_give_the_published_grid():
    import torch
    from diffusers import VQModel

    paper = vq_config("paper")
    with torch.device("meta"):
        model = VQModel.from_config(paper)
    assert sum(p.numel() for p in model.parameters()) == 64_009_667
    assert 256 // 2 ** (len(paper["block_out_channels"]) - 1) == 32  # 32x32 codes at 256 px
    tiny = VQModel.from_config(vq_config("tiny")).eval()
    with torch.no_grad():
        latents = tiny.encode(torch.zeros(1, 3, 64, 64)).latents
    assert latents.shape[-2:] == (8, 8)


def test_anyres_token_count_follows_the_pinpoints():
    def anyres(pinpoints):
        return visual_tokens_per_image(
            build_vlsa_config("paper", vision="anyres", recon=False, grid_pinpoints=pinpoints)
        )

    # The default list's largest grid is 2x2 (2928); 1x3 and 3x1 give fewer (one newline per feature row).
    assert anyres(None) == anyres([(2, 2)]) == 2928
    assert anyres([(1, 1), (1, 3)]) == 576 + 24 * 72 + 24
    assert anyres([(3, 1)]) == 576 + 72 * 24 + 72
    assert anyres([(1, 1)]) == 576 + 24 * 24 + 24
    assert build_vlsa_config("paper", recon=False, grid_pinpoints=[(1, 3), (3, 3)]).max_tiles == 9
    with pytest.raises(ValueError, match="repeats"):
        build_vlsa_config("paper", recon=False, grid_pinpoints=[(1, 3), (1, 3)])
