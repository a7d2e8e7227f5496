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
    """Image files in the label file's image folders that no row names (an image with no row): the
    top-level folders (searched with their subfolders) of rows with relative paths, and the very
    folders of rows with absolute paths, so the search never leaves the folders the rows point to."""
    relative = [p for p in listed if not Path(p).is_absolute()]
    folders = {Path(p).parts[0] for p in relative if len(Path(p).parts) > 1}
    known = set(listed)
    found = []
    for folder in sorted(folders):
        for f in sorted((root / folder).rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and f.suffix.lower() in READABLE_SUFFIXES and rel not in known:
                found.append(rel)
    for folder in sorted({Path(p).parent for p in listed if Path(p).is_absolute()}):
        for f in sorted(folder.glob("*")) if folder.is_dir() else []:
            if f.is_file() and f.suffix.lower() in READABLE_SUFFIXES and f.as_posix() not in known:
                found.append(f.as_posix())
    return found
