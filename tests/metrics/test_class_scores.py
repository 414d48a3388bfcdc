"""Per-class segmentation scores (labelwise.metrics.surface.class_scores) against hand computations and MONAI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from labelwise.errors import DataError
from labelwise.metrics.surface import SCORE_NAMES, class_scores, segmentation_scores


def blobs(rng: np.random.Generator, shape: tuple[int, ...], classes: int = 3, n: int = 6) -> np.ndarray:
    """A label map of random boxes with labels 1..classes-1 (later boxes overwrite earlier ones)."""
    labels = np.zeros(shape, np.int64)
    for _ in range(n):
        start = [int(rng.integers(0, s - 4)) for s in shape]
        size = [int(rng.integers(2, 8)) for _ in shape]
        labels[tuple(slice(a, a + b) for a, b in zip(start, size))] = int(rng.integers(1, classes))
    return labels


def one_hot(labels: np.ndarray, k: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels == c for c in range(k)])[None].astype(np.float32))


def test_per_class_dice_by_hand():
    pred = np.zeros((6, 6), np.int64)
    truth = np.zeros((6, 6), np.int64)
    pred[0:2, 0:2] = 1  # 4 voxels of class 1
    truth[0:2, 0:3] = 1  # 6 voxels, 4 shared: Dice 8 / 10
    pred[4, 0:4] = 2  # 4 voxels of class 2
    truth[4:6, 0:2] = 2  # 4 voxels, 2 shared: Dice 4 / 8
    result = class_scores(pred, truth, names=["kidney", "cyst"])
    assert list(result["per_class"]) == ["kidney", "cyst"]
    assert result["per_class"]["kidney"]["dice"] == pytest.approx(0.8)
    assert result["per_class"]["kidney"]["precision"] == pytest.approx(1.0)
    assert result["per_class"]["kidney"]["sensitivity"] == pytest.approx(4 / 6)
    assert result["per_class"]["cyst"]["dice"] == pytest.approx(0.5)
    assert result["per_class"]["cyst"]["iou"] == pytest.approx(2 / 6)
    # the whole foreground: 8 and 10 voxels, 6 shared
    assert result["foreground"]["dice"] == pytest.approx(12 / 18)
    assert result["foreground"] == pytest.approx(segmentation_scores(pred, truth))
    for k, name in ((1, "kidney"), (2, "cyst")):
        assert result["per_class"][name] == pytest.approx(segmentation_scores(pred == k, truth == k), nan_ok=True)


@pytest.mark.parametrize("shape", [(40, 36), (20, 18, 16)])
def test_per_class_dice_matches_monai(shape):
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(len(shape))
    for _ in range(4):
        pred, truth = blobs(rng, shape, 4), blobs(rng, shape, 4)
        result = class_scores(pred, truth, num_classes=4)
        expected = DiceMetric(include_background=False, reduction="none")(one_hot(pred, 4), one_hot(truth, 4))
        ours = np.array([result["per_class"][str(k)]["dice"] for k in (1, 2, 3)])
        in_truth = np.array([(truth == k).any() for k in (1, 2, 3)])
        np.testing.assert_allclose(ours[in_truth], expected[0].numpy()[in_truth], rtol=1e-6, atol=1e-6)
        # a class missing from the truth: MONAI's ignore_empty=False gives 0 where it is predicted (as here) and 1
        # where it is absent from both (nan here, left out of the means)
        lenient = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        empty = lenient(one_hot(pred, 4), one_hot(truth, 4))[0].numpy()
        for k in np.flatnonzero(~in_truth) + 1:
            if (pred == k).any():
                assert result["per_class"][str(k)]["dice"] == 0.0 == empty[k - 1]
            else:
                assert math.isnan(result["per_class"][str(k)]["dice"]) and empty[k - 1] == 1.0


@pytest.mark.parametrize("shape,spacing", [((40, 36), (0.7, 1.3)), ((20, 18, 16), (0.5, 0.5, 0.9))])
def test_per_class_hd95_matches_monai(shape, spacing):
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(6):
        pred, truth = blobs(rng, shape, 3, 8), blobs(rng, shape, 3, 8)
        result = class_scores(pred, truth, spacing, num_classes=3)
        with warnings.catch_warnings():  # MONAI 1.6: a deprecated argument of its own get_mask_edges
            warnings.simplefilter("ignore", FutureWarning)
            expected = compute_hausdorff_distance(
                one_hot(pred, 3), one_hot(truth, 3), include_background=False, percentile=95, spacing=list(spacing)
            )[0].numpy()
        for k in (1, 2):
            if (pred == k).any() and (truth == k).any():  # both non-empty: a defined distance
                assert result["per_class"][str(k)]["hd95"] == pytest.approx(float(expected[k - 1]), abs=1e-4)
                checked += 1
    assert checked >= 6


def test_an_absent_class_is_nan_and_counted_as_both_empty():
    from labelwise.evaluation.segmentation import summarize_cases

    pred = np.zeros((10, 10), np.int64)
    truth = np.zeros((10, 10), np.int64)
    pred[2:5, 2:5] = truth[2:5, 2:5] = 1
    result = class_scores(pred, truth, num_classes=4)  # classes 2 and 3 absent from both masks
    assert result["per_class"]["1"]["dice"] == 1.0 and result["per_class"]["1"]["hd95"] == 0.0
    for name in ("2", "3"):
        assert all(math.isnan(result["per_class"][name][s]) for s in SCORE_NAMES)
    other = truth.copy()
    other[7:9, 7:9] = 2  # a case where class 2 is in the truth only: Dice 0, distances nan
    second = class_scores(pred, other, num_classes=4)["per_class"]["2"]
    assert second["dice"] == 0.0 and math.isnan(second["hd95"]) and math.isnan(second["precision"])
    summary = summarize_cases([result["per_class"]["2"], second])
    assert summary["count"]["dice"] == 1 and summary["mean"]["dice"] == 0.0
    assert (summary["empty_prediction"], summary["empty_reference"], summary["both_empty"]) == (1, 0, 1)


def test_defaults_roi_and_refusals():
    pred = np.zeros((8, 8), np.int64)
    truth = np.zeros((8, 8), np.int64)
    pred[1:3, 1:3] = 2
    truth[1:3, 1:4] = 2
    result = class_scores(torch.from_numpy(pred), truth)  # tensors too; classes up to the highest label
    assert list(result["per_class"]) == ["1", "2"] and math.isnan(result["per_class"]["1"]["dice"])
    assert result["per_class"]["2"]["dice"] == pytest.approx(8 / 10)
    roi = np.zeros((8, 8), bool)
    roi[:, :3] = True  # the truth's third column is outside
    assert class_scores(pred, truth, roi=roi)["per_class"]["2"]["dice"] == 1.0
    binary = class_scores(pred > 0, truth > 0)  # bool masks: one class, the foreground
    assert list(binary["per_class"]) == ["1"] and binary["per_class"]["1"] == binary["foreground"]
    with pytest.raises(DataError, match="holds label 2, but there are 2 classes"):
        class_scores(pred, truth, num_classes=2)
    with pytest.raises(DataError, match="1 class name"):
        class_scores(pred, truth, names=["a"], num_classes=3)
    with pytest.raises(DataError, match="differ from one another"):
        class_scores(pred, truth, names=["a", "a"])
    with pytest.raises(DataError, match="integer labels"):
        class_scores(pred + 0.5, truth)
