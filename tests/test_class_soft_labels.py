"""Soft labels with one probability map per class (``data.soft_labels`` with ``(K, *spatial)`` maps): read from
``.npy`` and 4D NIfTI (through nibabel), checked to sum to 1, moved with the mask by augmentation and padding, trained
as class probabilities (one-hot maps are the hard labels' loss), and a 3-class 3D run from NIfTI files whose test
scores are those of the maps' likeliest class, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_3D, assert_dice_by_hand

from labelwise.augment.pipeline import Augment, AugmentOptions
from labelwise.config import load_config
from labelwise.data.datasets import DataBundle
from labelwise.data.manifest import Case
from labelwise.data.patches import PatchDataset, VolumeDataset, read_probability
from labelwise.errors import DataError
from labelwise.methods import METHODS
from labelwise.metrics.surface import IGNORE


def _maps(labels: np.ndarray, classes: int, sure: float = 0.8) -> np.ndarray:
    """Class probabilities ``(K, *spatial)``: ``sure`` on each voxel's label, the rest shared by the others."""
    onehot = np.eye(classes, dtype=np.float32)[labels]
    return np.moveaxis(onehot * sure + (1 - onehot) * (1 - sure) / (classes - 1), -1, 0).astype(np.float32)


def test_class_maps_are_read_from_npy_and_4d_nifti_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (6, 7, 5))
    maps = _maps(labels, 3)
    np.save(tmp_path / "m.npy", maps)
    image = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), np.diag([0.5, 0.5, 2.0, 1.0])), image)
    got = read_probability(tmp_path / "m.npy", None, (6, 7, 5), image)
    np.testing.assert_array_equal(got, maps)
    nib.save(nib.Nifti1Image(np.moveaxis(maps, 0, -1), np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "m.nii.gz")
    got = read_probability(tmp_path / "m.nii.gz", (0.5, 0.5, 2.0), (6, 7, 5), image)
    np.testing.assert_allclose(got, maps)
    # two class maps: the foreground's; one map as it is
    np.save(tmp_path / "two.npy", np.stack([1 - maps[1], maps[1]]))
    np.testing.assert_allclose(read_probability(tmp_path / "two.npy", None, (6, 7, 5), image), maps[1])
    np.save(tmp_path / "one.npy", maps[1])
    np.testing.assert_allclose(read_probability(tmp_path / "one.npy", None, (6, 7, 5), image), maps[1])
    bad = maps.copy()
    bad[0, 0, 0, 0] += 0.2
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match=r"must sum to 1 at every voxel; the sums lie in \[1, 1.2\]"):
        read_probability(tmp_path / "bad.npy", None, (6, 7, 5), image)
    with pytest.raises(DataError, match="differs from its image"):
        read_probability(tmp_path / "m.nii.gz", (1.0, 1.0, 1.0), (6, 7, 5), image)
    np.save(tmp_path / "single.npy", maps[:1])
    with pytest.raises(DataError, match="1 class probability map; expected one per class"):
        read_probability(tmp_path / "single.npy", None, (6, 7, 5), image)


def test_class_maps_move_with_the_mask_and_padding_is_background():
    options = AugmentOptions.model_validate(
        {"flip": {"p": 0.5}, "rotate90": {"p": 0.5}, "rotate": {"p": 1.0, "degrees": 30}, "elastic": {"p": 1.0}}
    )
    torch.manual_seed(0)
    target = torch.randint(0, 3, (3, 20, 20))
    maps = torch.from_numpy(_maps(target.numpy(), 3)).permute(1, 0, 2, 3).contiguous()  # (B, K, H, W)
    weight = torch.rand(3, 20, 20)
    image = torch.rand(3, 1, 20, 20)
    torch.manual_seed(1)
    _, moved, (moved_weight, moved_maps) = Augment(options).with_maps(image, target, [weight, maps])
    assert moved_maps.shape == maps.shape and moved_weight.shape == weight.shape
    assert not torch.equal(moved, target)
    # nearest neighbour: every voxel's maps are those of the label the mask moved there, or, where the transform
    # filled voxels from outside the image (label 0), background for sure
    expected = torch.from_numpy(_maps(moved.numpy(), 3)).permute(1, 0, 2, 3)
    same = torch.isclose(moved_maps, expected).all(dim=1)
    filled = (moved_maps == torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]).all(dim=1) & (moved == 0)
    assert bool((same | filled).all()) and 0 < int(filled.sum()) < int(same.sum())
    # a volume smaller than the patch: the padding is background for sure
    volumes = VolumeDataset(
        [Case("a", Path("a.nii.gz"), Path("a_p.npy"), "train")],
        [torch.rand(1, 6, 6)],
        [target[0, :6, :6]],
        [(1.0, 1.0)],
        [None],
        np.array([0]),
        maps={"soft": [maps[0, :, :6, :6]]},
    )
    patch = PatchDataset(volumes, [8, 8], 1, 0.0, seed=0)[0]
    assert patch["soft"].shape == (3, 8, 8)
    torch.testing.assert_close(patch["soft"][:, :6, :6], maps[0, :, :6, :6])
    assert torch.equal(patch["soft"][:, 6:], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 2, 8))


def test_one_hot_class_maps_are_the_hard_labels_loss():
    raw = {
        "name": "t",
        "seed": 0,
        "method": "supervised",
        "data": {"task": "segmentation", "manifest": "m.csv", "patch_size": [16, 16]},
        "model": {"name": "unet_mss", "channels": [2, 4, 4, 4, 4]},
        "trainer": {"max_steps": 10, "checkpoint_every": 10},
    }
    cfg = load_config(raw, ["method.loss=dice_ce"], check_files=False)
    m = METHODS["supervised"](
        cfg, DataBundle(splits={}, task="segmentation", num_classes=3, in_channels=1, spatial_dims=2)
    )
    torch.manual_seed(2)
    outputs = tuple(torch.randn(2, 3, 6, 8) for _ in range(3))
    target = torch.randint(0, 3, (2, 6, 8))
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    hard = m.segmentation_loss(outputs, target)
    assert float(m.segmentation_loss(outputs, target, soft=onehot)) == pytest.approx(float(hard), rel=1e-5)
    soft = torch.from_numpy(_maps(target.numpy(), 3)).permute(1, 0, 2, 3)
    assert float(m.segmentation_loss(outputs, target, soft=soft)) != pytest.approx(float(hard), rel=1e-3)
    # voxels without a label (and a weight of 0) leave the loss: the loss of the rest
    part = target.clone()
    part[..., :4] = IGNORE
    right = m.segmentation_loss(tuple(o[..., 4:] for o in outputs), target[..., 4:], soft=soft[..., 4:])
    assert float(m.segmentation_loss(outputs, part, soft=soft)) == pytest.approx(float(right), rel=1e-5)


@pytest.mark.parametrize("method", ["supervised", "ds6"])
def test_a_three_class_run_trains_on_nifti_class_maps_and_is_scored_on_their_likeliest_class(tmp_path, method):
    """Synthetic NIfTI vessels, split into two foreground classes (left and right half), given as 4D NIfTI class
    probabilities: the run trains, counts 3 classes, and scores its test masks against each map's likeliest class."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.data.volumes import read_volume
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v3d", 3, 5, [24, 24, 24], seed=2)
    rows = ["id,image,label,split"]
    truth = {}
    for case in read_manifest(manifest):
        assert case.label is not None
        image = nib.load(case.label)
        vessel = np.asarray(image.dataobj) > 0
        labels = np.where(vessel, 1, 0)
        labels[12:] *= 2  # the right half's vessels are class 2
        truth[case.id] = labels
        maps = _maps(labels, 3, sure=0.7)
        nib.save(nib.Nifti1Image(np.moveaxis(maps, 0, -1), image.affine), tmp_path / f"{case.id}_p.nii.gz")
        rows.append(f"{case.id},{case.image},{tmp_path / f'{case.id}_p.nii.gz'},{case.split}")
    (tmp_path / "soft.csv").write_text("\n".join(rows) + "\n")
    overrides = [f"data.manifest={tmp_path / 'soft.csv'}", "data.soft_labels=true", *TINY_3D, f"method={method}"]
    overrides += ["method.loss=dice_ce"] + (["method.baseline_steps=1"] if method == "ds6" else [])
    run = tmp_path / "run"
    config = load_config(REPO / "configs" / "unet-mss-synthetic-3d.yaml", overrides)
    assert train(config, run).status == "completed"
    spec = json.loads((run / "inference.json").read_text())
    assert spec["output"]["num_classes"] == 3
    scored = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    assert scored["soft_labels"]["reference"] == "the likeliest class of the label's class probabilities"
    assert len(scored["classes"]) == 2 and len(scored["references"]["label"]["cases"]) >= 1
    for case in scored["references"]["label"]["cases"]:
        pred = read_volume(run / "predictions" / "test" / "masks" / f"{case['id']}.nii.gz", mask=True).array
        assert_dice_by_hand(case["dice"], truth[case["id"]] > 0, pred > 0)
        for k, name in enumerate(scored["classes"], 1):
            assert_dice_by_hand(case["per_class"][name]["dice"], truth[case["id"]] == k, pred == k)


@pytest.mark.parametrize("classes", [2, 3])
def test_resampling_moves_soft_labels_linearly_and_makes_their_mask_on_the_new_grid(tmp_path, classes):
    """data.spacing: a soft label (one foreground probability, or class maps) is resampled linearly, like an image
    (numpy's linear interpolation along the resampled axis, the oracle), and the mask is that of the resampled
    probabilities; weights stay nearest-neighbour."""
    from labelwise.data.patches import read_case
    from labelwise.data.volumes import resample

    rng = np.random.default_rng(5)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    labels = rng.integers(0, classes, (6, 5, 4))
    maps = _maps(labels, classes, sure=0.6) if classes > 2 else rng.random((6, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(rng.random((6, 5, 4)).astype(np.float32), affine), str(tmp_path / "i.nii.gz"))
    stored = np.moveaxis(maps, 0, -1) if classes > 2 else maps
    nib.save(nib.Nifti1Image(stored, affine), str(tmp_path / "p.nii.gz"))
    case = Case("c", tmp_path / "i.nii.gz", tmp_path / "p.nii.gz", "train")
    got = read_case(case, masks=True, spacing=(1.0, 1.0, 1.0), soft=True)
    assert got.image.array.shape == (1, 6, 5, 8)
    expected = resample(maps, (6, 5, 8))  # linear, as images
    np.testing.assert_allclose(got.soft, expected, atol=1e-6)
    along = np.interp((np.arange(8) + 0.5) / 2 - 0.5, np.arange(4), (maps if classes == 2 else maps[1])[2, 3])
    np.testing.assert_allclose((got.soft if classes == 2 else got.soft[1])[2, 3], along, atol=1e-6)
    mask = expected.argmax(0) if classes > 2 else (expected > 0.5).astype(np.int64)
    np.testing.assert_array_equal(got.target, mask)
    if classes > 2:
        np.testing.assert_allclose(got.soft.sum(axis=0), 1.0, atol=1e-5)
