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
    f = click.option("--fit", type=click.Choice(["crop", "pad"]), default=None,
                     help="Make images square by centre crop, or by padding with the border value (keeps "
                          "the full width of wide scans)  [default: crop]")(f)
    f = click.option("--intensity", default=None,
                     help="Non-8-bit pixels (16-bit, float, DICOM): dataset (one 0.5-99.5 percentile window for "
                          "the training subset), image (per-image min-max) or window:LOW,HIGH  [default: dataset]")(f)
    return f


@main.command()
@click.argument("spec")
@click.option("--export", "export_dir", default=None,
              help="Write every image as the models see it (PNG) into DIR/<split>/<class>/, to check by eye.")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="Size for --export.")
@split_options
@data_options
def datasets(spec, export_dir, image_size, group_by, test_fraction, fit, intensity, data_root, skip_bad):
    """Classes, counts (and patients) per split of a data SPEC, or the manifest of a run folder."""
    from .data import describe

    if Path(spec, "manifest.json").exists():
        click.echo(describe.run_summary(spec))
        return
    from .data import open_source

    source = open_source(spec, data_root, group_by=group_by, test_fraction=test_fraction)
    click.echo(describe.source_summary(source))
    if export_dir:
        n = describe.export(source, export_dir, image_size, fit, intensity, skip_bad)
        click.echo(f"exported {n} images to {export_dir}")


@main.command()
@click.argument("family", type=click.Choice(["vae", "dcgan", "ddpm"]))
@click.option("--data", "data", default=None, help="Data spec: folder, .npz, medmnist:NAME, cifar10, fashion-mnist.")
@click.option("--class", "classes", default=None, help="Class name or index, a comma list, or 'all'.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Seeded subset size per class.")
@click.option("--image-size", type=click.IntRange(min=1), default=None)
@click.option("--steps", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--config", "config_file", default=None, help="YAML config (file or name in configs/).")
@click.option("--out", default=None, help="Run folder (default runs/<data>/<family>/<class>).")
@click.option("--seed", type=int, default=None)
@click.option("--device", type=DEVICES, default="auto")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
@click.option("--no-progress", is_flag=True)
@split_options
@data_options
def train(family, data, classes, per_class, image_size, steps, batch_size, config_file, out, seed, device,
          resume, no_progress, group_by, test_fraction, fit, intensity, data_root, skip_bad):
    """Train one FAMILY generator per class on scarce real data."""
    from . import runs
    from .config import load_config, merge

    config = merge(load_config(config_file), {"data": data, "class": classes, "per_class": per_class,
                                              "image_size": image_size, "steps": steps,
                                              "batch_size": batch_size, "seed": seed, "group_by": group_by,
                                              "test_fraction": test_fraction, "fit": fit, "intensity": intensity})
    if not config.get("data") or config.get("class") is None:
        raise click.UsageError("--data and --class are required (on the command line or in --config)")
    dirs = runs.train(family, config["data"], str(config["class"]), config, out=out, data_root=data_root,
                      resume=resume, device=device, skip_bad=skip_bad, progress=not no_progress)
    for d in dirs:
        click.echo(f"trained {family}: {d}")


@main.command()
@click.option("--run", "run_dir", required=True, help="A trained run folder.")
@click.option("--n", type=click.IntRange(min=1), required=True, help="Number of images.")
@click.option("--out", required=True, help="Folder for the PNG files and samples.json.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm-solver"]), default=None, help="DDPM only.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps (DDPM only).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--seed", type=int, default=0)
@click.option("--device", type=DEVICES, default="auto")
@click.option("--no-progress", is_flag=True)
def sample(run_dir, n, out, sampler, steps, batch_size, seed, device, no_progress):
    """Draw N synthetic images from a trained run."""
    from . import runs

    folder = runs.sample(run_dir, n, out, sampler, steps, batch_size, seed, device, progress=not no_progress)
    click.echo(f"{n} samples in {folder}")


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--kid", is_flag=True, help="Also KID (mean and std over subsets).")
@click.option("--prc", is_flag=True, help="Also precision and recall (k = 3, Inception features).")
@click.option("--isc", is_flag=True, help="Inception Score: reported as unavailable with the offline weights.")
@click.option("--per-class", is_flag=True, help="A is a data spec, B a folder of per-class sample folders.")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="Resize images (needed for mixed sizes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--device", type=DEVICES, default="auto")
@click.option("--json", "json_out", default=None, help="Also write the results as JSON.")
@click.option("--cache-dir", default=None, help="Inception weights and real-set feature cache.")
@click.option("--inception-weights", default=None, help="An official torch-fidelity / pytorch-fid weights file.")
@click.option("--data-root", default=None)
@click.option("--no-progress", is_flag=True, help="No progress output (torch-fidelity's, on stderr).")
def fid(a, b, kid, prc, isc, per_class, image_size, batch_size, device, json_out, cache_dir, inception_weights,
        data_root, no_progress):
    """FID (and KID, precision/recall) between image sets A and B.

    A and B are image folders (e.g. `genaug sample` output) or SPEC:CLASS[@SPLIT], such as
    ../shared/data/pneumoniamnist.npz:normal or fashion-mnist:Shirt@test.
    """
    from .metrics import fid_report

    opts = dict(kid=kid, prc=prc, batch_size=batch_size, device=device, cache_dir=cache_dir,
                weights=inception_weights, verbose=not no_progress)
    if per_class:
        rows = fid_report.per_class(a, b, image_size=image_size, data_root=data_root, **opts)
        click.echo(fid_report.format_table(rows))
        result = {"per_class": rows}
    else:
        result = fid_report.pair(a, b, image_size=image_size, data_root=data_root, **opts)
        click.echo(fid_report.format_pair(result))
    if isc:
        click.echo("Inception Score: unavailable (the offline Inception weights have no classifier layer)")
    if "warning" in result or any("warning" in r for r in result.get("per_class", [])):
        click.echo(f"warning: FID with fewer than {fid_report.FEW_IMAGES_WARNING} images per side is biased "
                   "upward; compare only figures made with the same image counts", err=True)
    if json_out:
        from .io import write_json

        write_json(json_out, result)


@main.command("augment-and-train")
@click.option("--data", default=None, help="Data spec (or `data` in --config).")
@click.option("--class", "classes", default=None, help="Classes to classify: names/indices, comma list, or all.")
@click.option("--per-class", type=click.IntRange(min=2), default=None, help="Real images per class (default 50).")
@click.option("--generator", "generators", default=None, help="Comma list of vae, dcgan, ddpm.")
@click.option("--synthetic-per-class", type=click.IntRange(min=1), default=None)
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Paired classifier runs per arm.")
@click.option("--out", required=True, help="Experiment folder (re-run to resume).")
@click.option("--classifier", type=click.Choice(["resnet18", "resnet50", "efficientnet_b0"]), default=None)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--accept", default=None, help="Comma list of all, confidence, fid-gate, memorization.")
@click.option("--loss", type=click.Choice(["ce", "cr"]), default=None)
@click.option("--cr-k", type=click.FloatRange(min=0), default=None)
@click.option("--generator-steps", type=click.IntRange(min=1), default=None, help="Override generator configs' steps.")
@click.option("--runs", "runs_dir", default=None, help="Reuse generators trained in RUNS/<family>/<class>.")
@click.option("--image-size", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--config", "config_file", default=None)
@click.option("--device", type=DEVICES, default="auto")
@click.option("--no-progress", is_flag=True)
@split_options
@click.option("--data-root", default=None)
def augment_and_train(data, classes, per_class, generators, synthetic_per_class, seeds, out, classifier, epochs, batch_size,
                      accept, loss, cr_k, generator_steps, runs_dir, image_size, seed, config_file, device,
                      no_progress, group_by, test_fraction, fit, intensity, data_root):
    """Train generators, accept synthetic images, and measure the classifier gain with statistics."""
    from .harness.experiment import Experiment, experiment_config
    from .harness.report import render_markdown

    config = experiment_config(config_file, {
        "data": data, "classes": classes, "per_class": per_class, "generators": generators, "synthetic_per_class": synthetic_per_class,
        "seeds": seeds, "classifier": classifier, "epochs": epochs, "batch_size": batch_size, "accept": accept,
        "loss": loss, "cr_k": cr_k, "generator_steps": generator_steps, "image_size": image_size, "seed": seed,
        "group_by": group_by, "test_fraction": test_fraction, "fit": fit, "intensity": intensity})
    if not config.get("data"):
        raise click.UsageError("--data is required (on the command line or in --config)")
    report = Experiment(config["data"], out, config, runs_dir=runs_dir, data_root=data_root, device=device,
                        progress=not no_progress).run()
    md = render_markdown(report)
    click.echo(md[md.index("## Test metrics"):md.index("## Per-class")].rstrip())
    click.echo(f"\nreport: {Path(out) / 'report.md'}")


if __name__ == "__main__":  # pragma: no cover - `python -m genaug.cli` (e.g. under accelerate launch)
    main()
