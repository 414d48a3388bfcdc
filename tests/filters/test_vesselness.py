"""Frangi vesselness and the thresholded frangi baseline: tubes over blobs, range, spacing, guards, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labelwise.errors import ConfigError, DataError
from labelwise.filters.vesselness import frangi_segment, remove_small_components, vesselness


def _tube_and_blob(dim: int, size: int = 48, radius: float = 1.5, bright: bool = True) -> np.ndarray:
    """A slightly oblique straight tube through (12, 24[, 24]) mostly along the last axis, and a ball (disc) of
    radius 5 at (36, 24[, 24]); background 0.2, both 0.8 at their centre (inverted when not ``bright``)."""
    grid = np.indices((size,) * dim, dtype=np.float64)
    rel = [grid[0] - 12.0] + [grid[a] - 24.0 for a in range(1, dim)]
    axis = np.zeros(dim)
    axis[0], axis[-1] = 0.15, 1.0
    axis /= np.linalg.norm(axis)
    along = sum(r * u for r, u in zip(rel, axis))
    tube = sum(r**2 for r in rel) - along**2
    ball = (grid[0] - 36.0) ** 2 + sum((grid[a] - 24.0) ** 2 for a in range(1, dim))
    image = 0.2 + 0.6 * np.exp(-tube / (2 * radius**2)) + 0.6 * (ball <= 25)
    return image if bright else 1.0 - image


@pytest.mark.parametrize("dim", [2, 3])
def test_tube_answers_more_than_blob_and_background(dim):
    image = _tube_and_blob(dim)
    v = vesselness(image)
    assert v.shape == image.shape and v.dtype == np.float32
    assert v.min() >= 0.0 and v.max() == pytest.approx(1.0)
    on_tube = v[(12,) + (24,) * (dim - 1)]
    assert on_tube > 0.3
    assert on_tube > 3 * v[(36,) + (24,) * (dim - 1)]  # the ball's centre
    assert on_tube > 3 * v[(24,) + (4,) * (dim - 1)]  # background, far from both


def test_dark_vessels_need_bright_false():
    # a little noise: skimage's frangi lets through a perfectly straight noise-free tube of either polarity
    image = _tube_and_blob(2, bright=False) + np.random.default_rng(0).normal(0.0, 0.01, (48, 48))
    dark = vesselness(image, bright=False)
    assert dark[12, 24] > 0.3
    assert vesselness(image, bright=True)[12, 24] < 0.1 * dark[12, 24]


def test_anisotropic_spacing_keeps_shape_and_finds_the_tube():
    image = _tube_and_blob(3, size=32)[:, :, ::2]  # the tube runs mostly along the coarse axis
    v = vesselness(image, spacing=(1.0, 1.0, 2.0))
    assert v.shape == image.shape and v.dtype == np.float32
    assert 0.0 <= v.min() and v.max() <= 1.0
    assert v[12, 24, 12] > 0.3 and v[12, 24, 12] > 3 * v[24, 4, 4]


def test_constant_image_gives_empty_mask_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in (np.zeros((20, 20)), np.full((16, 16, 16), 0.7, dtype=np.float32)):
            mask, prob = frangi_segment(image)
            assert mask.dtype == np.int64 and prob.dtype == np.float32
            assert mask.shape == image.shape and not mask.any() and not prob.any()


def test_segment_thresholds_and_min_size():
    image = _tube_and_blob(2)
    mask, prob = frangi_segment(image, threshold="otsu")
    assert set(np.unique(mask)) == {0, 1} and mask[12, 24] == 1
    np.testing.assert_array_equal(frangi_segment(image, threshold=0.5)[0], (prob > 0.5).astype(np.int64))
    assert not frangi_segment(image, threshold=1.0)[0].any()
    speck = np.zeros((12, 12), dtype=bool)
    speck[1, 1] = True
    speck[5:9, 5:9] = True
    kept = remove_small_components(speck, 4)
    assert not kept[1, 1] and kept[5:9, 5:9].all()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"threshold": "mean"}, ConfigError),
        ({"threshold": 1.5}, ConfigError),
        ({"sigmas": ()}, ConfigError),
        ({"sigmas": (1.0, -1.0)}, ConfigError),
        ({"spacing": (1.0, 0.0)}, ConfigError),
        ({"spacing": (1.0, 1.0, 1.0)}, ConfigError),
        ({"min_size": -1}, ConfigError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        frangi_segment(np.zeros((16, 16)), **kwargs)


def test_bad_images():
    with pytest.raises(DataError, match="shape"):
        vesselness(np.zeros(16))
    with pytest.raises(DataError, match="NaN"):
        vesselness(np.full((16, 16), np.nan))


def test_otsu_threshold_of_a_map_spanning_a_few_float32_ulps():
    """A barely trained network's probabilities can differ by a few ulps; skimage's Otsu then cannot make its 256
    bins in float32 (seen in a 3-step run, scikit-image 0.25). The threshold must still come out between the two
    values, whether or not scikit-image has learnt to bin them."""
    from skimage.filters import threshold_otsu

    from labelwise.filters.vesselness import otsu_threshold

    values = np.full(1000, 0.25, dtype=np.float32)
    values[:300] = np.nextafter(np.float32(0.25), np.float32(1))
    t = otsu_threshold(values)
    assert values.min() <= t < values.max()
    # the oracle where skimage can bin the values: the same maps spread over a wider range
    spread = np.where(values > 0.25, 0.75, 0.25).astype(np.float32)
    assert otsu_threshold(spread) == pytest.approx(threshold_otsu(spread))
    assert otsu_threshold(np.zeros(5, np.float32)) == 0.5 and otsu_threshold(np.zeros(0)) == 0.5
