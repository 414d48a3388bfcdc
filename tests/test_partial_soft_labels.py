"""Masks with an ``ignore`` column, per-voxel ``weight`` maps and soft labels (``data.soft_labels``, and
``data.raters: mean`` of several raters): the maps move with the mask through augmentation and DS6's deformation,
every segmentation loss honours them (the same loss over the voxels a weight of 0 leaves, over hard labels where the
soft ones are 0/1), and the user's path: a manifest with ignore, weight and rater columns, ``labelwise train``
(supervised and DS6), the run moved, ``predict --uncertainty``, and ``evaluate segmentation`` against both raters
of the test images, each score checked by hand."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_3D, assert_dice_by_hand, bar, invoke_cli
from sklearn.metrics import f1_score

from labelwise.augment.pipeline import Augment, AugmentOptions
from labelwise.config import load_config
from labelwise.data.config import DataConfig
from labelwise.data.datasets import DataBundle, load_data
from labelwise.data.volumes import read_volume, write_volume
from labelwise.errors import DataError
from labelwise.methods import METHODS
from labelwise.metrics.surface import IGNORE

SPLITS = ["train"] * 8 + ["val"] * 2 + ["test"] * 2


def _method(name: str, loss: str = "focal_tversky"):
    raw = {
        "name": "t",
        "seed": 0,
        "method": name,
        "data": {"task": "segmentation", "manifest": "m.csv", "patch_size": [16, 16]},
        "model": {"name": "unet_mss", "channels": [2, 4, 4, 4, 4]},
        "trainer": {"max_steps": 10, "checkpoint_every": 10},
    }
    overrides = [f"method.loss={loss}"] + (["method.baseline_steps=0"] if name == "ds6" else [])
    cfg = load_config(raw, overrides, check_files=False)
    data = DataBundle(splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=2)
    return METHODS[name](cfg, data)


def test_maps_move_with_the_mask_in_every_augmentation():
    """A map equal to the mask stays equal to it after flips, turns, affine moves and elastic deformation; a soft
    map keeps its values (nearest neighbour)."""
    options = AugmentOptions.model_validate(
        {
            "flip": {"p": 0.5},
            "rotate90": {"p": 0.5},
            "rotate": {"p": 1.0, "degrees": 30},
            "scale": {"p": 1.0, "range": [0.8, 1.2]},
            "elastic": {"p": 1.0},
        }
    )
    torch.manual_seed(0)
    target = torch.randint(0, 2, (4, 24, 24))
    target[:, :3] = IGNORE
    soft = torch.rand(4, 24, 24).round(decimals=1)
    image = torch.rand(4, 1, 24, 24)
    torch.manual_seed(1)
    _, moved, (copy, moved_soft) = Augment(options).with_maps(image, target, [target.float(), soft])
    assert not torch.equal(moved, target)  # it did move
    torch.testing.assert_close(copy, moved.float())
    assert set(moved_soft.unique().tolist()) <= set(soft.unique().tolist()) | {0.0}
    torch.manual_seed(1)
    _, alone = Augment(options)(image, target)
    torch.testing.assert_close(alone, moved)  # the same draws as without maps


@pytest.mark.parametrize("loss", ["focal_tversky", "dice_ce"])
def test_supervised_loss_honours_weights_and_soft_labels(loss):
    m = _method("supervised", loss)
    torch.manual_seed(1)
    channels = 1 if loss == "focal_tversky" else 2
    outputs = tuple(torch.randn(2, channels, 6, 8) for _ in range(3))  # U-Net MSS's three outputs
    target = torch.randint(0, 2, (2, 6, 8))
    weight = torch.ones(2, 6, 8)
    weight[..., :4] = 0
    right = m.segmentation_loss(tuple(o[..., 4:] for o in outputs), target[..., 4:])
    assert float(m.segmentation_loss(outputs, target, weight)) == pytest.approx(float(right), rel=1e-5)
    # 0/1 soft labels are the hard labels; other soft labels are another loss; with weights, the same subset rule
    hard = m.segmentation_loss(outputs, target)
    assert float(m.segmentation_loss(outputs, target, soft=target.float())) == pytest.approx(float(hard), rel=1e-5)
    soft = torch.rand(2, 6, 8)
    soft_right = m.segmentation_loss(tuple(o[..., 4:] for o in outputs), target[..., 4:], soft=soft[..., 4:])
    assert float(m.segmentation_loss(outputs, target, soft=soft)) != pytest.approx(float(hard), rel=1e-3)
    assert float(m.segmentation_loss(outputs, target, weight, soft)) == pytest.approx(float(soft_right), rel=1e-5)


def test_ds6_leaves_unlabelled_voxels_out_of_all_three_terms():
    """Every voxel without a label: DS6's supervised, deformed and consistency terms are all zero, and so is the
    gradient; a weight map of ones changes nothing."""
    m = _method("ds6")
    model = m.networks["model"]
    torch.manual_seed(2)
    image = torch.rand(2, 1, 16, 16)
    m.step = 5
    batch = {"image": image, "target": torch.full((2, 16, 16), IGNORE), "labelled": torch.ones(2, dtype=torch.bool)}
    logs = m.training_step(batch)
    assert float(logs["loss"].detach()) == pytest.approx(0.0, abs=1e-6)
    logs["loss"].backward()
    assert all(p.grad is None or float(p.grad.abs().max()) < 1e-7 for p in model.parameters())
    target = (image[:, 0] > 0.5).long()
    outcomes = []
    for extra in ({}, {"weight": torch.ones(2, 16, 16)}):
        torch.manual_seed(3)
        outcomes.append(m.training_step({**batch, "target": target, **extra}))
    for key in ("supervised", "deformed", "consistency"):
        assert float(outcomes[1][key]) == pytest.approx(float(outcomes[0][key]), rel=1e-5)


def dice(pred: np.ndarray, reference: np.ndarray) -> float:
    return float(f1_score(reference.reshape(-1) > 0, pred.reshape(-1) > 0))


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """12 bars on PNG. Training: cases 0-3 traced by three raters (the bar, one wider, one shorter), case 0 with an
    ignore mask over its right 12 columns; cases 4-7 soft labels (.npy: 0.9 on the bar, 0.4 on its border), case 5
    with a weight map. Test cases: two raters (the bar, one wider). A supervised run with data.raters: mean."""
    root = tmp_path_factory.mktemp("partial")
    rng = np.random.default_rng(0)
    rows = ["id,image,label,label_2,label_3,split,ignore,weight"]
    for i, split in enumerate(SPLITS):
        truth = bar(i)
        write_volume(
            root / "images" / f"case{i}.png", np.clip(0.2 + 0.6 * truth + rng.normal(0, 0.05, truth.shape), 0, 1)
        )
        wider = np.maximum(truth, np.roll(truth, 1, axis=1))
        shorter = truth.copy()
        shorter[20:] = 0
        write_volume(root / "labels" / f"case{i}.png", truth)
        write_volume(root / "labels2" / f"case{i}.png", wider)
        write_volume(root / "labels3" / f"case{i}.png", shorter)
        label, more, extra = f"labels/case{i}.png", "", ""
        if i in (0, 1, 2, 3) or split != "train":
            third = f"labels3/case{i}.png" if split == "train" else ""
            more = f"labels2/case{i}.png,{third}"
        else:
            ring = np.maximum(wider, np.roll(truth, -1, axis=1)) - truth
            (root / "soft").mkdir(exist_ok=True)
            np.save(root / "soft" / f"case{i}.npy", (0.9 * truth + 0.4 * ring).astype(np.float32))
            label, more = f"soft/case{i}.npy", ","
        if i == 0:
            ignore = np.zeros_like(truth)
            ignore[:, 20:] = 1
            write_volume(root / "ignore" / "case0.png", ignore)
            extra = "ignore/case0.png,"
        if i == 5:
            np.save(root / "weight5.npy", np.linspace(0, 2, truth.size, dtype=np.float32).reshape(truth.shape))
            extra = ",weight5.npy"
        rows.append(f"case{i},images/case{i}.png,{label},{more},{split},{extra or ','}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "config.yaml").write_text(
        f"""name: partial
seed: 0
method: supervised
data:
  manifest: {root / "manifest.csv"}
  task: segmentation
  raters: mean
  patch_size: [16, 16]
  batch_size: 4
  patches_per_volume: 4
model: {{name: unet, channels: [8, 16], norm: instance}}
optimizer: {{name: adam, lr: 0.01}}
trainer: {{max_steps: 60, checkpoint_every: 60, log_every: 20}}
"""
    )
    code, text = invoke_cli("train", str(root / "config.yaml"), "--run-dir", str(root / "run"), "--no-report")
    assert code == 0, text
    return root


def test_the_batch_carries_the_maps_the_manifest_gives(rated):
    data = DataConfig(manifest=rated / "manifest.csv", task="segmentation", raters="mean", patch_size=[32, 32])
    patches = load_data(data).split("train")  # a patch of the whole image: each map as it is
    items = {patches.volumes.ids[i % 8]: patches[i] for i in range(8)}
    assert set(items["case0"]) >= {"weight", "soft"}
    raters = [read_volume(rated / d / "case0.png", mask=True).array for d in ("labels", "labels2", "labels3")]
    mean = np.mean(raters, axis=0)
    np.testing.assert_allclose(items["case0"]["soft"].numpy(), mean, atol=1e-6)
    expected = np.where(np.arange(32)[None] >= 20, IGNORE, mean > 0.5)
    np.testing.assert_array_equal(items["case0"]["target"].numpy(), expected)
    np.testing.assert_array_equal(items["case0"]["weight"].numpy(), 1)  # no weight map: weight 1
    np.testing.assert_array_equal(items["case5"]["weight"].numpy(), np.load(rated / "weight5.npy"))
    np.testing.assert_allclose(items["case4"]["soft"].numpy(), np.load(rated / "soft" / "case4.npy"))
    with pytest.raises(DataError, match="consensus: the cases have different numbers of raters"):
        load_data(DataConfig(manifest=rated / "manifest.csv", task="segmentation", soft_labels=True))
    with pytest.raises(ValueError, match="soft_labels with data.ignore"):
        DataConfig(manifest=rated / "manifest.csv", task="segmentation", soft_labels=True, ignore=[255])


def test_a_probability_mask_without_soft_labels_says_how_to_read_it(rated, tmp_path):
    rows = (rated / "manifest.csv").read_text().splitlines()
    (rated / "plain.csv").write_text("\n".join(rows[:1] + rows[5:7] + rows[9:]) + "\n")  # cases 4, 5: .npy labels
    with pytest.raises(DataError, match="set data.soft_labels: true"):
        load_data(DataConfig(manifest=rated / "plain.csv", task="segmentation", cache=tmp_path / "c"))


def test_rated_run_moved_predicts_with_uncertainty_and_is_evaluated_against_both_raters(rated, tmp_path):
    spec = json.loads((rated / "run" / "inference.json").read_text())
    assert spec["preprocessing"]["soft_labels"] is True
    scored = json.loads((rated / "run" / "predictions" / "test" / "segmentation.json").read_text())
    assert scored["soft_labels"]["threshold"] == 0.5
    assert json.loads((rated / "run" / "raters.json").read_text())["method"] == "mean"
    for case in scored["references"]["label"]["cases"]:  # against the raters' mean > 0.5: both said foreground
        pred = read_volume(rated / "run" / "predictions" / "test" / "masks" / f"{case['id']}.png", mask=True).array
        both = np.minimum(
            *(read_volume(rated / d / f"{case['id']}.png", mask=True).array for d in ("labels", "labels2"))
        )
        assert case["dice"] == pytest.approx(dice(pred, both))
    moved = tmp_path / "moved"
    shutil.move(str(rated / "run"), moved)  # the later tests need the manifest and images only
    out = tmp_path / "pred"
    inputs = [x for i in (10, 11) for x in ("--input", str(rated / "images" / f"case{i}.png"))]
    code, text = invoke_cli("predict", str(moved), *inputs, "--out", str(out), "--uncertainty")
    assert code == 0, text
    index = json.loads((out / "predictions.json").read_text())
    masks = {}
    for entry in index["cases"]:
        masks[entry["id"]] = read_volume(out / "masks" / f"{entry['id']}.png", mask=True).array
        entropy = np.load(out / "uncertainty" / f"{entry['id']}_entropy.npy")
        assert entropy.shape == (32, 32) and 0 <= entropy.min() and entropy.max() <= 1
    assert min(dice(m, bar(int(k[4:]))) for k, m in masks.items()) > 0.8  # it learnt the bars
    result = tmp_path / "scores.json"
    code, text = invoke_cli(
        "evaluate", "segmentation", "--pred", str(out), "--truth", str(rated / "labels"), "--truth",
        str(rated / "labels2"), "--allow-missing", "--json", str(result), "--csv", str(tmp_path / "scores.csv"),
    )  # fmt: skip
    assert code == 0, text
    assert "raters between themselves" in text
    got = json.loads(result.read_text())
    for k, folder in enumerate(("labels", "labels2")):
        refs = {i: read_volume(rated / folder / f"{i}.png", mask=True).array for i in masks}
        assert got["model"][k] == pytest.approx(np.mean([dice(masks[i], refs[i]) for i in masks]))
    between = np.mean(
        [dice(*(read_volume(rated / d / f"case{i}.png", mask=True).array for d in ("labels", "labels2"))) for i in
         range(12)]
    )  # fmt: skip
    assert got["between_raters"]["dice"] == pytest.approx(between)
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("rater,id,") and sum(line.startswith("2,") for line in lines) == 2 + 2


def test_ds6_trains_on_partial_and_soft_labels_through_the_cli(rated):
    config = (rated / "config.yaml").read_text().replace("supervised", "ds6").replace("unet,", "unet_mss,")
    (rated / "ds6.yaml").write_text(config.replace("channels: [8, 16], norm: instance", "channels: [4, 8, 8, 8, 8]"))
    run = rated / "ds6-run"
    code, text = invoke_cli(
        "train", str(rated / "ds6.yaml"), "--set", "trainer.max_steps=6", "--set", "method.baseline_steps=2",
        "--run-dir", str(run), "--no-report",
    )  # fmt: skip
    assert code == 0, text
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/consistency" in m for m in metrics)
    assert (run / "predictions" / "test" / "segmentation.json").is_file()


def test_sample_trains_each_case_against_one_of_its_raters():
    """data.raters: sample: after rater_target, each sample's target is exactly one rater's mask (drawn anew each
    step: over many draws every rater comes up), voxels without a label stay so."""
    from labelwise.data.raters import vote_codes

    m = _method("supervised")
    m.data.raters = {"method": "sample", "raters": 3, "classes": 2}
    rng = np.random.default_rng(4)
    masks = [(rng.random((4, 8, 8)) < 0.4).astype(np.int64) for _ in range(3)]
    target = torch.from_numpy(masks[0]).clone()
    target[:, 0] = IGNORE
    votes = torch.from_numpy(vote_codes(masks, 2))
    seen = set()
    for step in range(20):
        torch.manual_seed(step)
        out = m.rater_target({"target": target, "votes": votes})
        assert "votes" not in out and (out["target"][:, 0] == IGNORE).all()
        for b in range(4):
            chosen = [r for r in range(3) if torch.equal(out["target"][b, 1:], torch.from_numpy(masks[r][b, 1:]))]
            assert len(chosen) >= 1
            seen.update(chosen)
    assert seen == {0, 1, 2}


def test_a_sample_run_trains_on_drawn_raters_and_is_scored_on_the_majority(rated, tmp_path):
    rows = (rated / "manifest.csv").read_text().splitlines()
    keep = [rows[0]] + [row.replace("ignore/case0.png", "") for row in rows[1:5] + rows[9:]]  # cases 0-3, 8-11
    (rated / "sample.csv").write_text("\n".join(keep) + "\n")
    config = (rated / "config.yaml").read_text().replace("manifest.csv", "sample.csv").replace("mean", "sample")
    (rated / "sample.yaml").write_text(config)
    run = tmp_path / "run"
    code, text = invoke_cli(
        "train", str(rated / "sample.yaml"), "--set", "trainer.max_steps=20", "--run-dir", str(run), "--no-report"
    )
    assert code == 0, text
    assert json.loads((run / "raters.json").read_text())["raters"] == 3  # the training cases' three
    scored = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    for case in scored["references"]["label"]["cases"]:  # two raters: the majority is where both said foreground
        pred = read_volume(run / "predictions" / "test" / "masks" / f"{case['id']}.png", mask=True).array
        both = np.minimum(
            *(read_volume(rated / d / f"{case['id']}.png", mask=True).array for d in ("labels", "labels2"))
        )
        assert case["dice"] == pytest.approx(dice(pred, both))
    one = "\n".join(keep[:2] + [keep[2].replace("labels2/case1.png,labels3/case1.png", ",")] + keep[3:]) + "\n"
    (rated / "sample.csv").write_text(one)
    code, text = invoke_cli("train", str(rated / "sample.yaml"), "--run-dir", str(tmp_path / "no"), "--no-report")
    assert code == 2 and "sample draws one of every labelled training case's raters" in text


@pytest.mark.parametrize("method", ["supervised", "ds6"])
def test_soft_labels_weights_and_an_ignore_column_train_in_3d(tmp_path, method):
    """Synthetic NIfTI vessels (through nibabel): soft training labels (float NIfTI), a weight map and an ignore mask
    over half of each training volume; a run trains, and its test Dice is that of the soft labels' masks (> 0.5)
    where the ignore masks leave a label."""
    import nibabel as nib

    from labelwise.config import load_config as load
    from labelwise.data.manifest import read_manifest
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v3d", 3, 5, [24, 24, 24], seed=2)
    rows = ["id,image,label,split,ignore,weight"]
    for case in read_manifest(manifest):
        assert case.label is not None
        image = nib.load(case.label)
        label = np.asarray(image.dataobj).astype(np.float32)
        nib.save(nib.Nifti1Image(0.3 + 0.6 * label, image.affine), tmp_path / f"{case.id}_soft.nii.gz")
        ignore = np.zeros(label.shape, np.uint8)
        ignore[..., 12:] = 1
        nib.save(nib.Nifti1Image(ignore, image.affine), tmp_path / f"{case.id}_ignore.nii.gz")
        nib.save(nib.Nifti1Image(np.full(label.shape, 2.0, np.float32), image.affine), tmp_path / f"{case.id}_w.nii.gz")
        rows.append(
            f"{case.id},{case.image},{tmp_path / f'{case.id}_soft.nii.gz'},{case.split},"
            f"{tmp_path / f'{case.id}_ignore.nii.gz'},{tmp_path / f'{case.id}_w.nii.gz'}"
        )
    (tmp_path / "soft.csv").write_text("\n".join(rows) + "\n")
    overrides = [
        f"data.manifest={tmp_path / 'soft.csv'}",
        "data.soft_labels=true",
        *TINY_3D,
        f"method={method}",
    ] + (["method.baseline_steps=1"] if method == "ds6" else [])
    run = tmp_path / "run"
    assert train(load(REPO / "configs" / "unet-mss-synthetic-3d.yaml", overrides), run).status == "completed"
    scored = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    assert scored["soft_labels"]["threshold"] == 0.5
    for case in scored["references"]["label"]["cases"]:
        pred = read_volume(run / "predictions" / "test" / "masks" / f"{case['id']}.nii.gz", mask=True).array
        soft = nib.load(tmp_path / f"{case['id']}_soft.nii.gz").get_fdata()
        kept = np.ones(soft.shape, bool)
        kept[..., 12:] = False
        assert_dice_by_hand(case["dice"], soft[kept] > 0.5, pred[kept] > 0)


def test_a_rewritten_manifest_keeps_the_ignore_weight_and_rater_columns(rated, tmp_path):
    """audit --fix and the benchmarks write manifests with write_manifest_rows: every column comes back."""
    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.manifest import read_manifest

    cases = read_manifest(rated / "manifest.csv")
    again = read_manifest(write_manifest_rows(tmp_path / "again.csv", cases))
    assert [(c.id, c.ignore, c.weight, c.raters) for c in again] == [
        (c.id, c.ignore.resolve() if c.ignore else None, c.weight.resolve() if c.weight else None,
         tuple(p.resolve() for p in c.raters)) for c in cases
    ]  # fmt: skip
    assert any(c.ignore for c in again) and any(c.weight for c in again)
