"""``VLSAConfig``: the composite configuration of the VLSA model (saved as ``config.json``).

Like transformers' ``LlavaNextConfig`` it nests the sub-models' configs: ``vision_config`` (CLIP vision tower)
and ``text_config`` (LLaMA) as transformers configs, and the diffusers configs of the reconstruction branch
(``vae_config``, ``denoiser_config``, ``scheduler_config``) as plain dicts, since diffusers configs are dicts.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..config.vocabulary import VISION_MODES
from .tiling import DEFAULT_GRID_PINPOINTS, check_pinpoints


@strict
class VLSAConfig(PretrainedConfig):
    """Configuration of :class:`~vlsa_platform.model.modeling_vlsa.VLSAForConditionalGeneration`.

    The three ablation switches of the paper's Table 3 are ``vision_mode``, ``recon`` and (data-side)
    cognition; everything else is geometry and sub-model configs. Presets live in ``model/presets.py``.
    """

    model_type = "vlsa"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
    }

    vision_config: dict | PretrainedConfig | None = None
    """The CLIP vision tower (paper: CLIP-ViT-L/14-336)."""
    text_config: dict | PretrainedConfig | None = None
    """The LLM (paper: LLaMA-3-8B-Instruct)."""
    vision_mode: str = "sa_perceiver"
    """``sa_perceiver`` (VLSA, l tokens), ``anyres`` (LLaVA-NeXT flattening) or ``lowres`` (snapshot only)."""
    recon: bool = True
    """Build the reconstruction branch (frozen VAE, SD3 MMDiT denoiser, Epigone); needs ``sa_perceiver``."""
    vision_feature_layer: int = -2
    """Hidden layer of the vision tower whose patch tokens are used (CLS dropped), as LLaVA."""
    image_mean: list[float] | None = None
    """Per-channel normalisation mean of the vision tower's inputs."""
    image_std: list[float] | None = None
    """Per-channel normalisation std of the vision tower's inputs."""
    grid_pinpoints: list[list[int]] | None = None
    """``[rows, cols]`` grids of hi-res tiles an image may be cut into; the best-fitting one is chosen as in
    LLaVA-NeXT and larger images are shrunk to fit it (default ``tiling.DEFAULT_GRID_PINPOINTS``: 1x1, 1x2, 2x1,
    2x2, 1x3, 3x1)."""
    image_token_id: int = 0
    """Token id that marks each visual position in ``input_ids`` (one per visual token)."""
    anyres_newline: bool = True
    """``anyres`` only: append LLaVA-NeXT's learned newline token after each feature row."""
    epigone_rank: int = 256
    """Intermediate width of Epigone's low-rank MLP (paper §4.1: 256)."""
    recon_resolution: int = 512
    """Side of the square image the VAE encodes for L_rec (a multiple of the VAE's downsampling)."""
    vae_config: dict | None = None
    """diffusers ``AutoencoderKL`` config (paper: SD3-medium VAE), frozen."""
    denoiser_config: dict | None = None
    """diffusers ``SD3Transformer2DModel`` config (paper: SD3-medium MMDiT)."""
    scheduler_config: dict | None = None
    """diffusers ``FlowMatchEulerDiscreteScheduler`` config (paper: SD3-medium's)."""
    weighting_scheme: str = "logit_normal"
    """SD3 timestep density for L_rec (``diffusers.training_utils.compute_density_for_timestep_sampling``)."""
    logit_mean: float = 0.0
    """Mean of the logit-normal timestep density."""
    logit_std: float = 1.0
    """Std of the logit-normal timestep density."""
    mode_scale: float = 1.29
    """Scale of the ``mode`` timestep density (unused for ``logit_normal``)."""
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.grid_pinpoints is None:
            self.grid_pinpoints = [list(grid) for grid in DEFAULT_GRID_PINPOINTS]
        self.grid_pinpoints = [list(grid) for grid in check_pinpoints(self.grid_pinpoints)]
        if self.image_mean is None:
            self.image_mean = [0.48145466, 0.4578275, 0.40821073]
        if self.image_std is None:
            self.image_std = [0.26862954, 0.26130258, 0.27577711]
        if self.vision_mode not in VISION_MODES:
            raise ValueError(f"vision_mode must be one of {VISION_MODES}, got {self.vision_mode!r}")
        if self.recon and self.vision_mode != "sa_perceiver":
            raise ValueError(
                "recon needs vision_mode 'sa_perceiver': the pooled embedding P that conditions the denoiser "
                "is the SA-Perceiver's global query"
            )
        if self.recon and (self.vae_config is None or self.denoiser_config is None):
            raise ValueError("recon needs vae_config and denoiser_config")

    @property
    def patches_per_side(self) -> int:
        """``sqrt(l)``: patch tokens per side of one encoder input (24 for CLIP-ViT-L/14-336)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def max_tiles(self) -> int:
        """``m`` of the largest grid in ``grid_pinpoints`` (4 for the default list's 2x2)."""
        return max(rows * cols for rows, cols in self.grid_pinpoints)

    @property
    def tokens_per_tile(self) -> int:
        """``l``: patch tokens per encoder input, CLS dropped (576 for CLIP-ViT-L/14-336)."""
        return self.patches_per_side**2


__all__ = ["VLSAConfig"]
