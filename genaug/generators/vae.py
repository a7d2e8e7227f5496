"""Convolutional VAE: stride-2 conv encoder to (mu, log var), reparameterisation, transposed-conv
decoder with tanh output in [-1, 1].

Loss per image: squared error summed over pixels (a Gaussian likelihood) plus beta * KL, with the
KL weight warmed up linearly over `kl_warmup_steps` so the decoder learns before the prior
pulls the posterior in. Sampling decodes draws from the N(0, I) prior.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .base import GenerativeModel, bare, base_size, latents


class ConvVAE(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, channels: int = 1, image_size: int = 28, latent_dim: int = 32,
                 base_width: int = 32, max_width: int = 256):
        super().__init__()
        s0, k = base_size(image_size)
        widths = [min(base_width * 2 ** i, max_width) for i in range(k)]
        enc, c_in = [], channels
        for w in widths:
            enc += [nn.Conv2d(c_in, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, True)]
            c_in = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = widths[-1] * s0 * s0
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.Unflatten(1, (widths[-1], s0, s0)))
        dec = []
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:]):
            dec += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        self.decoder = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(True), *dec,
                                     nn.ConvTranspose2d(widths[0], channels, 4, 2, 1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of `x` through the reparameterised posterior sample mu + eps * sigma, mu, log var.

        Training calls the model (not `encode`/`decode`), so under `accelerate launch` the call
        goes through DistributedDataParallel and the replicas' gradients are synchronised."""
        mu, logvar = self.encode(x)
        z = mu + eps.to(mu.device, mu.dtype) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


class VAE(GenerativeModel):
    family = "vae"
    default_config = {
        "latent_dim": 32,
        "base_width": 32,
        "max_width": 256,
        "beta": 1.0,
        "kl_warmup_steps": 1000,
        "learning_rate": 1e-3,
    }

    def __init__(self, config, channels, image_size):
        super().__init__(config, channels, image_size)
        c = self.config
        self.vae = ConvVAE(channels, image_size, c["latent_dim"], c["base_width"], c["max_width"])

    def prepare(self, accelerator, n_train):
        optimizer = torch.optim.Adam(self.vae.parameters(), lr=self.config["learning_rate"])
        self.vae, self.optimizer = accelerator.prepare(self.vae, optimizer)

    def kl_weight(self, step: int) -> float:
        warmup = self.config["kl_warmup_steps"]
        return self.config["beta"] * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def train_step(self, batch, rng, step, accelerator):
        eps = torch.randn((batch.shape[0], self.config["latent_dim"]), generator=rng, device=rng.device)
        with accelerator.autocast():
            recon, mu, logvar = self.vae(batch, eps)
        rec = (recon.float() - batch).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum(1)).mean()
        loss = rec + self.kl_weight(step) * kl
        self.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "recon": float(rec.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def sample(self, generators, sampler=None, steps=None):
        vae = bare(self.vae)
        was_training = vae.training
        vae.eval()
        z = latents(generators, (self.config["latent_dim"],), next(vae.parameters()).device)
        out = vae.decode(z)
        vae.train(was_training)
        return out.float()

    def save_pretrained(self, folder, accelerator=None):
        vae = bare(self.vae)
        vae.save_pretrained(Path(folder) / "vae")

    @classmethod
    def from_pretrained(cls, folder, config, channels, image_size, device):
        model = cls.__new__(cls)
        GenerativeModel.__init__(model, config, channels, image_size)
        model.vae = ConvVAE.from_pretrained(Path(folder) / "vae").to(device).eval()
        return model
