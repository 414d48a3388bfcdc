"""Sliding-window prediction: windows blend back to the plain forward; ``predict_files`` end to end on tiny runs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from labelwise.config import load_config
from labelwise.data.volumes import read_volume, write_volume
from labelwise.errors import ConfigError, DataError
from labelwise.inference import load_run
from labelwise.inference.figures import FN_RGB, FP_RGB, TP_RGB, project
from labelwise.inference.segmentation import predict_files, probabilities
from labelwise.models import UNetMSS
from labelwise.models.windows import default_roi, model_divisor, sliding_window_predict
from labelwise.training import train


class Pointwise(nn.Module):
    """A 1x1(x1) convolution; with ``divisor`` set it refuses inputs whose sizes are not multiples of it."""

    def __init__(self, dims: int, in_channels: int = 2, out_channels: int = 3, divisor: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(in_channels, out_channels, 1)
        if divisor is not None:
            self.divisor = divisor
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        if getattr(self, "divisor", None):
            assert all(s % self.divisor == 0 for s in x.shape[2:]), x.shape
        return self.conv(x)


@pytest.mark.parametrize(
    "spatial, roi",
    [
        ((50, 37), 32),  # several windows, sizes not divisible by 16
        ((9, 7), 32),  # smaller than the window
        ((20, 9, 33), 16),  # 3D, several windows
        ((5, 7, 6), (16, 16, 16)),  # 3D, smaller than the window
    ],
)
@pytest.mark.parametrize("divisor", [None, 16])
def test_windows_blend_back_to_the_plain_forward(spatial, roi, divisor):
    model = Pointwise(len(spatial), divisor=divisor).train()
    image = torch.randn(1, 2, *spatial)
    expected = model.conv(image).detach()
    logits = sliding_window_predict(model, image, roi, overlap=0.5)
    assert logits.shape == expected.shape and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert model.training  # the model's mode is restored
    if divisor:
        assert all(s % 16 == 0 for shape in model.shapes for s in shape)


def test_default_roi_and_divisors():
    assert default_roi((96, 96, 96)) == (64, 64, 64)
    assert default_roi((40, 100, 7), divisor=16) == (48, 64, 16)
    assert default_roi((300, 50)) == (256, 50)
    assert default_roi((30, 30, 30), 16, patch_size=[20, 20, 20]) == (32, 32, 32)
    from monai.networks.nets import UNet

    assert model_divisor(UNet(3, 1, 2, (16, 32, 64, 128), (2, 2, 2))) == 8
    assert model_divisor(nn.Sequential(UNetMSS(2, 1, 1, (2, 2, 2, 2, 2)))) == 16
    assert model_divisor(nn.Conv2d(1, 1, 1)) == 1


def test_unet_mss_on_sizes_not_divisible_by_16():
    model = UNetMSS(2, 1, 2, (2, 2, 2, 2, 2)).train()  # deep supervision: the windows' tuple gives its first logits
    logits = sliding_window_predict(model, torch.randn(2, 1, 40, 23), 32, overlap=0.5)
    assert logits.shape == (2, 2, 40, 23) and torch.isfinite(logits).all()


def test_probabilities():
    logits = torch.tensor([[[-3.0, 0.0], [0.2, 4.0]]])  # one channel (1, 2, 2)
    probability, mask = probabilities(logits)
    np.testing.assert_allclose(probability, torch.sigmoid(logits[0]).numpy(), rtol=1e-6)
    assert probability.dtype == np.float32 and mask.dtype == np.int64
    assert mask.tolist() == [[0, 0], [1, 1]]
    assert probabilities(logits, 0.9)[1].tolist() == [[0, 0], [0, 1]]
    two_modes = torch.cat([torch.full((1, 4, 8), -4.0), torch.full((1, 4, 8), 1.0)], 1)  # p 0.018 and 0.73
    assert probabilities(two_modes, "otsu")[1].sum() == 32
    assert probabilities(torch.zeros(1, 3, 3), "otsu")[1].sum() == 0  # constant map: 0.5, nothing above it
    three = torch.randn(3, 4, 5, 6)
    probability, mask = probabilities(three)
    soft = three.softmax(0)
    np.testing.assert_array_equal(mask, soft.argmax(0).numpy())
    np.testing.assert_allclose(probability, 1 - soft[0].numpy(), atol=1e-6)
    probability, mask = probabilities(three, 0.7)
    np.testing.assert_array_equal(mask > 0, probability > 0.7)
    np.testing.assert_array_equal(mask[mask > 0], soft[1:].argmax(0).numpy()[mask > 0] + 1)
    with pytest.raises(ConfigError):
        probabilities(three, 1.5)


def test_project_follows_the_affine():
    volume = np.zeros((4, 5, 6))
    volume[1, 3, 2] = 1
    np.testing.assert_array_equal(project(volume), np.rot90(volume.max(2)))
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # x runs right to left: the view flips it back
    np.testing.assert_array_equal(project(volume, flipped), np.rot90(volume[::-1].max(2)))
    swapped = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # array axis 1 is z
    np.testing.assert_array_equal(project(volume, swapped), np.rot90(volume.max(1)))


def _segmentation_run(path, dim):
    cfg = {
        "name": f"predict-{dim}d",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 40, "size": 16, "dim": dim, "num_classes": 2}, "task": "segmentation", "batch_size": 4},
        "model": {"name": "unet", "channels": [4, 8], "norm": "instance"},
        "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
    }
    train(load_config(cfg), path)
    return load_run(path)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    return _segmentation_run(tmp_path_factory.mktemp("predict") / "run-3d", 3)


def _downsampled(png_path, shape):
    """The figure back at the projection's size (figures are upscaled by an integer factor)."""
    rgb = np.asarray(Image.open(png_path).convert("RGB"))
    factor = rgb.shape[0] // shape[0]
    assert rgb.shape[:2] == (shape[0] * factor, shape[1] * factor)
    return rgb[::factor, ::factor]


def test_predict_3d_end_to_end(run_3d, tmp_path):
    trained = run_3d
    rng = np.random.default_rng(0)
    image = (rng.standard_normal((20, 18, 14)) * 0.3).astype(np.float32)
    image[5:12, 6:12, 4:10] += 1.0
    spacing = (0.5, 0.6, 0.8)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (10.0, -5.0, 3.0)
    inputs = tmp_path / "inputs"
    write_volume(inputs / "case1.nii.gz", image, spacing, affine)
    out = tmp_path / "out"
    lines: list[str] = []

    # argmax masks, without a reference
    (entry,) = predict_files(trained, [inputs], out, progress=lines.append)
    assert len(lines) == 1 and "case1" in lines[0] and " s," in lines[0]
    assert entry["threshold"] == "argmax" and entry["diff"] is None and "dice" not in entry
    probability_file, mask_file = nib.load(out / entry["probability"]), nib.load(out / entry["mask"])
    for written in (probability_file, mask_file):
        assert written.shape == image.shape
        np.testing.assert_allclose(written.affine, affine)
        np.testing.assert_allclose(written.header.get_zooms(), spacing, rtol=1e-6)
    assert probability_file.get_data_dtype() == np.float32 and mask_file.get_data_dtype() == np.uint8
    probability, mask = probability_file.get_fdata(dtype=np.float32), np.asarray(mask_file.dataobj)
    logits = sliding_window_predict(trained.model, torch.from_numpy(image)[None, None], entry["window"])[0]
    np.testing.assert_array_equal(mask, logits.softmax(0).argmax(0).numpy())
    np.testing.assert_allclose(probability, 1 - logits.softmax(0)[0].numpy(), atol=1e-6)
    assert (out / entry["mip"]).is_file() and entry["mip"] == "figures/case1_mip.png"

    # a threshold that leaves most rays of the projection empty, and a reference with all three kinds of pixels
    threshold = float(np.quantile(probability, 0.97))
    predicted = probability > threshold
    rays = predicted.any(2)
    empty, hit = np.argwhere(~rays), np.argwhere(rays)
    assert len(empty) > 10 and len(hit) > 4
    reference = np.zeros(image.shape, np.uint8)
    for x, y in empty[::2]:
        reference[x, y, 3:5] = 1  # false negatives
    for x, y in hit[::2]:
        reference[x, y] = predicted[x, y]  # true positives; the other half of the hit rays are false positives
    write_volume(tmp_path / "refs" / "case1_mask.nii.gz", reference, spacing, affine)
    (entry,) = predict_files(
        trained, [inputs / "case1.nii.gz"], out, threshold=threshold, reference=tmp_path / "refs", progress=False
    )
    mask = np.asarray(nib.load(out / entry["mask"]).dataobj)
    np.testing.assert_array_equal(mask > 0, predicted)
    assert entry["threshold"] == pytest.approx(threshold)
    inter = (predicted & (reference > 0)).sum()
    assert entry["dice"] == pytest.approx(2 * inter / (predicted.sum() + reference.sum()))
    assert len(entry["dice_per_class"]) == trained.num_classes - 1
    pred_view, ref_view = np.rot90(rays), np.rot90(reference.any(2))
    diff = _downsampled(out / entry["diff"], pred_view.shape)
    assert (ref_view & ~pred_view).any() and (pred_view & ~ref_view).any() and (pred_view & ref_view).any()
    assert (diff[ref_view & ~pred_view] == FN_RGB).all()
    assert (diff[pred_view & ~ref_view] == FP_RGB).all()
    assert (diff[pred_view & ref_view] == TP_RGB).all()
    assert not (diff[~pred_view & ~ref_view] == FN_RGB).all(1).any()
    mip = _downsampled(out / entry["mip"], pred_view.shape)
    assert (mip[~pred_view] == mip[~pred_view][:, :1]).all()  # grey where nothing is predicted

    index = json.loads((out / "predictions.json").read_text())
    assert [c["id"] for c in index["cases"]] == ["case1"]  # re-running replaces the case's entry
    assert index["mean_dice"] == pytest.approx(entry["dice"])
    assert index["cases"][0]["shape"] == [20, 18, 14] and index["cases"][0]["spacing"] == list(spacing)


def test_predict_rejects_mismatched_references(run_3d, tmp_path):
    image = np.random.default_rng(1).standard_normal((12, 12, 10)).astype(np.float32)
    write_volume(tmp_path / "in" / "a.nii.gz", image, (1.0, 1.0, 2.0))
    write_volume(tmp_path / "shape" / "a.nii.gz", np.zeros((12, 12, 9), np.uint8), (1.0, 1.0, 2.0))
    with pytest.raises(DataError, match=r"a\.nii\.gz.*does not match the input .*a\.nii\.gz"):
        predict_files(run_3d, [tmp_path / "in"], tmp_path / "out", reference=tmp_path / "shape", progress=False)
    write_volume(tmp_path / "spacing" / "a.nii.gz", np.zeros((12, 12, 10), np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="spacing"):
        predict_files(run_3d, [tmp_path / "in"], tmp_path / "out", reference=tmp_path / "spacing", progress=False)
    with pytest.raises(DataError, match="no reference mask matches"):
        predict_files(run_3d, [tmp_path / "in"], tmp_path / "out", reference=tmp_path / "in", progress=False)


def test_predict_2d_pictures(tmp_path):
    trained = _segmentation_run(tmp_path / "run-2d", 2)
    rng = np.random.default_rng(2)
    picture = (rng.random((21, 30)) * 120).astype(np.uint8)
    picture[5:15, 8:20] += 120
    Image.fromarray(picture).save(tmp_path / "img.png")
    reference = np.zeros((21, 30), np.uint8)
    reference[5:15, 8:20] = 1
    write_volume(tmp_path / "refs" / "img.png", reference)
    (entry,) = predict_files(
        trained, [tmp_path / "img.png"], tmp_path / "out", threshold="otsu", reference=tmp_path / "refs", progress=False
    )
    out = tmp_path / "out"
    probability = np.load(out / entry["probability_npy"])
    mask = read_volume(out / entry["mask"], mask=True).array
    assert probability.shape == mask.shape == (21, 30) and probability.dtype == np.float32
    assert read_volume(out / entry["probability"]).array.shape == (1, 21, 30)
    # the oracles: scikit-image's Otsu threshold of the probabilities, and the Dice by hand
    from skimage.filters import threshold_otsu

    assert entry["threshold"] == pytest.approx(threshold_otsu(probability.astype(np.float64)))
    np.testing.assert_array_equal(mask > 0, probability > entry["threshold"])
    inter = ((mask > 0) & (reference > 0)).sum()
    assert entry["spacing"] == [1.0, 1.0]
    assert entry["dice"] == pytest.approx(2 * inter / ((mask > 0).sum() + reference.sum()))
    diff = _downsampled(out / entry["diff"], mask.shape)
    assert (diff[(reference > 0) & (mask == 0)] == FN_RGB).all()
    assert (out / entry["mip"]).is_file()
    # an override holds for its call only: the next call predicts with the run's own settings (argmax here)
    (again,) = predict_files(trained, [tmp_path / "img.png"], tmp_path / "again", progress=False)
    assert again["threshold"] == "argmax" and again["overlap"] == 0.5


def test_predict_files_needs_a_segmentation_run(tmp_path):
    cfg = {
        "name": "cls",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 30, "size": 16}, "batch_size": 4},
        "model": {"name": "resnet10", "channels": [4, 4, 4, 4]},
        "trainer": {"max_steps": 1, "checkpoint_every": 1},
    }
    train(load_config(cfg), tmp_path / "run")
    with pytest.raises(DataError, match="a classification run; .*predict_classes"):
        predict_files(load_run(tmp_path / "run"), [tmp_path], tmp_path / "out")


class MaxNormalised(nn.Module):
    """No parameters, and an output that depends on the whole input (as the frangi method's vesselness)."""

    def forward(self, x):
        return x / x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)


def test_parameter_free_models_see_whole_images():
    image = torch.rand(1, 1, 150, 20, 20) + 0.1
    logits = sliding_window_predict(MaxNormalised(), image)
    torch.testing.assert_close(logits, image / image.max())
