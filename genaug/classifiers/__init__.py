"""Classifier networks (`networks.py`: build, save, reload, embed) and inference (`inference.py`),
shared by the harness, `explain` and `nearest`."""
