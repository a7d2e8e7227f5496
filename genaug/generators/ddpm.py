"""DDPM on diffusers: `UNet2DModel` + `DDPMScheduler` training, EMA weights for sampling.

The final model is a `DDPMPipeline` folder (EMA UNet + scheduler), so
`DDPMPipeline.from_pretrained(run_dir / "model")` loads it. Sampling swaps the training
scheduler for another diffusers scheduler via `from_config`: DDPM (ancestral, 1000 steps), DDIM,
DPM-Solver++, UniPC or Heun (few steps). DDPM and DDIM use "trailing" timestep spacing, so the
first denoising step starts from the last training time step (t = 999 of 1000) for any step
count; "leading" spacing, diffusers' DDIM default, starts 50-step DDIM at t = 980 and never
removes the noise the model was trained to remove at t > 980 (Lin et al., 2024, "Common
diffusion noise schedules and sample steps are flawed").
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,
                       HeunDiscreteScheduler, UNet2DModel, UniPCMultistepScheduler)
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

from ..errors import GenaugError
from .base import EMAOnDevice, GenerativeModel, bare, ema_weights, latents

# Pixel-space models: DDPM and DDIM clip each step's predicted clean image to [-1, 1] (clip_sample, from
# the training config); DPM-Solver++ and UniPC do the same through thresholding with a maximum of 1.
# Measured on a per-class PneumoniaMNIST DDPM (100 samples): FID 203 -> 156 (DPM-Solver++ 20) and
# 217 -> 183 (UniPC 10) with it.
PIXEL_THRESHOLD = {"thresholding": True, "sample_max_value": 1.0}
SAMPLERS = {  # name: (scheduler class, settings over the training scheduler's config, default steps)
    "ddpm": (DDPMScheduler, {"timestep_spacing": "trailing"}, 1000),
    "ddim": (DDIMScheduler, {"timestep_spacing": "trailing"}, 50),
    "dpm-solver": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", **PIXEL_THRESHOLD}, 20),
    "unipc": (UniPCMultistepScheduler, dict(PIXEL_THRESHOLD), 10),
    "heun": (HeunDiscreteScheduler, {}, 20),
}


def resolve_sampler(sampler: str, steps: int | None) -> tuple[str, int]:
    """(sampler, steps) with the sampler's default step count when `steps` is None; refuses unknown names."""
    if sampler not in SAMPLERS:
        raise GenaugError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    return sampler, steps or SAMPLERS[sampler][2]


def sampling_scheduler(training_config, sampler: str, steps: int | None = None):
    """The diffusers scheduler `sampler` built from the training scheduler's config, timesteps set."""
    sampler, steps = resolve_sampler(sampler, steps)
    cls, extra, _ = SAMPLERS[sampler]
    scheduler = cls.from_config(training_config, **extra)
    scheduler.set_timesteps(steps)
    return scheduler


PREDICTION_TYPES = ("epsilon", "v_prediction")
# The training losses scripts/bench_diffusion_loss.py compares, by name (an experiment's `diffusion_loss`).
# None reached epsilon's FID in fewer steps on both data sets it measured (v-minsnr5 did on RGB blood cells,
# not on grayscale PneumoniaMNIST: docs/guide/benchmarks.md), so the default stays epsilon.
DIFFUSION_LOSSES = {"epsilon": {"prediction_type": "epsilon", "snr_gamma": None},
                    "epsilon-minsnr5": {"prediction_type": "epsilon", "snr_gamma": 5.0},
                    "v-minsnr5": {"prediction_type": "v_prediction", "snr_gamma": 5.0}}
DEFAULT_LOSS = "epsilon"


def check_diffusion_loss(name) -> str:
    if name not in DIFFUSION_LOSSES:
        raise GenaugError(f"diffusion_loss must be one of {', '.join(DIFFUSION_LOSSES)} (got {name!r})")
    return name


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights per sample: min(SNR, gamma) / SNR for epsilon prediction and
    min(SNR, gamma) / (SNR + 1) for v-prediction (diffusers' text-to-image training script)."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.minimum(snr, torch.full_like(snr, float(gamma)))
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scheduler,
                   snr_gamma: float | None) -> torch.Tensor:
    """MSE against the scheduler's target (the noise, or the velocity `get_velocity(x0, noise, t)`),
    each sample weighted by Min-SNR-gamma when `snr_gamma` is set."""
    kind = scheduler.config.prediction_type
    target = scheduler.get_velocity(x0, noise, t) if kind == "v_prediction" else noise
    if snr_gamma is None:
        return F.mse_loss(pred, target.float())
    per_sample = F.mse_loss(pred, target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_sample * min_snr_weights(scheduler, t, snr_gamma, kind)).mean()


def _takes_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def _unet(config: dict, channels: int, image_size: int, num_class_embeds: int | None = None) -> UNet2DModel:
    widths = tuple(config["block_out_channels"])
    if image_size % 2 ** (len(widths) - 1):
        raise GenaugError(f"image size {image_size} is not divisible by 2^{len(widths) - 1} "
                          f"(UNet with {len(widths)} levels); change block_out_channels")
    attn = set(config["attention_levels"])
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(len(widths)))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(len(widths))))
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                       block_out_channels=widths, layers_per_block=config["layers_per_block"],
                       down_block_types=down, up_block_types=up,
                       norm_num_groups=config["norm_num_groups"], dropout=config["dropout"],
                       num_class_embeds=num_class_embeds)


class DDPM(GenerativeModel):
    family = "ddpm"
    default_config = {
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "attention_levels": [2],
        "norm_num_groups": 8,
        "dropout": 0.0,
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "learning_rate": 2e-4,
        "lr_warmup_steps": 100,
        "weight_decay": 0.0,
        "ema_decay": 0.999,
        "grad_clip": 1.0,
        "sampler": "ddim",
        "sample_steps": None,
        # prediction_type: epsilon or v_prediction (the UNet predicts the velocity; every sampler follows);
        # snr_gamma: Min-SNR-gamma loss weighting (Hang et al., 2023; 5 recommended), None for plain MSE
        **DIFFUSION_LOSSES[DEFAULT_LOSS],
    }

    def __init__(self, config, channels, image_size):
        super().__init__(config, channels, image_size)
        self.unet = self._build_unet()
        if self.config["prediction_type"] not in PREDICTION_TYPES:
            raise GenaugError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)} "
                              f"(got {self.config['prediction_type']!r})")
        gamma = self.config["snr_gamma"]
        if gamma is not None and not (isinstance(gamma, (int, float)) and gamma > 0):
            raise GenaugError(f"snr_gamma must be a number above 0, or null for the plain loss (got {gamma!r})")
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=self.config["num_train_timesteps"],
                                             beta_schedule=self.config["beta_schedule"],
                                             prediction_type=self.config["prediction_type"])
        self.ema: EMAModel | None = None

    def prepare(self, accelerator, n_train):
        c = self.config
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=c["learning_rate"], weight_decay=c["weight_decay"])
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=c["lr_warmup_steps"])
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(self.unet, optimizer, lr_scheduler)
        self.ema = EMAModel(bare(self.unet).parameters(), decay=c["ema_decay"],
                            use_ema_warmup=True, model_cls=UNet2DModel,
                            model_config=bare(self.unet).config)
        self.ema.to(accelerator.device)
        self.ema_state = EMAOnDevice(self.ema, accelerator.device)
        accelerator.register_for_checkpointing(self.ema_state)

    def train_step(self, batch, rng, step, accelerator, labels=None):
        noise = torch.randn(batch.shape, generator=rng, device=rng.device).to(batch.device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (batch.shape[0],),
                          generator=rng, device=rng.device).to(batch.device)
        noisy = self.noise_scheduler.add_noise(batch, noise, t)
        class_labels = self._training_labels(labels, rng, batch.device)
        with accelerator.autocast():
            pred = self.unet(noisy, t, class_labels=class_labels).sample
        loss = diffusion_loss(pred.float(), batch, noise, t, self.noise_scheduler, self.config["snr_gamma"])
        accelerator.backward(loss)
        if accelerator.sync_gradients and self.config["grad_clip"]:
            accelerator.clip_grad_norm_(self.unet.parameters(), self.config["grad_clip"])
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(bare(self.unet).parameters())
        return {"loss": float(loss.detach())}

    def _training_labels(self, labels, rng, device):
        return None

    def sampling_mode(self):
        """Sample with the EMA weights, then put the training weights back exactly."""
        return ema_weights(self.ema, self.unet)

    def _bare_unet(self) -> UNet2DModel:
        return bare(self.unet)

    def _build_unet(self) -> UNet2DModel:
        return _unet(self.config, self.channels, self.image_size)

    def _noise_prediction(self, unet, x, t, condition):
        if condition:
            raise GenaugError(f"a {self.family} model is unconditional: it takes no {', '.join(condition)}")
        return unet(x, t).sample

    @torch.no_grad()
    def edit(self, images, strength: float, generators, sampler=None, steps=None, **condition):
        """SDEdit: each image (model range, N x C x S x S) noised to `strength` of the sampler's
        schedule, then denoised (diffusers' img2img `get_timesteps`): the last `int(steps * strength)`
        steps run from `scheduler.add_noise(x0, noise, t_start)`. Strength 0 returns the images;
        strength 1 starts from pure noise, as `sample` does, so the images play no part."""
        if not 0 <= strength <= 1:
            raise GenaugError(f"edit strength must be in [0, 1] (got {strength})")
        scheduler = sampling_scheduler(self.noise_scheduler.config, sampler or self.config["sampler"],
                                       steps or self.config["sample_steps"])
        n_steps = len(scheduler.timesteps)
        keep = min(int(n_steps * strength), n_steps)
        if keep == 0:
            return images.clamp(-1, 1)
        unet = self._bare_unet()
        was_training = unet.training
        unet.eval()
        device = next(unet.parameters()).device
        noise = latents(generators, (self.channels, self.image_size, self.image_size), device)
        timesteps = scheduler.timesteps[n_steps - keep:]
        if hasattr(scheduler, "set_begin_index"):  # multistep solvers count their steps from t_start
            scheduler.set_begin_index(n_steps - keep)
        if keep == n_steps:
            x = noise * scheduler.init_noise_sigma
        else:
            x = scheduler.add_noise(images.to(device), noise, timesteps[:1].repeat(len(images)))
        noise_kwargs = {"generator": generators} if _takes_generator(scheduler) else {}
        for t in timesteps:
            eps = self._noise_prediction(unet, scheduler.scale_model_input(x, t), t, condition)
            x = scheduler.step(eps, t, x, **noise_kwargs).prev_sample
        unet.train(was_training)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, generators, sampler=None, steps=None, **condition):
        scheduler = sampling_scheduler(self.noise_scheduler.config, sampler or self.config["sampler"],
                                       steps or self.config["sample_steps"])
        noise_kwargs = {"generator": generators} if _takes_generator(scheduler) else {}
        unet = self._bare_unet()
        was_training = unet.training
        unet.eval()
        device = next(unet.parameters()).device
        x = latents(generators, (self.channels, self.image_size, self.image_size), device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = self._noise_prediction(unet, scheduler.scale_model_input(x, t), t, condition)
            x = scheduler.step(eps, t, x, **noise_kwargs).prev_sample
        unet.train(was_training)
        return x.clamp(-1, 1)

    def save_pretrained(self, folder, accelerator=None):
        unet = self._bare_unet()
        ema_unet = self._build_unet()
        ema_unet.load_state_dict(unet.state_dict())
        self.ema.copy_to(ema_unet.parameters())
        DDPMPipeline(unet=ema_unet.cpu(), scheduler=self.noise_scheduler).save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder, config, channels, image_size, device):
        model = cls.__new__(cls)
        GenerativeModel.__init__(model, config, channels, image_size)
        pipe = DDPMPipeline.from_pretrained(Path(folder))
        model.unet = pipe.unet.to(device).eval()
        model.noise_scheduler = pipe.scheduler
        model.ema = None
        return model
