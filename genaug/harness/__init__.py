"""Classifier retraining harness: acceptance of synthetic images, classifier arms, statistics, report."""
