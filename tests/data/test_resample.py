"""Reorientation to RAS+ and resampling to a target spacing (``data.reorient``, ``data.spacing``), and their undoing
on output: reading a non-canonical NIfTI, ``to_grid`` / ``from_grid``, the median spacing, the cache and
``predict`` writing back on the input's own grid; one end-to-end CLI run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, run_cli
from torch import nn

from labelwise.config import DataConfig, load_config
from labelwise.data.datasets import load_data, target_spacing
from labelwise.data.manifest import Case
from labelwise.data.patches import read_case
from labelwise.data.volumes import Volume, from_grid, read_volume, resample, to_grid, write_volume
from labelwise.inference import load_run, predict_files
from labelwise.training import train

# x runs right to left, y posterior... : axes permuted (array axis 0 is world z) and flipped, spacing (1, 1, 2)
ODD = np.array([[0.0, -1.0, 0.0, 20.0], [0.0, 0.0, -1.0, 30.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]])


def _odd_volume(tmp_path, shape=(6, 8, 10), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape).astype(np.float32)
    labels = (data > 0.5).astype(np.uint8) + (data > 1.5).astype(np.uint8)
    image, label = tmp_path / "odd.nii.gz", tmp_path / "odd_label.nii.gz"
    nib.save(nib.Nifti1Image(data, ODD), str(image))
    nib.save(nib.Nifti1Image(labels, ODD), str(label))
    return image, label, data, labels


def test_reorientation_matches_nibabel(tmp_path):
    image, label, data, labels = _odd_volume(tmp_path)
    raw = read_volume(image)
    assert raw.spacing == (2.0, 1.0, 1.0)
    canonical = nib.as_closest_canonical(nib.load(str(image)))
    volume, (mask,) = to_grid(raw, reorient=True, masks=[read_volume(label, mask=True).array])
    np.testing.assert_array_equal(volume.array[0], canonical.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(volume.affine, canonical.affine)
    assert volume.spacing == tuple(float(z) for z in canonical.header.get_zooms())
    np.testing.assert_array_equal(mask, np.asarray(nib.as_closest_canonical(nib.load(str(label))).dataobj))
    assert volume.grid.changed and not volume.grid.resampled
    np.testing.assert_array_equal(from_grid(volume.array, volume.grid)[0], data)  # back: the file's own order
    np.testing.assert_array_equal(from_grid(mask, volume.grid, mask=True), labels)

    # read_case applies it to the image, label, roi, weights and soft label alike
    weights = tmp_path / "odd_weight.nii.gz"
    nib.save(nib.Nifti1Image(np.abs(data) / np.abs(data).max(), ODD), str(weights))
    case = Case("odd", image, label, "train", roi=label, weight=weights)
    got, target, roi, weight, soft, votes = read_case(case, reorient=True)
    np.testing.assert_array_equal(got.array, volume.array)
    np.testing.assert_array_equal(target, mask)
    np.testing.assert_array_equal(roi, mask > 0)
    expected = nib.as_closest_canonical(nib.load(str(weights))).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(weight, expected, rtol=1e-6)
    assert soft is None and votes is None
    # a probability mask as the label (data.soft_labels): the label is where it exceeds 0.5
    case = Case("odd", image, weights, "train")
    arrays = read_case(case, reorient=True, soft=True)
    target, soft = arrays.target, arrays.soft
    np.testing.assert_allclose(soft, expected, rtol=1e-6)
    np.testing.assert_array_equal(target, expected > 0.5)
    # a canonical volume is left as it is
    plain = Volume(data[None], (1.0, 1.0, 1.0), np.eye(4))
    same, _ = to_grid(plain, reorient=True, spacing=[1.0, 1.0, 1.0])
    assert same.array is plain.array and not same.grid.changed


def test_resampling_shapes_and_labels():
    rng = np.random.default_rng(1)
    image = rng.random((2, 12, 10, 5)).astype(np.float32)
    labels = rng.integers(0, 4, (12, 10, 5))
    volume, (mask,) = to_grid(
        Volume(image, (0.5, 0.5, 2.0), np.diag([0.5, 0.5, 2.0, 1.0])), spacing=[1, 1, 1], masks=[labels]
    )
    assert volume.array.shape == (2, 6, 5, 10) and mask.shape == (6, 5, 10) and volume.spacing == (1.0, 1.0, 1.0)
    assert volume.array.dtype == np.float32 and mask.dtype == labels.dtype
    assert set(np.unique(mask)) <= set(np.unique(labels))  # nearest: no new labels
    np.testing.assert_allclose(np.diag(volume.affine)[:3], (1.0, 1.0, 1.0))
    assert from_grid(volume.array, volume.grid).shape == image.shape
    assert from_grid(mask, volume.grid, mask=True).shape == labels.shape
    # linear: a constant image stays constant; nearest up then down gives the labels back
    assert np.allclose(resample(np.full((1, 4, 4, 4), 3.0, np.float32), (8, 8, 2)), 3.0)
    up = resample(labels, (24, 20, 10), mask=True)
    np.testing.assert_array_equal(resample(up, labels.shape, mask=True), labels)
    # within 1e-3 relative: nothing is done
    near, _ = to_grid(Volume(image, (1.0005, 1.0, 1.0)), spacing=[1, 1, 1])
    assert near.array is image and not near.grid.changed


def test_median_spacing(tmp_path):
    spacings = [(0.5, 0.6, 2.0), (0.7, 0.6, 3.0), (0.9, 0.8, 2.5), (0.4, 0.6, 2.2)]
    cases = []
    for i, spacing in enumerate(spacings):
        path = tmp_path / f"c{i}.nii.gz"
        write_volume(path, np.zeros((4, 4, 4), np.float32), spacing)
        cases.append(type("C", (), {"image": path})())
    np.testing.assert_allclose(target_spacing(cases, "median"), np.median(np.array(spacings), axis=0))
    assert target_spacing(cases, None) is None and target_spacing(cases, [1, 2, 3]) == [1.0, 2.0, 3.0]
    # after reorientation: the spacing is permuted with the axes
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), ODD), str(tmp_path / "odd.nii.gz"))
    odd = [type("C", (), {"image": tmp_path / "odd.nii.gz"})()]
    assert target_spacing(odd, "median", reorient=True) == [1.0, 1.0, 2.0]
    assert target_spacing(odd, "median", reorient=False) == [2.0, 1.0, 1.0]


def _manifest(folder, n=4, shape=(8, 12, 12), seed=0):
    """n small volumes, spacing (2, 1, 1) in the file's axis order (the ODD affine: (1, 1, 2) once canonical)."""
    rng = np.random.default_rng(seed)
    rows = ["id,image,label,split"]
    for i in range(n):
        data = rng.random(shape).astype(np.float32) * 0.2
        data[:, 3:9, 4:8] += 1.0
        labels = (data > 0.6).astype(np.uint8)
        nib.save(nib.Nifti1Image(data, ODD), str(folder / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, ODD), str(folder / f"case{i}_label.nii.gz"))
        rows.append(f"case{i},case{i}.nii.gz,case{i}_label.nii.gz,{['train', 'train', 'val', 'test'][i % 4]}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_cache_key_and_grid(tmp_path):
    manifest = _manifest(tmp_path)
    base = {"data": {"manifest": str(manifest), "task": "segmentation", "intensity": "none"}}
    bundle = load_data(DataConfig(**base["data"]))
    assert bundle.preprocessing == {"intensity": "none", "reorient": True, "spacing": [1.0, 1.0, 2.0]}
    test = bundle.splits["test"]
    assert test.shapes[0] == (1, 12, 12, 8) and test.grids[0].changed and not test.grids[0].resampled
    canonical = nib.as_closest_canonical(nib.load(str(tmp_path / "case3.nii.gz"))).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(test.image[0][0].numpy(), canonical)
    resampled = load_data(DataConfig(**base["data"], spacing=[1, 1, 1]))
    assert resampled.splits["test"].shapes[0] == (1, 12, 12, 16) and resampled.splits["test"].grids[0].resampled
    kept = load_data(DataConfig(**base["data"], reorient=False, spacing=None))
    assert kept.splits["test"].shapes[0] == (1, 8, 12, 12)
    folders = {p.name for p in (tmp_path / ".labelwise-cache").iterdir() if p.name.startswith("v")}
    assert len(folders) == 3  # one scheme each: reorient and spacing are in the key
    meta = json.loads((test.entries[0].folder / "meta.json").read_text())
    assert meta["original"]["shape"] == [8, 12, 12] and meta["shape"] == [1, 12, 12, 8]
    assert kept.splits["test"].grids == [None]  # neither asked: no grid recorded


def test_uniform_spacing_leaves_arrays_as_before(tmp_path):
    """Canonical volumes already at the (median) spacing: the same arrays as without reorient and spacing."""
    rng = np.random.default_rng(3)
    rows = ["id,image,label,split"]
    for i in range(4):
        data = rng.random((6, 7, 5)).astype(np.float32)
        write_volume(tmp_path / f"v{i}.nii.gz", data, (0.3, 0.3, 0.6))
        write_volume(tmp_path / f"v{i}_label.nii.gz", (data > 0.5).astype(np.uint8), (0.3, 0.3, 0.6))
        rows.append(f"v{i},v{i}.nii.gz,v{i}_label.nii.gz,{['train', 'train', 'val', 'test'][i]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = {"manifest": str(tmp_path / "m.csv"), "task": "segmentation", "intensity": "zscore"}
    new = load_data(DataConfig(**data))
    old = load_data(DataConfig(**data, reorient=False, spacing=None))
    assert new.preprocessing["spacing"] == [0.3, 0.3, 0.6]
    for name in ("train", "val", "test"):
        for i in range(len(new.splits[name])):
            np.testing.assert_array_equal(new.splits[name].image[i].numpy(), old.splits[name].image[i].numpy())
            np.testing.assert_array_equal(new.splits[name].target[i].numpy(), old.splits[name].target[i].numpy())
            assert not new.splits[name].grids[i].changed


class Pointwise(nn.Module):
    """Logits (0, x - 0.5): foreground where the input exceeds 0.5, linear in it (so it commutes with resampling)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), x - 0.5], dim=1)


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("resample") / "run"
    cfg = {
        "name": "resample",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 12, "size": 16, "dim": 3, "num_classes": 2}, "task": "segmentation", "batch_size": 4},
        "model": {"name": "unet", "channels": [4, 8], "norm": "instance"},
        "trainer": {"max_steps": 1, "checkpoint_every": 1, "log_every": 1},
    }
    train(load_config(cfg), path)
    return path


@pytest.mark.parametrize("spacing", [None, [1.0, 1.0, 1.0]])
def test_predict_writes_back_on_the_input_grid(synth_run, tmp_path, spacing):
    run = load_run(synth_run)
    assert "reorient" not in run.spec["preprocessing"]  # a synthetic run: neither (old runs read as before)
    run.spec["preprocessing"].update({"reorient": True, "spacing": spacing, "intensity": "none"})
    run.method.networks[run.method.predictor] = Pointwise()
    rng = np.random.default_rng(0)
    data = np.zeros((6, 10, 12), np.float32)  # array axis 0 is world z (spacing 2): constant along it
    data[:, 2:7, 3:9] = rng.random((5, 6)) + 0.2
    nib.save(nib.Nifti1Image(data, ODD), str(tmp_path / "x.nii.gz"))
    nib.save(nib.Nifti1Image((data > 0.5).astype(np.uint8), ODD), str(tmp_path / "x_mask.nii.gz"))
    image = run.preprocess(run.read_raw(tmp_path / "x.nii.gz"))
    assert image.array.shape == ((1, 10, 12, 12) if spacing else (1, 10, 12, 6))
    (entry,) = predict_files(
        run, [tmp_path / "x.nii.gz"], tmp_path / "out", reference=tmp_path / "x_mask.nii.gz", progress=False
    )
    mask, probability = nib.load(tmp_path / "out" / entry["mask"]), nib.load(tmp_path / "out" / entry["probability"])
    for written in (mask, probability):
        assert written.shape == data.shape
        np.testing.assert_allclose(written.affine, ODD)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (data > 0.5).astype(np.uint8))
    np.testing.assert_allclose(probability.get_fdata(), 1 / (1 + np.exp(-(data - 0.5))), atol=1e-5)
    assert entry["dice"] == pytest.approx(1.0) and entry["shape"] == [6, 10, 12]


def test_train_and_predict_cli(tmp_path):
    manifest = _manifest(tmp_path)
    run = tmp_path / "run"
    result = run_cli(
        "train",
        str(REPO / "configs" / "unet-mss-synthetic-3d.yaml"),
        "--run-dir",
        str(run),
        "--set",
        f"data.manifest={manifest}",
        "--set",
        "data.spacing=[1,1,1]",
        "--set",
        "data.patch_size=[16,16,16]",
        "--set",
        "trainer.max_steps=2",
        "--set",
        "trainer.checkpoint_every=2",
        "--set",
        "trainer.val_every=0",
        "--set",
        "model.channels=[2,4,4,4,4]",
        "--set",
        "data.patches_per_volume=2",
        "--set",
        "data.batch_size=2",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads((run / "inference.json").read_text())
    assert spec["preprocessing"]["spacing"] == [1.0, 1.0, 1.0] and spec["preprocessing"]["reorient"] is True
    saved = nib.load(run / "predictions" / "test" / "masks" / "case3.nii.gz")  # the run's own test outputs
    assert saved.shape == (8, 12, 12)
    np.testing.assert_allclose(saved.affine, ODD)
    out = tmp_path / "pred"
    result = run_cli(
        "predict",
        str(run),
        "--input",
        str(tmp_path / "case3.nii.gz"),
        "--out",
        str(out),
        "--reference",
        str(tmp_path / "case3_label.nii.gz"),
    )
    assert result.returncode == 0, result.stderr
    written = nib.load(out / "masks" / "case3.nii.gz")
    assert written.shape == (8, 12, 12)
    np.testing.assert_allclose(written.affine, ODD)
    entry = json.loads((out / "predictions.json").read_text())["cases"][0]
    assert entry["shape"] == [8, 12, 12] and "dice" in entry
