"""Classification metrics per run, and paired statistics across seeds (scipy.stats)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn import metrics as skm

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "cohen_kappa")


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class sensitivity/specificity, OvR ROC AUC,
    Cohen's kappa and the confusion matrix (rows: true class, columns: predicted)."""
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
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "roc_auc_ovr": auc,
        "cohen_kappa": float(skm.cohen_kappa_score(y_true, y_pred, labels=labels)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n_test": int(len(y_true)),
    }


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def summarize(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
            "n": int(len(arr)), "values": arr.tolist()}


def t_half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the t confidence interval of a mean of n values with sample std `sd`."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def paired_difference(treated: list[float], baseline: list[float], confidence: float = 0.95) -> dict:
    """Paired difference (treated - baseline) over seeds: mean, t confidence interval,
    paired t-test and Wilcoxon signed-rank p-values, and the number of pairs."""
    a, b = np.asarray(treated, float), np.asarray(baseline, float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    d = a - b
    n = len(d)
    out = {"n_seeds": n, "mean_diff": float(d.mean()), "diffs": d.tolist()}
    if n < 2:
        return {**out, "ci_low": math.nan, "ci_high": math.nan, "p_ttest": math.nan, "p_wilcoxon": math.nan,
                "note": "one seed: no interval or test"}
    sd = d.std(ddof=1)
    half = t_half_width(sd, n, confidence)
    out.update(ci_low=float(d.mean() - half), ci_high=float(d.mean() + half), confidence=confidence)
    if sd == 0:
        out.update(p_ttest=1.0 if d.mean() == 0 else 0.0, note="all paired differences are equal")
    else:
        out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
    if np.all(d == 0):
        out["p_wilcoxon"] = 1.0
    else:
        out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
    return out
