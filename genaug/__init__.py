"""genaug: generative data augmentation for scarce image data sets."""

__version__ = "0.1.0"
