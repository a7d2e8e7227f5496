"""Metrics of a multi-label classifier (sigmoid outputs, one probability per label).

Per label: AUROC and average precision (threshold-free), and at a threshold chosen on the
validation part (the one maximising that label's F1 there; 0.5 for a label without validation
positives): F1 and Cohen's kappa. Summaries: macro and micro AUROC, macro average precision, macro
F1, Cohen's kappa of every (image, label) decision together, and the final score of the fundus
study, (macro F1 + kappa + macro AUROC) / 3. A label with one class only in the scored images has
no AUROC (None) and is left out of the macro means.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

MULTILABEL_METRICS = ("macro_auroc", "micro_auroc", "macro_ap", "macro_f1", "cohen_kappa", "final_score")


def choose_thresholds(y_val: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold with the best F1 on the validation part."""
    out = np.full(y_val.shape[1], 0.5)
    for j in range(y_val.shape[1]):
        if y_val[:, j].any():
            precision, recall, cuts = skm.precision_recall_curve(y_val[:, j], p_val[:, j])
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            out[j] = float(cuts[int(np.argmax(f1))])
    return out


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, names: list[str]) -> dict:
    y_true, probs = np.asarray(y_true).astype(int), np.asarray(probs, dtype=float)
    pred = (probs >= np.asarray(thresholds)[None, :]).astype(int)
    per_label = {}
    for j, name in enumerate(names):
        both = 0 < y_true[:, j].sum() < len(y_true)
        per_label[name] = {
            "positives": int(y_true[:, j].sum()),
            "auroc": float(skm.roc_auc_score(y_true[:, j], probs[:, j])) if both else None,
            "average_precision": float(skm.average_precision_score(y_true[:, j], probs[:, j])) if both else None,
            "f1": float(skm.f1_score(y_true[:, j], pred[:, j], zero_division=0)),
            "cohen_kappa": float(skm.cohen_kappa_score(y_true[:, j], pred[:, j])) if both else None,
            "threshold": float(thresholds[j])}
    scored = [v for v in per_label.values() if v["auroc"] is not None]
    macro_auroc = float(np.mean([v["auroc"] for v in scored])) if scored else None
    flat_both = 0 < y_true.sum() < y_true.size
    macro_f1 = float(np.mean([v["f1"] for v in per_label.values()]))
    kappa = float(skm.cohen_kappa_score(y_true.ravel(), pred.ravel())) if flat_both else None
    return {
        "macro_auroc": macro_auroc,
        "micro_auroc": float(skm.roc_auc_score(y_true.ravel(), probs.ravel())) if flat_both else None,
        "macro_ap": float(np.mean([v["average_precision"] for v in scored])) if scored else None,
        "macro_f1": macro_f1,
        "cohen_kappa": kappa,
        "final_score": (macro_f1 + kappa + macro_auroc) / 3 if None not in (kappa, macro_auroc) else None,
        "per_label": per_label,
    }
