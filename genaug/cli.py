"""The `genaug` command line: a thin layer over the Python API.

Every user error (GenaugError) becomes a one-line message and exit code 1; click itself rejects
malformed options with exit code 2 before any work starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from .errors import GenaugError

DEVICES = click.Choice(["auto", "cpu", "cuda"])


class GenaugGroup(click.Group):
    def invoke(self, ctx):
        from .generators.training import TrainingInterrupted

        try:
            return super().invoke(ctx)
        except TrainingInterrupted as e:
            err = click.ClickException(str(e))
            err.exit_code = 130
            raise err from None
        except GenaugError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from diffusers.utils import logging as dlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()


@click.group(cls=GenaugGroup)
@click.version_option(package_name="genaug")
def main():
    """Generative data augmentation for scarce image data sets."""
    _quiet_libraries()


def data_options(f):
    f = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Where named sources (cifar10, medmnist:NAME) live or are downloaded to.")(f)
    f = click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted in the manifest).")(f)
    return f


def split_options(f):
    """How a source is split and converted: recorded in every manifest."""
    f = click.option("--group-by", default=None,
                     help="Patient id: a regex whose first group is taken from each file's path, or a built-in "
                          "name (oct2017, kermany-cxr). Keeps each patient on one side of every split.")(f)
    f = click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                     help="Test share for sources without their own test split  [default: 0.2]")(f)
    f = click.option("--given-split", type=click.Choice(["use", "ignore", "drop-copies"]), default=None,
                     help="A source's own train/val/test split (folders, a split column, an npz's arrays): use it, "
                          "ignore it and split the same images by patient (--group-by) and by content, so copies "
                          "stay together, or use it with the test images that copy a training image dropped  "
                          "[default: use]")(f)
    f = click.option("--split-folders", default=None,
                     help="Name a folder's split folders when they are not train/training, val/valid/validation/dev "
                          "and test/testing: FOLDER=train,FOLDER=test[,FOLDER=val]")(f)
    f = click.option("--fit", type=click.Choice(["crop", "pad"]), default=None,
                     help="Make images square by centre crop, or by padding with the border value (keeps "
                          "the full width of wide scans)  [default: crop]")(f)
    f = click.option("--intensity", default=None,
                     help="Non-8-bit pixels (16-bit, float, DICOM): dataset (one 0.5-99.5 percentile window for "
                          "the training subset), image (per-image min-max) or window:LOW,HIGH  [default: dataset]")(f)
    f = click.option("--preprocess", type=click.Choice(["none", "equalize", "clahe"]), default=None,
                     help="Contrast step on every image, real and synthetic, before any model sees it: global "
                          "histogram equalisation or CLAHE (clip 2.0, 8x8 tiles; 4x4 below 64 px)  "
                          "[default: none]")(f)
    return f


LABEL_FILE_OPTIONS = (  # (flag, LabelColumns field, help): the columns of a multi-label label file
    ("--path-column", "path", "Label file: the column with each image's path  [default: path]"),
    ("--label-column", "label", "Label file: one column holding each image's labels as a list (NIH's "
                                "'Finding Labels')."),
    ("--label-columns", "labels", "Label file: the 0/1 label columns (comma list), or with --label-column the "
                                  "label list  [default: every 0/1 column]"),
    ("--label-separator", "separator", "Separator of --label-column's lists  [default: |]"),
    ("--no-label", "no_label", "The name of the empty label set  [default: No Finding]"),
    ("--group-column", "group", "Label file: the patient column  [default: group, patient or 'Patient ID']"),
    ("--split-column", "split", "Label file: the split column  [default: split]"),
    ("--uncertain", "uncertain", "Named label columns with CheXpert's -1 (uncertain): read as zeros or ones  "
                                 "[default: zeros]"),
)


def label_file_options(f):
    """The column options of a multi-label label file, passed on as `lf_<field>` keyword arguments."""
    for flag, field, text in reversed(LABEL_FILE_OPTIONS):
        f = click.option(flag, f"lf_{field}", default=None, help=text)(f)
    return f


def label_columns_of(options: dict) -> dict | None:
    named = {k[3:]: v for k, v in options.items() if k.startswith("lf_") and v is not None}
    return named or None


@main.command()
@click.argument("spec")
@click.option("--export", "export_dir", default=None,
              help="Write every image as the models see it (PNG) into DIR/<split>/<class>/, to check by eye.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Size for --export; copies across a given split are then compared by their pixels at this size, "
                   "not only by their files' bytes.")
@label_file_options
@split_options
@data_options
def datasets(spec, export_dir, image_size, group_by, test_fraction, given_split, split_folders, fit, intensity, preprocess, data_root,
             skip_bad, **label_file):
    """Classes, counts (and patients) per split of a data SPEC, or the manifest(s) of a run or
    experiment folder."""
    from .data import describe

    if Path(spec, "manifest.json").exists():
        click.echo(describe.run_summary(spec))
        return
    replicates = sorted([*Path(spec).glob("rep-*/manifest.json"), *Path(spec).glob("rep-*/fold-*/manifest.json")],
                        key=lambda p: [int(part.split("-")[1]) for part in p.relative_to(spec).parts[:-1]])
    if replicates:  # an augment-and-train experiment: one manifest per replicate
        click.echo("\n\n".join(describe.run_summary(p.parent) for p in replicates))
        return
    from .data import open_source

    source = open_source(spec, data_root, group_by=group_by, test_fraction=test_fraction,
                         given_split=given_split or "use", label_columns=label_columns_of(label_file),
                         split_folders=split_folders, copies_at=(image_size, fit or "crop") if image_size else None)
    click.echo(describe.source_summary(source))
    if export_dir:
        from .data.intensity import IntensityRule

        rule = IntensityRule.parse(intensity).with_preprocess(preprocess)
        n = describe.export(source, export_dir, image_size, fit, rule, skip_bad)
        click.echo(f"exported {n} images to {export_dir}")


CONFIG_HELP = "YAML config: a file, or a shipped name (`genaug configs` lists them); options override it."


@main.command()
def configs():
    """List the shipped configs, usable by name with --config from any folder."""
    from .config import list_configs

    for name, description in list_configs():
        click.echo(f"{name:<18} {description}")


@main.command()
@click.argument("family", type=click.Choice(["vae", "dcgan", "ddpm", "ddpm-semi", "ddpm-pseudo", "ddpm-finetune",
                                             "ddpm-finetune-cond", "ddpm-edit", "ddpm-multilabel"]))
@click.option("--data", "data", default=None,
              help="Data spec: folder, labels.csv, .npz, medmnist:NAME, cifar10, fashion-mnist.")
@click.option("--unlabeled", default=None,
              help="ddpm-semi, ddpm-pseudo, ddpm-finetune[-cond], ddpm-edit: N (or all) unlabelled train-split images beside the "
                   "labelled ones, outside their items and patients.")
@click.option("--unlabeled-data", default=None, help="... or a folder of unlabelled images.")
@label_file_options
@click.option("--class", "classes", default=None, help="Class name or index, a comma list, or 'all'.")
@click.option("--per-class", type=click.IntRange(min=1), default=None,
              help="Seeded subset size per class  [default: every train image of the class]")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Square size in pixels  [default: the source's own: 28 MedMNIST/Fashion-MNIST, 32 CIFAR-10, "
                   "64 folders]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps  [default: the config's, else 2000]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per step, the global batch under `accelerate launch` (split between processes)  "
                   "[default: 32]")
@click.option("--conditional", is_flag=True,
              help="ddpm and ddpm-finetune: one class-conditional model (class embedding, classifier-free guidance) "
                   "for every selected class, in one run folder (family ddpm-cond, ddpm-finetune-cond), instead of "
                   "one model per class.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Steps between checkpoints  [default: 10% of --steps]")
@click.option("--config", "config_file", default=None, help=CONFIG_HELP)
@click.option("--out", default=None, help="Run folder  [default: runs/<data>/<family>/<class>]")
@click.option("--seed", type=int, default=None, help="Seed of the subset draw and of training  [default: 0]")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help="Where to train.")
@click.option("--log-with", default=None,
              help="Also send the training curves to an accelerate tracker, e.g. tensorboard (RUN/trackers/).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out (or the default folder) with its recorded settings; only --steps "
                   "may grow, other options must match.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@split_options
@data_options
def train(family, data, unlabeled, unlabeled_data, classes, per_class, image_size, steps, batch_size, conditional,
          checkpoint_every, config_file, out, seed, device, log_with, resume, no_progress, group_by, test_fraction,
          given_split, split_folders, fit, intensity, preprocess, data_root, skip_bad, **label_file):
    """Train one FAMILY generator per class on scarce real data (or, with --conditional, one
    class-conditional DDPM for all of them).

    A run of many steps announces its expected time once the first steps are measured (a 64 px
    DDPM takes about 2 s a step on 2 CPU cores).
    """
    from . import runs
    from .config import load_config, merge

    if conditional:
        conditional_of = {"ddpm": "ddpm-cond", "ddpm-finetune": "ddpm-finetune-cond"}
        if family not in conditional_of:
            raise click.UsageError(f"--conditional applies to ddpm and ddpm-finetune only (not {family})")
        family = conditional_of[family]

    overrides = merge(load_config(config_file), {
        "data": data, "class": classes, "per_class": per_class, "image_size": image_size, "steps": steps,
        "batch_size": batch_size, "seed": seed, "checkpoint_every": checkpoint_every, "group_by": group_by,
        "given_split": given_split, "split_folders": split_folders,
        "test_fraction": test_fraction, "fit": fit, "intensity": intensity,
        "preprocess": preprocess, "log_with": log_with, "unlabeled": unlabeled, "unlabeled_data": unlabeled_data,
        "label_columns": label_columns_of(label_file)})
    if family == "ddpm-multilabel" and overrides.get("class") is None:
        overrides["class"] = "all"  # one model over every label set
    progress = not no_progress
    target = out or (runs.default_run_dir(overrides["data"], family, str(overrides["class"]))
                     if overrides.get("data") and overrides.get("class") is not None else None)
    from .generators.registry import get_family

    # a pool or label-set family's runs resume by drawing the same subset (and pool) again: the same command
    if resume and target and runs.run_folders(target) and not (get_family(family).uses_pool
                                                              or get_family(family).multilabel):
        dirs = runs.resume_runs(family, target, overrides, data_root, device, progress)
    else:
        if not overrides.get("data") or overrides.get("class") is None:
            raise click.UsageError("--data and --class are required (on the command line or in --config); "
                                   "with --resume, give --out RUN_FOLDER")
        dirs = runs.train(family, overrides["data"], str(overrides["class"]), overrides, out=out, data_root=data_root,
                          resume=resume, device=device, skip_bad=skip_bad, progress=progress)
    for d in dirs:
        click.echo(f"trained {family}: {d}")


@main.command()
@click.option("--run", "run_dir", required=True, help="A trained run folder.")
@click.option("--n", type=click.IntRange(min=1), default=None,
              help="Number of images (required unless --edit-from; with it, the first N edits).")
@click.option("--out", required=True, help="Folder for the PNG files and samples.json (re-run to complete it).")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm-solver", "unipc", "heun"]), default=None,
              help="DDPM only  [default: the run's config, ddim]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Sampler steps, DDPM only  [default: the run's config; ddim 50, dpm-solver 20, heun 20, "
                   "unipc 10, ddpm 1000]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i is drawn from seed + i.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help="Where to sample.")
@click.option("--class", "class_name", default=None, help="The class to draw, for a class-conditional (ddpm-cond) run.")
@click.option("--guidance", type=click.FloatRange(min=0), default=None,
              help="Classifier-free guidance weight W of a class-conditional run: 0 unconditional, 1 conditional, "
                   ">1 guided  [default: the run's config, 1]")
@click.option("--target-labels", default=None,
              help="The labels of every image, for a label-set (ddpm-multilabel) run: a comma list, e.g. "
                   "Hernia,Pneumonia to lift rare findings; 'none' for the empty set.")
@click.option("--edit-from", default=None,
              help="Edit real images instead of drawing new ones (SDEdit, DDPM runs): a folder of images, or "
                   "'train' for the run's own training images. Each variant records its source and strength.")
@click.option("--strength", default="0.25,0.5,0.75,1.0", show_default=True,
              help="With --edit-from: the share of the noise schedule an image is noised to before denoising "
                   "(0 keeps it, 1 ignores it); a comma list is cycled over the variants.")
@click.option("--variants", type=int, default=10, show_default=True, help="With --edit-from: edits per real image.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sample(run_dir, n, out, sampler, steps, batch_size, seed, device, class_name, guidance, target_labels,
           edit_from, strength, variants, no_progress):
    """Draw N synthetic images from a trained run, or edit real ones (--edit-from)."""
    from . import runs

    if edit_from is not None:
        images, ids, classes = runs.edit_sources(run_dir, edit_from, class_name)
        folder = runs.edit(run_dir, images, ids, out, variants, strength.split(","), n, classes, sampler, steps,
                           guidance, batch_size, seed, device, progress=not no_progress)
        click.echo(f"{n or variants * len(ids)} edits of {len(ids)} real images in {folder}")
        return
    if n is None:
        raise click.UsageError("--n is required (the number of images), unless --edit-from")
    label_sets = None
    if target_labels is not None:
        chosen = [p.strip() for p in target_labels.split(",") if p.strip()]
        label_sets = [[] if [p.lower() for p in chosen] == ["none"] else chosen]
    folder = runs.sample(run_dir, n, out, sampler, steps, batch_size, seed, device, progress=not no_progress,
                         class_name=class_name, guidance=guidance, label_sets=label_sets)
    click.echo(f"{n} samples in {folder}")


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--kid", is_flag=True, help="Also KID (mean and std over subsets).")
@click.option("--prc", is_flag=True, help="Also precision and recall (k = 3, Inception features).")
@click.option("--isc", is_flag=True, help="Inception Score: reported as unavailable with the offline weights.")
@click.option("--by-class", is_flag=True,
              help="A is a data spec, B a folder with one sample folder per class (B/<class>/), matched to the "
                   "class names exactly, case-insensitive.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Resize images (needed for mixed sizes)  [default: as they are]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per Inception batch.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help="Where the Inception network runs.")
@click.option("--json", "json_out", default=None, help="Also write the results as JSON.")
@click.option("--cache-dir", default=None,
              help="Inception weights and real-set feature cache  [default: $GENAUG_CACHE_DIR, else ~/.cache/genaug]")
@click.option("--inception-weights", default=None, help="An official torch-fidelity / pytorch-fid weights file.")
@click.option("--data-root", default=None, help="Where named sources (cifar10, medmnist:NAME) live.")
@click.option("--no-progress", is_flag=True, help="No progress output (torch-fidelity's, on stderr).")
def fid(a, b, kid, prc, isc, by_class, image_size, batch_size, device, json_out, cache_dir, inception_weights,
        data_root, no_progress):
    """FID (and KID, precision/recall) between image sets A and B.

    A and B are image folders (e.g. `genaug sample` output) or SPEC:CLASS[@SPLIT], such as
    ../shared/data/pneumoniamnist.npz:normal or fashion-mnist:Shirt@test.
    """
    from .metrics import fid_report

    opts = dict(kid=kid, prc=prc, batch_size=batch_size, device=device, cache_dir=cache_dir,
                weights=inception_weights, verbose=not no_progress)
    if by_class:
        rows, unmatched = fid_report.by_class(a, b, image_size=image_size, data_root=data_root, **opts)
        click.echo(fid_report.format_table(rows))
        for line in unmatched:
            click.echo(f"note: {line}", err=True)
        result = {"per_class": rows, "unmatched": unmatched}
    else:
        result = fid_report.pair(a, b, image_size=image_size, data_root=data_root, **opts)
        click.echo(fid_report.format_pair(result))
    if isc:
        result["inception_score"] = "unavailable: the offline Inception weights have no classifier layer"
        click.echo(f"Inception Score: {result['inception_score']}")
    if "warning" in result or any("warning" in r for r in result.get("per_class", [])):
        click.echo(f"warning: FID with fewer than {fid_report.FEW_IMAGES_WARNING} images per side is biased "
                   "upward; compare only figures made with the same image counts", err=True)
    if json_out:
        from .io import write_json

        write_json(json_out, result)


@main.command()
@click.argument("query")
@click.argument("gallery")
@click.option("--out", required=True, help="Folder for nearest.json (every pair) and nearest.png.")
@click.option("--k", type=int, default=5, show_default=True, help="Neighbours per query image.")
@click.option("--features", type=click.Choice(["inception", "classifier", "pixels"]), default="inception",
              show_default=True,
              help="Cosine similarity of Inception pool3 features, of a saved classifier's penultimate features "
                   "(--model), or shift-tolerant pixel correlation.")
@click.option("--model", default=None, help="A classifier saved by augment-and-train (for --features classifier).")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="Resize both sets to this size.")
@click.option("--max-shift", type=click.IntRange(min=0), default=3, show_default=True,
              help="Pixels: alignments searched each way.")
@click.option("--flips", is_flag=True, help="Pixels: a mirror image counts as a copy (natural images).")
@click.option("--device", type=DEVICES, default="auto", show_default=True)
@click.option("--data-root", default=None, help="Where named sources (cifar10, medmnist:NAME) live.")
def nearest(query, gallery, out, k, features, model, image_size, max_shift, flips, device, data_root):
    """Each QUERY image beside its k most similar GALLERY images.

    QUERY and GALLERY are image folders or SPEC:CLASS[@SPLIT]. With synthetic images as queries and
    the real training images as gallery, this is the memorisation audit.
    """
    from .metrics.retrieval import nearest as find_nearest

    result = find_nearest(query, gallery, out, k=k, features=features, model=model, image_size=image_size,
                          data_root=data_root, max_shift=max_shift, flips=flips, device=device)
    top = max(result["pairs"], key=lambda p: p["similarity"])
    click.echo(f"{result['n_query']} queries x {result['n_gallery']} gallery images ({features}); closest pair: "
               f"{top['query']} ~ {top['neighbour']} at {top['similarity']:.4f}\n"
               f"table: {Path(out) / 'nearest.json'}  figure: {Path(out) / 'nearest.png'}")


@main.command()
@click.option("--experiment", default=None, help="An augment-and-train folder: every arm's saved classifier.")
@click.option("--model", default=None, help="One saved classifier (.safetensors), with --data.")
@click.option("--data", default=None, help="Data spec whose images --model is explained on.")
@click.option("--split", default="test", show_default=True, help="Split of --data.")
@click.option("--out", default=None, help="Figures and JSON  [default: EXPERIMENT/explain]")
@click.option("--method", type=click.Choice(["gradcam", "gradcam++", "scorecam", "cam"]), default="gradcam",
              show_default=True, help="Heatmap method (pytorch-grad-cam; cam: the head's weights, no gradients).")
@click.option("--replicate", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which replicate's classifiers (--experiment).")
@click.option("--per-class", type=click.IntRange(min=1), default=2, show_default=True,
              help="Test images per class shown, each of right and wrong (by the first model).")
@click.option("--mean-count", type=click.IntRange(min=1), default=64, show_default=True,
              help="Test images per class in the mean heatmaps.")
@click.option("--device", type=DEVICES, default="auto", show_default=True)
@click.option("--data-root", default=None, help="Where named sources (cifar10, medmnist:NAME) live.")
@click.option("--label", "labels_wanted", default=None,
              help="Several labels per image: the labels to explain (comma list)  [default: every label]")
def explain(experiment, model, data, split, out, method, replicate, per_class, mean_count, device, data_root,
            labels_wanted):
    """Heatmaps: where each arm's classifier finds evidence, on the same test images.

    Either --experiment DIR (its saved classifiers, side by side) or --model FILE --data SPEC.
    """
    from .explain.views import explain_experiment, explain_model

    if (experiment is None) == (model is None):
        raise click.UsageError("give either --experiment DIR or --model FILE (with --data SPEC)")
    if experiment is not None:
        result = explain_experiment(experiment, out, method, replicate, data_root, per_class, mean_count, device,
                                    labels_wanted)
        out = Path(out or Path(experiment) / "explain")
    else:
        if not data or not out:
            raise click.UsageError("--model needs --data SPEC and --out DIR")
        result = explain_model(model, data, out, method, split, data_root, per_class, mean_count, device,
                               labels_wanted)
    click.echo(f"{method} heatmaps of {', '.join(result['models'])} on {len(result['images'])} images: "
               + ", ".join(str(Path(out) / f) for f in result["figures"]))


@main.command("augment-and-train")
@click.option("--data", default=None, help="Data spec (or `data` in --config).")
@click.option("--class", "classes", default=None,
              help="Classes to classify: names/indices, comma list, or all  [default: all]")
@click.option("--per-class", type=click.IntRange(min=2), default=None,
              help="Labelled real images per class, validation included  [default: 50]")
@click.option("--generator", "generators", default=None,
              help="Comma list of vae, dcgan, ddpm, ddpm-cond (one class-conditional DDPM for all classes), the "
                   "pool families ddpm-semi, ddpm-pseudo, ddpm-finetune, ddpm-finetune-cond (one conditional "
                   "fine-tune for all classes), ddpm-edit (edits of the labelled images), or none (external sets "
                   "only)  [default: ddpm]")
@click.option("--guidance", default=None,
              help="ddpm-cond's classifier-free guidance weight, or a comma list (0,1,3) for a sweep: one arm per "
                   "weight, all sampled from one model per replicate  [default: 1]")
@click.option("--synthetic", "synthetic", multiple=True,
              help="NAME=DIR: an external synthetic set, DIR/<class>/*.png, used like a generator (repeatable).")
@click.option("--synthetic-per-class", default=None,
              help="Synthetic images drawn per class and source; a comma list (50,200,800) for a dose-response "
                   "curve  [default: 100]")
@click.option("--synthetic-ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of every batch drawn from the extra images  [default: in proportion to their count]")
@click.option("--controls", default=None,
              help="Control arms beside the baseline: baseline-strong (the reference), dup (matched duplicates), "
                   "real (the positive control +real@N) (comma list, or none)  [default: baseline-strong,dup,real]")
@click.option("--full-real", is_flag=True, default=None,
              help="Also train on every real training image of the split: the ceiling.")
@click.option("--unlabeled", default=None,
              help="N (or all) unlabelled images of the source's train split for --semi arms: outside the labelled, "
                   "validation and test items and their patients; labels dropped.")
@click.option("--unlabeled-data", default=None, help="A folder of unlabelled images for --semi arms, instead.")
@click.option("--semi", default=None,
              help="Semi-supervised arms: pseudo (pseudo-labelling), mpl (Meta Pseudo Labels; also +mpl+<source> "
                   "with each synthetic source), comma list; needs --unlabeled or --unlabeled-data.")
@click.option("--replicates", type=click.IntRange(min=1), default=None,
              help="Repeats of the whole pipeline (subset, generators, samples, acceptance); the unit of inference "
                   "(3 or more for conclusions)  [default: 1]")
@click.option("--cv", type=click.IntRange(min=2), default=None,
              help="K-fold cross-validation of the labelled subset (stratified, patient-disjoint with --group-by): "
                   "each fold is held out once for epoch selection while generators and classifiers train on the "
                   "rest; replaces the validation carve, and the test split still scores every classifier once.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Classifier seeds per arm inside each replicate  [default: 3]")
@click.option("--primary-metric", type=click.Choice(["accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr",
                                                     "cohen_kappa", "final_score", "macro_auroc", "micro_auroc",
                                                     "macro_ap"]), default=None,
              help="The one metric the headline answers on, declared before the run  [default: balanced_accuracy; "
                   "macro_auroc with several labels per image]")
@click.option("--target-labels", default=None,
              help="Several labels per image: a second synthetic source whose label sets hold one of these labels "
                   "in turn (comma list, or rarest:K), to lift rare findings.")
@click.option("--labelled-images", type=click.IntRange(min=2), default=None,
              help="Several labels per image: about N labelled images in all, stratified over patients, instead of "
                   "--per-class positives per label.")
@click.option("--pos-weight", is_flag=True, default=None,
              help="Several labels per image: binary cross-entropy weighted per label by negatives / positives.")
@click.option("--out", required=True, help="Experiment folder (re-run the same command to resume).")
@click.option("--classifier", default=None,
              help="resnet18, resnet50, efficientnet_b0 (torchvision, from scratch unless --pretrained) or "
                   "inception-v3 (the offline ImageNet Inception of FID); a comma list trains each per seed and "
                   "also scores their ensemble; the first drives the headline  [default: resnet18]")
@click.option("--pretrained", is_flag=True, default=None,
              help="torchvision ImageNet weights (from torch's cache; downloaded when online). Inputs go to 3 "
                   "channels and 224 px. A pretrained backbone is frozen with a new linear head unless --finetune.")
@click.option("--finetune", is_flag=True, default=None,
              help="Train the pretrained backbone (inception-v3, or --pretrained) too, not only its head.")
@click.option("--steps", default=None,
              help="Optimizer steps of every classifier run, whatever its image count (the steps protocol), or "
                   "auto  [default: auto: by image size, see the README]")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Classifier epochs of the epochs protocol (folders from before 0.2; with steps: null)  "
                   "[default: 20]")
@click.option("--synthetic-share", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of every batch drawn from an arm's added images, class-stratified  [default: 0.5]")
@click.option("--headroom", default=None,
              help="Labelled images per class at which the reference recipe also trains (comma list, all), or auto "
                   "[default: auto: 2x and 10x the subset and all where the source holds them]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Classifier batch size  [default: 32]")
@click.option("--accept", default=None,
              help="Comma list of acceptance policies: all, confidence, fid-gate, memorization  [default: all]")
@click.option("--loss", type=click.Choice(["ce", "cr"]), default=None,
              help="Cross-entropy, or the confusion-rate weighted loss for look-alike classes  [default: ce]")
@click.option("--cr-k", type=click.FloatRange(min=0), default=None, help="Weight k of the CR loss  [default: 3]")
@click.option("--generator-steps", type=click.IntRange(min=1), default=None,
              help="Override the generator configs' steps  [default: each config's]")
@click.option("--save-models", type=click.Choice(["first", "all", "none"]), default=None,
              help="Keep trained classifiers as safetensors beside their results (for `genaug nearest --features "
                   "classifier`): the first "
                   "seed of each arm and replicate, all, or none  [default: first]")
@click.option("--explain", "explain_method", type=click.Choice(["gradcam", "gradcam++", "scorecam", "cam"]),
              default=None, help="Add heatmaps of every arm's saved classifier to the report (see `genaug explain`).")
@click.option("--runs", "runs_dir", default=None,
              help="Reuse trained generators: RUNS/<family>/<class> with one replicate, "
                   "RUNS/rep-<r>/<family>/<class> for each replicate with several.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Square size in pixels  [default: the source's own]")
@click.option("--seed", type=int, default=None, help="Base seed of the subset, generators and classifiers  [default: 0]")
@click.option("--config", "config_file", default=None, help=CONFIG_HELP)
@click.option("--device", type=DEVICES, default="auto", show_default=True, help="Where to train.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS|auto]",
              help="Run the stages as Ray tasks: alone, on a local Ray cluster started for the run; with auto or "
                   "HOST:PORT, on a running cluster (`ray start --head`). Needs the extra genaug[ray].")
@split_options
@label_file_options
@click.option("--data-root", default=None, help="Where named sources (cifar10, medmnist:NAME) live.")
@click.option("--recipe-defaults", type=click.Choice(["recorded", "current"]), default=None,
              help="In a folder an older genaug started: the arms' recipe settings it never recorded keep the values "
                   "it ran with (recorded), or take today's defaults (current: re-judge its accepted sets under "
                   "today's protocol; only the classifiers run again)  [default: recorded]")
@click.option("--headroom-only", is_flag=True,
              help="Run the headroom stage alone (the reference at more labelled images per class and the positive "
                   "control), before any generator trains; writes headroom.md. Same as `genaug headroom`.")
def augment_and_train(data, classes, per_class, generators, guidance, synthetic, synthetic_per_class, synthetic_ratio, controls,
                      full_real, unlabeled, unlabeled_data, semi, replicates, cv, seeds, primary_metric, target_labels,
                      labelled_images, pos_weight, out, classifier, pretrained, finetune, steps, epochs,
                      synthetic_share, headroom, batch_size,
                      accept, loss, cr_k, generator_steps, save_models, explain_method, runs_dir, image_size, seed, config_file,
                      device, no_progress, ray_address, group_by, test_fraction, given_split, split_folders, fit, intensity, preprocess,
                      data_root, recipe_defaults, headroom_only, **label_file):
    """Train generators, accept synthetic images, and measure the classifier gain with statistics.

    Arms: baseline, the controls (baseline-strong, one +dup per synthetic arm, the positive control
    +real@N), one per generator and external set, the semi-supervised ones (+pseudo, +mpl,
    +mpl+<source>) with unlabelled images; all train the same optimizer-step budget with the same
    seeds, added images filling a fixed share of every batch. The answer follows the decision rule
    (iut: an arm helped when it beats every reference at alpha, Holm over the augmented arms; alpha
    and min_effect from the config). Re-run the same command to resume;
    --replicates and --seeds may grow on a re-run (recorded, and marked post hoc after a report).
    With --ray the stages run as Ray tasks (several GPUs, or a cluster sharing the folder); a
    finished stage is never computed twice, whichever driver or host meets it.
    """
    from .harness.experiment import Experiment, experiment_config

    if controls is not None and controls.strip().lower() == "none":
        controls = []
    config = experiment_config(config_file, {
        "data": data, "classes": classes, "per_class": per_class, "generators": generators, "guidance": guidance,
        "synthetic": list(synthetic) or None, "synthetic_per_class": synthetic_per_class,
        "synthetic_ratio": synthetic_ratio, "controls": controls, "full_real": full_real or None,
        "unlabeled": unlabeled, "unlabeled_data": unlabeled_data, "semi": semi, "replicates": replicates, "cv": cv,
        "primary_metric": primary_metric,
        "seeds": seeds, "classifier": classifier, "pretrained": pretrained, "finetune": finetune, "epochs": epochs,
        "steps": steps, "synthetic_share": synthetic_share, "headroom": headroom,
        "batch_size": batch_size, "accept": accept,
        "loss": loss, "cr_k": cr_k, "generator_steps": generator_steps, "save_models": save_models,
        "explain": explain_method, "image_size": image_size, "seed": seed,
        "group_by": group_by, "test_fraction": test_fraction, "given_split": given_split, "split_folders": split_folders, "fit": fit,
        "intensity": intensity,
        "preprocess": preprocess, "target_labels": target_labels, "pos_weight": pos_weight, "labelled_images": labelled_images,
        "label_columns": label_columns_of(label_file), "recipe_defaults": recipe_defaults})
    if not config.get("data"):
        raise click.UsageError("--data is required (on the command line or in --config)")
    experiment = Experiment(config["data"], out, config, runs_dir=runs_dir, data_root=data_root, device=device,
                            progress=not no_progress)
    experiment.run(ray=ray_address, headroom_only=headroom_only)
    if headroom_only:
        click.echo((Path(out) / "headroom.md").read_text().rstrip())
        return
    md = (Path(out) / "report.md").read_text()
    click.echo(md[md.index("## Answer"):md.index("## Design")].rstrip())
    click.echo(f"\nreport: {Path(out) / 'report.md'}")



@main.command()
@click.argument("first")
@click.argument("second")
@click.option("--metric", default=None, help="Metric to compare on  [default: FIRST's primary metric]")
@click.option("--out", default=None, help="Also write the comparison as Markdown (and .json beside it).")
def compare(first, second, metric, out):
    """Two finished augment-and-train experiments that differ in one recipe setting (e.g. --loss ce
    against --loss cr), arm by arm, paired replicate by replicate: SECOND − FIRST.

    Refused unless both drew the same real subsets and used the same generators.
    """
    from .harness.report.compare import compare_experiments, render
    from .io import write_json, write_text

    result = compare_experiments(first, second, metric)
    text = render(result)
    if out:
        write_text(Path(out), text)
        write_json(Path(out).with_suffix(".json"), result)
    click.echo(text.rstrip())


@main.command()
@click.argument("experiment_dir")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the table.")
def status(experiment_dir, as_json):
    """How far an augment-and-train folder is, also while it runs: per stage type the tasks planned,
    recorded and running, and the stage time ahead at the mean of the recorded ones."""
    import json

    from .harness.run.progress import progress, render

    result = progress(experiment_dir)
    click.echo(json.dumps(result, indent=2) if as_json else render(result))


@main.command()
@click.argument("experiment_dir")
@click.argument("archive")
@click.option("--without-weights", is_flag=True,
              help="Leave out the model files no stage still ahead reads (a finished generator a later stage reads, and "
                   "the newest checkpoint of an unfinished training, travel): a stage whose weights are missing reruns "
                   "only where a later stage still needs it.")
def pack(experiment_dir, archive, without_weights):
    """Pack an augment-and-train folder into ARCHIVE (.tar.gz) to continue it elsewhere: unpack it
    there (`tar xzf`) and run the same augment-and-train command with --out at the unpacked folder."""
    from .harness.run.pack import pack as pack_folder

    counts = pack_folder(experiment_dir, archive, without_weights)
    left = counts["left_out"]
    click.echo(f"{archive}: {counts['files']} files, {counts['bytes'] / 1e6:.1f} MB before compression; left out "
               f"{left['weights']} weight files ({left['weights_bytes'] / 1e6:.1f} MB) and {left['leases']} leases"
               + (f"; kept the newest checkpoint of {counts['kept_checkpoints']} unfinished training(s)"
                  if counts["kept_checkpoints"] else "")
               + (f"; kept the finished model of {counts['kept_models']} training(s) a later stage reads"
                  if counts["kept_models"] else ""))


@main.command()
@click.option("--experiment", "experiment_dir", default=None,
              help="A finished augment-and-train folder (a pilot): its results.csv and config.yaml.")
@click.option("--sd", type=float, default=None, help="SD of the paired differences, without a pilot experiment.")
@click.option("--effect", type=float, default=None,
              help="Difference to detect on the primary metric  [default: the experiment's min_effect, or 0.03]")
@click.option("--power", type=float, default=0.8, show_default=True, help="Power to detect it with.")
@click.option("--alpha", type=float, default=None, help="Level of the decision rule  [default: the experiment's, or 0.05]")
@click.option("--family", type=int, default=1, show_default=True,
              help="With --sd: tests in the Holm family (augmented arms x references).")
@click.option("--replicates", type=int, default=None,
              help="Units to give the smallest detectable effect for  [default: the experiment's, or 6 with --sd]")
def plan(experiment_dir, sd, effect, power, alpha, family, replicates):
    """Power and replicates needed: from a finished experiment's paired differences, or from --sd."""
    from .harness.stats import planning

    if (experiment_dir is None) == (sd is None):
        raise GenaugError("give --experiment DIR (a pilot) or --sd S, one of the two")
    if experiment_dir is not None:
        result = planning.plan_from_experiment(experiment_dir, effect, power, replicates, alpha)
    else:
        result = planning.plan_from_sd(sd, effect, power, alpha, family, replicates)
    click.echo(planning.render_plan(result))


if __name__ == "__main__":  # pragma: no cover - `python -m genaug.cli` (e.g. under accelerate launch)
    main()


def _headroom_callback(**options):
    return augment_and_train.callback(**{**options, "headroom_only": True})


headroom = click.Command(
    "headroom", callback=_headroom_callback, params=[p for p in augment_and_train.params if p.name != "headroom_only"],
    help="How much there is to gain, before any generator trains: the reference recipe (baseline-strong) at more "
         "labelled images per class (--headroom) and the positive control +real@N (N extra real labelled images per "
         "class through the synthetic arms' share and budget), over the experiment's replicates and seeds. Takes "
         "augment-and-train's options; writes OUT/headroom.md with a go/no-go sentence, and the same folder later "
         "resumes into the whole experiment without retraining these runs.")
main.add_command(headroom)
