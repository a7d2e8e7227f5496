"""FID/KID/PRC with the offline Inception on real data, the feature cache, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.data import load_split, open_source, save_png
from genaug.metrics import fidelity
from genaug.metrics.fidelity import ImageSet, compute_metrics
from genaug.inception import InceptionPool3, ensure_weights, feature_difference

from conftest import OCT, PNEUMONIA, assert_clean_error, run_cli

N = 80  # images per Fashion-MNIST set: small for the CPU, large enough to order the FIDs (same-class 0.55x different-class measured)


def test_converted_weights_reproduce_torchscript_features(tmp_path):
    path, sha = ensure_weights(tmp_path)
    assert feature_difference(path) < 1e-4
    assert path.with_suffix(".sha256").read_text().strip() == sha
    again, sha2 = ensure_weights(tmp_path)
    assert again == path and sha2 == sha
    tampered = path.read_bytes()[:-10] + b"0123456789"
    path.write_bytes(tampered)  # a damaged cache file fails its checksum and is converted again
    _, sha3 = ensure_weights(tmp_path)
    assert path.read_bytes() != tampered and path.with_suffix(".sha256").read_text().strip() == sha3
    assert feature_difference(path) < 1e-4


def test_inception_score_refused():
    path, _ = ensure_weights()
    model = InceptionPool3("isc", ["logits_unbiased"], feature_extractor_weights_path=str(path))
    with pytest.raises(Exception, match="classifier layer"):
        model(torch.zeros(1, 3, 299, 299, dtype=torch.uint8))


@pytest.fixture(scope="module")
def fashion_sets(fashion):
    s = open_source(fashion)
    tee = load_split(s, "test", [s.class_index("T-shirt/top")], 28).images
    shirt = load_split(s, "test", [s.class_index("Shirt")], 28).images
    return tee[:N], tee[N: 2 * N], shirt[:N]


def test_fid_orders_halves_below_different_classes(fashion_sets):
    """Also through features extracted once for a mixed set and taken per class (as the quality stage
    does): the same FID as the class's images on their own."""
    from genaug.metrics.fidelity import with_features

    tee_a, tee_b, shirt = fashion_sets
    real = with_features(ImageSet(tee_a, "tee A", True))
    mixed = with_features(ImageSet(torch.cat([tee_b, shirt]), "tee B and shirt"))
    is_tee = torch.arange(2 * N) < N
    same = compute_metrics(real, mixed.subset(is_tee, "tee B"))["fid"]
    different = compute_metrics(real, mixed.subset(~is_tee, "shirt"))["fid"]
    assert 0 < same < 0.75 * different, (same, different)
    alone = compute_metrics(ImageSet(tee_a, "tee A", True), ImageSet(shirt, "shirt"))["fid"]
    assert different == pytest.approx(alone, rel=1e-6)


def test_fid_kid_and_precision_recall_equal_torch_fidelitys_own_calculate_metrics(fashion_sets, tmp_path):
    """compute_metrics runs torch-fidelity's steps with one loaded network and FID's trace term from the
    features: the same numbers as torch-fidelity's `calculate_metrics` on the same real images."""
    import torch_fidelity

    from genaug.metrics.fidelity import _RGBUint8, _extractor_name

    a, b = fashion_sets[0][:16], fashion_sets[2][:16]
    ours = compute_metrics(ImageSet(a, "tee"), ImageSet(b, "shirt"), kid=True, prc=True, cache_dir=tmp_path)
    path, sha = ensure_weights(tmp_path)
    theirs = torch_fidelity.calculate_metrics(
        input1=_RGBUint8(a), input2=_RGBUint8(b), fid=True, kid=True, prc=True, feature_extractor=_extractor_name(sha),
        feature_extractor_weights_path=str(path), feature_layer_prc="2048", kid_subset_size=8, cuda=False,
        cache=False, verbose=False)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])


def test_frechet_distance_from_features_is_torch_fidelitys_on_either_side_of_the_dimension(fashion):
    """Real Fashion-MNIST pixels as 784-d features: fewer images than dimensions on one side (the
    singular values of A1 A2') and more on both (torch-fidelity's eigenvalues) give its number."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from genaug.metrics.fidelity import frechet_distance

    s = open_source(fashion)
    tee = load_split(s, "test", [s.class_index("T-shirt/top")], 28).images.flatten(1).double()
    shirt = load_split(s, "test", [s.class_index("Shirt")], 28).images.flatten(1).double()
    for fa, fb in ((tee[:1000], shirt[:300]), (tee[:40], shirt[:50]), (tee[:1000], shirt[:900])):
        stats = [fid_features_to_statistics(f) for f in (fa, fb)]
        expected = fid_statistics_to_metric(*stats, False)["frechet_inception_distance"]
        assert frechet_distance(fa, fb) == pytest.approx(expected, rel=1e-6), (len(fa), len(fb))


def test_fid_of_a_set_with_itself_is_zero(fashion_sets):
    r = compute_metrics(ImageSet(fashion_sets[0], "a", True), ImageSet(fashion_sets[0].clone(), "b"))
    assert abs(r["fid"]) < 1e-3 and r["n_a"] == r["n_b"] == N and "biased upward" in r["warning"]


def test_cache_returns_same_number_and_skips_extraction(fashion_sets, monkeypatch):
    tee_a, _, shirt = fashion_sets
    shirt = shirt[:16]  # the uncached side goes through the network twice: few images, the cache is the point
    real = ImageSet(tee_a, "real", cacheable=True)
    first = compute_metrics(real, ImageSet(shirt, "fake"))
    seen = []
    original = InceptionPool3.forward
    monkeypatch.setattr(InceptionPool3, "forward", lambda self, x: seen.append(len(x)) or original(self, x))
    second = compute_metrics(ImageSet(tee_a.clone(), "real again", cacheable=True), ImageSet(shirt, "fake"))
    assert second["fid"] == pytest.approx(first["fid"], abs=1e-9)
    assert sum(seen) == len(shirt)  # only the uncached side went through the network


def test_cli_kid_prc_json_and_isc(tmp_path, fashion_sets):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, images in ((a, fashion_sets[0][:24]), (b, fashion_sets[2][:24])):
        for i, img in enumerate(images):
            save_png(img, folder / f"{i:03d}.png")
    (a / "notes.txt").write_text("ignored: not an image")
    r = run_cli("fid", a, b, "--kid", "--prc", "--isc", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "FID" in r.output and "KID" in r.output and "precision" in r.output and "(images: 24 vs 24)" in r.output
    assert "Inception Score: unavailable" in r.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"fid", "kid_mean", "kid_std", "precision", "recall", "n_a", "n_b"} <= set(data)
    assert 0 <= data["precision"] <= 1 and data["kid_std"] > 0


def test_spec_with_class_and_split_resolves():
    from genaug.data.imagesets import resolve_image_set

    images, real = resolve_image_set(f"{PNEUMONIA}:pneumonia@val")
    assert images.shape == (389, 1, 28, 28) and real
    images, _ = resolve_image_set(f"{OCT}:dme", image_size=64)
    assert images.shape == (6, 1, 64, 64)


def test_cli_data_spec_with_class_and_per_class_table(tmp_path):
    samples = tmp_path / "samples"
    s = open_source(str(OCT))
    for label, name in enumerate(s.classes):  # stand-in samples: the real train images, mirrored
        for i, img in enumerate(load_split(s, "train", [label], 64).images):
            save_png(img.flip(-1), samples / name / f"{i:03d}.png")
    counts = {name: [len(s.split("train").of_class(label))] * 2 for label, name in enumerate(s.classes)}
    r = run_cli("fid", f"{OCT}:CNV", samples / "CNV", "--image-size", "64")
    assert r.exit_code == 0, r.output
    assert "(images: %d vs %d)" % tuple(counts["CNV"]) in r.output
    r = run_cli("fid", OCT, samples, "--by-class", "--json", tmp_path / "t.json")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "t.json").read_text())["per_class"]
    assert [row["class"] for row in rows] == s.classes and all(row["fid"] > 0 for row in rows)
    assert all([row["n_a"], row["n_b"]] == counts[row["class"]] for row in rows)


def test_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    assert_clean_error(run_cli("fid", tmp_path / "missing", tmp_path / "empty"), "neither a folder nor SPEC:CLASS")
    assert_clean_error(run_cli("fid", tmp_path / "empty", tmp_path / "text"), "holds no images")
    assert_clean_error(run_cli("fid", tmp_path / "text", tmp_path / "empty"), "holds no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"garbage")
    assert_clean_error(run_cli("fid", broken, tmp_path / "empty"), "cannot read image", "x.png")
    assert_clean_error(run_cli("fid", f"{PNEUMONIA}:cat", tmp_path / "empty"), "unknown class 'cat'")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.full((28, 28), 80, np.uint8), "L").save(mixed / "gray.png")
    Image.fromarray(np.full((28, 28, 3), 80, np.uint8), "RGB").save(mixed / "rgb.png")
    from genaug.data.imagesets import load_image_folder

    assert load_image_folder(mixed).shape == (2, 3, 28, 28)  # documented: mixed folders are read as RGB
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    for p in list(OCT.glob("*/*.jpeg"))[:2] + list(OCT.glob("DME/*.jpeg"))[:1]:
        (sizes / p.name).write_bytes(p.read_bytes())
    if len({Image.open(p).size for p in sizes.iterdir()}) > 1:
        assert_clean_error(run_cli("fid", sizes, sizes), "different sizes", "--image-size")
    with pytest.raises(Exception, match="no images"):
        compute_metrics(ImageSet(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), "empty"),
                        ImageSet(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "two"))


def _rows_slowly(folder_and_log: tuple[str, str]) -> list:
    """One process's lookup of a six-image gallery whose extraction takes 3 s and is logged."""
    import time
    from pathlib import Path

    from genaug.metrics.feature_rows import cached_rows

    folder, log = folder_and_log

    def extract(x):
        with open(log, "a") as f:
            f.write(f"{len(x)}\n")
        time.sleep(3)
        return x.flatten(1).float()

    return cached_rows(torch.arange(24, dtype=torch.uint8).reshape(6, 1, 2, 2), extract, Path(folder)).tolist()


def test_two_processes_that_need_one_gallery_extract_it_once(tmp_path):
    """Two drivers judging two replicates' pools at once: the second waits for the first's rows."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_rows_slowly, [(str(tmp_path / "rows"), str(tmp_path / "log"))] * 2, chunksize=1)
    assert a == b == torch.arange(24, dtype=torch.float32).reshape(6, 4).tolist()
    assert (tmp_path / "log").read_text().split() == ["6"]


def test_inception_features_are_fids_features_cached_or_not(fashion_sets, tmp_path, monkeypatch):
    """The gate's features are the rows FID reads, from the per-image cache or without it: a second
    gallery that shares images with the first (as two replicates' pools do) extracts only its new
    ones, a repeated image once; an empty set has none."""
    from genaug.metrics import feature_rows

    images = torch.cat([fashion_sets[0][:4], fashion_sets[2][:2]])
    feats = fidelity.inception_features(images[:4])
    assert feats.shape == (4, 2048) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    rows = fidelity.with_features(ImageSet(images[:4], "four")).features
    assert torch.allclose(feats, rows.double())

    extracted = []
    real_cached_rows = feature_rows.cached_rows

    def counting(x, extract, folder):
        return real_cached_rows(x, lambda y: extracted.append(len(y)) or extract(y), tmp_path / folder.name)

    monkeypatch.setattr(feature_rows, "cached_rows", counting)
    first = fidelity.inception_features(images[:4], True)
    second = fidelity.inception_features(images[[2, 3, 4, 5, 5]], True)  # two known, one new twice
    again = fidelity.inception_features(images[[5, 0]], True)
    assert extracted == [4, 2]
    assert torch.allclose(first, feats) and torch.equal(second[:2], first[2:4]) and torch.equal(second[3], second[4])
    assert torch.equal(again[1], first[0]) and torch.equal(again[0], second[3])
    assert torch.allclose(second[2:], fidelity.inception_features(images[[4, 5, 5]]))
    assert fidelity.inception_features(images[:0], True).shape == (0, 2048)
