"""The built-in shapes dataset: determinism, layout, labels vs masks, balance, splits, separability."""

from __future__ import annotations

import time

import numpy as np
import pytest

from labelwise.data.synth import make_shapes
from labelwise.errors import ConfigError, LabelwiseError


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@pytest.mark.parametrize("dim", [2, 3])
def test_layout_and_dtypes(dim):
    size = 32 if dim == 2 else 16
    a = make_shapes(n=40, size=size, dim=dim, num_classes=3)
    assert set(a) == {"image", "label", "mask", "split", "class_names"}
    assert a["image"].shape == (40, 1, *[size] * dim) and a["image"].dtype == np.float32
    assert a["label"].shape == (40,) and a["label"].dtype == np.int64
    assert a["mask"].shape == (40, *[size] * dim) and a["mask"].dtype == np.uint8
    assert a["split"].shape == (40,) and a["split"].dtype.kind == "U"
    assert a["class_names"].dtype.kind == "U" and len(a["class_names"]) == 3
    assert np.isfinite(a["image"]).all()


def test_deterministic_for_a_seed():
    a, b = make_shapes(50, seed=3), make_shapes(50, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = make_shapes(50, seed=4)
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("num_classes", [2, 3, 4])
@pytest.mark.parametrize("dim", [2, 3])
def test_mask_matches_label_and_object_inside(num_classes, dim):
    size = 24 if dim == 2 else 12
    a = make_shapes(n=48, size=size, dim=dim, num_classes=num_classes, seed=1)
    label, mask = a["label"], a["mask"]
    assert set(np.unique(label)) == set(range(num_classes))
    for value in np.unique(mask):  # only 0 and label + 1, per sample
        assert value == 0 or value - 1 in label
    flat = _flat(mask).astype(np.int64)
    assert ((flat == 0) | (flat == (label + 1)[:, None])).all()
    assert (flat.max(axis=1) == label + 1).all()  # every sample has its object
    # Fully inside: nothing on the border of the image.
    border = np.ones([size] * dim, dtype=bool)
    border[(slice(1, -1),) * dim] = False
    assert not (mask[:, border] > 0).any()


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_classes_balanced_and_splits(num_classes):
    n = 301
    a = make_shapes(n=n, size=16, num_classes=num_classes)
    counts = np.bincount(a["label"], minlength=num_classes)
    assert counts.max() - counts.min() <= 1
    assert set(np.unique(a["split"])) == {"train", "val", "test"}
    share = {s: np.mean(a["split"] == s) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.70, abs=0.03)
    assert share["val"] == pytest.approx(0.15, abs=0.03)
    assert share["test"] == pytest.approx(0.15, abs=0.03)
    for s in ("train", "val", "test"):  # stratified: every class in every split
        assert set(a["label"][a["split"] == s]) == set(range(num_classes))
    # Classes are shuffled, not in round-robin order.
    assert not np.array_equal(a["label"], np.arange(n) % num_classes)


@pytest.mark.parametrize("dim", [2, 3])
def test_object_brighter_than_background(dim):
    a = make_shapes(n=60, size=24 if dim == 2 else 12, dim=dim, num_classes=4, noise=0.3, seed=2)
    image, obj = _flat(a["image"][:, 0]), _flat(a["mask"]) > 0
    inside = (image * obj).sum(1) / obj.sum(1)
    outside = (image * ~obj).sum(1) / (~obj).sum(1)
    assert (inside > outside).all()
    assert np.mean(inside - outside) > 0.5


def test_noise_level():
    clean = make_shapes(n=20, noise=0.0, seed=5)
    noisy = make_shapes(n=20, noise=0.3, seed=5)
    np.testing.assert_array_equal(clean["mask"], noisy["mask"])
    residual = noisy["image"] - clean["image"]
    assert residual.std() == pytest.approx(0.3, rel=0.05)


def test_class_names_by_dim():
    assert list(make_shapes(8, num_classes=4)["class_names"]) == ["disc", "square", "cross", "ring"]
    assert list(make_shapes(8, size=8, dim=3, num_classes=4)["class_names"]) == ["ball", "cube", "cross", "shell"]


@pytest.mark.parametrize("size, dim", [(8, 2), (9, 2), (8, 3), (9, 3)])
def test_smallest_sizes_have_objects_inside(size, dim):
    mask = make_shapes(n=80, size=size, dim=dim, num_classes=4, seed=7)["mask"]
    assert (_flat(mask) > 0).sum(1).min() >= 1
    border = np.ones([size] * dim, dtype=bool)
    border[(slice(1, -1),) * dim] = False
    assert not (mask[:, border] > 0).any()


@pytest.mark.parametrize(
    "kwargs", [dict(n=0), dict(num_classes=5), dict(num_classes=1), dict(dim=4), dict(size=4), dict(noise=-1.0)]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError) as info:
        make_shapes(**{"n": 4, **kwargs})
    assert isinstance(info.value, LabelwiseError)
    assert next(iter(kwargs)) in str(info.value)


def test_fast():
    start = time.perf_counter()
    make_shapes(n=1000, size=32, dim=2)
    assert time.perf_counter() - start < 1.0
