"""The data layer a hospital's data needs: patient-level and stable splits, label files,
16-bit / float / DICOM intensities, geometry and file quirks, all on real or known-value files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.data import draw_subset, open_source, reload_subset
from genaug.data.images import decode_bytes, fit_square
from genaug.data.splits import carve_validation
from genaug.errors import GenaugError

from conftest import OCT, PNEUMONIA, assert_clean_error, run_cli


def _copy_oct(tmp_path):
    root = tmp_path / "oct"
    shutil.copytree(OCT, root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


# -- patients and stable splits ------------------------------------------------------------------

def test_group_by_oct2017_keeps_each_patient_on_one_side_of_every_split_and_carve():
    s = open_source(str(OCT), group_by="oct2017")
    side = {}
    for split, sp in s.splits.items():
        for item, group in zip(sp.ids, sp.groups):
            side.setdefault(group, set()).add(split)
    assert all(len(v) == 1 for v in side.values())
    assert len(side["9583225"]) == 1 and s.ungrouped == ["CNV/abc.jpeg"]
    real, manifest = draw_subset(s, [0, 1, 2, 3], None, seed=0, image_size=32)
    by_id = dict(zip(real.ids, real.groups))
    assert {by_id.get("DME/DME-9583225-1.jpeg"), by_id.get("DME/DME-9583225-2.jpeg")} - {None} <= {"9583225"}
    test_groups = {it["group"] for it in manifest["test"]["items"]}
    assert not test_groups & set(real.groups)
    for seed in range(5):  # every seeded validation carve is group-disjoint and stratified
        tr, va = carve_validation(real.labels.numpy(), real.groups, 0.25, seed)
        assert not {real.groups[i] for i in tr} & {real.groups[i] for i in va}
        assert set(real.labels[va].tolist()) == {0, 1, 2, 3}


def test_experiment_carve_is_patient_disjoint(tmp_path):
    from genaug.harness.experiment import Experiment, experiment_config
    from genaug.harness.design.spec import Unit
    from genaug.harness.stages.unit_data import validation_plan

    config = experiment_config(None, {"per_class": 6, "val_fraction": 0.34, "image_size": 32, "group_by": "oct2017",
                                      "generators": [], "seeds": 1})
    for r in range(2):
        e = Experiment(str(OCT), tmp_path, config, progress=False)
        rep = e.unit_data(r)
        train_groups = {it["group"] for it in rep.train_items}
        val_groups = {it["group"] for it in rep.val_items}
        test_groups = {it["group"] for it in rep.manifest["test"]["items"]}
        assert not train_groups & val_groups and not (train_groups | val_groups) & test_groups
        assert "patient-disjoint" in validation_plan(e.spec, Unit(r), rep)


def test_adding_files_never_moves_an_existing_item_and_changed_test_membership_is_refused(tmp_path):
    root = _copy_oct(tmp_path)
    before = open_source(str(root))
    _, manifest = draw_subset(before, [0, 1, 2, 3], 4, seed=0, image_size=32)
    for n in range(2):
        shutil.copy(root / "DME" / "DME-9583225-1.jpeg", root / "CNV" / f"CNV-100000{n}-1.jpeg")
    after = open_source(str(root))
    old = {s: set(sp.ids) for s, sp in before.splits.items()}
    new = {s: set(sp.ids) for s, sp in after.splits.items()}
    for split in ("train", "test"):
        assert old[split] <= new[split]  # no existing item changed sides
    # the added files are in train here, so the manifest still reloads ...
    if new["test"] == old["test"]:
        reload_subset(manifest)
    # ... but a removed test file (or one added to test) is refused
    (root / sorted(old["test"])[0]).unlink()
    with pytest.raises(GenaugError, match="test split of .* changed .*1 removed"):
        reload_subset(manifest)


def test_random_additions_never_move_train_items_into_test(tmp_path):
    import random

    from genaug.data.splits import hash_split

    rng = random.Random(0)
    ids = [f"c{k % 3}/img{k}.png" for k in range(60)]
    labels = np.array([k % 3 for k in range(60)])
    tr, te = hash_split(ids, labels, None, 0.2, ["a", "b", "c"])
    for _ in range(20):
        extra = [f"c{rng.randrange(3)}/new{rng.randrange(10**6)}.png" for _ in range(rng.randrange(1, 10))]
        all_ids = ids + extra
        all_labels = np.concatenate([labels, [int(e[1]) for e in extra]])
        tr2, te2 = hash_split(all_ids, all_labels, None, 0.2, ["a", "b", "c"])
        assert {ids[i] for i in tr} <= {all_ids[i] for i in tr2}


def test_changed_class_list_is_a_clear_error(tmp_path):
    root = _copy_oct(tmp_path)
    _, manifest = draw_subset(open_source(str(root)), [0, 1], 3, seed=0, image_size=32)
    (root / "AMD").mkdir()
    shutil.copy(root / "DME" / "DME-9583225-1.jpeg", root / "AMD" / "AMD-1-1.jpeg")
    shutil.copy(root / "DME" / "DME-9583225-2.jpeg", root / "AMD" / "AMD-2-1.jpeg")
    with pytest.raises(GenaugError, match="classes of .* changed .*were CNV, DME, DRUSEN, NORMAL; now AMD"):
        reload_subset(manifest)


def test_group_regex_errors(tmp_path):
    assert_clean_error(run_cli("datasets", OCT, "--group-by", r"patient(\d+)"), "matches none of the 32 files")
    assert_clean_error(run_cli("datasets", OCT, "--group-by", r"(\d+"), "not a valid regular expression")
    assert_clean_error(run_cli("datasets", OCT, "--group-by", r"\d+"), "needs a capture group")
    root = tmp_path / "one"
    for cls, n in (("a", 3), ("b", 3)):
        (root / cls).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(root / cls / f"{cls}-p{7 if cls == 'b' else k}-{k}.png")
    assert_clean_error(run_cli("datasets", root, "--group-by", r"-p(\d+)-"), "class 'b' has a single patient")
    assert not (tmp_path / "run").exists()


def test_datasets_prints_patients_per_class_and_split():
    r = run_cli("datasets", OCT, "--group-by", "oct2017")
    assert r.exit_code == 0, r.output
    assert "(images / patients)" in r.output and "without a patient id" in r.output
    total = [ln for ln in r.output.splitlines() if ln.startswith("total")][0]
    assert total.split("\t")[1].split("/")[0] != total.split("\t")[1].split("/")[1]  # 32 images, fewer patients


# -- label files ---------------------------------------------------------------------------------

def _write_png(path, value, shape=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_csv_source_with_groups_and_splits(tmp_path):
    rows = ["path,label,group,split"]
    for k in range(12):
        label = ["normal", "bacterial", "viral"][k % 3]
        _write_png(tmp_path / "img" / f"x{k}.png", 20 * k)
        rows.append(f"img/x{k}.png,{label},p{k // 2},{'test' if k >= 8 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    s = open_source(str(tmp_path / "labels.csv"))
    assert s.kind == "labels" and s.classes == ["bacterial", "normal", "viral"] and s.split_origin == "source"
    assert len(s.split("train").ids) == 8 and len(s.split("test").ids) == 4
    assert s.split("test").groups == ["p4", "p4", "p5", "p5"]
    real, manifest = draw_subset(s, [0, 1, 2], 2, seed=0, image_size=16)
    assert {it["group"] for it in manifest["train"]["items"]} <= {"p0", "p1", "p2", "p3"}
    # a patient in two given splits leaks: refused
    (tmp_path / "leak.csv").write_text("path,label,group,split\nimg/x0.png,a,p1,train\nimg/x1.png,a,p1,test\n"
                                       "img/x2.png,b,p2,train\nimg/x3.png,b,p3,test\n")
    assert_clean_error(run_cli("datasets", tmp_path / "leak.csv"), "appear in more than one of the given splits")


def test_csv_without_split_uses_hash_split_by_group(tmp_path):
    rows = ["path,label,group"] + [f"img/x{k}.png,{'ab'[k % 2]},p{k // 4}" for k in range(40)]
    for k in range(40):
        _write_png(tmp_path / "img" / f"x{k}.png", k)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    s = open_source(str(tmp_path / "labels.csv"))
    assert "patient" in s.split_origin
    assert not set(s.split("train").groups) & set(s.split("test").groups)


def test_csv_bad_input(tmp_path):
    _write_png(tmp_path / "a.png", 1)
    (tmp_path / "missing.csv").write_text("path,label\na.png,x\nnope.png,y\n")
    assert_clean_error(run_cli("datasets", tmp_path / "missing.csv"), "line 3: image not found")
    (tmp_path / "col.csv").write_text("path,label,patient\na.png,x,1\n")
    assert_clean_error(run_cli("datasets", tmp_path / "col.csv"), "unknown column(s) 'patient'")
    (tmp_path / "nolabel.csv").write_text("path\na.png\n")
    assert_clean_error(run_cli("datasets", tmp_path / "nolabel.csv"), "needs the columns path and label")


# -- intensity: 16-bit, float, DICOM -------------------------------------------------------------

def _sixteen_bit_folder(tmp_path):
    """Two training images with backgrounds 1000 and 30000 and a brighter block; one test image."""
    root = tmp_path / "xr"
    for name, bg, block, split in (("a", 1000, 5000, "train"), ("b", 30000, 34000, "train"), ("c", 1000, 5000, "test")):
        arr = np.full((32, 32), bg, np.uint16)
        arr[8:24, 8:24] = block
        arr[31, 31] += split == "test"  # not a byte copy of "a" (copies across a given split are refused)
        (root / split / "chest").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / split / "chest" / f"{name}.png")
    return root


@pytest.mark.parametrize("rule, expected", [
    ("dataset", {"a": (0, 31), "b": (224, 255)}),
    ("image", {"a": (0, 255), "b": (0, 255)}),
    ("window:0,65535", {"a": (4, 19), "b": (117, 132)}),
])
def test_sixteen_bit_png_by_each_rule(tmp_path, rule, expected):
    root = _sixteen_bit_folder(tmp_path)
    s = open_source(str(root))
    real, manifest = draw_subset(s, [0], None, seed=0, image_size=32, intensity=rule)
    got = {i.split("/")[-1][0]: (int(img[0, 0, 0]), int(img[0, 16, 16])) for i, img in zip(real.ids, real.images)}
    assert got == expected
    if rule == "dataset":
        assert manifest["intensity"] == {"rule": "dataset", "window": [1000.0, 34000.0], "percentiles": [0.5, 99.5]}
        from genaug.data import load_split

        test = load_split(s, "test", [0], 32, intensity=manifest["intensity"]).images  # the training window
        assert (int(test[0, 0, 0, 0]), int(test[0, 0, 16, 16])) == (0, 31)


def test_float_npz_scaled_and_uint16_npz_not_wrapped(tmp_path):
    img = np.full((4, 8, 8), 0.2, np.float32)
    img[:, 0, 0] = [0.2, 0.15, 0.1, 0.05]  # four different images (a repeated one is drawn once)
    np.savez(tmp_path / "f.npz", train_images=img, train_labels=np.array([0, 0, 1, 1]),
             test_images=img[:2] + 0.1, test_labels=np.array([0, 1]))
    s = open_source(str(tmp_path / "f.npz"))
    assert int(s.load("train", [0], 8).images.max()) == 51  # 0.2 * 255, not truncated to 0
    wide = np.stack([np.full((8, 8), v, np.uint16) for v in (300, 1000, 300, 1000)])
    wide[2, 0, 0], wide[3, 0, 0] = 301, 999  # no image repeats another
    np.savez(tmp_path / "u.npz", train_images=wide, train_labels=np.array([0, 0, 1, 1]),
             test_images=wide[:2] + 1, test_labels=np.array([0, 1]))
    real, m = draw_subset(open_source(str(tmp_path / "u.npz")), [0, 1], None, 0, 8)
    assert [int(x.max()) for x in real.images] == [0, 255, 0, 255]  # 300 -> 0, 1000 -> 255 (300 % 256 = 44)
    assert m["intensity"]["window"] == [300.0, 1000.0]


def _dicom(path, stored, photometric="MONOCHROME2", window=None, frames=1):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    if frames > 1:
        ds.NumberOfFrames = frames
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _stored():
    arr = np.full((8, 8), 100, np.uint16)  # modality value 2 * 100 - 1000 = -800
    arr[:, 4:] = 600  # 2 * 600 - 1000 = 200
    return arr


@pytest.mark.parametrize("photometric, window, rule, expected", [
    ("MONOCHROME2", None, "window:-1000,1040", (25, 150)),
    ("MONOCHROME2", None, "dataset", (0, 255)),
    ("MONOCHROME2", (0, 800), "dataset", (0, 191)),  # the file's VOI window: [-400, 400]
    ("MONOCHROME1", (0, 800), "dataset", (255, 64)),  # inverted after the window
    ("MONOCHROME1", None, "window:-1000,1040", (230, 105)),
])
def test_dicom_rescale_window_and_monochrome1(tmp_path, photometric, window, rule, expected):
    for name in ("a", "b"):
        _dicom(tmp_path / "d" / "train" / "ct" / f"{name}.dcm", _stored(), photometric, window)
    _dicom(tmp_path / "d" / "test" / "ct" / "c.dcm", _stored(), photometric, window)
    s = open_source(str(tmp_path / "d"))
    assert s.channels == 1
    real, _ = draw_subset(s, [0], None, 0, 16, intensity=rule)
    assert (int(real.images[0, 0, 4, 0]), int(real.images[0, 0, 4, 15])) == expected


def test_dicom_bad_input(tmp_path):
    root = tmp_path / "d"
    _dicom(root / "train" / "ct" / "ok.dcm", _stored())
    _dicom(root / "test" / "ct" / "ok.dcm", _stored()[::-1].T.copy())  # another scan: no copy across the split
    (root / "train" / "ct" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    r = run_cli("train", "vae", "--data", root, "--class", "ct", "--out", tmp_path / "run", "--image-size", "16")
    assert_clean_error(r, "broken.dcm")
    assert not (tmp_path / "run").exists()
    (root / "train" / "ct" / "broken.dcm").unlink()
    _dicom(root / "train" / "ct" / "multi.dcm", np.stack([_stored(), _stored()]), frames=2)
    r = run_cli("train", "vae", "--data", root, "--class", "ct", "--out", tmp_path / "run", "--image-size", "16")
    assert_clean_error(r, "multi.dcm has 2 frames")


# -- geometry and file quirks --------------------------------------------------------------------

def test_fit_pad_keeps_the_full_width_of_a_wide_oct_scan():
    path = OCT / "CNV" / "CNV-6294785-1.jpeg"
    wide = [p for p in sorted(OCT.rglob("*.jpeg")) if Image.open(p).size == (768, 496)][0]
    raw = decode_bytes(wide.read_bytes(), wide, 1).pixels
    assert raw.shape == (1, 496, 768) and path.exists()
    padded, cropped = fit_square(raw.float(), 64, "pad"), fit_square(raw.float(), 64, "crop")
    full = torch.nn.functional.interpolate(raw[None].float(), size=(41, 64), mode="area")[0]
    top = (64 - 41) // 2
    # pad: the whole width is there (columns match a plain downscale); crop: a third of it is gone
    assert (padded[:, top + 2: top + 39] - full[:, 2:39]).abs().mean() < 6
    assert (cropped - torch.nn.functional.interpolate(raw[None, :, :, 128:640].float(), size=(64, 64),
                                                      mode="area")[0]).abs().mean() < 6
    border = padded[:, :top - 1].flatten()
    assert border.std() < 1  # letterbox band of one value


def test_nested_folders_exif_palette_alpha(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for k in range(5):
            _write_png(root / cls / "visit1" / "deeper" / f"{cls}{k}.png", 10 * k + 1)
    s = open_source(str(root))
    assert sum(len(sp.ids) for sp in s.splits.values()) == 10 and "a/visit1/deeper/a0.png" in (
        s.split("train").ids + s.split("test").ids)
    # EXIF orientation 6 (rotate 90 degrees clockwise to display)
    arr = np.zeros((10, 20), np.uint8)
    arr[:, :5] = 255  # bright left band
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    px = decode_bytes((tmp_path / "rot.jpg").read_bytes(), tmp_path / "rot.jpg", 1).pixels
    assert px.shape == (1, 20, 10) and px[0, :5].float().mean() > 200  # the band is now at the top
    # a grayscale palette PNG is grayscale; a colour palette is colour
    from genaug.data.images import probe_channels

    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").convert("P")
    gray.putpalette([v for i in range(256) for v in (i, i, i)])
    gray.save(tmp_path / "gray_p.png")
    colour = gray.copy()
    colour.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    colour.save(tmp_path / "colour_p.png")
    assert probe_channels(tmp_path / "gray_p.png") == 1 and probe_channels(tmp_path / "colour_p.png") == 3
    assert int(decode_bytes((tmp_path / "gray_p.png").read_bytes(), "gray_p.png", 1).pixels[0, 7, 7]) == 63
    # LA: alpha flattened onto black, grayscale kept
    la = Image.merge("LA", [Image.new("L", (4, 4), 200), Image.new("L", (4, 4), 128)])
    la.save(tmp_path / "la.png")
    assert probe_channels(tmp_path / "la.png") == 1
    assert int(decode_bytes((tmp_path / "la.png").read_bytes(), "la.png", 1).pixels[0, 0, 0]) == 100


def test_oversized_image_is_a_clear_error(tmp_path, monkeypatch):
    import PIL.Image

    root = tmp_path / "d"
    for cls in ("a", "b"):
        for k in range(3):
            _write_png(root / "train" / cls / f"{k}.png", k, shape=(30, 30))
        _write_png(root / "test" / cls / "t.png", 7, shape=(30, 30))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 900 pixels > 2 x 100: Pillow refuses
    r = run_cli("train", "vae", "--data", root, "--class", "a", "--out", tmp_path / "run", "--image-size", "16")
    assert_clean_error(r, "too large to decode safely")
    assert not (tmp_path / "run").exists()


def test_export_writes_what_models_see(tmp_path):
    r = run_cli("datasets", OCT, "--export", tmp_path / "x", "--image-size", "32", "--fit", "pad",
                "--group-by", "oct2017")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "x").rglob("*.png"))
    assert len(files) == 32 and all(Image.open(f).size == (32, 32) for f in files)
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    assert info["fit"] == "pad" and info["group_by"] == "oct2017" and info["images"] == 32
    s = open_source(str(OCT), group_by="oct2017")
    raw = s.load("test", s.split("test").ids[:1], 32, "pad").images[0]
    name = s.split("test").ids[0].replace("/", "__")
    label = s.classes[int(s.split("test").labels[0])]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x" / "test" / label / f"{name}.png")), raw[0].numpy())


def test_pneumonia_manifest_lists_test_and_val_membership():
    s = open_source(str(PNEUMONIA))
    _, m = draw_subset(s, [0, 1], 5, seed=0, image_size=28)
    assert m["test"]["count"] == 624 and m["val"]["count"] == 524
    assert m["test"]["items"][0] == {"id": 0, "class": s.classes[int(s.split("test").labels[0])]}
