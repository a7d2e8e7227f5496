"""Data layer on real data: sources, shapes, ranges, counts, subsets, manifests, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from genaug.data import draw_subset, load_split, open_source, reload_subset, to_model_range
from genaug.errors import GenaugError

from conftest import CIFAR, OCT, PNEUMONIA, assert_clean_error, run_cli


def test_pneumoniamnist_counts_shapes_range():
    s = open_source(str(PNEUMONIA))
    assert s.classes == ["normal", "pneumonia"] and s.channels == 1 and s.native_size == 28
    train = s.split("train")
    assert len(train.ids) == 4708
    assert [(train.labels == c).sum() for c in (0, 1)] == [1214, 3494]
    assert len(s.split("val").ids) == 524 and len(s.split("test").ids) == 624
    images, ids, hashes, _ = s.load("train", train.ids[:50])
    assert ids == train.ids[:50] and hashes[0] == s.item_hash("train", ids[0])
    assert images.shape == (50, 1, 28, 28) and images.dtype == torch.uint8
    assert images.max() > 200 and images.min() < 50
    x = to_model_range(images)
    assert x.min() >= -1 and x.max() <= 1


def test_pneumonia_via_medmnist_name(tmp_path):
    shutil.copy(PNEUMONIA, tmp_path / "pneumoniamnist.npz")
    s = open_source("medmnist:pneumoniamnist", data_root=tmp_path)
    assert len(s.split("train").ids) == 4708 and s.classes == ["normal", "pneumonia"]


def test_oct_folder_eight_per_class_mixed_sizes():
    s = open_source(str(OCT))
    assert s.classes == ["CNV", "DME", "DRUSEN", "NORMAL"] and s.channels == 1
    for label in range(4):
        n = sum((s.split(split).labels == label).sum() for split in ("train", "test"))
        assert n == 8
    assert "CNV/abc.jpeg" in s.split("train").ids + s.split("test").ids
    assert not set(s.split("train").ids) & set(s.split("test").ids)
    n_train = len(s.split("train").ids)
    images = s.load("train", s.split("train").ids, image_size=64).images
    assert images.shape == (n_train, 1, 64, 64) and 20 <= n_train <= 28


def test_cifar_subset_colour():
    s = open_source(str(CIFAR))
    assert s.channels == 3 and s.classes[0] == "airplane" and len(s.classes) == 10
    assert len(s.split("train").ids) == 5085 and len(s.split("test").ids) == 1017
    images = load_split(s, "test", [s.class_index("cat")], 32).images
    assert images.shape[1:] == (3, 32, 32) and len(images) == 104


def test_fashion_mnist_from_debian(fashion):
    s = open_source(fashion)
    assert len(s.classes) == 10 and s.channels == 1
    assert len(s.split("train").ids) == 60000 and len(s.split("test").ids) == 10000
    assert (s.split("train").labels == s.class_index("Shirt")).sum() == 6000
    images = load_split(s, "test", [s.class_index("t-shirt/top")], 28).images
    assert images.shape == (1000, 1, 28, 28)


def test_classes_by_name_index_and_all():
    s = open_source(str(OCT))
    assert s.resolve_classes("all") == [0, 1, 2, 3]
    assert s.resolve_classes("dme,3") == [1, 3]
    with pytest.raises(GenaugError, match="known classes: CNV, DME, DRUSEN, NORMAL"):
        s.class_index("AMD")


def test_per_class_subset_reproducible_disjoint_from_test():
    s = open_source(str(OCT))
    a, ma = draw_subset(s, [0, 1], 4, seed=7, image_size=32)
    b, mb = draw_subset(s, [0, 1], 4, seed=7, image_size=32)
    c, _ = draw_subset(s, [0, 1], 4, seed=8, image_size=32)
    assert a.ids == b.ids and torch.equal(a.images, b.images)
    assert a.ids != c.ids
    assert not set(a.ids) & set(s.split("test").ids)
    assert [it["label"] for it in ma["train"]["items"]] == [0] * 4 + [1] * 4
    assert all(len(it["sha256"]) == 64 for it in ma["train"]["items"])
    p = open_source(str(PNEUMONIA))
    x, m = draw_subset(p, [0, 1], 50, seed=0, image_size=28)
    assert len(x.images) == 100 and m["test"]["count"] == 624
    _, again = reload_subset(m)
    assert torch.equal(again.images, x.images)


def test_manifest_refuses_changed_data(tmp_path):
    root = tmp_path / "oct"
    shutil.copytree(OCT, root)
    s = open_source(str(root))
    _, manifest = draw_subset(s, [0], 3, seed=0, image_size=32)
    target = root / manifest["train"]["items"][0]["id"]
    target.chmod(0o644)
    shutil.copy(root / "DME" / "DME-9583225-1.jpeg", target)
    with pytest.raises(GenaugError, match="changed since the manifest"):
        reload_subset(manifest)


def test_hash_split_when_source_has_no_test(tmp_path):
    data = np.load(PNEUMONIA)
    np.savez(tmp_path / "mine.npz", train_images=data["train_images"][:1000], train_labels=data["train_labels"][:1000])
    s = open_source(str(tmp_path / "mine.npz"))
    assert s.split_origin.startswith("hash of each item") and 150 <= len(s.split("test").ids) <= 250
    assert not set(s.split("train").ids) & set(s.split("test").ids)
    for label in (0, 1):  # stratified in expectation: each class near 20%
        n = (data["train_labels"][:1000, 0] == label).sum()
        assert abs((s.split("test").labels == label).sum() / n - 0.2) < 0.06
    # appending items never moves an existing one
    np.savez(tmp_path / "more.npz", train_images=data["train_images"][:1500], train_labels=data["train_labels"][:1500])
    bigger = open_source(str(tmp_path / "more.npz"))
    assert set(s.split("test").ids) == set(bigger.split("test").ids) & set(range(1000))


# -- bad input: one line, non-zero exit, nothing written ------------------------------------

def test_missing_path(tmp_path):
    r = run_cli("train", "vae", "--data", tmp_path / "nope", "--class", "0", "--out", tmp_path / "run")
    assert_clean_error(r, "data not found", code=1)
    assert not (tmp_path / "run").exists()


def test_unknown_class_lists_known(tmp_path):
    r = run_cli("train", "vae", "--data", OCT, "--class", "AMD", "--out", tmp_path / "run")
    assert_clean_error(r, "unknown class 'AMD'", "CNV, DME, DRUSEN, NORMAL")
    assert not (tmp_path / "run").exists()


def test_empty_class_folder(tmp_path):
    shutil.copytree(OCT, tmp_path / "oct")
    (tmp_path / "oct" / "EMPTY").mkdir()
    r = run_cli("datasets", tmp_path / "oct")
    assert_clean_error(r, "EMPTY holds no images")


def test_corrupt_image_named_and_skip_bad(tmp_path):
    root = tmp_path / "oct"
    shutil.copytree(OCT, root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    for name in ("broken.jpeg",):
        (root / "CNV" / name).write_bytes(b"not a jpeg at all")
    r = run_cli("train", "vae", "--data", root, "--class", "CNV", "--image-size", "32", "--steps", "2",
                "--out", tmp_path / "run", "--no-progress")
    assert_clean_error(r, "broken.jpeg")
    assert not (tmp_path / "run").exists()
    r = run_cli("train", "vae", "--data", root, "--class", "CNV", "--image-size", "32", "--steps", "2",
                "--out", tmp_path / "run", "--no-progress", "--skip-bad")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    names = [it["id"] for it in manifest["train"]["items"]]
    assert "CNV/broken.jpeg" not in names
    in_train = "CNV/broken.jpeg" in open_source(str(root)).split("train").ids
    assert manifest["train"]["skipped_bad"] == int(in_train)


def test_npz_without_expected_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28), np.uint8))
    r = run_cli("datasets", tmp_path / "bad.npz")
    assert_clean_error(r, "lacks the expected keys train_images and train_labels")


def test_npz_with_wrong_shapes(tmp_path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 28), np.uint8), train_labels=np.zeros(3))
    assert_clean_error(run_cli("datasets", tmp_path / "bad.npz"), "expected N x H x W")


def test_per_class_larger_than_class(tmp_path):
    n = len(open_source(str(OCT)).split("train").of_class(1))
    r = run_cli("train", "dcgan", "--data", OCT, "--class", "DME", "--per-class", n + 1, "--out", tmp_path / "run")
    assert_clean_error(r, f"--per-class {n + 1} exceeds the {n} train images of class 'DME'")
    assert not (tmp_path / "run").exists()


def test_unsupported_image_size(tmp_path):
    r = run_cli("train", "vae", "--data", PNEUMONIA, "--class", "0", "--image-size", "30", "--out", tmp_path / "r")
    assert_clean_error(r, "--image-size 30 is not supported")


def test_datasets_command_counts_and_manifest(tmp_path):
    r = run_cli("datasets", PNEUMONIA)
    assert r.exit_code == 0
    assert "0:normal\t1214\t135\t234" in r.output and "total\t4708\t524\t624" in r.output
    r = run_cli("train", "vae", "--data", PNEUMONIA, "--class", "normal", "--per-class", "5", "--steps", "1",
                "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    r = run_cli("datasets", tmp_path / "run")
    assert r.exit_code == 0 and "train items: 5" in r.output and "never used for training" in r.output


def test_config_file_and_overrides_saved(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: %s\nclass: pneumonia\nper_class: 6\nsteps: 3\nbatch_size: 4\nmodel:\n  latent_dim: 8\n"
                   % PNEUMONIA)
    r = run_cli("train", "vae", "--config", cfg, "--steps", "2", "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["steps"] == 2 and saved["per_class"] == 6 and saved["model"]["latent_dim"] == 8
    assert saved["class"] == "pneumonia" and saved["batch_size"] == 4


# -- the download paths a user with internet takes, fed from local copies --------------------

class _FakeTorchvision:
    """Stands in for a torchvision dataset class: records the call, serves local arrays."""

    def __init__(self, arrays, calls):
        self.arrays, self.calls = arrays, calls

    def __call__(self, root, train, download):
        self.calls.append((root, train, download))
        images, labels = self.arrays["train" if train else "test"]
        return type("DS", (), {"data": images, "targets": list(labels)})()


def test_cifar10_through_torchvision(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    d = np.load(CIFAR)
    calls = []
    fake = _FakeTorchvision({"train": (d["train_images"], d["train_labels"]),
                             "test": (d["test_images"], d["test_labels"])}, calls)
    monkeypatch.setattr(tvd, "CIFAR10", fake)
    s = open_source("cifar10", data_root=tmp_path)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert s.channels == 3 and s.classes[3] == "cat" and len(s.split("train").ids) == 5085
    assert s.load("test", [0, 1]).images.shape == (2, 3, 32, 32)


def test_fashion_mnist_falls_back_to_torchvision(monkeypatch, tmp_path, fashion):
    import torchvision.datasets as tvd

    import genaug.data.sources as sources

    debian = open_source("fashion-mnist")
    arrays = {s: (torch.from_numpy(debian.arrays[s][0][:30]), debian.arrays[s][1][:30]) for s in ("train", "test")}
    monkeypatch.setattr(tvd, "FashionMNIST", _FakeTorchvision(arrays, []))
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    s = open_source("fashion-mnist", data_root=tmp_path)
    assert len(s.split("train").ids) == 30 and s.load("train", [0]).images.shape == (1, 1, 28, 28)


def test_medmnist_download_when_missing(monkeypatch, tmp_path):
    import genaug.data.sources as sources

    urls = []
    monkeypatch.setattr(sources.urllib.request, "urlretrieve",
                        lambda url, dest: urls.append(url) or shutil.copy(PNEUMONIA, dest))
    s = open_source("medmnist:pneumoniamnist", data_root=tmp_path)
    assert urls == ["https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"]
    assert (tmp_path / "pneumoniamnist.npz").exists() and len(s.split("test").ids) == 624


def test_offline_download_fails_clearly(monkeypatch, tmp_path):
    import genaug.data.sources as sources

    def offline(url, dest):
        raise sources.urllib.error.URLError("no route to host")

    monkeypatch.setattr(sources.urllib.request, "urlretrieve", offline)
    assert_clean_error(run_cli("datasets", "medmnist:octmnist", "--data-root", tmp_path), "cannot download",
                       "place the file there by hand")
    assert not list(tmp_path.iterdir())
