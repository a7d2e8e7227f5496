"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans, 2022).

One diffusers `UNet2DModel` for every class, with a learned class embedding
(`num_class_embeds` = classes + 1): index K (the number of classes) is the "no class" label.
During training each image's label is replaced by it with probability `label_dropout`, so the
same network learns the conditional and the unconditional noise prediction. Sampling a class
with guidance weight W combines them as diffusers' pipelines do:

    eps = eps_uncond + W * (eps_cond - eps_uncond)

W = 0 is the unconditional model (the class is ignored), W = 1 the conditional model without
guidance, W > 1 pushes samples towards what distinguishes the class, trading diversity for
fidelity. W = 0 and W = 1 need one network call per step, other weights two (in one batch).

With scarce classes one shared model sees every class's images, where per-class models each
see only their own.
"""

from __future__ import annotations

import torch

from ..errors import GenaugError
from .ddpm import DDPM, _unet


def guided_noise(unet, x, t, condition: torch.Tensor, null: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: eps_null + w (eps_condition - eps_null), one network call at w 0 or 1."""
    if w == 0:
        return unet(x, t, class_labels=null).sample
    if w == 1:
        return unet(x, t, class_labels=condition).sample
    both = unet(torch.cat([x, x]), t, class_labels=torch.cat([null, condition])).sample
    uncond, cond = both.chunk(2)
    return uncond + w * (cond - uncond)


class ConditionalDDPM(DDPM):
    family = "ddpm-cond"
    conditional = True
    default_config = {
        **DDPM.default_config,
        "num_classes": None,  # set from the training data
        "label_dropout": 0.1,
        "guidance": 1.0,
    }

    def __init__(self, config, channels, image_size):
        num = (config or {}).get("num_classes")
        if not isinstance(num, int) or num < 1:
            raise GenaugError("a conditional DDPM needs the number of classes (model config num_classes)")
        super().__init__(config, channels, image_size)

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def null_label(self) -> int:
        return self.num_classes

    def _build_unet(self):
        return _unet(self.config, self.channels, self.image_size, num_class_embeds=self.num_classes + 1)

    def _training_labels(self, labels, rng, device):
        if labels is None:
            raise GenaugError("a conditional DDPM trains on labelled images; no labels were given")
        drop = torch.rand(labels.shape, generator=rng, device=rng.device).cpu() < self.config["label_dropout"]
        drop |= labels < 0  # an image without a label (an unlabelled pool image): the null label
        return torch.where(drop, torch.full_like(labels, self.null_label), labels).to(device)

    def _noise_prediction(self, unet, x, t, condition):
        labels, guidance = condition.get("labels"), condition.get("guidance")
        unknown = set(condition) - {"labels", "guidance"}
        if unknown:
            raise GenaugError(f"unknown sampling option(s) {', '.join(sorted(unknown))}")
        if labels is None:
            raise GenaugError(f"sampling a conditional model needs a class for each image "
                              f"(labels 0..{self.num_classes - 1})")
        w = float(self.config["guidance"] if guidance is None else guidance)
        labels = labels.to(x.device)
        return guided_noise(unet, x, t, labels, torch.full_like(labels, self.null_label), w)

    def sample(self, generators, sampler=None, steps=None, labels=None, guidance=None):
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (len(generators),):
                raise GenaugError(f"one class label per image: {len(generators)} images, labels {tuple(labels.shape)}")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise GenaugError(f"class labels run from 0 to {self.num_classes - 1}")
        if guidance is not None and guidance < 0:
            raise GenaugError(f"guidance must be >= 0 (got {guidance})")
        return super().sample(generators, sampler, steps, labels=labels, guidance=guidance)
