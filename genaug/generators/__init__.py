"""Generator families (VAE, DCGAN, DDPM) behind one interface, and their training loop."""

from .base import GenerativeModel
from .registry import FAMILIES, get_family
from .training import Trainer, load_trained

__all__ = ["FAMILIES", "GenerativeModel", "get_family", "Trainer", "load_trained"]
