"""The generator families by name (each class's `family`). A new family is a module implementing
`base.GenerativeModel` and one entry here; the families import only `base` and each other, never this."""

from __future__ import annotations

from ..errors import GenaugError
from .base import GenerativeModel
from .dcgan import DCGAN
from .ddpm import DDPM
from .ddpm_conditional import ConditionalDDPM
from .ddpm_multilabel import MultiLabelDDPM
from .ddpm_pool import ConditionalFinetuneDDPM, EditDDPM, FinetuneDDPM, PseudoDDPM, SemiDDPM
from .vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {
    cls.family: cls for cls in (VAE, DCGAN, DDPM, ConditionalDDPM, SemiDDPM, PseudoDDPM, FinetuneDDPM,
                                               ConditionalFinetuneDDPM, EditDDPM, MultiLabelDDPM)}


def get_family(name: str) -> type[GenerativeModel]:
    if name not in FAMILIES:
        raise GenaugError(f"unknown generator {name!r}; choose from {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
