"""Several labels per image, the data layer (data/label_files.py, multilabel_splits.py, multilabel.py): both label-file layouts, NIH's list with
"No Finding", patient-disjoint stratified splits, `valid/` and unused folders, --given-split ignore,
`genaug datasets` and the bad inputs. On ../shared/data/nih1000 (1000 ChestX-ray14 images)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from genaug.data import open_source
from genaug.errors import GenaugError

from conftest import OCT, SHARED, assert_clean_error, run_cli

NIH = SHARED / "nih1000"


def _rows():
    with open(NIH / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def _list_layout(folder, rows, edit=None):
    """NIH's own layout: `Image Index`, `Finding Labels` (a |-list, or No Finding), `Patient ID`, and columns
    genaug does not use."""
    folder.mkdir(exist_ok=True)
    if not (folder / "images").exists():
        (folder / "images").symlink_to(NIH / "images")
    names = [c for c in rows[0] if c not in ("path", "patient")]
    with open(folder / "Data_Entry.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position"])
        for i, r in enumerate(rows):
            found = "|".join(n for n in names if r[n] == "1") or "No Finding"
            w.writerow([r["path"], edit(i, found) if edit else found, "0", r["patient"], "PA"])
    return folder / "Data_Entry.csv"


NIH_COLUMNS = {"path": "Image Index", "label": "Finding Labels", "group": "Patient ID"}


def test_both_label_file_layouts_give_the_same_data_set_and_no_finding_is_the_empty_set(tmp_path):
    columns = open_source(str(NIH / "labels.csv"))
    rows = _rows()
    listed = open_source(str(_list_layout(tmp_path, rows)), label_columns=NIH_COLUMNS)
    assert columns.multilabel and listed.multilabel and len(columns.classes) == 14
    assert sorted(columns.classes) == listed.classes  # the list layout names its labels sorted
    order = [listed.classes.index(c) for c in columns.classes]
    for split in ("train", "test"):
        a, b = columns.splits[split], listed.splits[split]
        assert a.ids == b.ids and a.groups == b.groups and np.array_equal(a.labels, b.labels[:, order])
    no_finding = [i for i, r in enumerate(rows) if all(r[c] == "0" for c in columns.classes)]
    every = {i: lab for s in listed.splits.values() for i, lab in zip(s.ids, s.labels)}
    assert len(no_finding) == 499 and all(every[rows[i]["path"]].sum() == 0 for i in no_finding)


def test_splits_are_patient_disjoint_and_every_label_has_positives_on_both_sides_where_it_can():
    source = open_source(str(NIH / "labels.csv"))
    train, test = source.splits["train"], source.splits["test"]
    assert not set(train.groups) & set(test.groups) and len(train.ids) + len(test.ids) == 1000
    patients = {}
    for r in _rows():
        for c in source.classes:
            if r[c] == "1":
                patients.setdefault(c, set()).add(r["patient"])
    for j, name in enumerate(source.classes):
        if len(patients[name]) >= 2:  # Hernia: 9 images of 2 patients, one on each side
            assert train.labels[:, j].sum() > 0 and test.labels[:, j].sum() > 0, name
    assert 0.1 < len(test.ids) / 1000 < 0.3
    assert "iterative stratification by patient" in source.split_origin


def test_datasets_prints_positives_label_sets_and_co_occurrence():
    r = run_cli("datasets", NIH / "labels.csv")
    assert r.exit_code == 0, r.output
    assert "13:Hernia\t" in r.output and "(positive images / patients)" in r.output
    assert "label sets (" in r.output and "(none) 499" in r.output and "co-occurring most often: Effusion+" in r.output


def test_valid_is_the_val_split_and_an_unused_top_level_folder_is_named(tmp_path):
    jpegs = {c: sorted((OCT / c).glob("*.jpeg")) for c in ("CNV", "NORMAL")}
    for split, part in (("train", slice(0, 4)), ("valid", slice(4, 6)), ("test", slice(6, 8)), ("extra", slice(0, 1))):
        for c, files in jpegs.items():
            (tmp_path / split / c).mkdir(parents=True)
            for f in files[part]:
                shutil.copy(f, tmp_path / split / c / f.name)
    source = open_source(str(tmp_path))
    assert set(source.splits) == {"train", "val", "test"} and len(source.splits["val"].ids) == 4
    assert source.unused == ["extra"]
    r = run_cli("datasets", tmp_path)
    assert "not read: top-level folder(s) extra" in r.output


def test_a_given_split_sharing_patients_is_refused_and_given_split_ignore_resplits_it_by_patient(tmp_path):
    for c in ("CNV", "NORMAL"):
        files = sorted((OCT / c).glob("*.jpeg"))
        for split in ("train", "test"):  # every scan in both folders: the same patients on both sides
            (tmp_path / split / c).mkdir(parents=True)
            for f in files:
                shutil.copy(f, tmp_path / split / c / f.name)
    with pytest.raises(GenaugError, match="--given-split ignore"):
        open_source(str(tmp_path), group_by="oct2017")
    source = open_source(str(tmp_path), group_by="oct2017", given_split="ignore")
    train, test = source.splits["train"], source.splits["test"]
    assert not set(train.groups) & set(test.groups) and "hash" in source.split_origin
    assert source.options()["given_split"] == "ignore" and any(i.startswith("test/") for i in train.ids)


def test_multilabel_bad_inputs_in_one_line(tmp_path):
    rows = _rows()
    given = {**NIH_COLUMNS, "labels": "Effusion,Mass"}
    with pytest.raises(GenaugError, match=r"line 2: unknown label 'Cardiomegaly'; the labels are Effusion, Mass"):
        open_source(str(_list_layout(tmp_path / "a", rows)), label_columns=given)
    with pytest.raises(GenaugError, match="line 4: 'No Finding' beside other labels"):
        open_source(str(_list_layout(tmp_path / "b", rows, lambda i, f: "No Finding|Mass" if i == 2 else f)),
                    label_columns=NIH_COLUMNS)
    folder = tmp_path / "c"
    path = _list_layout(folder, rows[:-1])  # the last image has no row
    with pytest.raises(GenaugError, match=r"1 image\(s\) beside it have no row, e.g. images/"):
        open_source(str(path), label_columns=NIH_COLUMNS)
    text = path.read_text().replace(rows[5]["path"], "images/missing.png")
    path.write_text(text)
    with pytest.raises(GenaugError, match=r"line 7: image not found"):
        open_source(str(path), label_columns=NIH_COLUMNS)
    with pytest.raises(GenaugError, match="label 'Hernia' has no positive image in the train split"):
        _only_in_test(tmp_path / "e", rows)
    assert_clean_error(run_cli("augment-and-train", "--headroom", "none", "--data", NIH / "labels.csv", "--out", tmp_path / "x",
                               "--no-progress"), "several labels per image", "the generator is ddpm-multilabel")
    assert not (tmp_path / "x").exists()


def _only_in_test(folder, rows):
    """A label whose only positives the given split puts in test."""
    folder.mkdir()
    (folder / "images").symlink_to(NIH / "images")
    names = [c for c in rows[0] if c not in ("path", "patient")]
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient", "split", *names])
        hernia = {r["patient"] for r in rows if r["Hernia"] == "1"}
        for r in rows:  # Hernia's patients, all their images, in test
            split = "test" if r["patient"] in hernia else "train"
            w.writerow([r["path"], r["patient"], split, *[r[n] for n in names]])
    open_source(str(folder / "labels.csv"))


def test_multilabel_carve_folds_and_the_positives_draw_are_patient_disjoint_and_cover_the_labels():
    from genaug.data.multilabel_splits import carve, draw_positives, folds

    train = open_source(str(NIH / "labels.csv")).splits["train"]
    groups = np.asarray(train.groups)
    tr, va = carve(train.labels, train.groups, 0.2, seed=3)
    assert not set(groups[tr]) & set(groups[va]) and len(tr) + len(va) == len(train.ids)
    assert (train.labels[va].sum(0) > 0).sum() >= 12  # stratified: nearly every label in the carve
    parts = folds(train.labels, train.groups, 3, seed=3)
    held = np.concatenate([h for _, h in parts])
    assert sorted(held.tolist()) == list(range(len(train.ids)))  # each image held out once
    assert all(not set(groups[a]) & set(groups[b]) for a, b in parts)
    picked, took = draw_positives(train.labels, train.groups, 5, seed=0)
    available = [len(set(groups[train.labels[:, j] == 1])) for j in range(14)]
    positives = train.labels[picked].sum(0)
    assert all(p >= 5 or p == train.labels[:, j].sum() for j, p in enumerate(positives))
    assert took["images"] == len(picked) and took["without_label"] >= 5 and min(available) >= 1
    whole = {g: (groups == g).sum() for g in set(groups[picked])}
    assert sum(whole.values()) == len(picked)  # whole patients: every image of a chosen patient
    again, _ = draw_positives(train.labels, train.groups, 5, seed=0)
    assert np.array_equal(again, picked)


def test_multilabel_metrics_against_scikit_learn_on_hand_made_predictions():
    from sklearn import metrics as skm

    from genaug.classifiers.multilabel_metrics import choose_thresholds, multilabel_metrics

    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    p = np.array([[.9, .2, .7], [.3, .8, .4], [.6, .4, .2], [.1, .3, .9], [.8, .1, .6], [.4, .7, .5]])
    th = np.array([0.5, 0.5, 0.5])
    m = multilabel_metrics(y, p, th, ["a", "b", "c"])
    pred = (p >= 0.5).astype(int)
    assert m["per_label"]["a"]["auroc"] == pytest.approx(skm.roc_auc_score(y[:, 0], p[:, 0])) == 1.0
    assert m["per_label"]["b"]["f1"] == pytest.approx(skm.f1_score(y[:, 1], pred[:, 1])) == pytest.approx(0.8)
    assert m["macro_auroc"] == pytest.approx(np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in range(3)]))
    assert m["micro_auroc"] == pytest.approx(skm.roc_auc_score(y.ravel(), p.ravel()))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y.ravel(), pred.ravel()))
    assert m["final_score"] == pytest.approx((m["macro_f1"] + m["cohen_kappa"] + m["macro_auroc"]) / 3)
    chosen = choose_thresholds(y, p)
    assert multilabel_metrics(y, p, chosen, ["a", "b", "c"])["per_label"]["c"]["f1"] == pytest.approx(
        max(skm.f1_score(y[:, 2], p[:, 2] >= t) for t in p[:, 2]))  # the best cut of the validation part
    one_class = multilabel_metrics(np.array([[1, 0], [1, 1]]), np.array([[.9, .2], [.8, .7]]), th[:2], ["a", "b"])
    assert one_class["per_label"]["a"]["auroc"] is None and one_class["macro_auroc"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def label_set_run(tmp_path_factory):
    """A tiny label-set DDPM trained a few steps on nih1000 images (16 px) and their 0/1 label vectors."""
    import torch

    from genaug.generators.training import Trainer

    source = open_source(str(NIH / "labels.csv"))
    train = source.splits["train"]
    loaded = source.load("train", train.ids[:64], 16)
    run = tmp_path_factory.mktemp("labelset") / "run"
    config = {"steps": 3, "batch_size": 16, "seed": 0, "grid_size": 4,
              "model": {"block_out_channels": [16, 32], "attention_levels": [], "norm_num_groups": 8,
                        "lr_warmup_steps": 1, "sample_steps": 3}}
    trainer = Trainer("ddpm-multilabel", loaded.images, run, config, device="cpu", progress=False,
                      labels=torch.from_numpy(train.labels[:64].astype("int64")), classes=source.classes)
    trainer.fit()
    return run, source.classes


def test_the_label_set_embedding_sums_labels_and_keeps_a_null_of_its_own(label_set_run):
    import torch

    from genaug.generators.ddpm_multilabel import label_set_codes
    from genaug.generators.training import load_trained

    run, names = label_set_run
    model = load_trained(run, "cpu")
    embed = model.unet.class_embedding
    one = torch.zeros(3, len(names))
    one[0, 0] = one[1, 1] = one[2, 0] = one[2, 1] = 1  # {a}, {b}, {a, b}
    codes = label_set_codes(one)
    null = label_set_codes(torch.zeros(1, len(names)), torch.ones(1, dtype=torch.bool))
    a, b, both = embed(codes)
    assert torch.allclose(both, a + b) and not torch.allclose(both, a) and not torch.allclose(both, b)
    assert not torch.allclose(embed(null)[0], a) and not torch.allclose(embed(null)[0], b)
    assert torch.equal(embed(label_set_codes(torch.zeros(1, len(names))))[0], torch.zeros_like(a))  # no finding
    x, t = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.full((4,), 500)
    with torch.no_grad():
        out = model.unet(x, t, class_labels=torch.cat([codes, null])).sample
    assert all(not torch.allclose(out[i], out[j]) for i in range(4) for j in range(i + 1, 4))


def test_target_labels_samples_carry_the_chosen_labels(label_set_run, tmp_path):
    import json

    run, names = label_set_run
    r = run_cli("sample", "--run", run, "--n", "3", "--out", tmp_path / "rare", "--target-labels", "Hernia,Pneumonia",
                "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "rare" / "samples.json").read_text())
    assert record["label_sets"] == [["Hernia", "Pneumonia"]]
    assert [im["labels"] for im in record["images"]] == [["Pneumonia", "Hernia"]] * 3  # in the run's label order
    other = run_cli("sample", "--run", run, "--n", "3", "--out", tmp_path / "none", "--target-labels", "none",
                    "--device", "cpu", "--no-progress")
    assert other.exit_code == 0, other.output
    a, b = (tmp_path / "rare" / "000000.png").read_bytes(), (tmp_path / "none" / "000000.png").read_bytes()
    assert a != b  # the same seed, another label set: another image
    assert_clean_error(run_cli("sample", "--run", run, "--n", "2", "--out", tmp_path / "x", "--target-labels",
                               "Hernia,Flu"), "unknown label 'Flu'")
    assert_clean_error(run_cli("sample", "--run", run, "--n", "2", "--out", tmp_path / "y"),
                       "choose --target-labels from Atelectasis")


def test_the_multilabel_classifier_trains_sigmoid_outputs_with_bce_and_selects_by_macro_auroc():
    import torch

    from genaug.classifiers.inference import predict_proba
    from genaug.classifiers.training import TrainSettings
    from genaug.classifiers.multilabel_kind import mix_multi_hot, positive_weights, train_multilabel

    source = open_source(str(NIH / "labels.csv"))
    train = source.splits["train"]
    images = source.load("train", train.ids[:96], 16).images
    y = torch.from_numpy(train.labels[:96].astype("int64"))
    settings = TrainSettings(epochs=2, batch_size=16, stem="small", mix=True)
    trained = train_multilabel(images[:64], y[:64], images[64:], y[64:], source.classes, settings, seed=0,
                               steps_per_epoch=2, device="cpu", pos_weight=True)
    assert len(trained.history) == 2 and "val_macro_auroc" in trained.history[0]
    probs = predict_proba(trained.model, images[64:], "cpu", multilabel=True)
    assert probs.shape == (32, 14) and (probs >= 0).all() and (probs <= 1).all()
    assert not np.allclose(probs.sum(1), 1)  # one sigmoid per label, not a softmax over them
    assert positive_weights(torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])).tolist() == [1.0, 1.0]
    assert positive_weights(torch.tensor([[1, 1], [0, 0], [0, 0], [0, 0]])).tolist() == [3.0, 3.0]
    x = torch.rand(8, 1, 16, 16)
    targets = torch.eye(8)[:, :4].clone()
    for seed in range(4):
        mixed, soft = mix_multi_hot(x, targets, torch.Generator().manual_seed(seed))
        assert mixed.shape == x.shape and ((soft >= 0) & (soft <= 1)).all()
        assert soft.sum().item() == pytest.approx(targets.sum().item(), abs=1e-5)  # label mass kept


def test_genaug_train_ddpm_multilabel_draws_positives_per_label_and_samples_the_training_label_sets(tmp_path):
    import json

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("steps: 2\nbatch_size: 16\nmodel: {block_out_channels: [16, 32], attention_levels: [], "
                   "norm_num_groups: 8, lr_warmup_steps: 1, sample_steps: 2}\n")
    args = ["train", "ddpm-multilabel", "--data", NIH / "labels.csv", "--per-class", "3", "--image-size", "16",
            "--config", cfg, "--device", "cpu", "--no-progress", "--out", tmp_path / "run"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    took = manifest["took"]
    assert took["images"] == manifest["train"]["count"] and min(took["positives"]) >= 3 and took["without_label"] >= 3
    r = run_cli("sample", "--run", tmp_path / "run", "--n", "6", "--out", tmp_path / "s", "--device", "cpu",
                "--no-progress")
    assert r.exit_code == 0, r.output
    drawn = [sorted(im["labels"]) for im in json.loads((tmp_path / "s" / "samples.json").read_text())["images"]]
    training = {tuple(sorted(it["labels"])) for it in manifest["train"]["items"]}
    assert len(drawn) == 6 and all(tuple(d) in training for d in drawn)  # the training part's own label sets
    assert run_cli(*args, "--resume").exit_code == 0  # the same draw again: nothing left to train
    assert_clean_error(run_cli("train", "ddpm-multilabel", "--data", SHARED / "pneumoniamnist.npz",
                               "--out", tmp_path / "x"), "has one class per image")


def test_a_multilabel_export_is_a_label_file_genaug_reads_back(tmp_path):
    r = run_cli("datasets", NIH / "labels.csv", "--export", tmp_path / "out", "--image-size", "16")
    assert r.exit_code == 0 and "exported 1000 images" in r.output, r.output
    source = open_source(str(NIH / "labels.csv"))
    again = open_source(str(tmp_path / "out" / "labels.csv"))
    assert again.multilabel and again.classes == source.classes and again.split_origin == "source"
    for split in ("train", "test"):
        a, b = source.splits[split], again.splits[split]
        assert np.array_equal(a.labels, b.labels) and a.groups == b.groups and len(b.ids) == len(a.ids)


def test_a_multilabel_subset_reloads_from_its_manifest_and_refuses_a_changed_image(tmp_path):
    import torch

    from genaug.data import multilabel

    folder = tmp_path / "copy"
    shutil.copytree(NIH, folder)
    source = open_source(str(folder / "labels.csv"))
    images, labels, manifest = multilabel.draw_subset(source, 3, seed=0, image_size=16)
    again_images, again_labels = multilabel.reload_subset(manifest)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    changed = folder / manifest["train"]["items"][0]["id"]
    changed.write_bytes((folder / manifest["train"]["items"][1]["id"]).read_bytes())
    with pytest.raises(GenaugError, match="1 image\\(s\\) of this run changed"):
        multilabel.reload_subset(manifest)


def test_chexperts_own_file_reads_unchanged_with_uncertain_labels_as_zeros_or_ones(tmp_path):
    """CheXpert's train.csv: `Path` under the file's own folder name, Sex/Age/view columns, label columns
    holding 1.0, 0.0, a blank (not mentioned) or -1.0 (uncertain), the patient in the path."""
    rows = _rows()
    names = [c for c in rows[0] if c not in ("path", "patient")]
    folder = tmp_path / "CheXpert-v1.0-small"
    (folder / "train").mkdir(parents=True)
    code = {}
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *names])
        for i, r in enumerate(rows):
            study = folder / "train" / f"patient{r['patient']}" / f"study{i}"
            study.mkdir(parents=True, exist_ok=True)
            (study / "view1_frontal.png").symlink_to(NIH / r["path"])
            cells = [("1.0" if r[n] == "1" else ("-1.0" if (i + j) % 7 == 0 else ("" if (i + j) % 2 else "0.0")))
                     for j, n in enumerate(names)]
            code[i] = cells
            w.writerow([f"CheXpert-v1.0-small/train/patient{r['patient']}/study{i}/view1_frontal.png", "F", "60",
                        "Frontal", "PA", *cells])
    spec = {"path": "Path", "labels": ",".join(names)}
    zeros = open_source(str(folder / "train.csv"), group_by=r"patient([^/]+)/", label_columns=spec)
    ones = open_source(str(folder / "train.csv"), group_by=r"patient([^/]+)/",
                       label_columns={**spec, "uncertain": "ones"})
    truth = np.array([[int(r[n]) for n in names] for r in rows])
    uncertain = np.array([[c == "-1.0" for c in code[i]] for i in range(len(rows))])
    for source, expected in ((zeros, truth), (ones, truth | uncertain)):
        got = np.concatenate([source.split(s).labels for s in ("train", "test")])
        ids = source.split("train").ids + source.split("test").ids
        order = [int(Path(p).parent.name[5:]) for p in ids]
        assert (got == expected[order]).all()
        assert not ({g for g in source.split("train").groups} & {g for g in source.split("test").groups})
    with pytest.raises(GenaugError, match="uncertain labels are read as zeros or ones"):
        open_source(str(folder / "train.csv"), label_columns={**spec, "uncertain": "maybe"})


def test_a_total_of_labelled_images_is_drawn_stratified_over_whole_patients():
    from genaug.data.multilabel_splits import draw_total

    source = open_source(str(NIH / "labels.csv"))
    train = source.split("train")
    picked, took = draw_total(train.labels, train.groups, 300, seed=3)
    assert abs(len(picked) - 300) <= 30 and took["images"] == len(picked) and took["total"] == 300  # whole patients
    chosen = {train.groups[i] for i in picked}
    assert all((train.groups[i] in chosen) == (i in set(picked.tolist())) for i in range(len(train.ids)))
    share = train.labels[picked].sum(0) / train.labels.sum(0)
    common = train.labels.sum(0) >= 40
    assert np.all(np.abs(share[common] - 300 / len(train.ids)) < 0.15)  # each common label keeps about its share
    assert not np.array_equal(picked, draw_total(train.labels, train.groups, 300, seed=4)[0])
    with pytest.raises(GenaugError, match="labelled_images must be from 2 to"):
        draw_total(train.labels, train.groups, 1, seed=0)
