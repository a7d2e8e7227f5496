"""Patient-wise splits and draws over a multi-label matrix (N images x L labels, 0/1): the test split and
validation carve by iterative stratification (Sechidis et al. 2011; `iterative-stratification`) over
patients, each patient's labels the union of its images', CV folds the same way, and the seeded draw
of a labelled subset (`per_label` positives of each label, or a total).
"""

from __future__ import annotations

import numpy as np

from ..errors import GenaugError

SPLIT_SEED = 0


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
