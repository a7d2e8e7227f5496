"""A DDPM conditioned on a set of labels (several findings per image), with classifier-free guidance.

One learned embedding per label, summed over the image's label set (the empty set, "No Finding",
sums to zero), and one more learned vector, the null condition that label dropout trains and
guidance contrasts with (`eps = eps_null + W * (eps_set - eps_null)`). The embeddings are the rows
of diffusers' `class_embedding` table (labels + 1 rows) inside the UNet, so the model folder is a
plain `DDPMPipeline`; `LabelSetEmbedding` reads that table with a label-set code instead of an index:
the code is the image's 0/1 label vector with a last entry 1 for the null condition.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GenaugError
from .ddpm import DDPM, _unet
from .ddpm_conditional import guided_noise


class LabelSetEmbedding(nn.Module):
    """`code @ weight`: the sum of the embeddings of the labels a code holds (its last entry: the null)."""

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.weight = table.weight

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return code.to(self.weight.dtype) @ self.weight


def label_set_codes(labels: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
    """Codes (N x L+1) of 0/1 label vectors (N x L); rows where `null` is true are the null condition."""
    labels = torch.as_tensor(labels).float()
    null = torch.zeros(len(labels), dtype=torch.bool, device=labels.device) if null is None else null.bool()
    codes = torch.cat([labels * (~null)[:, None], null[:, None].float()], dim=1)
    return codes


class MultiLabelDDPM(DDPM):
    family = "ddpm-multilabel"
    conditional = True
    multilabel = True
    default_config = {**DDPM.default_config, "num_classes": None, "label_dropout": 0.1, "guidance": 1.0}

    def __init__(self, config, channels, image_size):
        num = (config or {}).get("num_classes")
        if not isinstance(num, int) or num < 1:
            raise GenaugError("a label-set DDPM needs the number of labels (model config num_classes)")
        super().__init__(config, channels, image_size)

    @property
    def num_labels(self) -> int:
        return int(self.config["num_classes"])

    def _build_unet(self):
        unet = _unet(self.config, self.channels, self.image_size, num_class_embeds=self.num_labels + 1)
        unet.class_embedding = LabelSetEmbedding(unet.class_embedding)
        return unet

    def _training_labels(self, labels, rng, device):
        if labels is None or labels.ndim != 2 or labels.shape[1] != self.num_labels:
            raise GenaugError(f"a label-set DDPM trains on 0/1 label vectors of {self.num_labels} labels")
        drop = torch.rand(len(labels), generator=rng, device=rng.device).cpu() < self.config["label_dropout"]
        return label_set_codes(labels.cpu(), drop).to(device)

    def _noise_prediction(self, unet, x, t, condition):
        labels, guidance = condition.get("labels"), condition.get("guidance")
        if labels is None:
            raise GenaugError(f"sampling a label-set model needs a 0/1 label vector of {self.num_labels} labels "
                              "for each image")
        w = float(self.config["guidance"] if guidance is None else guidance)
        cond = label_set_codes(labels.to(x.device))
        null = label_set_codes(torch.zeros_like(labels, device=x.device),
                               torch.ones(len(labels), dtype=torch.bool, device=x.device))
        return guided_noise(unet, x, t, cond, null, w)

    def sample(self, generators, sampler=None, steps=None, labels=None, guidance=None):
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.float32)
            if labels.shape != (len(generators), self.num_labels) or not ((labels == 0) | (labels == 1)).all():
                raise GenaugError(f"one 0/1 vector of {self.num_labels} labels per image: {len(generators)} images, "
                                  f"labels {tuple(labels.shape)}")
        if guidance is not None and guidance < 0:
            raise GenaugError(f"guidance must be >= 0 (got {guidance})")
        return super().sample(generators, sampler, steps, labels=labels, guidance=guidance)

    def grid_condition(self, n: int) -> dict:
        return {"labels": torch.eye(self.num_labels)[torch.arange(n) % self.num_labels]}

    @classmethod
    def from_pretrained(cls, folder, config, channels, image_size, device):
        model = super().from_pretrained(folder, config, channels, image_size, device)
        model.unet.class_embedding = LabelSetEmbedding(model.unet.class_embedding)
        return model
