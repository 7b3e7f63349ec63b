"""Reconstructive training with a latent diffusion model (paper §3.1, Eq. 3-4).

The objective owns its frozen VAE, the trainable SD3 MMDiT denoiser and Epigone (the torchtitan pattern: the
objective, not the LLM, holds the VAE). The noising, the timestep density and the loss weighting are diffusers'
(``FlowMatchEulerDiscreteScheduler`` and ``diffusers.training_utils``), as in diffusers' SD3 training script.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from torch import nn

from .configuration_vlsa import VLSAConfig
from .epigone import Epigone
from .submodels import build_submodel


@dataclass
class ReconstructionResult:
    """One L_rec evaluation. Latent tensors are ``(N, C, h, w)``; ``sigmas`` is ``(N,)``."""

    loss: torch.Tensor
    latents: torch.Tensor
    denoised: torch.Tensor
    sigmas: torch.Tensor


class ReconstructionObjective(nn.Module):
    """L_rec = mean ||z - z_hat||^2 with z_hat the denoiser's estimate of the clean latent (Eq. 3).

    ``z`` is the frozen VAE's latent of the image (scaled and shifted as SD3 does), noised on the rectified-flow
    path ``z_t = (1 - s) z + s e``; the MMDiT predicts the velocity ``v`` from ``z_t`` conditioned on
    ``c = Epigone(V, P)`` (Eq. 4), and ``z_hat = z_t - s v`` (SD3's ``precondition_outputs``).
    """

    def __init__(self, config: VLSAConfig) -> None:
        super().__init__()
        text_hidden = config.text_config.hidden_size
        self.vae = build_submodel("vae", config)
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.denoiser = build_submodel("denoiser", config)
        den = self.denoiser.config
        self.epigone = Epigone(
            text_hidden, config.epigone_rank, den.joint_attention_dim, den.pooled_projection_dim
        )
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config.scheduler_config or {})
        self.weighting_scheme = config.weighting_scheme
        self.logit_mean = config.logit_mean
        self.logit_std = config.logit_std
        self.mode_scale = config.mode_scale
        self.resolution = config.recon_resolution
        self.vae_encoder_calls = 0
        """Images this instance's frozen VAE has encoded (targets given as pixels; cached latents cost none)."""

    def train(self, mode: bool = True) -> ReconstructionObjective:
        super().train(mode)
        self.vae.eval()  # frozen: no dropout, whatever the caller's mode
        return self

    @torch.no_grad()
    def encode(
        self,
        pixels: torch.Tensor | None = None,
        latent_params: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The target latent ``z`` (N, C, h, w) from pixels in ``[-1, 1]`` (N, 3, R, R), or from cached VAE
        posterior parameters (N, 2C, h, w) (mean and log-variance, as the VAE's encoder emits them)."""
        if latent_params is None:
            if pixels is None:
                raise ValueError("encode needs pixels or latent_params")
            latent_params = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.parameters
            self.vae_encoder_calls += pixels.shape[0]
        dist = DiagonalGaussianDistribution(latent_params.to(self.vae.dtype))
        cfg = self.vae.config
        return (dist.sample(generator=generator) - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in ``[-1, 1]`` from latents in the denoiser's space (for reconstruction samples)."""
        cfg = self.vae.config
        return self.vae.decode(latents / cfg.scaling_factor + (cfg.shift_factor or 0.0)).sample.clamp(-1, 1)

    def sample_sigmas(self, batch: int, device: torch.device, generator: torch.Generator | None = None):
        """SD3's training timesteps: ``u`` from the configured density, mapped through the scheduler's
        (shifted) training schedule. Returns ``(timesteps, sigmas)``, each ``(batch,)``."""
        u = compute_density_for_timestep_sampling(
            weighting_scheme=self.weighting_scheme,
            batch_size=batch,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
            mode_scale=self.mode_scale,
            generator=generator,
        )
        indices = (u * self.scheduler.config.num_train_timesteps).long()
        timesteps = self.scheduler.timesteps[indices].to(device)
        sigmas = self.scheduler.sigmas[indices].to(device)
        return timesteps, sigmas

    def forward(
        self,
        image_tokens: torch.Tensor,
        pooled: torch.Tensor,
        pixels: torch.Tensor | None = None,
        latent_params: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ReconstructionResult:
        """L_rec for a batch of images.

        Args:
            image_tokens: projected image tokens ``V`` (N, l, d_llm).
            pooled: projected global embedding ``P`` (N, d_llm).
            pixels: ``(N, 3, R, R)`` in ``[-1, 1]``, or ``latent_params`` ``(N, 2C, R/8, R/8)`` from a cache.
        """
        z = self.encode(pixels, latent_params, generator)
        cond, pooled_cond = self.epigone(image_tokens, pooled)
        timesteps, sigmas = self.sample_sigmas(z.shape[0], z.device, generator)
        s = sigmas.to(z.dtype).view(-1, 1, 1, 1)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z_t = (1.0 - s) * z + s * noise  # rectified flow
        velocity = self.denoiser(
            hidden_states=z_t.to(self.denoiser.dtype),
            encoder_hidden_states=cond,
            pooled_projections=pooled_cond,
            timestep=timesteps,
            return_dict=False,
        )[0]
        denoised = z_t - s * velocity  # Eq. 3's z_theta(z_t, c)
        weighting = compute_loss_weighting_for_sd3(self.weighting_scheme, sigmas=s)
        loss = (weighting.float() * (denoised.float() - z.float()) ** 2).flatten(1).mean(1).mean()
        return ReconstructionResult(loss=loss, latents=z, denoised=denoised, sigmas=sigmas)
