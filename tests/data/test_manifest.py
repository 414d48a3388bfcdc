"""Manifest data: reading and checking the CSV, whole volumes, random patches, and load_data on a manifest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_set

from labelwise.data import load_data
from labelwise.data.config import DataConfig
from labelwise.data.manifest import read_manifest
from labelwise.data.patches import PatchDataset, load_cases, normalize_intensity
from labelwise.data.volumes import read_volume, write_volume
from labelwise.errors import DataError


def test_read_manifest_resolves_paths_and_flags_unlabelled(tmp_path):
    cases = read_manifest(make_set(tmp_path))
    assert [c.id for c in cases] == [f"case{i}" for i in range(5)]
    assert [c.labelled for c in cases] == [True, True, False, True, True]
    assert cases[0].image == tmp_path / "images" / "case0.nii.gz" and cases[0].image.is_file()
    assert [c.split for c in cases] == ["train", "train", "train", "val", "test"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("id,image\nc,x.nii.gz\n", ["missing column", "split"]),
        ("id,image,label,split\nc,images/case0.nii.gz,,train\nc,images/case1.nii.gz,,train\n", ["duplicate id 'c'"]),
        ("id,image,label,split\nc,images/case0.nii.gz,,training\n", ["split 'training'", "train, val, test"]),
        ("id,image,label,split\nc,images/nope.nii.gz,,train\n", ["image of c not found", "nope.nii.gz"]),
        ("id,image,label,split\nc,images/case0.nii.gz,,test\n", ["test split but has no label"]),
        ("id,image,label,split\n", ["no cases"]),
    ],
)
def test_bad_manifests_are_refused_with_the_line(tmp_path, text, words):
    make_set(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(DataError) as err:
        read_manifest(bad)
    for word in words:
        assert word in str(err.value)


def test_load_cases_checks_label_against_image(tmp_path):
    path = make_set(tmp_path)
    write_volume(tmp_path / "labels" / "case0.nii.gz", np.zeros((20, 24, 27), np.int64), spacing=(0.5, 0.6, 0.8))
    with pytest.raises(DataError, match=r"case0.nii.gz: mask shape \(20, 24, 27\) differs"):
        load_cases(read_manifest(path)[:1], np.arange(1))
    write_volume(tmp_path / "labels" / "case0.nii.gz", np.zeros((20, 24, 28), np.int64), spacing=(1, 1, 1))
    with pytest.raises(DataError, match="spacing"):
        load_cases(read_manifest(path)[:1], np.arange(1))


def test_volume_dataset_keeps_spacing_and_normalises(tmp_path):
    cases = read_manifest(make_set(tmp_path))
    volumes = load_cases(cases, np.arange(5), intensity="max")
    raw = read_volume(cases[0].image).array
    np.testing.assert_allclose(volumes.image[0].numpy(), raw / np.abs(raw).max(), rtol=1e-6)
    assert volumes.spacings[0] == (0.5, 0.6, 0.8) and volumes.image[0].shape == (1, 20, 24, 28)
    assert volumes.target[2].sum() == 0 and not volumes.labelled[2]  # unlabelled: empty target
    assert volumes[1]["target"].dtype == torch.int64


def test_normalize_intensity_guards_constant_volumes():
    zeros = np.zeros((4, 4), np.float32)
    assert np.array_equal(normalize_intensity(zeros, "max"), zeros)
    assert np.array_equal(normalize_intensity(zeros + 3, "zscore"), zeros)
    x = np.arange(10, dtype=np.float32)
    z = normalize_intensity(x, "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6


def test_patches_are_deterministic_sized_and_foreground_centred(tmp_path):
    volumes = load_cases(read_manifest(make_set(tmp_path)), np.arange(5))
    patches = PatchDataset(volumes, (8, 8, 16), patches_per_volume=6, foreground_ratio=1.0, seed=3)
    assert len(patches) == 30
    a, b = patches[7], patches[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(patches[7]["image"], PatchDataset(volumes, (8, 8, 16), 6, 1.0, seed=4)[7]["image"])
    for i in range(len(patches)):
        sample = patches[i]
        assert sample["image"].shape == (1, 8, 8, 16) and sample["target"].shape == (8, 8, 16)
        if sample["labelled"]:
            assert sample["target"].sum() > 0  # centred on a vessel voxel: the patch holds foreground
    uniform = PatchDataset(volumes, (8, 8, 8), patches_per_volume=50, foreground_ratio=0.0, seed=0)
    share = np.mean([uniform[i]["target"].float().mean().item() for i in range(len(uniform))])
    centred = PatchDataset(volumes, (8, 8, 8), patches_per_volume=50, foreground_ratio=1.0, seed=0)
    share_fg = np.mean([centred[i]["target"].float().mean().item() for i in range(len(centred))])
    assert share_fg > 2 * share


def test_patches_pad_small_volumes_and_work_in_2d(tmp_path):
    image = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    write_volume(tmp_path / "a.png", image)
    write_volume(tmp_path / "a_mask.png", (image > 0.5).astype(np.int64))
    (tmp_path / "m.csv").write_text("id,image,label,split\na,a.png,a_mask.png,train\n")
    volumes = load_cases(read_manifest(tmp_path / "m.csv"), np.arange(1), intensity="none")
    sample = PatchDataset(volumes, (16, 8), patches_per_volume=2)[0]
    assert sample["image"].shape == (1, 16, 8) and sample["target"].shape == (16, 8)
    assert sample["image"][:, 10:].abs().sum() == 0  # zero padding below the 10 rows
    with pytest.raises(DataError, match="3 axes but the images are 2D"):
        PatchDataset(volumes, (8, 8, 8))


def test_load_data_from_manifest(tmp_path):
    path = make_set(tmp_path)
    cfg = DataConfig(manifest=path, task="segmentation", patch_size=[8, 8, 8], patches_per_volume=4)
    bundle = load_data(cfg)
    assert (bundle.spatial_dims, bundle.in_channels, bundle.num_classes) == (3, 1, 2)
    assert len(bundle.split("train")) == 2 * 4  # the unlabelled case is left out
    assert len(load_data(cfg, keep_unlabelled=True).split("train")) == 3 * 4
    assert bundle.split("test").ids == ["case4"] and list(bundle.ids) == [f"case{i}" for i in range(5)]
    whole = load_data(DataConfig(manifest=path, task="segmentation"))
    assert whole.split("train")[0]["image"].shape == (1, 20, 24, 28)
    with pytest.raises(DataError, match="holds file names.*data.task: segmentation"):
        load_data(DataConfig(manifest=path))  # classification reads a table of class labels, not of masks


def test_patches_are_the_same_in_loader_workers(tmp_path):
    """Sample i is a function of (seed, i): two worker processes give the batches one process gives."""
    from torch.utils.data import DataLoader

    volumes = load_cases(read_manifest(make_set(tmp_path)), np.arange(5))
    patches = PatchDataset(volumes, (8, 8, 8), patches_per_volume=4, foreground_ratio=0.5, seed=1)
    order = [[3, 7], [0, 19], [12, 5]]
    alone = [b["image"] for b in DataLoader(patches, batch_sampler=order, num_workers=0)]
    workers = [b["image"] for b in DataLoader(patches, batch_sampler=order, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(alone, workers))


def test_palette_masks_give_their_indices_and_grey_gifs_their_binary_values(tmp_path):
    """A DRIVE second-observer GIF is a palette image whose two colours are (4, 2, 4) and (252, 254, 252): its
    labels are the palette indices 0/1, not the grey levels 3/253; a grey 0/255 GIF gives 0/1."""
    from PIL import Image

    labels = np.zeros((6, 7), np.uint8)
    labels[2:4, 1:5] = 1
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    palette.save(tmp_path / "second.gif")
    Image.fromarray(labels * 255).save(tmp_path / "grey.gif")
    for name in ("second.gif", "grey.gif"):
        np.testing.assert_array_equal(read_volume(tmp_path / name, mask=True).array, labels)


def test_sparse_masks_are_left_out_or_made_unlabelled(tmp_path, capsys):
    """data.sparse_masks: a training mask tracing far less than the others (an annotator who skipped the image) is
    left out by supervised methods and kept as an unlabelled image by semi-supervised ones."""
    from labelwise.data.datasets import sparse_positions
    from labelwise.data.volumes import write_volume

    # median of 100, 5, 90, 110 is 95: below 0.1 x 95 = 9.5 is the second only; none below 0.01 x 95
    assert sparse_positions([100, 5, 90, 110], 0.1) == [1]
    assert sparse_positions([100, 5, 90, 110], 0.01) == [] and sparse_positions([], 0.5) == []
    path = make_set(tmp_path, splits=("train",) * 4 + ("val", "test"), unlabelled=())
    sparse = np.zeros((20, 24, 28), dtype=np.int64)
    sparse[10, 12, 14:16] = 1  # 2 voxels where the others have about 130
    write_volume(tmp_path / "labels" / "case1.nii.gz", sparse, spacing=(0.5, 0.6, 0.8))
    cfg = DataConfig(manifest=path, task="segmentation", patch_size=[8, 8, 8], patches_per_volume=4)
    assert len(load_data(cfg).split("train")) == 4 * 4  # off by default: every mask counts
    capsys.readouterr()
    cfg = DataConfig(**{**cfg.model_dump(), "sparse_masks": 0.1})
    supervised = load_data(cfg).split("train")
    assert len(supervised) == 3 * 4 and supervised.volumes.ids == ["case0", "case2", "case3"]
    message = capsys.readouterr().err
    assert "1 of 4 training masks" in message and "left out of training: case1" in message
    semi = load_data(cfg, keep_unlabelled=True).split("train")
    assert semi.volumes.ids == ["case0", "case1", "case2", "case3"]
    assert semi.volumes.labelled.tolist() == [True, False, True, True]
    assert int(semi.volumes.target[1].sum()) == 0 and len(semi.foreground[1]) == 0  # its mask is not read
    assert "used as unlabelled images: case1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sparse_masks: judges the masks of a segmentation manifest"):
        DataConfig(synth={"kind": "shapes"}, task="segmentation", sparse_masks=0.1)
