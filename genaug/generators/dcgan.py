"""DCGAN (Radford et al., 2016) with DiffAugment for scarce classes.

Generator: a latent vector becomes an s0 x s0 map (transposed conv), then stride-2 transposed
convs double it to the image size (s0 * 2^k covers 28, 32, 64, 128...), BatchNorm + ReLU, tanh
out. Discriminator mirrors it with strided convs, BatchNorm + LeakyReLU(0.2). Both are diffusers
`ModelMixin, ConfigMixin`, so they save and load with `save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.training_utils import EMAModel

from ..errors import GenaugError
from .base import EMAOnDevice, GenerativeModel, bare, ema_weights, base_size, latents
from .diffaugment import diff_augment


def _widths(image_size: int, base_width: int, max_width: int) -> tuple[int, list[int]]:
    s0, k = base_size(image_size)
    return s0, [min(base_width * 2 ** (k - 1 - i), max_width) for i in range(k)]


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convs, N(1, 0.02) BatchNorm scales, as in the DCGAN paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, latent_dim: int = 100, channels: int = 1, image_size: int = 28,
                 base_width: int = 64, max_width: int = 512):
        super().__init__()
        s0, widths = _widths(image_size, base_width, max_width)
        layers = [nn.ConvTranspose2d(latent_dim, widths[0], s0, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, channels: int = 1, image_size: int = 28, base_width: int = 64, max_width: int = 512):
        super().__init__()
        s0, widths = _widths(image_size, base_width, max_width)
        widths = widths[::-1]
        layers = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, s0, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


class DCGAN(GenerativeModel):
    family = "dcgan"
    default_config = {
        "latent_dim": 100,
        "base_width": 64,
        "max_width": 512,
        "learning_rate": 2e-4,
        "beta1": 0.5,
        "diffaugment": "auto",  # on for classes under `diffaugment_below` images
        "diffaugment_below": 5000,
        "diffaugment_policy": "color,translation,cutout",
        "ema_decay": 0.999,  # an exponential moving average of the generator's weights is always kept
        "sample_weights": "raw",  # raw | ema: the generator weights that sample (checkpoint selection may choose)
    }
    # The discriminator runs on real and fake batches before one backward. DDP's default buffer
    # broadcast overwrites the BatchNorm buffers in place at every forward, the known cause of
    # autograd's "modified by an inplace operation" with GANs under DDP (it did not trigger on the
    # CPU with gloo here; GPUs with NCCL are unverified). Without the broadcast each process keeps
    # its own running statistics; the main process's are saved, as they would be with it (rank 0
    # is the broadcast's source). Parameters stay synchronised through the gradients.
    ddp_kwargs = {"broadcast_buffers": False}

    def __init__(self, config, channels, image_size):
        super().__init__(config, channels, image_size)
        c = self.config
        self.generator = DCGANGenerator(c["latent_dim"], channels, image_size, c["base_width"], c["max_width"])
        self.discriminator = DCGANDiscriminator(channels, image_size, c["base_width"], c["max_width"])
        self.policy = ""
        self.ema = None
        if c["sample_weights"] not in ("raw", "ema"):
            raise GenaugError(f"sample_weights must be raw or ema (got {c['sample_weights']!r})")

    def prepare(self, accelerator, n_train):
        c = self.config
        use = c["diffaugment"] if isinstance(c["diffaugment"], bool) else n_train < c["diffaugment_below"]
        self.policy = c["diffaugment_policy"] if use else ""
        betas = (c["beta1"], 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=c["learning_rate"], betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c["learning_rate"], betas=betas)
        with warnings.catch_warnings():  # torch renamed the option; accelerate's DDP kwargs still use the old name
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            self.generator, self.discriminator, self.opt_g, self.opt_d = accelerator.prepare(
                self.generator, self.discriminator, opt_g, opt_d)
        # EMA of the parameters (BatchNorm statistics stay the raw generator's), Yazici et al. 2019
        self.ema = EMAModel(bare(self.generator).parameters(), decay=c["ema_decay"], use_ema_warmup=True)
        self.ema.to(accelerator.device)
        self.ema_state = EMAOnDevice(self.ema, accelerator.device)

    def late_checkpoint_state(self):
        return [self.ema_state]

    def _augment(self, x, rng):
        return diff_augment(x, self.policy, rng) if self.policy else x

    def train_step(self, batch, rng, step, accelerator):
        n = batch.shape[0]
        z = torch.randn((n, self.config["latent_dim"]), generator=rng, device=rng.device).to(batch.device)
        with accelerator.autocast():
            fake = self.generator(z)
            d_real = self.discriminator(self._augment(batch, rng))
            d_fake = self.discriminator(self._augment(fake.detach(), rng))
            loss_d = (F.binary_cross_entropy_with_logits(d_real.float(), torch.ones_like(d_real.float()))
                      + F.binary_cross_entropy_with_logits(d_fake.float(), torch.zeros_like(d_fake.float())))
        self.opt_d.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        self.opt_d.step()
        with accelerator.autocast():
            d_gen = self.discriminator(self._augment(fake, rng)).float()
            loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
        self.opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        self.opt_g.step()
        self.ema.step(bare(self.generator).parameters())
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                "d_real": float(torch.sigmoid(d_real.detach().float()).mean()),
                "d_fake": float(torch.sigmoid(d_fake.detach().float()).mean())}

    def sampling_mode(self):
        """With sample_weights ema, sample with the EMA weights, then put the training weights back exactly."""
        if self.config["sample_weights"] != "ema" or self.ema is None:
            return contextlib.nullcontext()
        return ema_weights(self.ema, self.generator)

    @torch.no_grad()
    def sample(self, generators, sampler=None, steps=None):
        gen = bare(self.generator)
        was_training = gen.training
        gen.eval()
        z = latents(generators, (self.config["latent_dim"],), next(gen.parameters()).device)
        out = gen(z)
        gen.train(was_training)
        return out.float()

    def save_pretrained(self, folder, accelerator=None):
        """`generator/` holds the weights that sample (raw or EMA, per `sample_weights`)."""
        with self.sampling_mode():
            bare(self.generator).save_pretrained(Path(folder) / "generator")
        bare(self.discriminator).save_pretrained(Path(folder) / "discriminator")

    @classmethod
    def from_pretrained(cls, folder, config, channels, image_size, device):
        model = cls.__new__(cls)
        GenerativeModel.__init__(model, config, channels, image_size)
        model.generator = DCGANGenerator.from_pretrained(Path(folder) / "generator").to(device).eval()
        return model
