"""The protocol paragraph of a report: what this experiment did, stating only what was checked."""

from __future__ import annotations

from ...generators.registry import get_family


def protocol_text(config: dict, *, patients_known: bool, validation: str, seed_scheme: str, alpha: float,
                  min_effect: float) -> str:
    c = config
    seeds = ("seeds derived with numpy's SeedSequence from (experiment seed, replicate, stage, unit), so no two "
             "stages, replicates or experiments share a random stream" if seed_scheme == "sequence" else
             "legacy seeds (experiment seed + replicate), as this folder was started with")
    test = ("Test images share no patient with the training or validation images (patient ids known and checked)."
            if patients_known else
            "No patient ids are known for this source, so whether test images share a patient with training "
            "images was not checked (the split is by image).")
    select = c.get("select_metric") or c["primary_metric"]
    if c.get("steps") is None:  # the epochs protocol of folders from before 0.2
        steps = ("Every arm has the baseline's optimizer-step budget" +
                 ("; full-real, the ceiling, trains the same number of epochs over its own, larger data (so more "
                  "steps)" if c.get("full_real") else "") + ", the same epoch selection and the same seeds.")
        looks = f"epoch selection by `{select}`"
    else:
        statistics = {"training": "its training batches' batch-norm statistics",
                      "augmented": "batch-norm statistics recomputed on the real training images through its augmentation",
                      "clean": "batch-norm statistics recomputed on the unaugmented real training images"}
        share = ("join in proportion to their count" if c.get("synthetic_share") is None
                 else f"fill {c['synthetic_share']:g} of every batch")
        scored = ({"final": "the final model", "ema": "the weights' moving average",
                   "best": f"the best of 20 looks by `{select}`"}[c.get("scored_model", "final")])
        steps = (f"Every arm trains {c['steps']} optimizer steps (AdamW, warm-up then cosine) with the same seeds; "
                 f"added images {share}; {scored} is scored"
                 + ("" if c.get("scored_model") == "best" else
                    f", with {statistics[c.get('bn_statistics', 'clean')]}") + ".")
        looks = ("watched during training; it chooses no model" if c.get("scored_model") != "best"
                 else f"model selection by `{select}`")
    shared = [f for f in c.get("generators", []) if get_family(f).starts_from_pretrained]
    pretrain = (f" ({', '.join(shared)} fine-tune one pool pretraining shared by every replicate, trained once on "
                "the train images no replicate validates or tests on, nor their patients)"
                if shared and c.get("pretrain") == "shared" else "")
    rule = ("an augmented arm beats the reference and its matched +dup, each at alpha "
            f"{alpha:g} (intersection-union), with Holm over the augmented arms and step-down t intervals that agree "
            "with it" if c.get("decision_rule") == "iut" else
            f"Holm over every augmented arm x reference, alpha {alpha:g}, step-down t intervals that agree with it")
    return "\n".join([
        f"1. Replicates repeat everything random: each draws its own {c['per_class']} labelled real images per "
        f"class, its own validation part, trains its own generators{pretrain}, draws its own samples and makes its own "
        f"acceptance decisions; {seeds}. Inside each replicate, {c['seeds']} classifier seed(s) are shared by "
        "every arm. The unit of inference is the replicate: its seeds are averaged, and arms are paired within it.",
        f"2. Validation ({looks}): {validation}. Generators and classifiers train on the "
        f"rest (the real training part). {test}",
        f"3. Acceptance policies ({', '.join(c['accept'])}) filter each synthetic set per class.",
        f"4. Arms: baseline, the controls ({', '.join(c['controls']) or 'none'}), the synthetic and semi-supervised "
        f"arms. {steps}",
        f"5. One primary metric, declared before the run (`{c['primary_metric']}`), with the decision rule of the "
        f"answer ({rule}); the smallest effect of interest, declared before the run: {min_effect:g}.",
    ])
