"""Data layer: sources behind one spec, seeded scarce subsets, manifests."""

from . import describe
from .images import check_image_size, save_png, to_model_range, to_uint8
from .sources import Source, open_source
from .subsets import RealImages, draw_subset, load_manifest, load_split, reload_subset

__all__ = ["describe", "Source", "open_source", "RealImages", "draw_subset", "load_manifest", "load_split",
           "reload_subset", "check_image_size", "save_png", "to_model_range", "to_uint8"]
