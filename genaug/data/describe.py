"""What `genaug datasets` prints and exports: counts and patients per class and split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..io import atomic_dir, write_json
from .images import save_png
from .imagesets import slug
from .copies import copies_text
from .sources import Source
from .subsets import load_manifest


def source_summary(source: Source) -> str:
    if source.multilabel:
        return multilabel_summary(source)
    splits = list(source.splits)
    grouped = any(source.splits[s].groups is not None for s in splits)
    lines = [f"{source.spec}: {source.kind}, {source.channels} channel(s), "
             f"{source.native_size or 'mixed'} px, split: {source.split_origin}"]
    lines.append("class\t" + "\t".join(splits) + ("\t(images / patients)" if grouped else ""))

    def cell(split: str, label: int | None) -> str:
        s = source.splits[split]
        mask = [label is None or y == label for y in s.labels]
        n = sum(mask)
        if s.groups is None:
            return str(n)
        return f"{n}/{len({g for g, m in zip(s.groups, mask) if m})}"

    for i, name in enumerate(source.classes):
        lines.append(f"{i}:{name}\t" + "\t".join(cell(s, i) for s in splits))
    lines.append("total\t" + "\t".join(cell(s, None) for s in splits))
    return "\n".join(lines + _notes(source))


def _notes(source: Source) -> list[str]:
    lines = []
    if source.ungrouped:
        lines.append(f"{len(source.ungrouped)} file(s) without a patient id (each its own group), "
                     f"e.g. {source.ungrouped[0]}")
    lines += copies_text(source.copies)
    if source.layout:
        lines.append(f"read: {source.layout}")
    if source.unused:
        lines.append(f"not read: top-level folder(s) {', '.join(source.unused)} (the splits are train or "
                     "training, val, valid, validation or dev, and test or testing; --split-folders names others)")
    return lines


def multilabel_summary(source: Source, top: int = 10) -> str:
    """Per-label positives (images / patients) per split, the commonest label sets, co-occurrence and
    patients per split of a multi-label source."""
    splits = list(source.splits)
    lines = [f"{source.spec}: {source.kind}, {len(source.classes)} labels, {source.channels} channel(s), "
             f"split: {source.split_origin}",
             "label\t" + "\t".join(splits) + "\t(positive images / patients)"]

    def cell(split, mask):
        s = source.splits[split]
        n = int(mask.sum())
        return f"{n}/{len({g for g, m in zip(s.groups, mask) if m})}" if s.groups is not None else str(n)

    for j, name in enumerate(source.classes):
        lines.append(f"{j}:{name}\t" + "\t".join(cell(s, source.splits[s].labels[:, j] == 1) for s in splits))
    lines.append("images\t" + "\t".join(cell(s, np.ones(len(source.splits[s].ids), bool)) for s in splits))
    every = np.concatenate([source.splits[s].labels for s in splits])
    sets = Counter("|".join(n for n, v in zip(source.classes, row) if v) or "(none)" for row in every)
    lines.append(f"label sets ({len(sets)} distinct), commonest: " +
                 ", ".join(f"{k} {v}" for k, v in sets.most_common(top)))
    pairs = every.T.astype(np.int64) @ every.astype(np.int64)
    common = sorted(((int(pairs[a, b]), source.classes[a], source.classes[b]) for a in range(len(pairs))
                     for b in range(a + 1, len(pairs)) if pairs[a, b]), reverse=True)[:top]
    lines.append("co-occurring most often: " + (", ".join(f"{a}+{b} {n}" for n, a, b in common) or "none"))
    lines.append("labels per image: " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(every.sum(1).tolist()).items())))
    return "\n".join(lines + _notes(source))


def run_summary(run_dir: str | Path) -> str:
    m = load_manifest(run_dir)
    options = m.get("split_options", {})
    lines = [f"run {run_dir}: {m['source']} ({m['kind']}), classes {', '.join(m['selected_classes'])}, "
             f"{m['image_size']} px ({m['fit']}), {m['channels']} channel(s), seed {m['seed']}, "
             f"per class {m['per_class']}, intensity {m['intensity']['rule']}"
             + (f" window {m['intensity']['window']}" if m["intensity"]["window"] else "")
             + (f", preprocess {m['intensity']['preprocess']}" if m["intensity"].get("preprocess") else ""),
             f"train items: {m['train']['count']} (skipped unreadable: {m['train']['skipped_bad']}); "
             f"test split: {m['test']['count']} items, never used for training; split: {m['split_origin']}"
             + (f"; grouped by {options['group_by']}" if options.get("group_by") else "")]
    for it in m["train"]["items"]:
        lines.append(f"  {it['class']}\t{it['id']}\t{it['sha256'][:16]}" + (f"\t{it['group']}" if "group" in it else ""))
    return "\n".join(lines)


def export(source: Source, out: str | Path, image_size: int | None, fit: str | None, intensity,
           skip_bad: bool = False) -> int:
    """Every image of every split as the models see it, as PNG, in `out/<split>/<class>/`.

    A `dataset` intensity window is fitted on the train split and reused for the other splits,
    as a run does; it is written to `out/export.json` with the other settings.
    """
    size = image_size or source.default_size()
    rule, count = intensity, 0
    if source.multilabel:
        return _export_multilabel(source, out, size, fit, rule, skip_bad)
    with atomic_dir(out) as tmp:
        for split in ["train"] + [s for s in source.splits if s != "train"]:
            s = source.split(split)
            loaded = source.load(split, s.ids, size, fit or "crop", rule, skip_bad)
            rule = loaded.intensity
            label_of = dict(zip(s.ids, s.labels))
            for item, image in zip(loaded.ids, loaded.images):
                name = slug(str(item).replace("/", "__"))
                save_png(image, tmp / split / slug(source.classes[int(label_of[item])]) / f"{name}.png")
                count += 1
        write_json(tmp / "export.json", {"source": source.spec, "image_size": size, "fit": fit or "crop",
                                         "intensity": rule.to_dict(), "split_origin": source.split_origin,
                                         **source.options(), "images": count})
    return count


def _export_multilabel(source: Source, out, size: int, fit: str | None, rule, skip_bad: bool) -> int:
    """A multi-label source as the models see it: `out/<split>/<image>.png` and one `out/labels.csv`
    (path, group, split and one 0/1 column per label): a label file genaug reads back, splits kept."""
    import csv

    count = 0
    with atomic_dir(out) as tmp:
        with open(tmp / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            grouped = any(source.splits[s].groups for s in source.splits)
            writer.writerow(["path", *(["group"] if grouped else []), "split", *source.classes])
            for split in ["train"] + [s for s in source.splits if s != "train"]:
                s = source.split(split)
                loaded = source.load(split, s.ids, size, fit or "crop", rule, skip_bad)
                rule = loaded.intensity
                row_of = {i: k for k, i in enumerate(s.ids)}
                for item, image in zip(loaded.ids, loaded.images):
                    name = f"{split}/{slug(str(item).replace('/', '__'))}.png"
                    save_png(image, tmp / name)
                    k = row_of[item]
                    writer.writerow([name, *([s.groups[k]] if grouped else []), split, *s.labels[k].tolist()])
                    count += 1
        write_json(tmp / "export.json", {"source": source.spec, "image_size": size, "fit": fit or "crop",
                                         "intensity": rule.to_dict(), "split_origin": source.split_origin,
                                         **source.options(), "images": count})
    return count
