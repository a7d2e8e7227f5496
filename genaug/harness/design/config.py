"""The settings of an `augment-and-train` experiment: defaults, parsing, and refusal of typos."""

from __future__ import annotations

import difflib
from typing import Any

from ...config import load_config, merge
from ...data.preprocess import check_preprocess
from ...errors import GenaugError
from ...classifiers.inference import check_precision
from ...classifiers.networks import CLASSIFIERS, check_stem, is_pretrained
from ...generators.ddpm import DEFAULT_LOSS, check_diffusion_loss
from ...generators.registry import FAMILIES, get_family
from ...metrics import acceptance
from .seeds import SCHEMES
from ...classifiers.multilabel_metrics import MULTILABEL_METRICS
from ...classifiers.batches import check_share
from ...classifiers.training import BN_STATISTICS, SCORED_MODELS
from ...classifiers.metrics import SCALAR_METRICS

DEFAULTS: dict[str, Any] = {
    # data
    "data": None, "classes": "all", "per_class": 50, "image_size": None, "seed": 0, "val_fraction": 0.2,
    "validation": "auto", "cv": None, "group_by": None, "test_fraction": None, "given_split": "use", "split_folders": None,
    "fit": "crop",
    "intensity": "dataset",
    "preprocess": "none",  # contrast step on every image (none, equalize, clahe): data/preprocess.py
    # design: replicates of the whole pipeline, classifier seeds inside each, one primary metric
    "replicates": 1, "seeds": 3,
    "primary_metric": None,  # None: balanced_accuracy, or macro_auroc with several labels per image
    "alpha": 0.05,  # the decision rule's level, over the Holm family (verdict.py)
    "min_effect": 0.03,  # the smallest gain on the primary metric worth detecting: power and replicates needed
    "select_metric": None,  # epoch selection on the validation part; None: the primary metric
    "seed_scheme": "sequence",  # seeds.py; folders started before it keep "offset"
    # synthetic sources and acceptance
    "generators": ["ddpm"], "synthetic": {}, "synthetic_per_class": [100], "accept": ["all"],
    "generator_configs": {}, "generator_steps": None, "sampler": None, "sample_steps": None,
    "guidance": [1.0],  # classifier-free guidance weights of class-conditional generators (ddpm-cond): one source each
    # edit families (ddpm-edit): "mixed" cycles each edit's strength over the family's `strengths`; numbers give
    # one source per strength (a dose-response), all edited by one model
    "edit_strength": "mixed",
    # ddpm-finetune and ddpm-edit start from a DDPM pretrained on the pool: once per experiment ("shared", on train
    # images no replicate validates or tests on) or once per replicate (how folders before 0.2 ran)
    "pretrain": "shared",
    # the pool pretraining's steps for every family that starts from it (None: each generator config's
    # `pretrain_steps`); paid once with pretrain: shared, so a study may afford more than the per-replicate 2,000
    "pretrain_steps": None,
    # the diffusion families' training loss (generators/ddpm.py DIFFUSION_LOSSES), chosen by
    # scripts/bench_diffusion_loss.py (epsilon, epsilon-minsnr5, v-minsnr5)
    "diffusion_loss": DEFAULT_LOSS,
    "acceptance": dict(acceptance.DEFAULTS), "quality": True,
    # unlabelled real images and the semi-supervised arms (semi.py): +pseudo, +mpl, +mpl+<source>
    "unlabeled": None, "unlabeled_data": None, "semi": [], "semi_settings": {},
    # arms beside the synthetic ones: the reference recipe, matched duplicates, the positive control +real@N
    "controls": ["baseline-strong", "dup", "real"], "full_real": False, "synthetic_ratio": None,
    "strong_augment": "trivialaugment", "strong_mix": True,
    "synthetic_share": 0.5,  # share of every batch from an arm's added images (classifiers/batches.py)
    # a dose-response over that share for chosen sources, {source: [shares]}: each share adds the arms
    # `share-<s>:+<source>` and `share-<s>:+dup:<source>` (arms.py), secondary, outside the decision family
    "share_dose": None,
    "synthetic_augment": "strong",  # added-image arms train with baseline-strong's augmentation, or classical
    "reference": "auto",  # the reference of the primary contrast (verdict.py): auto is baseline-strong where it runs
    "decision_rule": "iut",  # iut: beat every reference at alpha, Holm over arms; holm-all: Holm over arm x reference
    # the reference recipe at more labelled images per class, before any generator (headroom.py): auto, or a
    # list of per-class counts (below per_class: a share of the labelled images; above: extra real ones) and all
    "headroom": "auto",
    # a headroom@N arm trains on more images than the subset: scaled gives it steps x (its images / the subset's),
    # at most HEADROOM_MAX_SCALE x, so the ceiling is not cut short by the budget; same: the arms' budget
    "headroom_steps": "scaled",
    # the classifier recipe every arm shares
    "classifier": "resnet18",  # or a comma list: each architecture trains per seed, and their ensemble is scored
    "pretrained": False, "finetune": False,  # ImageNet weights (inception-v3 always); train the backbone too
    "stem": "imagenet",  # from scratch: imagenet (stride 2 + max-pool), small (stride 1: about 4x the cost), auto (small < 64 px)
    # classifier forward passes in bf16: native (on CUDA with bf16 and on a CPU with bf16 instructions; fp32 elsewhere:
    # scripts/precision_check.py found bf16 within 0.01 of fp32), auto (on CUDA only: folders before native), no, bf16
    "mixed_precision": "native",
    "channels_last": False,  # classifier weights and activations NHWC (faster convolutions at 224-299 px)
    # the steps protocol (classifiers/training.py): a budget of optimizer steps (auto: STEP_BUDGETS by image size),
    # AdamW, warm-up then cosine per step, the final model scored
    "steps": "auto", "warmup": 0.05, "scored_model": "final", "ema_decay": 0.999, "label_smoothing": 0.1,
    # the scored model's batch-norm statistics (training.BN_STATISTICS): the training batches' own (PyTorch's
    # running statistics), or recomputed on the real training images through the arm's augmentation, or on
    # them unaugmented (clean: folders before this setting; it cost pbc28's positive control its gain)
    "bn_statistics": "training",
    "epochs": 20,  # the epochs protocol of folders from before 0.2 (steps: null): epochs x ceil(n_real / batch)
    "batch_size": 32, "lr": 1e-3, "lr_step": 7, "lr_gamma": 0.1,
    "weight_decay": 0.05, "loss": "ce", "cr_k": 3.0, "rotation": 10.0, "crop_padding": 2, "hflip": None,
    # the helper classifiers (teacher, confidence filter, CAS): their own recipe, recorded once (auto: the steps
    # protocol's default at this image size), so the arms' recipe can change without retraining a generator
    "helper_recipe": "auto",
    # which trained classifiers are kept (safetensors, for `genaug explain` and `nearest --features classifier`)
    "save_models": "first",  # first: seed 0 of each arm and replicate; all; none
    "explain": None,  # a heatmap method (gradcam, gradcam++, scorecam, cam): figures in the report
    # several labels per image (multilabel_stages.py): the label file's columns, the labels a targeted source
    # lifts (names, or rarest:K), positive-weighted binary cross-entropy
    "label_columns": None, "target_labels": None, "pos_weight": False,
    "labelled_images": None,  # the other scarcity knob of multi-label data: about N labelled images in all
    # how the stages run (executor.py): resources of each stage type as Ray tasks, retries of a task whose worker died
    "resources": {}, "retries": 3,
    # in a folder an older genaug started, the arms' recipe settings it never recorded take the values it ran with
    # (recorded: a re-run resumes it) or today's defaults (current: re-judge its accepted sets under today's
    # protocol, at classifier cost: run/plan.py adopts its upstream stages)
    "recipe_defaults": "recorded",
}
RECIPE_DEFAULTS = ("recorded", "current")
SAVE_MODELS = ("first", "all", "none")
CONTROLS = ("baseline-strong", "dup", "real")
# the default step budget by image size (the largest side at most the key): scripts/convergence_study.py
# 28-32 px: 1,000, chosen by scripts/convergence_study.py on PneumoniaMNIST (samples/reports/convergence-pneumonia-bn/);
# 64 px: 2,000, the smallest budget the study at 64 px did not rule out (500 and 1,000 did not hold when doubled;
# 4,000 unmeasured); above 64 px not measured. A folder keeps the budget it recorded (experiment._adopt_legacy)
STEP_BUDGETS = {32: 1000, 64: 2000, 10_000: 2000}
DECISION_RULES = ("iut", "holm-all")
PRETRAIN = ("shared", "per-replicate")
HEADROOM_STEPS = ("scaled", "same")
HEADROOM_MAX_SCALE = 4
DESIGN_KEYS = ("replicates", "seeds")  # may grow on a re-run (recorded); every other key must match
OUTPUT_KEYS = ("save_models", "explain")  # what is kept and drawn, not what is measured: free on a re-run
# settings added after the store (run/plan.py) keyed finished stages, with the value that reproduces what those
# stages computed: left out of the key at that value, so a folder started before them resumes instead of starting over
ADDED_SINCE_STORE = {"given_split": "use", "split_folders": None, "label_columns": None, "target_labels": None, "pos_weight": False,
                     "labelled_images": None, "edit_strength": "mixed", "pretrain": "per-replicate", "pretrain_steps": None,
                     "headroom_steps": "same", "bn_statistics": "clean", "diffusion_loss": "epsilon"}
# how the stages are scheduled and the settings resolved, not what they compute: free on a re-run
RUN_KEYS = ("resources", "retries", "recipe_defaults")
# what adds arms and changes no other task: out of every key (each added arm's name carries its setting), so it
# may be set on a finished folder, where only the added arms' classifiers run (recorded in history.json)
ARM_ADDING_KEYS = ("share_dose",)
# what only the arms' classifier runs read (and the report, from their results): a change re-runs the classifiers
# and nothing upstream of them (run/plan.py keys every other stage without these); the helper classifiers keep
# their own copy of the recipe fields they read (HELPER_FIELDS, recorded as `helper_recipe`)
RECIPE_KEYS = ("stem", "steps", "warmup", "scored_model", "bn_statistics", "ema_decay", "label_smoothing", "epochs", "batch_size", "lr",
               "lr_step", "lr_gamma", "weight_decay", "loss", "cr_k", "controls", "full_real", "synthetic_ratio",
               "synthetic_share", "synthetic_augment", "strong_augment", "strong_mix", "reference", "decision_rule",
               "headroom", "headroom_steps", "alpha", "min_effect", "select_metric")
# settings added after experiment folders existed, with the value that reproduces how those folders ran
LEGACY = {"seed_scheme": "offset", "select_metric": "balanced_accuracy", "steps": None, "synthetic_share": None,
          "synthetic_augment": "classical", "reference": None, "decision_rule": "holm-all", "headroom": [],
          "warmup": 0.05, "scored_model": "best", "ema_decay": 0.999, "label_smoothing": 0.0,
          "pretrain": "per-replicate", "headroom_steps": "same", "bn_statistics": "clean", "mixed_precision": "auto"}


def _number(config: dict, key: str, low: float, high: float | None) -> float:
    """A float strictly between low and high (no upper bound with None), or a one-line refusal."""
    try:
        value = float(config[key])
    except (TypeError, ValueError):
        value = float("nan")
    if not (value > low and (high is None or value < high)):
        bound = f"between {low:g} and {high:g}" if high is not None else f"above {low:g}"
        raise GenaugError(f"{key} must be a number {bound} (got {config[key]!r})")
    return value


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def architectures(config: dict[str, Any]) -> list[str]:
    """The classifier architectures of an experiment; the first one drives the headline."""
    return _as_list(config["classifier"])


def synthetic_sources(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every synthetic source of an experiment, in report order: {name: {"family", "guidance"} for a
    generator, {"folder"} for an external set}. A class-conditional family gives one source per
    guidance weight (`ddpm-cond-w3`) when several are compared, all sampled from one model."""
    out: dict[str, dict[str, Any]] = {}
    for family in config["generators"]:
        weights = config["guidance"] if get_family(family).conditional else [None]
        strengths = config["edit_strength"] if get_family(family).edits else "mixed"
        strengths = [None] if strengths == "mixed" else strengths
        for w in weights:
            for s in strengths:
                name = family + (f"-w{w:g}" if len(weights) > 1 else "") + (f"-s{s:g}" if len(strengths) > 1 else "")
                out[name] = {"family": family, "guidance": w, **({"strength": s} if s is not None else {})}
    for name, folder in config["synthetic"].items():
        out[name] = {"folder": folder}
    return out


def check_pretrain_steps(config: dict[str, Any]) -> None:
    steps = config["pretrain_steps"]
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise GenaugError(f"pretrain_steps must be a whole number of steps, 1 or more (got {steps!r})")
    if not any(get_family(f).starts_from_pretrained for f in config["generators"]):
        families = ", ".join(name for name, cls in FAMILIES.items() if cls.starts_from_pretrained)
        raise GenaugError(f"pretrain_steps {steps}: no generator of this experiment starts from a pool pretraining "
                          f"({families})")


def check_semi(config: dict[str, Any]) -> None:
    """Semi-supervised arms need unlabelled images, and unlabelled images need an arm that uses them."""
    from ...classifiers import semi
    from ...data.unlabeled import parse_count

    config["unlabeled"] = parse_count(config["unlabeled"])
    for method in config["semi"]:
        if method not in semi.METHODS:
            raise GenaugError(f"unknown semi-supervised method {method!r}; choose from {', '.join(semi.METHODS)}")
    has_pool = config["unlabeled"] is not None or config["unlabeled_data"]
    pool_families = [f for f in config["generators"] if get_family(f).uses_pool]
    if config["unlabeled"] is not None and config["unlabeled_data"]:
        raise GenaugError("give --unlabeled (images of the source's train split) or --unlabeled-data (a folder), "
                          "not both")
    if config["semi"] and not has_pool:
        raise GenaugError(f"--semi {','.join(config['semi'])} needs unlabelled images: --unlabeled N|all or "
                          "--unlabeled-data DIR")
    if pool_families and not has_pool:
        raise GenaugError(f"--generator {pool_families[0]} trains on unlabelled images too: add --unlabeled N|all "
                          "or --unlabeled-data DIR")
    if has_pool and not config["semi"] and not pool_families:
        raise GenaugError("unlabelled images are only used by semi-supervised arms and the pool generators: add "
                          "--semi pseudo,mpl or --generator ddpm-semi, ddpm-pseudo or ddpm-finetune")
    if config["semi"]:  # filled with defaults only where used: older experiment folders resume unchanged
        config["semi_settings"] = semi.check_options(dict(config["semi_settings"] or {}), int(config["epochs"]),
                                                     "mpl" in config["semi"])


def parse_synthetic(items) -> dict[str, str]:
    """`NAME=DIR` strings (or a mapping) to {name: dir}."""
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in _as_list(items):
        if "=" not in item:
            raise GenaugError(f"--synthetic {item!r}: write NAME=DIR, e.g. stylegan=exports/stylegan")
        name, folder = item.split("=", 1)
        if not name.strip() or not folder.strip():
            raise GenaugError(f"--synthetic {item!r}: write NAME=DIR")
        out[name.strip()] = folder.strip()
    return out


def experiment_config(config_file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults < config file < command-line options; lists parsed, names checked, typos refused."""
    loaded = load_config(config_file)
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, DEFAULTS, 1)) else "")
                 for k in unknown]
        raise GenaugError(f"unknown setting(s) in {config_file}: {', '.join(hints)}")
    config = merge(merge(DEFAULTS, loaded), {k: v for k, v in overrides.items() if k in DEFAULTS})
    for key in ("generators", "accept", "controls", "semi"):
        config[key] = [v for v in _as_list(config[key]) if str(v).lower() != "none"]
    config["synthetic"] = parse_synthetic(config["synthetic"])
    try:
        config["synthetic_per_class"] = sorted({int(v) for v in _as_list(config["synthetic_per_class"])})
    except (TypeError, ValueError):
        raise GenaugError(f"synthetic_per_class must be a whole number or a comma list of them "
                          f"(got {config['synthetic_per_class']!r})") from None
    try:
        config["guidance"] = sorted({float(v) for v in _as_list(config["guidance"])})
    except (TypeError, ValueError):
        raise GenaugError(f"guidance must be a number >= 0 or a comma list of them (got {config['guidance']!r})") from None
    if not config["guidance"] or min(config["guidance"]) < 0:
        raise GenaugError(f"guidance must be a number >= 0 or a comma list of them (got {config['guidance']!r})")
    if config["headroom_steps"] not in HEADROOM_STEPS:
        raise GenaugError(f"headroom_steps must be {' or '.join(HEADROOM_STEPS)} (got {config['headroom_steps']!r})")
    if config["recipe_defaults"] not in RECIPE_DEFAULTS:
        raise GenaugError(f"recipe_defaults must be {' or '.join(RECIPE_DEFAULTS)} (got {config['recipe_defaults']!r})")
    if config["pretrain"] not in PRETRAIN:
        raise GenaugError(f"pretrain must be {' or '.join(PRETRAIN)} (got {config['pretrain']!r})")
    check_diffusion_loss(config["diffusion_loss"])
    check_pretrain_steps(config)
    if str(config["edit_strength"]).strip().lower() == "mixed":
        config["edit_strength"] = "mixed"
    else:
        from ...generators.ddpm_pool import check_strengths

        config["edit_strength"] = sorted(set(check_strengths(_as_list(config["edit_strength"]))))
    clash = set(config["synthetic"]) & set(config["generators"])
    if clash:
        raise GenaugError(f"--synthetic name {sorted(clash)[0]!r} is also a generator family; choose another name")
    for control in config["controls"]:
        if control not in CONTROLS:
            raise GenaugError(f"unknown control arm {control!r}; choose from {', '.join(CONTROLS)}")
    acceptance.parse_policies(config["accept"])
    acceptance.check_settings(config["acceptance"] or {})
    check_semi(config)
    config["preprocess"] = check_preprocess(config["preprocess"])
    names = _as_list(config["classifier"])
    for name in names:
        if name not in CLASSIFIERS:
            raise GenaugError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    if not names or len(set(names)) < len(names):
        raise GenaugError(f"classifier must name one or more different architectures (got {config['classifier']!r})")
    config["classifier"] = ",".join(names)  # a string, as older experiment folders recorded it
    check_stem(config["stem"])
    check_precision(config["mixed_precision"])
    if not isinstance(config["channels_last"], bool):
        raise GenaugError(f"channels_last must be true or false (got {config['channels_last']!r})")
    if config["finetune"] and not any(is_pretrained(n, bool(config["pretrained"])) for n in names):
        raise GenaugError(f"--finetune trains a pretrained backbone, and {config['classifier']} trains from scratch "
                          "(all of it already): add --pretrained, or use --classifier inception-v3")
    if not config["synthetic_per_class"] or min(config["synthetic_per_class"]) < 1:
        raise GenaugError(f"synthetic_per_class must be at least 1 (got {config['synthetic_per_class']})")
    if config["cv"] is not None:
        try:
            config["cv"] = int(config["cv"])
        except (TypeError, ValueError):
            raise GenaugError(f"cv must be a whole number of folds, 2 or more (got {config['cv']!r})") from None
        if config["cv"] < 2:
            raise GenaugError(f"cv must be a whole number of folds, 2 or more (got {config['cv']})")
    for key in ("seeds", "replicates"):
        if int(config[key]) < 1:
            raise GenaugError(f"{key} must be at least 1")
    for key in ("primary_metric", "select_metric"):
        if config[key] is not None and config[key] not in SCALAR_METRICS + MULTILABEL_METRICS:
            raise GenaugError(f"unknown {key} {config[key]!r}; choose from {', '.join(SCALAR_METRICS)} (one class "
                              f"per image) or {', '.join(MULTILABEL_METRICS)} (several labels per image)")
    if not isinstance(config["pos_weight"], bool):
        raise GenaugError(f"pos_weight must be true or false (got {config['pos_weight']!r})")
    if config["seed_scheme"] not in SCHEMES:
        raise GenaugError(f"seed_scheme must be one of {', '.join(SCHEMES)} (got {config['seed_scheme']!r})")
    config["alpha"] = _number(config, "alpha", 0, 1)
    if isinstance(config["min_effect"], str) and config["min_effect"].strip().endswith("%"):
        share = config["min_effect"].strip()[:-1]  # a share of the measured headroom (headroom.py)
        if not share.replace(".", "", 1).isdigit() or not 0 < float(share) <= 100:
            raise GenaugError(f"min_effect must be a number above 0, or a share of the headroom such as 50% "
                              f"(got {config['min_effect']!r})")
    else:
        config["min_effect"] = _number(config, "min_effect", 0, None)
    if config["save_models"] not in SAVE_MODELS:
        raise GenaugError(f"save_models must be one of {', '.join(SAVE_MODELS)} (got {config['save_models']!r})")
    if config["explain"] and config["save_models"] == "none":
        raise GenaugError("explain needs saved classifiers: drop save_models: none")
    ratio = config["synthetic_ratio"]
    if ratio is not None and not 0 <= float(ratio) < 1:
        raise GenaugError(f"synthetic_ratio must be in [0, 1) (got {ratio})")
    check_recipe(config)
    config["share_dose"] = parse_share_dose(config)
    if config["loss"] == "cr" and config["strong_mix"] and "baseline-strong" in config["controls"]:
        raise GenaugError("the CR loss needs hard labels: set strong_mix: false, or drop the baseline-strong control")
    return config


def _budget(value, key: str):
    """A step budget: a whole number, auto, or epochs/none/null (the epochs protocol: None)."""
    if value == "auto":
        return value
    if value is None or str(value).lower() in ("epochs", "none", "null"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not str(value).isdigit() or int(value) < 1:
        raise GenaugError(f"{key} must be a whole number of optimizer steps, 1 or more, auto, or epochs (got {value!r})")
    return int(value)


def check_recipe(config: dict[str, Any]) -> None:
    """The steps protocol's settings, the added images' share and the decision rule, in one line each."""
    config["steps"] = _budget(config["steps"], "steps")
    if config["helper_recipe"] != "auto" and not isinstance(config["helper_recipe"], dict):
        raise GenaugError(f"helper_recipe must be auto or a mapping of classifier settings (got {config['helper_recipe']!r})")
    if str(config["synthetic_share"]).lower() == "proportional":  # the 0.1 rule (a config file cannot say null)
        config["synthetic_share"] = None
    check_share(config["synthetic_share"])
    if config["scored_model"] not in SCORED_MODELS:
        raise GenaugError(f"scored_model must be one of {', '.join(SCORED_MODELS)} (got {config['scored_model']!r})")
    if config["bn_statistics"] not in BN_STATISTICS:
        raise GenaugError(f"bn_statistics must be one of {', '.join(BN_STATISTICS)} (got {config['bn_statistics']!r})")
    if config["synthetic_augment"] not in ("strong", "classical"):
        raise GenaugError(f"synthetic_augment must be strong or classical (got {config['synthetic_augment']!r})")
    if config["decision_rule"] not in DECISION_RULES:
        raise GenaugError(f"decision_rule must be one of {', '.join(DECISION_RULES)} (got {config['decision_rule']!r})")
    if config["reference"] not in (None, "auto", "baseline", "baseline-strong"):
        raise GenaugError(f"reference must be auto, baseline or baseline-strong (got {config['reference']!r})")
    if config["reference"] == "baseline-strong" and "baseline-strong" not in config["controls"]:
        raise GenaugError("the reference is baseline-strong but --controls leaves it out: add it, or set "
                          "reference: baseline")
    if not 0 <= float(config["warmup"]) < 1:
        raise GenaugError(f"warmup must be a share of the steps in [0, 1) (got {config['warmup']!r})")
    config["headroom"] = parse_headroom(config["headroom"])


def parse_share_dose(config: dict[str, Any]) -> dict[str, list[float]] | None:
    """`share_dose` as {source: sorted shares}: sources of the experiment, shares in (0, 1) other than the
    declared `synthetic_share` (whose arms are the curve's middle point already)."""
    dose = config.get("share_dose")
    if dose in (None, {}) or str(dose).lower() == "none":
        return None
    if not isinstance(dose, dict):
        raise GenaugError(f"share_dose must map a synthetic source to a list of shares, e.g. {{ddpm-edit: [0.25, 0.75]}} "
                          f"(got {dose!r})")
    if config["synthetic_share"] is None:
        raise GenaugError("share_dose needs a fixed synthetic_share (not proportional): its arms vary that share")
    sources = synthetic_sources(config)
    out = {}
    for source, shares in dose.items():
        if source not in sources:
            raise GenaugError(f"share_dose names {source!r}, which is not a synthetic source of this experiment "
                              f"({', '.join(sources) or 'none'})")
        try:
            values = sorted({float(v) for v in _as_list(shares)})
        except (TypeError, ValueError):
            values = []  # refused below, with the other shares that are not numbers in (0, 1)
        if not values or any(not 0 < v < 1 for v in values):
            raise GenaugError(f"share_dose {source}: shares must be numbers in (0, 1) (got {shares!r})")
        if float(config["synthetic_share"]) in values:
            raise GenaugError(f"share_dose {source}: {config['synthetic_share']:g} is the declared synthetic_share, "
                              "whose arms run already; list the other shares")
        out[str(source)] = values
    return out


def resolve_reference(config: dict[str, Any]) -> None:
    """`reference: auto` is baseline-strong where that arm runs, else the baseline."""
    if config["reference"] == "auto":
        config["reference"] = "baseline-strong" if "baseline-strong" in config["controls"] else "baseline"


def parse_headroom(value) -> str | list:
    """auto, or per-class counts (whole numbers, 1 or more) and `all`, sorted, counts first."""
    if value in ("auto", None) or str(value).lower() == "none":
        return "auto" if value == "auto" else []
    items = _as_list(value)
    counts, full = [], False
    for item in items:
        if str(item).lower() == "all":
            full = True
        elif str(item).isdigit() and int(item) >= 1:
            counts.append(int(item))
        else:
            raise GenaugError(f"headroom must be auto, none, or a comma list of per-class counts and all (got {value!r})")
    return sorted(set(counts)) + (["all"] if full else [])


# the recipe fields of the helper classifiers (spec.helper_settings); the rest come from the experiment
HELPER_FIELDS = ("stem", "steps", "warmup", "scored_model", "ema_decay", "label_smoothing", "epochs", "batch_size", "lr",
                 "lr_step", "lr_gamma", "weight_decay", "select_metric")


def helper_recipe(steps: int | None, stem: str) -> dict:
    """The helper classifiers' recipe of a new experiment: the steps protocol's defaults at the
    arms' step budget and stem as first resolved (recorded, so a later change of the arms' keeps it)."""
    return {**{k: DEFAULTS[k] for k in HELPER_FIELDS}, "steps": steps, "stem": stem, "select_metric": None}


def legacy_helper_recipe(old: dict) -> dict:
    """The recipe a folder from before 0.2 trained its helpers with: the arms' own, as recorded."""
    return {k: old.get(k, LEGACY.get(k, DEFAULTS[k])) for k in HELPER_FIELDS}


def step_budget(image_size: int) -> int:
    """The default step budget at this image size (STEP_BUDGETS)."""
    return next(steps for size, steps in sorted(STEP_BUDGETS.items()) if image_size <= size)
