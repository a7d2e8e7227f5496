"""Where classifiers look: class-activation heatmaps for saved classifiers and experiments."""
