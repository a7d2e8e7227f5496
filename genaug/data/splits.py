"""Splits that never move and never cut a patient in two.

- **Test membership** of a source without its own test split is a function of the item alone:
  a salted hash of its group (the patient, when `--group-by` names one; else the item's id)
  mapped to [0, 1), in the test split when below the test fraction. Adding files never moves an
  existing item into the test split; every class gets about that fraction (in expectation) and
  at least one test group (see `hash_split`).
- **Groups** come from `--group-by REGEX` (first capture group of the file's path relative to
  the data root, `re.search`), a built-in name, or a label file's `group` column. A file the
  regex does not match is its own group (counted and reported).
- **Validation carves** (epoch selection) are drawn with scikit-learn's `StratifiedGroupKFold`,
  seeded, so they are stratified and group-disjoint, and a new seed gives a new carve; so are
  cross-validation folds (`cv_folds`).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from ..errors import GenaugError

SPLIT_SALT = "genaug-split-v1"
DEFAULT_TEST_FRACTION = 0.2
# Built-in patient-id patterns for public layouts.
GROUP_PATTERNS = {
    # OCT2017 (Kermany 2018): CNV-6294785-1.jpeg -> patient 6294785 (ids are shared across classes)
    "oct2017": r"(?:^|/)[A-Za-z]+-(\d+)-\d+\.[^/]+$",
    # Kermany chest X-rays: person1000_bacteria_2931.jpeg -> person1000; IM-0115-0001.jpeg and
    # NORMAL2-IM-0115-0001.jpeg -> IM-0115 (merging the two is the safe side)
    "kermany-cxr": r"(?:^|/)(?:NORMAL2-)?(person\d+|IM-\d+)[_-]",
}


def hash_unit(key: str, salt: str = SPLIT_SALT) -> float:
    """A stable number in [0, 1) for `key`."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def in_test(group_key: str, test_fraction: float) -> bool:
    return hash_unit(group_key) < test_fraction


def group_pattern(group_by: str | None) -> re.Pattern | None:
    """Compile `--group-by` (a built-in name or a regex with one capture group)."""
    if not group_by:
        return None
    text = GROUP_PATTERNS.get(group_by, group_by)
    try:
        pattern = re.compile(text)
    except re.error as e:
        raise GenaugError(f"--group-by {group_by!r} is not a valid regular expression: {e}") from None
    if pattern.groups < 1:
        raise GenaugError(f"--group-by {group_by!r} needs a capture group, e.g. 'patient(\\d+)'; "
                          f"built-in names: {', '.join(GROUP_PATTERNS)}")
    return pattern


def groups_from_paths(paths: list[str], group_by: str | None) -> tuple[list[str] | None, list[str]]:
    """The group of each path (None without --group-by) and the paths the pattern did not match."""
    pattern = group_pattern(group_by)
    if pattern is None:
        return None, []
    groups, unmatched = [], []
    for p in paths:
        m = pattern.search(p.replace("\\", "/"))
        if m and m.group(1):
            groups.append(m.group(1))
        else:
            groups.append(f"file:{p}")
            unmatched.append(p)
    if paths and len(unmatched) == len(paths):
        raise GenaugError(f"--group-by {group_by!r} matches none of the {len(paths)} files "
                          f"(e.g. {paths[0]!r}); check the pattern against the paths relative to the data root")
    return groups, unmatched


def hash_split(ids: list, labels: np.ndarray, groups: list[str] | None, test_fraction: float,
               classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the train and test items: test iff the item's group (or id) hashes below the fraction.

    A class none of whose groups hashes below the fraction (likely only for classes of a few
    patients) sends its lowest-hashing group to test. Adding files can then return that group to
    train (test to train, never the other way), and a manifest refuses the changed membership.
    """
    keys = groups if groups is not None else [str(i) for i in ids]
    units = {k: hash_unit(k) for k in keys}
    test_keys = {k for k, u in units.items() if u < test_fraction}
    for label in np.unique(labels):
        class_keys = {k for k, y in zip(keys, labels) if y == label}
        if class_keys & test_keys:
            continue
        if len(class_keys) < 2:
            unit = "patient" if groups is not None else "image"
            raise GenaugError(f"class {classes[int(label)]!r} has a single {unit}: it cannot be in both the "
                              "train and the test split; add data or give the data its own split")
        test_keys.add(min(class_keys, key=units.__getitem__))
    test_mask = np.array([k in test_keys for k in keys], dtype=bool)
    for label in np.unique(labels):
        if not (~test_mask & (labels == label)).any():
            raise GenaugError(f"class {classes[int(label)]!r} would have no training images: all its "
                              "patients share groups with other classes' test patients")
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def carve_validation(labels: np.ndarray, groups: list[str] | None, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified, group-disjoint carve: (train positions, validation positions).

    The fraction is written as j / K (K at most 20: 0.4 = 2/5, 0.3 = 3/10) and the carve is j of the
    K seeded folds of scikit-learn's `StratifiedGroupKFold`, so 0.4 carves 40% (up to the rounding of
    folds and patients), not the 50% that `round(1 / fraction)` folds would give; 1/K fractions carve
    exactly as before."""
    from fractions import Fraction

    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < fraction <= 0.5:
        raise GenaugError(f"val_fraction must be above 0 and at most 0.5 (got {fraction})")
    labels = np.asarray(labels)
    group_ids = np.asarray(groups if groups is not None else np.arange(len(labels)).astype(str))
    share = Fraction(fraction).limit_denominator(20)
    held, n_splits = max(1, share.numerator), max(2, share.denominator)
    if len(np.unique(group_ids)) < n_splits:
        raise GenaugError(f"too few {'patients' if groups is not None else 'images'} "
                          f"({len(np.unique(group_ids))}) for a {fraction:.0%} validation carve "
                          f"({held} of {n_splits} folds)")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = [val for _, val in splitter.split(np.zeros(len(labels)), labels, group_ids)]
    val = np.sort(np.concatenate(folds[:held]))
    return np.setdiff1d(np.arange(len(labels)), val), val


def cv_folds(labels: np.ndarray, groups: list[str] | None, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K seeded, stratified, group-disjoint folds of a labelled subset: [(train positions, held-out
    positions)] with every image held out exactly once."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise GenaugError(f"cv needs at least 2 folds (got {k})")
    labels = np.asarray(labels)
    group_ids = np.asarray(groups if groups is not None else np.arange(len(labels)).astype(str))
    unit = "patients" if groups is not None else "images"
    for label in np.unique(labels):
        n = len(np.unique(group_ids[labels == label]))
        if n < k:
            raise GenaugError(f"cv {k}: a class has only {n} {unit} in the labelled subset; every fold needs one "
                              f"of each class (use fewer folds or more images per class)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels, group_ids)]
    if any(len(np.unique(labels[va])) < len(np.unique(labels)) for _, va in folds):
        raise GenaugError(f"cv {k}: the patients cannot be spread so that every fold holds every class; "
                          "use fewer folds")
    return folds
