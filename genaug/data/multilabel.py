"""Label files with several labels per image (chest X-ray findings, fundus diseases).

Two layouts read as the same data set:
- one 0/1 column per label (`path,patient,Atelectasis,Cardiomegaly,...`): the label columns are
  every column besides the path, group and split ones whose values are all 0 or 1, or those named
  by `labels`;
- one column holding a separated list (NIH's `Finding Labels`: `Effusion|Mass`), with the name of
  the empty set (`No Finding`) read as no label;
- CheXpert's own `train.csv`: label columns named (`labels`) may hold 1.0 / 0.0, a blank (not
  mentioned: 0) and -1.0 (uncertain), read as 0 or 1 by `uncertain` (`zeros`, the U-Zeros policy
  of Irvin et al. 2019, or `ones`); `labels` then fixes the label list (a label not in
  it is refused), else it is every label the file names, sorted.
Columns are named where a file differs (`LabelColumns`), so NIH's `Data_Entry_2017.csv` reads
unchanged: `path="Image Index", label="Finding Labels", group="Patient ID"`; other columns of a
file whose columns were named are ignored. Without a given split, the test split is drawn by
iterative stratification (Sechidis et al. 2011; `iterative-stratification`) over patients, each
patient's labels the union of its images', so every label has positives on both sides where it can
and no patient is on two sides.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import GenaugError
from .images import READABLE_SUFFIXES

GROUP_NAMES = ("group", "patient", "patient_id", "Patient ID")  # a group column found by name
BINARY = {"0": 0, "1": 1}
CHEXPERT = {"0.0": 0, "1.0": 1, "": 0}  # CheXpert: a blank is a finding the report did not mention
UNCERTAIN = ("-1", "-1.0")
SPLIT_SEED = 0


@dataclass(frozen=True)
class LabelColumns:
    path: str = "path"
    label: str | None = None  # a column holding a separated list of labels
    labels: tuple[str, ...] | None = None  # the label columns (0/1 layout), or the label list (list layout)
    separator: str = "|"
    no_label: str = "No Finding"
    group: str | None = None  # default: the first of GROUP_NAMES the file has
    split: str | None = None  # default: `split` when the file has it
    uncertain: str = "zeros"  # named 0/1 columns: -1 (CheXpert's uncertain) read as 0 (zeros) or 1 (ones)

    @classmethod
    def parse(cls, value) -> "LabelColumns | None":
        if value is None or isinstance(value, LabelColumns):
            return value
        raw = dict(value)
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise GenaugError(f"unknown label-file option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(cls.__dataclass_fields__)}")
        if isinstance(raw.get("labels"), str):
            raw["labels"] = [p.strip() for p in raw["labels"].split(",") if p.strip()]
        if raw.get("labels") is not None:
            raw["labels"] = tuple(raw["labels"])
        if raw.get("uncertain") not in (None, "zeros", "ones"):
            raise GenaugError(f"uncertain labels are read as zeros or ones (got {raw['uncertain']!r})")
        return cls(**{k: v for k, v in raw.items() if v is not None})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = list(self.labels) if self.labels else None
        return out

    @property
    def named(self) -> bool:
        """Whether the user named any column (then columns genaug does not use are ignored)."""
        return self != LabelColumns()


@dataclass
class LabelRows:
    paths: list[str]
    labels: np.ndarray  # N x L uint8
    names: list[str]
    groups: list[str] | None
    splits: list[str | None]


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GenaugError(f"cannot read label file {path}: {e}") from None
    return columns, rows


def binary_columns(columns: list[str], rows: list[dict], skip: set[str]) -> list[str]:
    return [c for c in columns if c not in skip and rows and all(r.get(c) in ("0", "1") for r in rows)]


def is_multilabel(columns: list[str], rows: list[dict], spec: LabelColumns | None) -> bool:
    """A label file is multi-label when columns were named for it, or it has no `label` column and
    0/1 columns besides path, group and split."""
    if spec is not None and spec.named:
        return True
    skip = {"path", "split", *GROUP_NAMES}
    return "label" not in columns and bool(binary_columns(columns, rows, skip))


def parse_rows(path: Path, columns: list[str], rows: list[dict], spec: LabelColumns) -> LabelRows:
    group = spec.group or next((g for g in GROUP_NAMES if g in columns), None)
    split = spec.split or ("split" if "split" in columns else None)
    for role, name in (("path", spec.path), ("label", spec.label), ("group", spec.group), ("split", spec.split)):
        if name and name not in columns:
            raise GenaugError(f"{path}: no {role} column {name!r} (columns: {', '.join(columns)})")
    used = {spec.path, group, split} - {None}
    if spec.label:  # one column with a separated list
        sets = [[p.strip() for p in r[spec.label].split(spec.separator) if p.strip()] for r in rows]
        sets = [[] if s == [spec.no_label] else s for s in sets]
        for n, s in enumerate(sets, start=2):
            if spec.no_label in s:
                raise GenaugError(f"{path}, line {n}: {spec.no_label!r} beside other labels ({', '.join(s)})")
        names = list(spec.labels) if spec.labels else sorted({x for s in sets for x in s})
        for n, s in enumerate(sets, start=2):
            unknown = [x for x in s if x not in names]
            if unknown:
                raise GenaugError(f"{path}, line {n}: unknown label {unknown[0]!r}; the labels are "
                                  f"{', '.join(names)}")
        labels = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for i, s in enumerate(sets):
            labels[i, [names.index(x) for x in s]] = 1
    else:  # one 0/1 column per label
        names = list(spec.labels) if spec.labels else binary_columns(columns, rows, used)
        missing = [c for c in names if c not in columns]
        if missing:
            raise GenaugError(f"{path}: no label column {missing[0]!r} (columns: {', '.join(columns)})")
        if not names:
            raise GenaugError(f"{path}: no 0/1 label columns; name them (--label-columns) or the column with a "
                              "list of labels (--label-column)")
        values = dict(BINARY)
        if spec.labels:  # named columns: CheXpert's encoding too (blank: not mentioned; -1: uncertain)
            values.update(CHEXPERT)
            values.update({v: int(spec.uncertain == "ones") for v in UNCERTAIN})
        labels = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for i, r in enumerate(rows):
            for j, c in enumerate(names):
                if r[c] not in values:
                    allowed = "0 or 1" if not spec.labels else "1, 0, blank or -1 (uncertain)"
                    raise GenaugError(f"{path}, line {i + 2}: column {c!r} holds {r[c]!r}, not {allowed}")
                labels[i, j] = values[r[c]]
        used |= set(names)
    if not spec.named:
        unknown = [c for c in columns if c not in used]
        if unknown:
            raise GenaugError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; name the columns "
                              "(--path-column, --label-column or --label-columns, --group-column, --split-column)")
    paths = [_relative(r[spec.path], path.parent) for r in rows]
    for n, p in enumerate(paths, start=2):
        if not p:
            raise GenaugError(f"{path}, line {n}: empty path")
        if not (path.parent / p).is_file():
            raise GenaugError(f"{path}, line {n}: image not found: {path.parent / p}")
    splits = [(r[split].lower() or None) if split else None for r in rows]
    for n, s in enumerate(splits, start=2):
        if s is not None and s not in ("train", "val", "test"):
            raise GenaugError(f"{path}, line {n}: split {s!r} is not train, val or test")
    return LabelRows([Path(p).as_posix() for p in paths], labels, names,
                     [r[group] for r in rows] if group else None, splits)


def _relative(p: str, root: Path) -> str:
    """A row's path inside the label file's folder; one that starts with that folder's own name (CheXpert's
    `CheXpert-v1.0-small/train/...` beside `CheXpert-v1.0-small/train.csv`) is read from the folder."""
    parts = Path(p).parts
    if len(parts) > 1 and parts[0] == root.name and not (root / p).is_file():
        return Path(*parts[1:]).as_posix()
    return p


def unlisted_images(root: Path, listed: list[str]) -> list[str]:
    """Image files in the label file's image folders that no row names (an image with no row)."""
    folders = {Path(p).parts[0] for p in listed if len(Path(p).parts) > 1}
    known = set(listed)
    found = []
    for folder in sorted(folders):
        for f in sorted((root / folder).rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and f.suffix.lower() in READABLE_SUFFIXES and rel not in known:
                found.append(rel)
    return found


def stratified_split(labels: np.ndarray, groups: list[str] | None, fraction: float,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) item positions: iterative stratification over patients (each patient's labels the
    union of its images'), so no patient is on two sides and each label's positives split as evenly as
    the patients allow; a label only one patient carries stays on the training side."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    keys, patients, index, per_patient = _per_patient(labels, groups)
    if len(patients) < 2:
        raise GenaugError("a split needs at least two patients")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held = next(splitter.split(np.zeros(len(patients)), per_patient))
    side = np.zeros(len(patients), dtype=bool)
    side[held] = True
    size = np.bincount([index[k] for k in keys], minlength=len(patients))
    for j in np.argsort(per_patient.sum(0)):  # rarest label first: a side without its positives gets one
        carriers = np.flatnonzero(per_patient[:, j])
        for empty in (True, False):  # a label of one patient stays on the training side
            if len(carriers) >= (2 if empty else 1) and not (side[carriers] == empty).any():
                move = carriers[np.argmin(size[carriers])]  # the carrier with the fewest images
                side[move] = empty
    for j in range(per_patient.shape[1]):  # last, the training side of every label (a move there takes none away)
        carriers = np.flatnonzero(per_patient[:, j])
        if len(carriers) and side[carriers].all():
            side[carriers[np.argmin(size[carriers])]] = False
    held_patients = {patients[i] for i in np.flatnonzero(side)}
    mask = np.array([k in held_patients for k in keys])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _per_patient(labels: np.ndarray, groups: list[str] | None):
    """(each image's patient key, the sorted patients, patient -> row, each patient's labels: the union of
    its images')."""
    keys = groups if groups is not None else [str(i) for i in range(len(labels))]
    patients = sorted(set(keys))
    index = {p: i for i, p in enumerate(patients)}
    per_patient = np.zeros((len(patients), labels.shape[1]), dtype=np.uint8)
    for k, row in zip(keys, labels):
        per_patient[index[k]] |= np.asarray(row, dtype=np.uint8)
    return keys, patients, index, per_patient


def carve(labels: np.ndarray, groups: list[str] | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded validation carve of a multi-label subset: stratified, patient-disjoint (as the test split)."""
    if not 0 < fraction <= 0.5:
        raise GenaugError(f"val_fraction must be above 0 and at most 0.5 (got {fraction})")
    return stratified_split(np.asarray(labels), groups, fraction, seed)


def folds(labels: np.ndarray, groups: list[str] | None, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K seeded folds of a multi-label subset, iterative stratification over patients
    (`MultilabelStratifiedKFold`): [(train positions, held-out positions)], each image held out once."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if k < 2:
        raise GenaugError(f"cv needs at least 2 folds (got {k})")
    keys, patients, index, per_patient = _per_patient(np.asarray(labels), groups)
    if len(patients) < k:
        raise GenaugError(f"cv {k}: only {len(patients)} {'patients' if groups else 'images'} in the subset")
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    where = np.array([index[key] for key in keys])
    out = []
    for _, held in splitter.split(np.zeros(len(patients)), per_patient):
        mask = np.isin(where, held)
        out.append((np.flatnonzero(~mask), np.flatnonzero(mask)))
    return out


def draw_positives(labels: np.ndarray, groups: list[str] | None, per_label: int, seed: int) -> tuple[np.ndarray, dict]:
    """The scarcity knob of multi-label data: a seeded subset holding at least `per_label` positive images of
    every label and `per_label` images without any, whole patients at a time (rarest label first; a label with
    fewer positives gets all it has). Returns the positions and what it took (images, positives per label)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.asarray(groups if groups is not None else [str(i) for i in range(len(labels))])
    chosen = np.zeros(len(labels), dtype=bool)
    wants = [labels[:, j] == 1 for j in range(labels.shape[1])] + [labels.sum(1) == 0]
    for j in np.argsort([w.sum() for w in wants]):
        have = wants[j]
        patients = rng.permutation(np.unique(keys[have & ~chosen]))
        for p in patients:
            if (chosen & have).sum() >= per_label:
                break
            chosen |= keys == p
    picked = np.flatnonzero(chosen)
    took = {"images": int(len(picked)), "positives": labels[picked].sum(0).astype(int).tolist(),
            "without_label": int((labels[picked].sum(1) == 0).sum()), "per_label": int(per_label)}
    return picked, took


def draw_total(labels: np.ndarray, groups: list[str] | None, total: int, seed: int) -> tuple[np.ndarray, dict]:
    """The other scarcity knob: about `total` labelled images, whole patients at a time, drawn by iterative
    stratification over patients so each label keeps its share (a label one patient carries may be left out)."""
    labels = np.asarray(labels)
    if not 2 <= total <= len(labels):
        raise GenaugError(f"labelled_images must be from 2 to the {len(labels)} images of the train split "
                          f"(got {total})")
    if total == len(labels):
        picked = np.arange(len(labels))
    else:
        _, picked = stratified_split(labels, groups, total / len(labels), seed)
        picked = np.sort(picked)
    took = {"images": int(len(picked)), "total": int(total), "positives": labels[picked].sum(0).astype(int).tolist(),
            "without_label": int((labels[picked].sum(1) == 0).sum()), "per_label": None}
    return picked, took


def draw_subset(source, per_label: int | None, seed: int, image_size: int, fit: str = "crop", intensity=None,
                total: int | None = None):
    """The labelled training subset of a multi-label source: at least `per_label` positives of every
    label and as many images without one (whole patients; every train image with None), or about
    `total` images stratified over patients (`draw_total`), decoded, and its manifest (each item's
    labels by name, what the draw took, the test split's members)."""
    import torch

    from .intensity import IntensityRule
    from .subsets import MANIFEST_FORMAT

    train = source.split("train")
    if total is not None:
        picked, took = draw_total(train.labels, train.groups, int(total), seed)
    elif per_label is None:
        picked, took = np.arange(len(train.ids)), {"images": len(train.ids), "per_label": None}
    else:
        picked, took = draw_positives(train.labels, train.groups, int(per_label), seed)
    ids = [train.ids[i] for i in picked]
    loaded = source.load("train", ids, image_size, fit, IntensityRule.parse(intensity))
    labels = train.labels[picked]

    def names(row):
        return [n for n, v in zip(source.classes, row) if v]

    def item(i, k):
        row = {"id": train.ids[i], "labels": names(train.labels[i])}
        return {**row, **({"group": train.groups[i]} if train.groups else {}), **k}

    test = source.split("test")
    manifest = {
        "format": MANIFEST_FORMAT, "source": source.spec, "kind": source.kind, "multilabel": True,
        "classes": source.classes, "selected_classes": source.classes, "channels": source.channels,
        "image_size": image_size, "fit": fit, "intensity": loaded.intensity.to_dict(),
        "split_origin": source.split_origin, "split_options": source.options(),
        "ungrouped_files": len(source.ungrouped), "seed": seed, "per_class": per_label, "took": took,
        "train": {"split": "train", "count": len(ids), "skipped_bad": 0,
                  "items": [item(i, {"sha256": h}) for i, h in zip(picked, loaded.hashes)]},
        "test": {"split": "test", "count": len(test.ids),
                 "items": [{"id": i, "labels": names(row),
                            **({"group": g} if test.groups else {})}
                           for i, row, g in zip(test.ids, test.labels, test.groups or [None] * len(test.ids))]},
    }
    return loaded.images, torch.from_numpy(labels.astype(np.int64)), manifest


def load_split(source, split: str, image_size: int, fit: str = "crop", intensity=None):
    """Every image of a multi-label source's split, decoded with a recorded size, fit and intensity rule, and
    its N x L 0/1 labels (int64)."""
    import torch

    part = source.split(split)
    loaded = source.load(split, list(part.ids), image_size, fit, intensity)
    return loaded.images, torch.from_numpy(np.asarray(part.labels, dtype=np.int64))


def training_label_sets(manifest: dict, n: int, seed: int) -> list[list[str]]:
    """`n` label sets drawn (seeded, with replacement) from a run's training items: the training
    part's own distribution of findings, the empty set included."""
    sets = [it["labels"] for it in manifest["train"]["items"]]
    order = np.random.default_rng(seed).integers(len(sets), size=n)
    return [list(sets[i]) for i in order]


def reload_subset(manifest: dict, data_root=None, source=None):
    """The recorded multi-label subset again (images, 0/1 label vectors), refused if an image changed."""
    import torch

    from .sources import open_source

    source = source or open_source(manifest["source"], data_root, **manifest.get("split_options", {}))
    items = manifest["train"]["items"]
    loaded = source.load("train", [it["id"] for it in items], manifest["image_size"], manifest["fit"],
                         manifest["intensity"])
    changed = [it["id"] for it, h in zip(items, loaded.hashes) if it["sha256"] != h]
    if changed:
        raise GenaugError(f"{len(changed)} image(s) of this run changed since it was drawn, e.g. {changed[0]}")
    names = manifest["classes"]
    labels = torch.zeros(len(items), len(names), dtype=torch.int64)
    for i, it in enumerate(items):
        labels[i, [names.index(n) for n in it["labels"]]] = 1
    return loaded.images, labels
