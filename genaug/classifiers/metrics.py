"""Metrics of one classifier on one test set: accuracy, balanced accuracy, macro F1, one-vs-rest
AUROC, Cohen's kappa, sensitivity and specificity per class, and the composite final score
(scikit-learn's metrics). The harness compares them across arms and replicates (harness/stats/paired.py)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "cohen_kappa", "final_score")


def composite_score(macro_f1: float, cohen_kappa: float, roc_auc: float) -> float:
    """The ODIR fundus challenge's final score: (macro-F1 + Cohen's kappa + ROC AUC) / 3."""
    return float((macro_f1 + cohen_kappa + roc_auc) / 3)


def with_composite(test: dict) -> dict:
    """A run's test metrics with `final_score` filled in (results written before it existed lack it)."""
    if "final_score" in test:
        return test
    return {**test, "final_score": composite_score(test["macro_f1"], test["cohen_kappa"], test["roc_auc_ovr"])}


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class sensitivity/specificity, OvR ROC AUC,
    Cohen's kappa, the composite `final_score` and the confusion matrix (rows: true class, columns:
    predicted)."""
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    total = cm.sum()
    per_class = {}
    for i, name in enumerate(classes):
        tp, fn = cm[i, i], cm[i].sum() - cm[i, i]
        fp = cm[:, i].sum() - tp
        tn = total - tp - fn - fp
        per_class[name] = {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp)}
    present = np.unique(y_true)
    if len(present) < 2:
        auc = float("nan")
    elif len(classes) == 2:
        auc = float(skm.roc_auc_score(y_true, probs[:, 1]))
    else:
        auc = float(skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
    f1 = float(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0))
    kappa = float(skm.cohen_kappa_score(y_true, y_pred, labels=labels))
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": f1,
        "roc_auc_ovr": auc,
        "cohen_kappa": kappa,
        "final_score": composite_score(f1, kappa, auc),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n_test": int(len(y_true)),
    }


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")
