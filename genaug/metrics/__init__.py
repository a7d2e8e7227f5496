"""Metrics: Inception FID/KID/precision-recall via torch-fidelity, offline weights."""
