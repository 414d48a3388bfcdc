"""Saliency maps written to disk: 2D overlays and maps, 3D NIfTI/montage/MIP, and the explanations index."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from labelwise.errors import DataError
from labelwise.explain.outputs import (
    mip,
    overlay_rgb,
    read_index,
    slice_indices,
    write_explanation,
    write_index,
)


def _top_colour(alpha: float, grey: float, cmap: str = "jet") -> np.ndarray:
    """The expected uint8 colour of a pixel with map value 1 over a grey value in [0, 1]."""
    top = np.array(colormaps[cmap](1.0)[:3])
    return np.round(((1 - alpha) * grey + alpha * top) * 255).astype(np.uint8)


def test_overlay_rgb_blends_colormap_over_scaled_image():
    image = np.zeros((1, 4, 5))
    image[0, 0, 0], image[0, 3, 4] = -2.0, 6.0  # min-max scaled: -2 -> 0, 6 -> 1, 0 -> 0.25
    cam = np.zeros((4, 5))
    cam[3, 4] = cam[1, 1] = 1.0
    rgb = overlay_rgb(image, cam, alpha=0.4)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[3, 4], _top_colour(0.4, 1.0))
    np.testing.assert_array_equal(rgb[1, 1], _top_colour(0.4, 0.25))
    bottom = np.round((0.6 * 0.0 + 0.4 * np.array(colormaps["jet"](0.0)[:3])) * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[0, 0], bottom)
    colour = overlay_rgb(np.stack([np.ones((4, 5)), np.zeros((4, 5)), np.full((4, 5), 0.5)]), cam, alpha=0.0)
    np.testing.assert_array_equal(colour[0, 0], [255, 0, 128])  # alpha 0: the image alone, channels kept
    with pytest.raises(DataError, match=r"\(3, 3\)"):
        overlay_rgb(image, np.zeros((3, 3)))
    with pytest.raises(DataError, match="C 1 or 3"):
        overlay_rgb(np.zeros((2, 4, 5)), cam)


def test_write_2d(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 32, 48)).astype(np.float32)
    cam = rng.random((32, 48)).astype(np.float32) * 0.5
    cam[5, 7] = 1.0
    out = tmp_path / "new" / "explanations"
    files = write_explanation(out, "img0_gradcam_c2", image, cam, title="gradcam · cat")
    assert files == {"overlay": "img0_gradcam_c2.png", "map": "img0_gradcam_c2.npy"}
    with Image.open(out / files["overlay"]) as im:
        assert im.mode == "RGB" and im.size == (48 * 8, 32 * 8)  # integer factor: short side 256
        assert im.info.get("Title") == "gradcam · cat"
        png = np.asarray(im)
    expected = overlay_rgb(image, cam)
    np.testing.assert_array_equal(png[::8, ::8], expected)  # nearest-neighbour upscale of the overlay
    np.testing.assert_array_equal(png[5 * 8 + 3, 7 * 8 + 5], expected[5, 7])
    # where the map is 1 the pixel is jet's top colour blended half-and-half with the (colour) image
    grey = (image[:, 5, 7] - image.min()) / (image.max() - image.min())
    top = np.array(colormaps["jet"](1.0)[:3])
    np.testing.assert_allclose(png[40, 56], (0.5 * grey + 0.5 * top) * 255, atol=1)
    saved = np.load(out / files["map"])
    assert saved.dtype == np.float32
    np.testing.assert_array_equal(saved, cam)
    assert not list(out.glob("*.tmp"))


def test_write_2d_grey_large_image_not_upscaled(tmp_path):
    files = write_explanation(tmp_path, "big", np.zeros((1, 300, 400)), np.ones((300, 400)))
    with Image.open(tmp_path / files["overlay"]) as im:
        assert im.size == (400, 300)
        np.testing.assert_array_equal(np.asarray(im)[0, 0], _top_colour(0.5, 0.0))


def test_write_3d(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 12, 20, 24))
    cam = rng.random((12, 20, 24)) * 0.8
    cam[7, 3, 4] = 1.0
    affine = np.array([[0, 0, 2.0, -10], [0, 1.5, 0, 5], [3.0, 0, 0, 1], [0, 0, 0, 1]])
    files = write_explanation(tmp_path, "vol", image, cam, affine=affine, title="scorecam")
    assert files == {"overlay": "vol_mip.png", "map": "vol.nii.gz", "montage": "vol_montage.png"}

    nifti = nib.load(tmp_path / "vol.nii.gz")
    assert nifti.shape == (12, 20, 24) and nifti.get_data_dtype() == np.float32
    np.testing.assert_allclose(nifti.affine, affine)
    np.testing.assert_allclose(nifti.get_fdata(), cam.astype(np.float32))

    with Image.open(tmp_path / "vol_montage.png") as im:
        assert im.width >= 3 * 128 and im.height >= 3 * 128  # 9 slices in a 3 x 3 grid
    assert slice_indices(12) == [0, 2, 3, 4, 6, 7, 8, 10, 11]
    assert slice_indices(4) == [0, 1, 2, 3]

    image_mip, cam_mip = mip(image, cam)
    np.testing.assert_array_equal(cam_mip, cam.max(axis=0))
    np.testing.assert_array_equal(image_mip, image.max(axis=1))
    with Image.open(tmp_path / "vol_mip.png") as im:
        png = np.asarray(im)
    assert png.shape == (20 * 13, 24 * 13, 3)
    np.testing.assert_array_equal(png[::13, ::13], overlay_rgb(image_mip, cam.max(axis=0)))
    assert not np.array_equal(png[::13, ::13], overlay_rgb(image_mip, cam.mean(axis=0)))
    np.testing.assert_array_equal(png[3 * 13, 4 * 13][None], overlay_rgb(image_mip, cam_mip)[3, 4][None])

    files = write_explanation(tmp_path, "identity", np.zeros((2, 3, 8, 8)), np.zeros((3, 8, 8)))
    np.testing.assert_array_equal(nib.load(tmp_path / files["map"]).affine, np.eye(4))


def test_shape_checks(tmp_path):
    with pytest.raises(DataError, match=r"map shape \(16, 16\).*\(8, 16, 16\)"):
        write_explanation(tmp_path, "x", np.zeros((1, 8, 16, 16)), np.zeros((16, 16)))
    with pytest.raises(DataError, match="x"):
        write_explanation(tmp_path, "x", np.zeros((16, 16)), np.zeros((16,)))
    with pytest.raises(DataError, match="4x4"):
        write_explanation(tmp_path, "x", np.zeros((1, 4, 4, 4)), np.zeros((4, 4, 4)), affine=np.eye(3))
    with pytest.raises(ValueError, match="plain file name"):
        write_explanation(tmp_path, "../x", np.zeros((1, 4, 4)), np.zeros((4, 4)))


def test_index_round_trip(tmp_path):
    assert read_index(tmp_path) is None
    entries = [
        {
            "input": "inputs/a.png",
            "method": "gradcam",
            "target": np.int64(2),
            "class_name": "cat",
            "score": np.float32(0.75),
            "files": {"overlay": "a.png", "map": "a.npy"},
        },
        {
            "input": "b.nii.gz",
            "method": "gradcam++",
            "target": 0,
            "class_name": "liver",
            "score": None,
            "files": {"overlay": "b_mip.png", "map": "b.nii.gz", "montage": "b_montage.png"},
        },
    ]
    metrics = [{"method": "gradcam", "pointing_game": 0.8, "deletion_auc": float("nan"), "n": 200}]
    path = write_index(tmp_path / "out", entries, metrics)
    assert path == tmp_path / "out" / "explanations.json"
    index = read_index(tmp_path / "out")
    assert index["entries"][0] == {**entries[0], "target": 2, "score": 0.75}
    assert index["entries"][1] == entries[1]
    assert index["metrics"] == [{"method": "gradcam", "pointing_game": 0.8, "deletion_auc": None, "n": 200}]
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))

    write_index(tmp_path, [])
    assert read_index(tmp_path) == {"entries": [], "metrics": []}
    with pytest.raises(ValueError, match="lacks class_name, score"):
        write_index(tmp_path, [{"input": "a", "method": "m", "target": 1, "files": {}}])
    (tmp_path / "explanations.json").write_text("{broken")
    with pytest.raises(DataError, match="explanations.json"):
        read_index(tmp_path)
    (tmp_path / "explanations.json").write_text('{"entries": {}}')
    with pytest.raises(DataError, match="must be lists"):
        read_index(tmp_path)
