"""Masks annotated in part (``data.ignore``): voxels of an ignore value carry no label. Each piece against an oracle
(MONAI's Dice + cross-entropy and the same loss on the labelled voxels alone, scikit-learn's F1 on them), patches
centred on labelled voxels only, and the user's path: PNG masks with 255 where nobody annotated, a run, its scores,
the run moved, predict and evaluate against those masks, and the audit and its fix, which keep the 255s."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_3D, assert_dice_by_hand, bar, invoke_cli
from sklearn.metrics import f1_score

from labelwise.config import load_config
from labelwise.data.config import DataConfig
from labelwise.data.datasets import DataBundle, load_data
from labelwise.data.volumes import read_volume, write_volume
from labelwise.errors import ConfigError
from labelwise.losses import dice_ce_loss
from labelwise.methods import METHODS
from labelwise.metrics.surface import IGNORE, mark_ignored, score_case
from labelwise.training import train

SPLITS = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
UNSEEN = ("--split", "val", "--split", "test")  # the cases the run did not train on


def test_dice_ce_is_monais_and_over_labelled_voxels_only():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 7)
    target = torch.randint(0, 3, (2, 1, 6, 7))
    for smoothing in (0.0, 0.1):
        monai = DiceCELoss(to_onehot_y=True, softmax=True, label_smoothing=smoothing)
        assert float(dice_ce_loss(logits, target, smoothing)) == pytest.approx(float(monai(logits, target)), abs=1e-6)
    # one case, some voxels without a label: MONAI's loss on the labelled voxels alone (a 1D "image" of them)
    one, labels = logits[:1].clone().requires_grad_(True), target[:1].clone()
    unlabelled = torch.rand(1, 1, 6, 7) < 0.4
    labels[unlabelled] = IGNORE
    kept = ~unlabelled[0, 0]
    subset_logits, subset_target = one[0][:, kept][None], target[0][:, kept][None]
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(subset_logits, subset_target)
    loss = dice_ce_loss(one, labels)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    loss.backward()
    assert one.grad[0][:, unlabelled[0, 0]].abs().max() == 0  # no gradient where there is no label
    nothing = dice_ce_loss(logits, torch.full_like(target, IGNORE))
    assert torch.isfinite(nothing) and float(nothing) == pytest.approx(0.0, abs=1e-6)


def base(name: str) -> dict:
    return {
        "name": "t",
        "seed": 0,
        "method": name,
        "data": {"task": "segmentation"},
        "model": {"name": "unet_mss"},
        "trainer": {"max_steps": 1, "checkpoint_every": 1},
    }


def method(loss: str, dims: int, ignore=(255,)):
    overrides = [
        "data.manifest=m.csv",
        f"data.ignore=[{','.join(map(str, ignore))}]",
        "model.channels=[2,4,4,4,4]",
        f"method.loss={loss}",
        f"data.patch_size=[{','.join(['16'] * dims)}]",
    ]
    cfg = load_config(base("supervised"), overrides, check_files=False)
    data = DataBundle(splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=dims)
    return METHODS["supervised"](cfg, data)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("loss", ["focal_tversky", "dice_ce"])
def test_a_loss_with_ignored_voxels_is_the_loss_over_the_labelled_ones(loss, dims):
    """The left half of every case carries no label: the loss (U-Net MSS's three outputs, weighted) equals the same
    loss over the right half alone, and the left half's targets do not matter."""
    m = method(loss, dims)
    torch.manual_seed(dims)
    spatial = (6,) * (dims - 1) + (8,)
    channels = 1 if loss == "focal_tversky" else 2
    outputs = tuple(torch.randn(2, channels, *spatial) for _ in range(3))
    target = torch.randint(0, 2, (2, *spatial))
    target[..., :4] = IGNORE
    right = tuple(o[..., 4:] for o in outputs)
    expected = m.segmentation_loss(right, target[..., 4:])
    assert float(m.segmentation_loss(outputs, target)) == pytest.approx(float(expected), rel=1e-5)
    assert float(m.segmentation_loss(outputs, target.clamp_min(0))) != pytest.approx(float(expected), rel=1e-3)


def test_methods_that_do_not_leave_unlabelled_voxels_out_refuse():
    overrides = ["data.manifest=m.csv", "data.ignore=[255]", "data.patch_size=[16,16]"]
    data = DataBundle(splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=2)
    METHODS["ds6"](load_config(base("ds6"), overrides, check_files=False), data)  # ds6 does
    with pytest.raises(ConfigError, match="data.ignore: method frangi does not leave"):
        METHODS["frangi"](load_config(base("frangi"), overrides, check_files=False), data)
    for maps, unlabelled, said in ((("weight",), False, "a weight column"), ((), True, "an ignore column")):
        partial = DataBundle(
            splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=2, maps=maps,
            unlabelled_voxels=unlabelled,
        )  # fmt: skip
        with pytest.raises(ConfigError, match=f"come with {said}; method frangi does not"):
            METHODS["frangi"](load_config(base("frangi"), overrides[:1], check_files=False), partial)
    with pytest.raises(ValueError, match="data.ignore: values of the masks of a segmentation manifest"):
        DataConfig(synth={"kind": "shapes"}, task="classification", ignore=[255])
    with pytest.raises(ValueError, match="distinct mask values >= 1"):
        DataConfig(manifest="m.csv", task="segmentation", ignore=[0])


def test_scores_leave_unlabelled_voxels_out():
    rng = np.random.default_rng(3)
    truth = (rng.random((20, 24)) < 0.3).astype(np.int64)
    pred = (rng.random((20, 24)) < 0.3).astype(np.int64)
    unlabelled = rng.random((20, 24)) < 0.25
    roi = np.ones((20, 24), bool)
    roi[:, :3] = False
    expected = f1_score(truth[~unlabelled & roi], pred[~unlabelled & roi])
    for marked, ignore in ((np.where(unlabelled, 255, truth), [255]), (np.where(unlabelled, IGNORE, truth), [])):
        scores = score_case(pred, marked, roi=roi, ignore=ignore, distances=False)["foreground"]
        assert scores["dice"] == pytest.approx(expected)
    marked = mark_ignored(np.where(unlabelled, 255, truth).astype(np.uint8), [255])  # any integer type
    assert marked.dtype == np.int64 and (marked == IGNORE).sum() == unlabelled.sum()
    plain = score_case(pred, truth, roi=roi, distances=False)["foreground"]["dice"]
    assert plain != pytest.approx(expected)  # the unlabelled voxels did count before


@pytest.fixture(scope="module")
def partly_annotated(tmp_path_factory):
    """12 bars on PNG: training masks annotated on their left 20 columns only, val and test masks below row 8 only
    (255 elsewhere); val case 8's mask misses the lower half of its bar. A run trained with data.ignore: [255]."""
    root = tmp_path_factory.mktemp("ignore")
    rng = np.random.default_rng(0)
    rows = ["id,image,label,split"]
    for i, split in enumerate(SPLITS):
        truth = bar(i)
        image = np.clip(0.2 + 0.6 * truth + rng.normal(0, 0.05, truth.shape), 0, 1)
        label = truth.copy()
        if i == 8:
            label[18:28] = 0
        if split == "train":
            label[:, 20:] = 255
        else:
            label[:8] = 255
        write_volume(root / "images" / f"case{i}.png", image)
        write_volume(root / "labels" / f"case{i}.png", label)
        rows.append(f"case{i},images/case{i}.png,labels/case{i}.png,{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        {
            "name": "ignore-2d",
            "seed": 0,
            "method": "supervised",
            "data": {
                "manifest": str(root / "manifest.csv"),
                "task": "segmentation",
                "patch_size": [16, 16],
                "batch_size": 4,
                "patches_per_volume": 4,
                "ignore": [255],
            },
            "model": {"name": "unet", "channels": [8, 16], "norm": "instance"},
            "optimizer": {"name": "adam", "lr": 0.01},
            "trainer": {"max_steps": 60, "checkpoint_every": 60, "log_every": 20},
        }
    )
    train(cfg, root / "run")
    return root


def hand_dice(pred: np.ndarray, label: np.ndarray) -> float:
    labelled = label != 255
    return float(f1_score(label[labelled] > 0, pred[labelled] > 0))


def test_patches_are_centred_on_labelled_voxels_anywhere_in_the_patch(partly_annotated):
    """Every patch holds a labelled voxel (its centre); the centre lies anywhere in the patch, so the labelled
    columns (the left 20 of the training masks) fall on every column of the patches, not always the middle one."""
    manifest = partly_annotated / "manifest.csv"
    options = {
        "manifest": manifest,
        "task": "segmentation",
        "patch_size": [9, 9],
        "foreground_ratio": 0.0,
        "patches_per_volume": 40,
    }
    patches = load_data(DataConfig(**options, ignore=[255])).split("train")
    target = patches.volumes.target[0]
    label = read_volume(partly_annotated / "labels" / "case0.png", mask=True).array
    np.testing.assert_array_equal(target.numpy(), np.where(label == 255, IGNORE, label))
    cut = [patches[i]["target"] for i in range(len(patches))]
    assert len(cut) == 320 and all(bool((t != IGNORE).any()) for t in cut)
    labelled = np.mean([(t != IGNORE).numpy() for t in cut], axis=0).mean(axis=0)  # per patch column
    assert labelled.min() > 0.2 and labelled[4] < 1  # every column often labelled, the middle one not always
    before = load_data(DataConfig(**options)).split("train")  # without data.ignore: 255 is a class of its own
    assert any(int(before[i]["target"][4, 4]) == 255 for i in range(len(before)))


def test_slices_annotated_at_regular_steps_fall_on_every_patch_position(tmp_path):
    """3D, every 4th slice annotated: centred in the middle, the labelled slices of a patch would always be its
    slices 0, 4, 8 (the network learns to be careful there only); anywhere, each patch slice is labelled in some."""
    from labelwise.data.manifest import Case
    from labelwise.data.patches import PatchDataset, load_cases

    rng = np.random.default_rng(0)
    image = rng.random((20, 20, 20)).astype(np.float32)
    label = (image > 0.7).astype(np.uint8)
    label[..., [k for k in range(20) if k % 4]] = 2
    write_volume(tmp_path / "i.nii.gz", image)
    write_volume(tmp_path / "l.nii.gz", label)
    volumes = load_cases([Case("c", tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", "train")], np.arange(1), ignore=[2])
    patches = PatchDataset(volumes, [9, 9, 9], patches_per_volume=60, foreground_ratio=0.5, labelled_centres=True)
    labelled = np.stack([(patches[i]["target"] != IGNORE).numpy().any(axis=(0, 1)) for i in range(60)])
    assert labelled.any(axis=1).all()  # a labelled slice in every patch
    assert labelled.any(axis=0).all() and not labelled.all(axis=0).any()  # every patch slice sometimes, none always


def test_a_partly_annotated_run_is_scored_predicted_evaluated_and_audited_on_its_labels(partly_annotated, tmp_path):
    root = partly_annotated
    spec = json.loads((root / "run" / "inference.json").read_text())
    assert spec["preprocessing"]["ignore"] == [255] and spec["output"]["num_classes"] == 2
    scored = json.loads((root / "run" / "predictions" / "test" / "segmentation.json").read_text())
    for case in scored["references"]["label"]["cases"]:
        pred = read_volume(root / "run" / "predictions" / "test" / "masks" / f"{case['id']}.png", mask=True).array
        label = read_volume(root / "labels" / f"{case['id']}.png", mask=True).array
        assert case["dice"] == pytest.approx(hand_dice(pred, label))
    audit, fixed = tmp_path / "audit", tmp_path / "fixed"
    code, text = invoke_cli("audit", str(root / "run"), "--out", str(audit), *UNSEEN, "--fix", str(fixed))
    assert code == 0, text
    label = read_volume(root / "labels" / "case8.png", mask=True).array
    suspects = read_volume(audit / "suspects" / "case8.png", mask=True).array
    assert not suspects[:8].any()  # nothing is suspect where nothing was annotated
    assert suspects[18:28].any()  # the lower half of the bar that the mask misses
    corrected = read_volume(fixed / "labels" / "case8.png", mask=True).array
    np.testing.assert_array_equal(corrected[:8], label[:8])  # the 255s are kept
    assert (corrected[18:28] == 1).sum() > (label[18:28] == 1).sum()
    moved = tmp_path / "moved"
    shutil.move(str(root / "run"), moved)
    out = tmp_path / "pred"
    inputs = [x for i in (10, 11) for x in ("--input", str(root / "images" / f"case{i}.png"))]
    code, text = invoke_cli("predict", str(moved), *inputs, "--out", str(out), "--reference", str(root / "labels"))
    assert code == 0, text
    index = json.loads((out / "predictions.json").read_text())
    dice = {}
    for entry in index["cases"]:
        pred = read_volume(out / "masks" / f"{entry['id']}.png", mask=True).array
        dice[entry["id"]] = hand_dice(pred, read_volume(root / "labels" / f"{entry['id']}.png", mask=True).array)
        assert entry["dice"] == pytest.approx(dice[entry["id"]])
    assert min(dice.values()) > 0.8  # it learnt the bars from the annotated parts
    result = tmp_path / "scores.json"
    code, text = invoke_cli(
        "evaluate", "segmentation", "--pred", str(out), "--truth", str(root / "labels"), "--allow-missing",
        "--ignore", "255", "--json", str(result),
    )  # fmt: skip
    assert code == 0, text
    assert {c["id"]: c["dice"] for c in json.loads(result.read_text())["cases"]} == pytest.approx(dice)


def test_a_volume_annotated_on_a_few_slices_trains_and_is_scored_on_them(tmp_path):
    """3D: training masks (NIfTI, through nibabel) annotated on their first 8 of 32 slices, the rest value 2 (the
    label above the classes, as nnU-Net's ignore label); test masks likewise: a run trains, and its test Dice is the
    Dice over the annotated slices."""
    import nibabel as nib

    from labelwise.data.manifest import read_manifest
    from labelwise.data.synth.vessels import write_vessels

    manifest = write_vessels(tmp_path / "v3d", 3, 5, [32, 32, 32], seed=2)
    for case in read_manifest(manifest):
        assert case.label is not None
        image = nib.load(case.label)
        label = np.asarray(image.dataobj).astype(np.uint8)
        label[..., 8:] = 2
        nib.save(nib.Nifti1Image(label, image.affine), case.label)
    overrides = [
        f"data.manifest={manifest}",
        "data.ignore=[2]",
        *TINY_3D,
    ]
    run = tmp_path / "run"
    assert train(load_config(REPO / "configs" / "unet-mss-synthetic-3d.yaml", overrides), run).status == "completed"
    assert json.loads((run / "inference.json").read_text())["output"]["num_classes"] == 2
    scored = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())["references"]["label"]
    assert scored["cases"]
    for case in scored["cases"]:
        pred = read_volume(run / "predictions" / "test" / "masks" / f"{case['id']}.nii.gz", mask=True).array
        label = read_volume(tmp_path / "v3d" / "labels" / f"{case['id']}.nii.gz", mask=True).array
        labelled = label != 2
        assert_dice_by_hand(case["dice"], label[labelled] > 0, pred[labelled] > 0)
