"""Diffusion edits (SDEdit) and the faster diffusion losses of issue 40, on a tiny DDPM."""

from __future__ import annotations

import pytest
import torch

from genaug.errors import GenaugError
from genaug.generators.ddpm import DDPM, diffusion_loss, min_snr_weights

TINY = {"block_out_channels": [8, 16], "attention_levels": [], "norm_num_groups": 4, "sampler": "ddim",
        "sample_steps": 5}


def _model(**extra):
    torch.manual_seed(0)
    return DDPM({**TINY, **extra}, channels=1, image_size=8)


def _gens(seed, n):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_edit_at_strength_zero_returns_the_source_and_at_one_ignores_it():
    model = _model()
    a = torch.rand(2, 1, 8, 8) * 2 - 1
    b = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(model.edit(a, 0.0, _gens(0, 2)), a)
    assert torch.equal(model.edit(a, 1.0, _gens(0, 2)), model.edit(b, 1.0, _gens(0, 2)))  # the source plays no part
    assert torch.allclose(model.edit(a, 1.0, _gens(0, 2)), model.sample(_gens(0, 2)))
    half_a, half_b = model.edit(a, 0.6, _gens(0, 2)), model.edit(b, 0.6, _gens(0, 2))
    assert not torch.equal(half_a, half_b)  # in between, the source shapes the result
    for bad in (-0.1, 1.5):
        with pytest.raises(GenaugError, match="strength must be in"):
            model.edit(a, bad, _gens(0, 2))


def test_min_snr_weights_by_hand():
    model = _model()
    scheduler = model.noise_scheduler
    t = torch.tensor([0, 10, 500, 999])
    abar = scheduler.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    expected_eps = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr
    expected_v = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / (snr + 1)
    torch.testing.assert_close(min_snr_weights(scheduler, t, 5.0, "epsilon").double(), expected_eps, rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(scheduler, t, 5.0, "v_prediction").double(), expected_v, rtol=1e-5,
                               atol=0)
    assert float(expected_eps[0]) < 0.01 and float(expected_eps[-1]) == pytest.approx(1.0)  # easy steps damped
    x0, noise, pred = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    assert float(diffusion_loss(pred, x0, noise, t, scheduler, 5.0)) == pytest.approx(
        float((per_sample * expected_eps.float()).mean()), rel=1e-5)
    assert float(diffusion_loss(pred, x0, noise, t, scheduler, None)) == pytest.approx(float(per_sample.mean()),
                                                                                       rel=1e-5)


def test_v_prediction_trains_against_the_velocity_and_samples():
    model = _model(prediction_type="v_prediction", snr_gamma=5)
    scheduler = model.noise_scheduler
    x0, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([100, 900])
    v = scheduler.get_velocity(x0, noise, t)
    assert float(diffusion_loss(v, x0, noise, t, scheduler, None)) == pytest.approx(0.0, abs=1e-12)
    assert model.sample(_gens(0, 1)).shape == (1, 1, 8, 8)
    for bad, message in (({"prediction_type": "sample"}, "prediction_type must be"),
                         ({"snr_gamma": 0}, "snr_gamma must be")):
        with pytest.raises(GenaugError, match=message):
            _model(**bad)


def test_ddpm_edit_fine_tunes_the_pretrained_model_and_its_edits_record_source_class_and_strength(tmp_path):
    """`genaug train ddpm-edit`: the pooled pretraining, then one conditional fine-tune that starts as the
    pretrained network (its class embedding at zero); `genaug sample --edit-from train` edits every
    training image towards its own class, variant-major, strengths cycled, each edit recorded."""
    from safetensors.torch import load_file

    from genaug.generators.ddpm_pool import EditDDPM
    from genaug.io import read_json

    from conftest import PNEUMONIA, REPO, assert_clean_error, run_cli

    tiny = REPO / "tests" / "helpers" / "ddpm-pool-tiny.yaml"
    train = ["train", "ddpm-edit", "--data", str(PNEUMONIA), "--class", "all", "--per-class", "6", "--image-size", "16",
             "--config", str(tiny), "--device", "cpu", "--no-progress"]
    assert_clean_error(run_cli(*train, "--out", tmp_path / "nopool"), "ddpm-edit trains on unlabelled images too")
    assert not (tmp_path / "nopool").exists()
    r = run_cli(*train, "--unlabeled", "32", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    pretrained = load_file(next((tmp_path / "run" / "pretrained" / "model" / "unet").glob("*.safetensors")))
    from genaug.runs import load_run_config

    model = EditDDPM({**load_run_config(tmp_path / "run" / "all")["model"], "num_classes": 2}, channels=1, image_size=16)
    model.load_weights(tmp_path / "run" / "pretrained" / "model")
    start = model.unet.state_dict()
    assert all(torch.equal(start[k], pretrained[k]) for k in pretrained)  # every pretrained weight carried over
    assert not start["class_embedding.weight"].any()  # the classes start at zero: the pretrained function

    out = tmp_path / "edits"
    edit = ["sample", "--run", str(tmp_path / "run" / "all"), "--edit-from", "train", "--variants", "3",
            "--strength", "0.25,1.0", "--device", "cpu", "--no-progress"]
    r = run_cli(*edit, "--out", out)
    assert r.exit_code == 0, r.output
    made = read_json(out / "samples.json")
    rows = made["images"]
    assert len(rows) == 36 and made["edit"]["strengths"] == [0.25, 1.0]  # 12 training images x 3 variants
    assert [r["variant"] for r in rows[:12]] == [0] * 12 and [r["strength"] for r in rows] == \
        [0.25] * 12 + [1.0] * 12 + [0.25] * 12  # variant-major, strengths cycled over the variants
    sources = read_json(tmp_path / "run" / "all" / "manifest.json")["train"]["items"]
    class_of = {str(it["id"]): it["class"] for it in sources}
    assert all(r["class"] == class_of[r["source"]] for r in rows)  # a variant keeps its source's label
    assert {r["source"] for r in rows} == set(class_of)
    before = sorted(p.stat().st_mtime_ns for p in out.glob("*.png"))
    assert run_cli(*edit, "--out", out).exit_code == 0  # resumable: nothing is drawn again
    assert sorted(p.stat().st_mtime_ns for p in out.glob("*.png")) == before
    for bad, message in ((["--variants", "0"], "variants per real image must be a whole number >= 1"),
                         (["--strength", "0.5,1.5"], "edit strengths must be numbers in [0, 1]")):
        assert_clean_error(run_cli(*edit, *bad, "--out", tmp_path / "bad"), message)
        assert not (tmp_path / "bad").exists()
