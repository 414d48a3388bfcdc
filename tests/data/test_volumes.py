"""The table of file formats (data/volumes.py FORMATS) against real files: what each format stores, the refusal of
an unknown suffix, and write -> read round trips for every suffix with a writer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from labelwise.data.volumes import (
    FORMATS,
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    format_of,
    read_image,
    read_spacing,
    read_volume,
    stores_spacing,
    write_volume,
)
from labelwise.errors import DataError

WRITTEN = [(fmt, suffix) for fmt in FORMATS if fmt.write is not None for suffix in fmt.suffixes]


def test_each_suffix_has_one_format():
    suffixes = [s for fmt in FORMATS for s in fmt.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert IMAGE_SUFFIXES == tuple(suffixes)
    assert VOLUME_SUFFIXES == tuple(s for fmt in FORMATS if fmt.volume for s in fmt.suffixes)
    for fmt in FORMATS:
        for suffix in fmt.suffixes:
            assert format_of(f"case01{suffix.upper()}") is fmt


def test_nifti_written_by_nibabel_keeps_its_spacing(tmp_path):
    array = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    affine = np.diag([0.5, 0.7, 1.2, 1.0])
    affine[:3, 3] = [10.0, -4.0, 2.5]
    path = tmp_path / "case01.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(path))
    assert format_of(path).spacing and stores_spacing(path)
    volume = read_volume(path)
    assert volume.spacing == (0.5, 0.7, 1.2)
    np.testing.assert_array_equal(volume.array, array[None])
    np.testing.assert_allclose(volume.affine, affine)
    assert read_spacing(path) == (0.5, 0.7, 1.2)  # the header alone
    assert read_image(path).spacing == (0.5, 0.7, 1.2)
    labels = (array > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "case01_mask.nii"))
    mask = read_volume(tmp_path / "case01_mask.nii", mask=True)
    assert mask.spacing == (0.5, 0.7, 1.2) and mask.array.dtype == np.int64
    np.testing.assert_array_equal(mask.array, labels)


def test_png_reads_without_a_spacing(tmp_path):
    grey = np.arange(6 * 9, dtype=np.uint8).reshape(6, 9) * 4
    path = tmp_path / "case01.png"
    Image.fromarray(grey).save(path)
    assert not format_of(path).spacing and not stores_spacing(path)
    volume = read_volume(path)
    assert volume.spacing == (1.0, 1.0) and volume.affine is None
    np.testing.assert_array_equal(volume.array, grey[None].astype(np.float32) / 255)
    assert read_spacing(path) == (1.0, 1.0)
    Image.fromarray((grey > 100).astype(np.uint8) * 255).save(tmp_path / "case01_mask.png")
    mask = read_volume(tmp_path / "case01_mask.png", mask=True)  # a 0/255 picture is a binary mask
    assert mask.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(mask.array, (grey > 100).astype(np.int64))
    Image.fromarray(np.full((4, 5), 255, np.uint8)).save(tmp_path / "full_mask.png")  # every pixel foreground
    assert read_volume(tmp_path / "full_mask.png", mask=True).array.tolist() == [[1] * 5] * 4
    Image.fromarray(np.array([[0, 3], [255, 0]], np.uint8)).save(tmp_path / "labels.png")  # not 0/255: as written
    assert read_volume(tmp_path / "labels.png", mask=True).array.tolist() == [[0, 3], [255, 0]]


def test_unknown_suffix_refused_naming_the_table_suffixes(tmp_path):
    path = tmp_path / "case01.xyz"
    path.write_bytes(b"not an image")
    assert not stores_spacing(path)
    readable = [s for fmt in FORMATS if fmt.volume for s in fmt.suffixes]
    for read in (read_volume, read_image, format_of):
        with pytest.raises(DataError, match=r"unknown file type '\.xyz'") as err:
            read(path)
        expected = readable if read is read_volume else [s for fmt in FORMATS for s in fmt.suffixes]
        assert str(err.value).endswith("use one of " + ", ".join(expected))
    with pytest.raises(DataError, match="use one of " + ", ".join(s for fmt, s in WRITTEN)):
        write_volume(tmp_path / "out" / "case01.xyz", np.zeros((4, 4)))
    assert not (tmp_path / "out").exists()  # refused before anything is made
    npz = tmp_path / "data_0001.npz"  # a format read_image reads, not a volume or mask
    np.savez(npz, rnflt=np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"unknown file type '\.npz'; use one of " + ", ".join(readable)):
        read_volume(npz, mask=True)


def test_missing_file_named():
    with pytest.raises(DataError, match="file not found"):
        read_volume("nowhere/case01.nii.gz")
    with pytest.raises(DataError, match="file not found"):
        read_image("nowhere/data_0001.npz")


def _shapes(dims: int) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=dims, max_dims=dims, min_side=2, max_side=7)


@pytest.mark.parametrize(("fmt", "suffix"), WRITTEN, ids=[s for _, s in WRITTEN])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_write_then_read_gives_the_array_back(fmt, suffix, data):
    """Masks ``(*spatial)`` and images (2D ``(H, W)``, 3D ``(1, X, Y, Z)``; 8-bit values, what every format keeps) read
    back as written, images as ``(1, *spatial)``; the spacing where the format stores one, else 1s. Lossy formats
    (JPEG) keep the shapes and spacing."""
    dims = data.draw(st.sampled_from(fmt.dims), label="dims")
    shape = data.draw(_shapes(dims), label="shape")
    spacing = tuple(data.draw(st.lists(st.integers(1, 4000), min_size=dims, max_size=dims), label="spacing"))
    spacing = tuple(s / 1000 for s in spacing)
    labels = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 10)), label="labels")
    labels.flat[0], labels.flat[-1] = 0, 1  # a mask holds background and foreground (0/1 pictures: 0/255)
    grey = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 255)), label="grey")
    image = (grey / 255).astype(np.float32)
    expected_spacing = spacing if fmt.spacing else (1.0,) * dims
    with tempfile.TemporaryDirectory() as tmp:
        mask_path = write_volume(Path(tmp) / f"mask{suffix}", labels, spacing=spacing)
        image_path = write_volume(Path(tmp) / f"image{suffix}", image if dims == 2 else image[None], spacing=spacing)
        mask, volume = read_volume(mask_path, mask=True), read_volume(image_path)
    assert mask.spacing == expected_spacing and volume.spacing == expected_spacing
    assert mask.array.shape == shape and volume.array.shape == (1, *shape)
    assert mask.array.dtype == np.int64 and volume.array.dtype == np.float32
    if fmt.lossless:
        np.testing.assert_array_equal(mask.array, labels)
        np.testing.assert_array_equal(volume.array, image[None])
