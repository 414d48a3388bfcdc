"""DS6, the U-Net MSS baseline and the Frangi baseline: losses against hand computation, the semi-supervised
split of the terms, the two-stage recipe, and whole runs on a manifest of NIfTI volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_set

from labelwise.augment import RandomElastic, warp
from labelwise.config import load_config
from labelwise.data import load_data
from labelwise.data.volumes import read_volume
from labelwise.losses import focal_tversky_loss, mss_loss
from labelwise.methods import METHODS
from labelwise.training import train


def config(manifest, method, **data):
    return load_config(
        {
            "name": "t",
            "seed": 0,
            "method": method,
            "data": {
                "manifest": str(manifest),
                "task": "segmentation",
                "patch_size": [16, 16, 16],
                "batch_size": 2,
                "patches_per_volume": 4,
                **data,
            },
            "model": {"name": "unet_mss", "channels": [2, 4, 4, 4, 4]},
            "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
        }
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_set(tmp_path_factory.mktemp("vessels"), shape=(16, 20, 24))


def batch_of(bundle, labelled):
    train = bundle.split("train")
    items = [train[i] for i in range(2)]
    return {
        "image": torch.stack([b["image"] for b in items]),
        "target": torch.stack([b["target"] for b in items]),
        "labelled": torch.tensor(labelled),
    }


def deformed_by_hand(model, batch, seed):
    """The network's outputs on a batch and on its deformation, the field drawn as DS6 draws it (from the global RNG
    after ``torch.manual_seed(seed)``): ``(out, out_t, y_t, field)``."""
    torch.manual_seed(seed)
    x, y = batch["image"], batch["target"]
    out = model(x)
    (x_t, y_t), field = RandomElastic((5, 7), (0.01, 0.03))(x, y.unsqueeze(1))
    return out, model(x_t), y_t, field


def test_supervised_unet_mss_uses_focal_tversky_on_three_outputs(manifest):
    cfg = config(manifest, "supervised")
    bundle = load_data(cfg.data)
    method = METHODS["supervised"](cfg, bundle)
    assert method.loss_name == "focal_tversky" and method.networks["model"].out_channels == 1
    batch = batch_of(bundle, [True, True])
    torch.manual_seed(0)
    loss = method.training_step(batch)["loss"]
    outputs = method.networks["model"](batch["image"])
    expected = sum(
        w * focal_tversky_loss(o, batch["target"].unsqueeze(1).float()) for w, o in zip((1.0, 0.66, 0.34), outputs)
    )
    torch.testing.assert_close(loss, expected)


def test_ds6_loss_is_the_sum_of_its_three_terms(manifest):
    cfg = config(manifest, {"name": "ds6", "weights": [1.0, 0.5, 2.0]})
    bundle = load_data(cfg.data, keep_unlabelled=True)
    method = METHODS["ds6"](cfg, bundle)
    model = method.networks["model"]
    batch = batch_of(bundle, [True, True])
    torch.manual_seed(5)
    terms = method.training_step(batch)
    # the same by hand: the field comes from the global RNG, so reseed and draw it the same way
    out, out_t, y_t, field = deformed_by_hand(model, batch, 5)
    sup = mss_loss(out, batch["target"].unsqueeze(1).float())
    deformed = mss_loss(out_t, y_t.float())
    consistency = focal_tversky_loss(out_t[0], torch.sigmoid(warp(out[0], field)))
    torch.testing.assert_close(terms["supervised"], sup.detach())
    torch.testing.assert_close(terms["deformed"], deformed.detach())
    torch.testing.assert_close(terms["consistency"], consistency.detach())
    torch.testing.assert_close(terms["loss"], sup + 0.5 * deformed + 2.0 * consistency)


def test_unlabelled_samples_only_feed_the_consistency_term(manifest):
    cfg = config(manifest, "ds6")
    bundle = load_data(cfg.data, keep_unlabelled=True)
    method = METHODS["ds6"](cfg, bundle)
    batch = batch_of(bundle, [False, False])
    batch["target"] = torch.ones_like(batch["target"])  # would change the supervised terms if they were used
    torch.manual_seed(1)
    terms = method.training_step(batch)
    assert terms["supervised"] == 0 and terms["deformed"] == 0 and terms["consistency"] > 0
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.networks["model"].parameters())
    # one labelled sample: the supervised term is that sample's alone
    batch = batch_of(bundle, [True, False])
    torch.manual_seed(1)
    mixed = method.training_step(batch)
    torch.manual_seed(1)
    outputs = method.networks["model"](batch["image"])
    alone = mss_loss(tuple(o[:1] for o in outputs), batch["target"][:1].unsqueeze(1).float())
    torch.testing.assert_close(mixed["supervised"], alone.detach())


def test_two_stage_recipe_switches_deformation_on(manifest):
    cfg = config(manifest, {"name": "ds6", "baseline_steps": 3})
    bundle = load_data(cfg.data, keep_unlabelled=True)
    method = METHODS["ds6"](cfg, bundle)
    batch = batch_of(bundle, [True, True])
    method.step = 2
    first = method.training_step(batch)
    assert first["deformed"] == 0 and first["consistency"] == 0
    torch.testing.assert_close(first["loss"], first["supervised"], check_dtype=False)
    method.step = 3
    second = method.training_step(batch)
    assert second["deformed"] > 0 and second["consistency"] > 0


def test_frangi_tunes_the_threshold_that_maximises_training_dice(manifest):
    cfg = load_config(
        {
            "name": "f",
            "seed": 0,
            "method": {"name": "frangi", "candidates": 16},
            "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 1},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    bundle = load_data(cfg.data)
    method = METHODS["frangi"](cfg, bundle)
    model = method.networks["model"]
    loss = method.training_step({})["loss"]
    t = float(model.threshold)
    train = bundle.split("train")
    maps = [model.vesselness(image, spacing) for image, spacing in zip(train.image, train.spacings)]
    masks = [target.numpy() > 0 for target in train.target]
    from sklearn.metrics import f1_score  # Dice of binary masks = F1 of their pixels

    def _dice(pred, truth):
        return f1_score(truth.ravel(), pred.ravel())

    best = np.mean([_dice(m > t, y) for m, y in zip(maps, masks)])
    assert abs((1 - best) - float(loss)) < 1e-6
    for other in np.linspace(0.01, 0.99, 25):  # no other threshold does better on the training cases
        assert np.mean([_dice(m > other, y) for m, y in zip(maps, masks)]) <= best + 0.02
    logits = method.predict(train.image[0][None], spacing=train.spacings[0])
    assert torch.equal(logits[0, 0] > 0, torch.from_numpy(maps[0] > t))
    # the scales are in voxels of the finest axis: the (0.5, 0.6, 0.8) spacing changes the map (issue 16)
    from labelwise.filters.vesselness import vesselness

    image = train.image[0].mean(0).numpy()
    np.testing.assert_allclose(maps[0], vesselness(image, (0.5, 0.6, 0.8), cfg.method_options().sigmas), atol=1e-6)
    assert not np.allclose(maps[0], vesselness(image, None, cfg.method_options().sigmas), atol=1e-3)


@pytest.mark.parametrize("method", ["ds6", "frangi"])
def test_runs_on_a_manifest_write_nifti_predictions(tmp_path, method):
    manifest = make_set(tmp_path / "data", shape=(16, 20, 24), truth=True)
    if method == "frangi":
        cfg = load_config(
            {
                "name": "f",
                "seed": 0,
                "method": "frangi",
                "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 1},
                "trainer": {"max_steps": 1, "checkpoint_every": 1},
            }
        )
    else:
        cfg = config(manifest, {"name": "ds6", "baseline_steps": 1})
    result = train(cfg, tmp_path / "run")
    assert result.status == "completed" and 0 <= result.test["dice"] <= 1
    mask = read_volume(tmp_path / "run" / "predictions" / "test" / "masks" / "case4.nii.gz", mask=True)
    probability = read_volume(tmp_path / "run" / "predictions" / "test" / "probabilities" / "case4.nii.gz")
    assert mask.array.shape == (16, 20, 24) and mask.spacing == (0.5, 0.6, 0.8)
    assert np.array_equal(mask.array, (probability.array[0] > 0.5).astype(np.int64))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "test" and "dice" in r for r in records)
    # scores against the label and the manifest's truth, and the figures, for the report
    folder = tmp_path / "run" / "predictions" / "test"
    summary = json.loads((folder / "segmentation.json").read_text())
    assert set(summary["references"]) == {"label", "truth"}
    label = read_volume(manifest.parent / "labels" / "case4.nii.gz", mask=True).array > 0
    truth = read_volume(manifest.parent / "truth" / "case4.nii.gz", mask=True).array > 0
    for name, reference in (("label", label), ("truth", truth)):
        case = summary["references"][name]["cases"][0]
        assert case["id"] == "case4"
        pred = mask.array > 0
        total = pred.sum() + reference.sum()
        dice = 2 * (pred & reference).sum() / total if total else None
        assert case["dice"] == pytest.approx(dice) if dice is not None else case["dice"] is None
        assert (folder / summary["figures"][0][f"diff_{name}"]).is_file()
    assert (folder / summary["figures"][0]["mip"]).is_file()
    # the report shows the table (one row per reference) and the three figures of the test case
    from labelwise.report import build_report

    html = build_report(tmp_path / "run").read_text()
    section = html[html.index('<section id="segmentation">') :]
    section = section[: section.index("</section>")]
    assert section.count('<tr><td class="name">') == 2 and "truth" in section and "label" in section
    gallery = section[section.index('id="segmentation-gallery"') :]
    assert gallery.count('<img src="data:image/png;base64,') == 3
    assert 'id="segmentation-reliability"' in section  # and the reliability diagram of the test voxels
    assert ".gallery {" in html  # the grid layout is styled without an explanations section too


def test_soft_dice_ce_with_a_one_hot_target_is_monais_dice_ce():
    from monai.losses import DiceCELoss

    from labelwise.losses import soft_dice_ce_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 9)
    labels = torch.randint(0, 3, (2, 1, 8, 9))
    one_hot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).float()
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
    torch.testing.assert_close(soft_dice_ce_loss(logits, one_hot), expected)
    # a weight of ones changes nothing; a 0/1 weight is the loss over the kept voxels, by hand
    torch.testing.assert_close(soft_dice_ce_loss(logits, one_hot, torch.ones(2, 1, 8, 9)), expected)
    keep = (torch.rand(2, 1, 8, 9) > 0.5).float()
    p = torch.softmax(logits, 1)
    dice = 1 - (2 * (keep * p * one_hot).sum((2, 3)) + 1e-5) / (
        (keep * p).sum((2, 3)) + (keep * one_hot).sum((2, 3)) + 1e-5
    )
    ce = -(keep * one_hot * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(soft_dice_ce_loss(logits, one_hot, keep), dice.mean() + ce)


def test_focal_tversky_weight_counts_only_the_weighted_voxels():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 1, 6, 7), (torch.rand(1, 1, 6, 7) > 0.6).float()
    keep = torch.zeros(1, 1, 6, 7)
    keep[..., :3] = 1
    torch.testing.assert_close(
        focal_tversky_loss(logits, target, weight=keep), focal_tversky_loss(logits[..., :3], target[..., :3])
    )


def test_ds6_with_dice_ce_an_ema_teacher_a_ramp_and_a_confidence_mask(manifest):
    """The consistency term against the EMA teacher's warped softmax, counted where the teacher is sure, weighted by
    the sigmoid ramp; the teacher follows the student's moving average and takes no gradient."""
    from labelwise.losses import soft_dice_ce_loss
    from labelwise.methods.semi import ramp_up

    options = {
        "name": "ds6",
        "loss": "dice_ce",
        "teacher": "ema",
        "consistency_rampup": 10,
        "confidence": 0.6,
        "weights": [1.0, 1.0, 2.0],
    }
    cfg = config(manifest, options)
    bundle = load_data(cfg.data, keep_unlabelled=True)
    method = METHODS["ds6"](cfg, bundle)
    model, teacher = method.networks["model"], method.networks["teacher"]
    assert model.out_channels == 2 and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():  # a teacher that differs from the student
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = batch_of(bundle, [True, True])
    with torch.no_grad():  # a confidence level that keeps about half of the voxels
        sure = torch.softmax(teacher(batch["image"])[0], 1).max(1).values
    method.options.confidence = float(sure.median())
    method.step = 4
    torch.manual_seed(3)
    terms = method.training_step(batch)
    _, out_t, _, field = deformed_by_hand(model, batch, 3)
    target = torch.softmax(warp(teacher(batch["image"])[0], field), 1)
    keep = (target.max(1, keepdim=True).values >= method.options.confidence).float()
    assert 0.2 < keep.mean() < 0.8
    consistency = soft_dice_ce_loss(out_t[0], target, keep)
    torch.testing.assert_close(terms["consistency"], consistency.detach())
    expected = terms["supervised"] + terms["deformed"] + 2.0 * ramp_up(4, 10) * consistency
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    before = [p.detach().clone() for p in teacher.parameters()]
    method.step = 2000
    method.after_step()  # decay 0.99 once the warm-up is over
    for b, p, q in zip(before, model.parameters(), teacher.parameters()):
        torch.testing.assert_close(q, 0.99 * b + 0.01 * p.detach())


def test_ds6_refuses_a_classification_loss(manifest):
    from labelwise.errors import ConfigError

    cfg = config(manifest, {"name": "ds6", "loss": "cross_entropy"})
    with pytest.raises(ConfigError, match="ds6 trains with focal_tversky"):
        METHODS["ds6"](cfg, load_data(cfg.data, keep_unlabelled=True))


def test_a_ds6_run_with_an_ema_teacher_resumes_and_predicts_after_the_folder_moved(tmp_path):
    """The teacher is saved with the student: the run resumes from its checkpoint, and `labelwise predict` on the
    moved run folder loads it and predicts with the student."""
    import shutil

    from conftest import invoke_cli

    manifest = make_set(tmp_path / "data", shape=(16, 20, 24))
    cfg = config(manifest, {"name": "ds6", "loss": "dice_ce", "teacher": "ema", "consistency_rampup": 2})
    cfg.trainer.max_steps, cfg.trainer.checkpoint_every = 2, 1
    result = train(cfg, tmp_path / "run")
    assert result.status == "completed"
    cfg.trainer.max_steps = 3
    resumed = train(cfg, tmp_path / "run", resume=True)
    assert resumed.status == "completed"
    shutil.move(tmp_path / "run", tmp_path / "moved")
    code, text = invoke_cli(
        "predict",
        str(tmp_path / "moved"),
        "--input",
        str(manifest.parent / "images" / "case4.nii.gz"),
        "--out",
        str(tmp_path / "pred"),
    )
    assert code == 0, text
    mask = read_volume(tmp_path / "pred" / "masks" / "case4.nii.gz", mask=True).array
    probability = read_volume(tmp_path / "pred" / "probabilities" / "case4.nii.gz").array
    assert mask.shape == (16, 20, 24)
    np.testing.assert_array_equal(mask, probability.argmax(0) if probability.shape[0] > 1 else probability[0] > 0.5)


def test_ds6_cross_entropy_consistency_against_its_own_detached_output(manifest):
    from labelwise.losses import soft_cross_entropy

    cfg = config(manifest, {"name": "ds6", "consistency": "ce", "weights": [1.0, 1.0, 3.0]})
    bundle = load_data(cfg.data, keep_unlabelled=True)
    method = METHODS["ds6"](cfg, bundle)
    model = method.networks["model"]
    batch = batch_of(bundle, [False, False])  # unlabelled: the consistency term alone
    torch.manual_seed(2)
    terms = method.training_step(batch)
    out, out_t, _, field = deformed_by_hand(model, batch, 2)
    expected = soft_cross_entropy(out_t[0], torch.sigmoid(warp(out[0], field)).detach())
    torch.testing.assert_close(terms["consistency"], expected.detach())
    # the target takes no gradient: the loss's gradient is that of the term with the target held fixed
    grads = torch.autograd.grad(terms["loss"], list(model.parameters()), allow_unused=True)
    by_hand = torch.autograd.grad(3.0 * expected, list(model.parameters()), allow_unused=True)
    for g, h in zip(grads, by_hand):
        assert (g is None and h is None) or torch.allclose(g, h, atol=1e-6)
