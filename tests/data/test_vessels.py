"""The vessels dataset: determinism, per-case seeds, radii, the semi-automatic mask's misses, files, manifest, args."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from labelwise.data.synth.vessels import (
    case_seed,
    make_vessel_case,
    split_counts,
    write_vessels,
)
from labelwise.data.volumes import read_volume
from labelwise.errors import ConfigError

SHAPE_3D = (48, 48, 48)
SHAPE_2D = (96, 96)
BINS = ((0.0, 0.75), (0.75, 1.5), (1.5, 2.5), (2.5, np.inf))


@pytest.fixture(scope="module")
def cases3d():
    return [make_vessel_case(3, SHAPE_3D, seed=s) for s in (1, 2)]


@pytest.fixture(scope="module")
def case3d(cases3d):
    return cases3d[0]


@pytest.fixture(scope="module")
def cases2d():
    return [make_vessel_case(2, SHAPE_2D, seed=s) for s in range(6)]


def _check_case(case, shape):
    assert set(case) == {"image", "truth", "noisy", "radius"}
    assert case["image"].shape == shape and case["image"].dtype == np.float32
    assert 0.0 <= case["image"].min() and case["image"].max() <= 1.0
    for key in ("truth", "noisy"):
        assert case[key].shape == shape and case[key].dtype == np.int64
        assert set(np.unique(case[key])) == {0, 1}
    assert case["radius"].shape == shape and case["radius"].dtype == np.float32
    np.testing.assert_array_equal(case["radius"] > 0, case["truth"] == 1)  # a radius exactly on the truth


def test_case_layout_3d_and_2d(case3d, cases2d):
    _check_case(case3d, SHAPE_3D)
    for case in cases2d:
        _check_case(case, SHAPE_2D)


def test_deterministic_per_seed(cases2d):
    again = make_vessel_case(2, SHAPE_2D, seed=0)
    for key in again:
        np.testing.assert_array_equal(again[key], cases2d[0][key])
    assert not np.array_equal(cases2d[0]["truth"], cases2d[1]["truth"])


def test_vessels_look_like_angiography(case3d):
    truth, image = case3d["truth"] == 1, case3d["image"]
    assert 0.005 < truth.mean() < 0.15
    assert image[truth & (case3d["radius"] > 1.5)].mean() > image[~truth].mean() + 0.2  # bright vessels


def test_radii_span_subvoxel_to_large(case3d, cases2d):
    for radius in [case3d["radius"]] + [c["radius"] for c in cases2d[:2]]:
        vessel = radius[radius > 0]
        assert vessel.min() < 0.75 and vessel.max() > 2.5
        assert (vessel < 1.0).sum() >= 10  # sub-voxel vessels are there, as centreline voxels at least


def _recall_by_radius(cases):
    recalls = []
    for low, high in BINS:
        hit = total = 0
        for case in cases:
            inside = (case["truth"] == 1) & (case["radius"] >= low) & (case["radius"] < high)
            hit += int((inside & (case["noisy"] == 1)).sum())
            total += int(inside.sum())
        recalls.append(hit / total)
    return recalls


def test_semi_automatic_mask_misses_small_vessels(cases3d, cases2d):
    for cases in (cases3d, cases2d):
        recall = _recall_by_radius(cases)
        assert recall[0] < recall[-1] - 0.2, recall
        truth = sum(int(c["truth"].sum()) for c in cases)
        both = sum(int(((c["truth"] == 1) & (c["noisy"] == 1)).sum()) for c in cases)
        noisy = sum(int(c["noisy"].sum()) for c in cases)
        assert 0.5 < 2 * both / (truth + noisy) < 0.98  # a plausible, imperfect mask


def test_split_counts():
    assert split_counts(11) == (6, 2, 3)
    assert split_counts(1) == (1, 0, 0)
    assert split_counts(3)[2] >= 1 and sum(split_counts(3)) == 3
    for n in range(3, 40):
        train, val, test = split_counts(n)
        assert train + val + test == n and train >= 1 and test >= 1
    assert split_counts(4, (2, 1, 1)) == (2, 1, 1)
    with pytest.raises(ConfigError, match="splits"):
        split_counts(4, (2, 1, 2))


def _manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_2d_files_manifest_and_stable_cases(tmp_path):
    small = write_vessels(tmp_path / "a", dim=2, n=2, shape=SHAPE_2D, seed=3)
    manifest = write_vessels(tmp_path / "b", dim=2, n=3, shape=SHAPE_2D, seed=3)
    assert manifest == tmp_path / "b" / "manifest.csv"
    rows = _manifest(manifest)
    assert list(rows[0]) == ["id", "image", "label", "split", "truth"]
    assert [r["id"] for r in rows] == ["vessel_000", "vessel_001", "vessel_002"]
    assert [r["split"] for r in rows] == ["train", "train", "test"]
    row = rows[1]
    image = read_volume(manifest.parent / row["image"])
    label = read_volume(manifest.parent / row["label"], mask=True)
    truth = read_volume(manifest.parent / row["truth"], mask=True)
    radius = np.load(manifest.parent / "radius" / "vessel_001.npy")
    assert row["image"] == "images/vessel_001.png" and image.array.shape == (1, *SHAPE_2D)
    assert label.array.shape == SHAPE_2D and label.array.dtype == np.int64 and label.array.max() == 1
    case = make_vessel_case(2, SHAPE_2D, case_seed(3, 1))
    np.testing.assert_array_equal(label.array, case["noisy"])
    np.testing.assert_array_equal(truth.array, case["truth"])
    np.testing.assert_array_equal(radius, case["radius"])
    assert np.abs(image.array[0] - case["image"]).max() <= 0.5 / 255 + 1e-6  # 8-bit picture
    for key in ("image", "label", "truth"):  # case 1 does not depend on n
        first = (tmp_path / "a" / _manifest(small)[1][key]).read_bytes()
        assert first == (manifest.parent / row[key]).read_bytes()


def test_write_3d_nifti_with_spacing(tmp_path):
    manifest = write_vessels(tmp_path, dim=3, n=1, shape=SHAPE_3D, seed=0, spacing=(0.5, 0.5, 0.8))
    (row,) = _manifest(manifest)
    assert row["split"] == "train" and row["image"] == "images/vessel_000.nii.gz"
    image = read_volume(tmp_path / row["image"])
    label = read_volume(tmp_path / row["label"], mask=True)
    truth = read_volume(tmp_path / row["truth"], mask=True)
    radius = read_volume(tmp_path / "radius" / "vessel_000.nii.gz")
    assert image.array.shape == (1, *SHAPE_3D) and image.array.dtype == np.float32
    for volume in (image, label, truth, radius):
        assert volume.spacing == (0.5, 0.5, 0.8)
    assert label.array.dtype == np.int64 and truth.array.max() == 1
    assert radius.array[0][truth.array == 1].min() > 0 and not radius.array[0][truth.array == 0].any()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dim": 4}, "dim"),
        ({"shape": (32, 32, 32)}, "shape"),
        ({"shape": (32, 8)}, "shape"),
        ({"n": 0}, "n must"),
        ({"spacing": (1.0, -1.0)}, "spacing"),
        ({"seed": -1}, "seed"),
        ({"splits": (1, 1, 1)}, "splits"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    args = {"out": tmp_path, "dim": 2, "n": 2, "shape": (32, 32), **kwargs}
    with pytest.raises(ConfigError, match=name):
        write_vessels(**args)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="dim"):
        make_vessel_case(1, (32,), seed=0)
