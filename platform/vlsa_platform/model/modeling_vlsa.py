"""The composed VLSA model (paper §3, Fig. 1), laid out like transformers' ``llava_next``.

Vision tower -> (SA-Perceiver | LLaVA-NeXT anyres flattening | low-res only) -> projector -> the projected image
tokens replace the ``<image>`` positions of the LLaMA-3 chat sequence (Eq. 6). With ``recon`` the same projected
tokens and the projected global embedding condition the SD3 denoiser through Epigone (Eq. 3-4). The model returns
the loss parts separately; the trainer weighs them per stage (DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_vlsa import VLSAConfig
from .markers import IGNORE_INDEX, LABEL_GROUP_PX, LABEL_GROUP_VQ
from .projector import MultiModalProjector
from .reconstruction import ReconstructionObjective
from .sa_perceiver import SAPerceiver
from .submodels import build_submodel
from .tiling import TileGrid, anyres_feature_size, anyres_token_count

# ----------------------------------------------------------------------------------------------------- helpers


def grids_from_tensor(image_grids: torch.Tensor, tile: int) -> list[TileGrid]:
    """``(N, 4)`` long tensor of ``rows, cols, content_height, content_width`` -> :class:`TileGrid` s."""
    return [TileGrid(int(r), int(c), int(h), int(w), tile) for r, c, h, w in image_grids.tolist()]


def grids_to_tensor(grids: Sequence[TileGrid]) -> torch.Tensor:
    """Inverse of :func:`grids_from_tensor` (what a collator puts in the batch)."""
    return torch.tensor(
        [[g.rows, g.cols, g.content_height, g.content_width] for g in grids], dtype=torch.long
    )


def num_visual_tokens(config: VLSAConfig, grid: TileGrid) -> int:
    """How many ``<image>`` positions one image takes in the LLM's sequence."""
    if config.vision_mode == "anyres":
        return anyres_token_count(grid, config.patches_per_side, config.anyres_newline)
    return config.tokens_per_tile


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor, select: torch.Tensor | None = None):
    """Mean next-token cross-entropy over labelled positions (optionally only where ``select``), or ``None``.

    ``logits`` (B, T, V), ``labels`` (B, T) with ``IGNORE_INDEX`` on unlabelled positions; shifting is done here.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    if select is not None:
        keep = keep & select[:, 1:]
    if not keep.any():
        return None
    return F.cross_entropy(shift_logits[keep], shift_labels[keep])


# ----------------------------------------------------------------------------------------------------- outputs


@dataclass
class VLSAOutput(ModelOutput):
    """Loss parts and logits.

    Attributes:
        loss: ``loss_llm + loss_rec`` (the paper's unweighted sum; the trainer applies stage weights to parts).
        loss_llm: next-token loss over assistant tokens (Eq. 8), including cognition answers.
        loss_rec: reconstruction loss (Eq. 3), when ``recon`` and images are present.
        loss_vq, loss_px: the LLM loss restricted to VQ / pixel answer tokens (``label_groups``), for tracking.
        logits: ``(B, T, V)``.
    """

    loss: torch.Tensor | None = None
    loss_llm: torch.Tensor | None = None
    loss_rec: torch.Tensor | None = None
    loss_vq: torch.Tensor | None = None
    loss_px: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    recon_latents: torch.Tensor | None = None
    recon_denoised: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------- model


class VLSAPreTrainedModel(PreTrainedModel):
    config_class = VLSAConfig
    base_model_prefix = "vlsa"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer", "JointTransformerBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        # Only our own modules: the sub-models (CLIP, LLaMA, diffusers) initialise themselves.
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, SAPerceiver):
            for lin in (module.w_q, module.w_kv, module.w_o1, module.w_k, module.w_o2):
                nn.init.normal_(lin.weight, std=std)
            nn.init.normal_(module.query, std=std)
        elif isinstance(module, VLSAForConditionalGeneration) and module.image_newline is not None:
            nn.init.normal_(module.image_newline, std=std)


class VLSAForConditionalGeneration(VLSAPreTrainedModel):
    """VLSA: a LLaVA-NeXT-style MLLM with compressive hi-res encoding, reconstruction and cognition alignment.

    Inputs (one row per sample, any number of images per batch, ``N`` images in all):
        input_ids (B, T): chat tokens with ``num_visual_tokens`` ``image_token_id`` positions per image.
        attention_mask (B, T), labels (B, T) (``-100`` except assistant tokens), label_groups (B, T) optional
            (1 = VQ answer token, 2 = pixel answer token).
        pixel_values (N, 3, S, S): low-res snapshots ``X_Lo``, normalised.
        tile_pixel_values (sum m_i, 3, S, S): hi-res tiles ``X_Hi`` of every image, image after image.
        image_grids (N, 4): ``rows, cols, content_height, content_width`` of each image (see ``tiling``).
        recon_pixel_values (N, 3, R, R) in ``[-1, 1]`` or recon_latent_params (N, 2C, R/8, R/8): L_rec target.
    """

    def __init__(self, config: VLSAConfig) -> None:
        super().__init__(config)
        self.vision_tower = build_submodel("vision_encoder", config)
        v_hidden = config.vision_config.hidden_size
        t_hidden = config.text_config.hidden_size
        self.sa_perceiver = (
            SAPerceiver(v_hidden, config.patches_per_side) if config.vision_mode == "sa_perceiver" else None
        )
        self.multi_modal_projector = MultiModalProjector(v_hidden, t_hidden)
        self.image_newline = (
            nn.Parameter(torch.zeros(t_hidden))
            if config.vision_mode == "anyres" and config.anyres_newline
            else None
        )
        self.language_model = build_submodel("llm", config)
        self.reconstruction = ReconstructionObjective(config) if config.recon else None
        self.post_init()

    # -- embeddings (what PreTrainedModel's resize/generation helpers need)
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # -- vision
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Vision tower features ``(n, l, d_vision)`` from layer ``vision_feature_layer``, CLS dropped."""
        out = self.vision_tower(pixels.to(self.vision_tower.dtype), output_hidden_states=True)
        return out.hidden_states[self.config.vision_feature_layer][:, 1:]

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        tile_pixel_values: torch.Tensor | None,
        image_grids: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Visual tokens for the LLM, one ``(n_i, d_llm)`` tensor per image, and the projected global embedding
        ``P`` (N, d_llm) (SA-Perceiver only, else ``None``)."""
        cfg = self.config
        grids = grids_from_tensor(image_grids, cfg.vision_config.image_size)
        if len(grids) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} snapshots but {len(grids)} image_grids rows")
        if cfg.vision_mode == "lowres":
            return list(self.multi_modal_projector(self._encode(pixel_values)).unbind(0)), None
        n_tiles = [g.num_tiles for g in grids]
        if tile_pixel_values is None or tile_pixel_values.shape[0] != sum(n_tiles):
            got = None if tile_pixel_values is None else tile_pixel_values.shape[0]
            raise ValueError(f"image_grids need {sum(n_tiles)} tiles, tile_pixel_values has {got}")
        # One pass of the tower over every snapshot and tile of the batch.
        feats = self._encode(torch.cat([pixel_values, tile_pixel_values]))
        v_lo, v_hi = feats[: len(grids)], feats[len(grids) :].split(n_tiles)
        if cfg.vision_mode == "sa_perceiver":
            l_tok, max_tiles = cfg.tokens_per_tile, max(n_tiles)
            padded = v_lo.new_zeros(len(grids), max_tiles * l_tok, v_lo.shape[-1])
            for i, hi in enumerate(v_hi):
                padded[i, : hi.shape[0] * l_tok] = hi.reshape(-1, hi.shape[-1])
            v, p = self.sa_perceiver(v_lo, padded, [(g.rows, g.cols) for g in grids])
            tokens = self.multi_modal_projector(torch.cat([v, p.unsqueeze(1)], dim=1))
            return list(tokens[:, :-1].unbind(0)), tokens[:, -1]
        return [self._anyres_tokens(lo, hi, g) for lo, hi, g in zip(v_lo, v_hi, grids, strict=True)], None

    def _anyres_tokens(self, v_lo: torch.Tensor, v_hi: torch.Tensor, grid: TileGrid) -> torch.Tensor:
        """LLaVA-NeXT's ``spatial_unpad`` flattening: base tokens, then the tile feature map cropped to the
        image content, row by row, each row followed by ``image_newline``."""
        n = self.config.patches_per_side
        base = self.multi_modal_projector(v_lo)
        tiles = self.multi_modal_projector(v_hi)  # (m, l, D)
        fmap = (
            tiles.view(grid.rows, grid.cols, n, n, -1)
            .permute(0, 2, 1, 3, 4)
            .reshape(grid.rows * n, grid.cols * n, -1)
        )
        height, width = anyres_feature_size(grid, n)
        fmap = fmap[:height, :width]
        if self.image_newline is not None:
            fmap = torch.cat([fmap, self.image_newline.to(fmap.dtype).expand(height, 1, -1)], dim=1)
        return torch.cat([base, fmap.reshape(-1, fmap.shape[-1])])

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        image_features: Sequence[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Token embeddings with the image features scattered into the ``image_token_id`` positions (Eq. 6)."""
        image_mask = input_ids == self.config.image_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        n_positions = int(image_mask.sum())
        if not image_features:
            if n_positions:
                raise ValueError(f"input_ids hold {n_positions} image tokens but no images were given")
            return embeds
        features = torch.cat(list(image_features)).to(embeds.dtype)
        if features.shape[0] != n_positions:
            raise ValueError(
                f"input_ids hold {n_positions} image tokens but the images give {features.shape[0]} visual tokens"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1).expand_as(embeds), features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_groups: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        tile_pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        recon_pixel_values: torch.Tensor | None = None,
        recon_latent_params: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> VLSAOutput:
        features, pooled = (None, None)
        if pixel_values is not None:
            if image_grids is None:
                raise ValueError("pixel_values need image_grids")
            features, pooled = self.encode_images(pixel_values, tile_pixel_values, image_grids)
        embeds = self.embed_inputs(input_ids, features)
        logits = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask).logits

        out = VLSAOutput(logits=logits)
        if labels is not None:
            out.loss_llm = masked_token_loss(logits, labels)
            if label_groups is not None:
                out.loss_vq = masked_token_loss(logits, labels, label_groups == LABEL_GROUP_VQ)
                out.loss_px = masked_token_loss(logits, labels, label_groups == LABEL_GROUP_PX)
        has_target = recon_pixel_values is not None or recon_latent_params is not None
        if self.reconstruction is not None and features is not None and has_target:
            rec = self.reconstruction(
                torch.stack(features), pooled, recon_pixel_values, recon_latent_params, generator=generator
            )
            out.loss_rec, out.recon_latents, out.recon_denoised = rec.loss, rec.latents, rec.denoised
        parts = [p for p in (out.loss_llm, out.loss_rec) if p is not None]
        out.loss = torch.stack(parts).sum() if parts else None
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        tile_pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Decode a continuation of the prompts (greedy unless ``generate_kwargs`` say otherwise); returns the
        new tokens only ``(B, new)``."""
        features = None
        if pixel_values is not None:
            features, _ = self.encode_images(pixel_values, tile_pixel_values, image_grids)
        embeds = self.embed_inputs(input_ids, features)
        generate_kwargs.setdefault("do_sample", False)
        return self.language_model.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )

    def enable_activation_checkpointing(self) -> None:
        """Recompute activations in the backward pass of every transformer stack (LLM, vision tower, MMDiT)."""
        self.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        self.vision_tower.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        if self.reconstruction is not None:
            self.reconstruction.denoiser.enable_gradient_checkpointing()


__all__ = [
    "VLSAForConditionalGeneration",
    "VLSAOutput",
    "grids_from_tensor",
    "grids_to_tensor",
    "num_visual_tokens",
]
