"""Folders as users download them (issue 39): split folders by any usual name, a wrapping folder,
debris, and a layout genaug cannot tell from classes refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_error, run_cli
from genaug.data import open_source
from genaug.errors import GenaugError

CLASSES = ("glioma", "meningioma", "pituitary")


def _images(folder, n, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / f"img{i}.png")


def _tree(root, splits, n=3):
    for j, split in enumerate(splits):
        for k, name in enumerate(CLASSES):
            _images(root / split / name, n, seed=100 * j + k)
    return root


@pytest.mark.parametrize("splits", [("Training", "Testing"), ("Train", "VALID", "test"), ("training", "dev", "TESTING")])
def test_split_folders_by_any_usual_name(tmp_path, splits):
    source = open_source(str(_tree(tmp_path / "set", splits)))
    assert source.classes == list(CLASSES) and source.split_origin == "source"
    assert set(source.splits) == ({"train", "val", "test"} if len(splits) == 3 else {"train", "test"})
    assert "as train" in source.layout


def test_wrapping_folder_and_debris(tmp_path):
    inner = _tree(tmp_path / "chest_xray" / "chest_xray", ("train", "val", "test"))
    (inner / "__MACOSX" / "train" / "glioma").mkdir(parents=True)
    (inner / "__MACOSX" / "train" / "glioma" / "._img0.png").write_bytes(b"junk")
    (inner / "train" / "glioma" / ".DS_Store").write_bytes(b"junk")
    (inner / "train" / "glioma" / "._img0.png").write_bytes(b"junk")
    (inner / "train" / "glioma" / "Thumbs.db").write_bytes(b"junk")
    (inner / "train" / ".ipynb_checkpoints").mkdir()
    source = open_source(str(tmp_path / "chest_xray"))
    assert source.classes == list(CLASSES) and len(source.split("train").ids) == 9
    assert source.unused == []


def test_unknown_top_level_names_over_repeated_classes_refused(tmp_path):
    root = _tree(tmp_path / "set", ("part-a", "part-b"))
    with pytest.raises(GenaugError, match="--split-folders part-a=train,part-b=test"):
        open_source(str(root))
    r = run_cli("datasets", str(root))
    assert_clean_error(r, "--split-folders")
    source = open_source(str(root), split_folders="part-a=train,part-b=test")
    assert source.classes == list(CLASSES) and set(source.splits) == {"train", "test"}
    assert source.options()["split_folders"] == {"part-a": "train", "part-b": "test"}
    with pytest.raises(GenaugError, match="one folder for train"):
        open_source(str(root), split_folders="part-a=train")


def test_datasets_says_which_folders_it_read_as_what(tmp_path):
    root = _tree(tmp_path / "set", ("Training", "Testing"))
    r = run_cli("datasets", str(root))
    assert r.exit_code == 0, r.output
    assert "Training/ as train" in r.output and "Testing/ as test" in r.output


def _label_file(tmp_path, absolute: bool):
    folder = tmp_path / ("abs" if absolute else "rel")
    _images(folder / "images", 24, seed=7)
    rows = ["path,effusion,nodule,group"]
    for i in range(24):
        path = (folder / "images" / f"img{i}.png").as_posix() if absolute else f"images/img{i}.png"
        rows.append(f"{path},{i % 2},{int(i % 3 == 0)},p{i}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_multilabel_file_with_absolute_paths_reads_like_its_relative_twin(tmp_path):
    rel = open_source(str(_label_file(tmp_path, absolute=False)))
    ab = open_source(str(_label_file(tmp_path, absolute=True)))
    assert ab.classes == rel.classes and ab.multilabel
    for split in rel.splits:
        assert [p.rsplit("/", 1)[-1] for p in ab.split(split).ids] == [p.rsplit("/", 1)[-1] for p in rel.split(split).ids]
        assert (ab.split(split).labels == rel.split(split).labels).all()
    extra = _label_file(tmp_path / "more", absolute=True)
    _images(extra.parent / "images", 25, seed=7)  # one image more than the file lists
    with pytest.raises(GenaugError, match="have no row"):
        open_source(str(extra))


def test_copies_across_a_given_split_refused_and_the_two_ways_out(tmp_path):
    root = _tree(tmp_path / "set", ("train", "val", "test"))
    (root / "test" / "glioma" / "copy.png").write_bytes((root / "train" / "glioma" / "img0.png").read_bytes())
    (root / "val" / "pituitary" / "copy.png").write_bytes((root / "train" / "pituitary" / "img1.png").read_bytes())
    with pytest.raises(GenaugError, match=r"1 test image\(s\) are byte-identical .*--given-split ignore.*drop-copies"):
        open_source(str(root))
    r = run_cli("augment-and-train", "--data", root, "--per-class", "2", "--out", tmp_path / "exp")
    assert_clean_error(r, "identical pixels at 64 px", "test/glioma/copy.png = train/glioma/img0.png")
    assert not (tmp_path / "exp").exists()
    dropped = open_source(str(root), given_split="drop-copies")
    assert "test/glioma/copy.png" not in dropped.split("test").ids and len(dropped.split("test").ids) == 9
    assert "val/pituitary/copy.png" in dropped.repeats["val"]  # a train-val copy leaves validation draws
    assert dropped.copies["dropped"] == {"val": 1, "test": 1} and dropped.options()["given_split"] == "drop-copies"
    resplit = open_source(str(root), given_split="ignore")
    side = {p: s for s in resplit.splits for p in resplit.split(s).ids}
    assert side["test/glioma/copy.png"] == side["train/glioma/img0.png"]  # copies land on one side
    r = run_cli("datasets", root, "--given-split", "drop-copies", "--image-size", "8")
    assert r.exit_code == 0, r.output
    assert "1 train-test" in r.output and "identical pixels at 8 px" in r.output  # compared at that size


def test_identical_pixels_at_the_model_size_are_copies_too(tmp_path):
    """A test image saved again at twice the size is no byte copy, but at the model's size it is the
    training image: an experiment (and `genaug datasets --image-size`) refuses it, and either way out
    works at that size."""
    root = _tree(tmp_path / "set", ("train", "test"))
    big = np.kron(np.asarray(Image.open(root / "train" / "glioma" / "img0.png")), np.ones((2, 2), np.uint8))
    Image.fromarray(big).save(root / "test" / "glioma" / "upscaled.png")  # not a byte copy
    assert open_source(str(root)).copies["across"]["train-test"] == 0  # by bytes: none
    with pytest.raises(GenaugError, match=r"1 test image\(s\) are copies \(identical pixels at 6 px\).*upscaled"):
        open_source(str(root), copies_at=(6, "crop"))
    r = run_cli("augment-and-train", "--data", root, "--per-class", "2", "--image-size", "6", "--out", tmp_path / "exp")
    assert_clean_error(r, "identical pixels at 6 px")
    assert not (tmp_path / "exp").exists()
    dropped = open_source(str(root), given_split="drop-copies", copies_at=(6, "crop"))
    assert "test/glioma/upscaled.png" not in dropped.split("test").ids
    assert dropped.options()["copies_at"] == [6, "crop"]  # recorded: a manifest reopens it the same way
    resplit = open_source(str(root), given_split="ignore", copies_at=(6, "crop"))
    side = {p: s for s in resplit.splits for p in resplit.split(s).ids}
    assert side["test/glioma/upscaled.png"] == side["train/glioma/img0.png"]
    r = run_cli("datasets", root, "--given-split", "drop-copies", "--image-size", "6")
    assert r.exit_code == 0, r.output
    assert "copies (identical pixels at 6 px)" in r.output and "1 dropped from test" in r.output


def test_npz_copies_refused_and_either_way_out(tmp_path):
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) for s, n in (("train", 40), ("val", 8), ("test", 12))}
    y = {s: np.arange(len(v)) % 2 for s, v in x.items()}
    x["test"][0] = x["train"][5]
    x["train"][7] = x["train"][6]  # a copy inside train: one item in draws
    path = tmp_path / "set.npz"
    np.savez(path, **{f"{s}_images": v for s, v in x.items()}, **{f"{s}_labels": y[s] for s in x})
    with pytest.raises(GenaugError, match="byte-identical"):
        open_source(str(path))
    dropped = open_source(str(path), given_split="drop-copies")
    assert 0 not in dropped.split("test").ids and dropped.copies["within"]["train"] == 1
    assert dropped.repeats["train"] == {7}
    from genaug.data import draw_subset

    _, manifest = draw_subset(dropped, [0, 1], 19, seed=0, image_size=8)  # class 1 holds 19 distinct images
    assert 7 not in [it["id"] for it in manifest["train"]["items"]]
    resplit = open_source(str(path), given_split="ignore")
    side = {i: s for s in ("train", "test") for i in resplit.split(s).ids}
    assert side[5] == side[40 + 8]  # train 5 and its test copy (position 48 in the pooled arrays) together


@pytest.mark.parametrize("columns", ["label", "effusion,nodule"])
def test_label_files_with_a_split_column_are_checked_for_copies_too(tmp_path, columns):
    """A label file (one label, or several per image) whose test rows copy a training row's image:
    refused in one line, nothing read further; drop-copies drops the test-side copy."""
    _images(tmp_path / "images", 12, seed=3)
    (tmp_path / "images" / "copy.png").write_bytes((tmp_path / "images" / "img0.png").read_bytes())
    rows = [f"path,{columns},split"]
    for i in range(12):
        values = f"{'ab'[i % 2]}" if columns == "label" else f"{i % 2},{int(i % 3 == 0)}"
        rows.append(f"images/img{i}.png,{values},{'train' if i < 8 else 'test'}")
    rows.append(f"images/copy.png,{'a' if columns == 'label' else '1,1'},test")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(GenaugError, match=r"1 test image\(s\) are byte-identical copies .*images/copy.png"):
        open_source(str(tmp_path / "labels.csv"))
    kept = open_source(str(tmp_path / "labels.csv"), given_split="drop-copies")
    assert "images/copy.png" not in kept.split("test").ids and len(kept.split("test").ids) == 4
