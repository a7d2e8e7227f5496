"""augment-and-train: statistics, CR loss, acceptance policies, an end-to-end run, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from genaug.data import draw_subset, load_split, open_source
from genaug.errors import GenaugError
from genaug.metrics import acceptance
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.training import TrainSettings, train_classifier
from genaug.classifiers.networks import build_classifier
from genaug.harness.experiment import Experiment, experiment_config
from genaug.classifiers.losses import confusion_rates, cr_cross_entropy
from genaug.harness.stats.paired import paired_difference
from genaug.classifiers.metrics import classification_metrics
from genaug.metrics.similarity import cosine_similarity
from genaug.metrics.fidelity import ImageSet, compute_metrics, inception_features

from conftest import PNEUMONIA, assert_clean_error, run_cli


# -- statistics ----------------------------------------------------------------------------

def test_paired_difference_matches_scipy_and_hand_ci():
    treated = [0.81, 0.78, 0.84, 0.80, 0.83]
    baseline = [0.79, 0.77, 0.80, 0.80, 0.79]
    r = paired_difference(treated, baseline)
    d = np.array(treated) - np.array(baseline)
    assert r["mean_diff"] == pytest.approx(0.022)
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert r["ci_low"] == pytest.approx(d.mean() - half) and r["ci_high"] == pytest.approx(d.mean() + half)
    assert r["p_ttest"] == pytest.approx(stats.ttest_rel(treated, baseline).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(treated, baseline).pvalue)
    assert r["n"] == 5 and r["wilcoxon_min_p"] == 0.125  # one zero difference: 4 pairs count, 2 / 2^4
    same = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert same["mean_diff"] == 0 and same["p_wilcoxon"] is None and "zero variance" in same["note"]


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[pred] * 0.7 + 0.1
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"]["a"] == {"sensitivity": pytest.approx(2 / 3), "specificity": pytest.approx(1.0)}
    assert m["per_class"]["b"]["specificity"] == pytest.approx(3 / 4)
    assert 0 < m["cohen_kappa"] < 1 and 0.5 < m["roc_auc_ovr"] <= 1 and 0 < m["macro_f1"] < 1


# -- confusion-rate loss --------------------------------------------------------------------

def test_cr_loss_is_cross_entropy_when_cr_is_zero():
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(cr_cross_entropy(logits, y, None, 3.0), ce)
    assert torch.allclose(cr_cross_entropy(logits, y, torch.zeros(3, 3), 3.0), ce)


def test_cr_loss_by_hand():
    cm = torch.tensor([[5, 3, 0], [1, 6, 0], [0, 0, 4]])
    cr = confusion_rates(cm)
    assert cr[0, 1] == pytest.approx(0.75) and cr[1, 0] == pytest.approx(0.25) and cr[0, 2] == 0 and cr[1, 1] == 0
    logits = torch.tensor([[0.2, 1.0, 0.0], [2.0, 0.1, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 0, 2])  # sample 0 misclassified as 1; samples 1, 2 correct
    ce = F.cross_entropy(logits, y, reduction="none")
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    expected = (ce[0] * (1 + 3 * h) + ce[1] + ce[2]) / 3
    assert cr_cross_entropy(logits, y, cr, 3.0).item() == pytest.approx(expected.item(), rel=1e-6)


# -- acceptance policies on constructed cases -------------------------------------------------

@pytest.fixture(scope="module")
def two_classes(fashion):
    """Trouser vs Bag: real Fashion-MNIST classes that a small classifier separates."""
    s = open_source(fashion)
    labels = [s.class_index("Trouser"), s.class_index("Bag")]
    real, _ = draw_subset(s, labels, 40, seed=0, image_size=28)
    y = (real.labels == labels[1]).long()
    test = load_split(s, "test", labels, 28)
    return real.images, y, test.images, (test.labels == labels[1]).long()


def test_memorization_rejects_exact_copy_in_inception_space(two_classes):
    x, y, test_x, test_y = two_classes
    held = torch.cat([torch.nonzero(test_y == c).flatten()[:5] for c in (0, 1)])
    ctx = acceptance.AcceptanceContext(
        x[:12], y[:12], ["Trouser", "Bag"], {**acceptance.DEFAULTS, "memorization_spaces": ["inception"]},
        features=inception_features, heldout_images=test_x[held], heldout_labels=test_y[held],
        similarity=lambda q, g, space: cosine_similarity(inception_features(q), inception_features(g)))
    candidates = torch.stack([x[3], test_x[-2], test_x[-1]])  # a copy of a training image, two new images
    keep, rows = acceptance.accept(candidates, int(y[3]), ["memorization"], ctx)
    assert keep.tolist() == [False, True, True]
    assert rows[0]["rejected"] == 1 and rows[0]["inception_similarity"]["max"] == pytest.approx(1.0, abs=1e-6)


def test_confidence_rejects_image_of_another_class(two_classes):
    x, y, test_x, test_y = two_classes
    settings = TrainSettings(epochs=8, batch_size=16, lr_step=100)
    model = train_classifier(x, y, test_x[:20], test_y[:20], 2, settings, seed=0, steps_per_epoch=5,
                             device="cpu").model
    ctx = acceptance.AcceptanceContext(x, y, ["Trouser", "Bag"],
                                       class_probs=lambda im: predict_proba(model, im, "cpu"))
    trousers, bags = test_x[test_y == 0][:6], test_x[test_y == 1][:6]
    keep, rows = acceptance.accept(torch.cat([trousers, bags]), 0, ["all", "confidence"], ctx)
    assert keep[:6].sum() >= 5 and keep[6:].sum() <= 1
    assert rows[0]["kept"] == 12 and rows[1]["seen"] == 12 and rows[1]["rejected"] >= 5


def test_fid_gate_drops_set_of_wrong_class(two_classes):
    x, y, test_x, test_y = two_classes
    fid = lambda real, fake: compute_metrics(ImageSet(real, "r", True), ImageSet(fake, "f"))["fid"]  # noqa: E731
    ctx = acceptance.AcceptanceContext(x[y == 0][:12], y[y == 0][:12], ["Trouser", "Bag"],
                                       settings={**acceptance.DEFAULTS, "fid_max": 150.0}, fid=fid)
    keep_own, rows_own = acceptance.accept(test_x[test_y == 0][:12], 0, ["fid-gate"], ctx)
    keep_bad, rows_bad = acceptance.accept(test_x[test_y == 1][:12], 0, ["fid-gate"], ctx)
    assert rows_own[0]["fid"] < 150 < rows_bad[0]["fid"]
    assert keep_own.all() and not keep_bad.any()


def test_unknown_policy():
    with pytest.raises(GenaugError, match="unknown acceptance policy"):
        acceptance.parse_policies("all,vibes")


def test_small_image_stem():
    m = build_classifier("resnet18", 1, 2, 28)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.in_channels == 1
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert build_classifier("resnet18", 3, 4, 224).conv1.kernel_size == (7, 7)
    assert build_classifier("efficientnet_b0", 1, 2, 28).features[0][0].stride == (1, 1)


def test_bad_inputs(tmp_path):
    base = ["augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--out", tmp_path / "x"]
    assert_clean_error(run_cli(*base, "--synthetic-per-class", "-1"), "synthetic_per_class must be at least 1", code=1)
    assert_clean_error(run_cli(*base, "--synthetic-per-class", "many"), "a comma list of them", code=1)
    assert_clean_error(run_cli(*base, "--generator", "gan"), "unknown generator 'gan'", code=1)
    assert_clean_error(run_cli(*base, "--per-class", "1"), "--per-class", code=2)
    assert_clean_error(run_cli(*base, "--accept", "vibes"), "unknown acceptance policy")
    for validation, message in (("carve", "val_fraction must be above 0 and at most 0.5"),
                                ("source", "too few images for the train/validation split")):
        config = experiment_config(None, {"per_class": 2, "val_fraction": 0.9, "validation": validation})
        with pytest.raises(GenaugError, match=message):
            Experiment(str(PNEUMONIA), tmp_path / "y", config, progress=False).unit_data(0)
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("seeeds: 3\n")
    assert_clean_error(run_cli(*base, "--config", cfg), "unknown setting(s)", "'seeeds' (did you mean 'seeds'?)")
    assert not (tmp_path / "y").exists() and not (tmp_path / "x").exists()


def test_rerun_with_other_settings_is_refused(tmp_path):
    config = experiment_config(None, {"per_class": 4, "seeds": 1})
    Experiment(str(PNEUMONIA), tmp_path, config, progress=False).check_settings()
    Experiment(str(PNEUMONIA), tmp_path, experiment_config(None, {"per_class": 4, "seeds": 3, "replicates": 2}),
               progress=False).check_settings()  # more seeds and replicates: same experiment
    with pytest.raises(GenaugError, match=r"other settings \(per_class\)"):
        Experiment(str(PNEUMONIA), tmp_path, experiment_config(None, {"per_class": 6, "seeds": 1}),
                   progress=False).check_settings()
