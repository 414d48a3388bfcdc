"""Dice and IoU against MONAI (2D and 3D, label maps and one-hot, with and without background, empty masks)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import DiceMetric, compute_dice, compute_iou

from labelwise.metrics import dice, iou, mean_dice, mean_iou, one_hot


def random_labels(b: int, k: int, spatial: tuple[int, ...], seed: int) -> torch.Tensor:
    """Label maps (B, *spatial) where each sample uses a random subset of the classes (some absent)."""
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(b, k, generator=g) < 0.6
    present[:, 0] = True
    weights = present.float() * torch.rand(b, k, generator=g)
    n = math.prod(spatial)
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    return labels.reshape(b, *spatial)


def noisy_copy(labels: torch.Tensor, k: int, flip: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flips = torch.rand(labels.shape, generator=g) < flip
    return torch.where(flips, torch.randint(0, k, labels.shape, generator=g), labels)


SPATIAL = {2: (12, 10), 3: (6, 7, 5)}


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_dice_against_monai(dim, include_background, seed):
    k, b = 4, 8
    target = random_labels(b, k, SPATIAL[dim], seed)
    pred = noisy_copy(target, k, 0.3, seed + 100)
    pred[0] = 0  # a sample with only background predicted
    ours = dice(pred, target, num_classes=k, include_background=include_background, empty=1.0)
    p1, t1 = one_hot(pred, k), one_hot(target, k)
    theirs = compute_dice(p1, t1, include_background=include_background, ignore_empty=False)
    assert ours.shape == theirs.shape == (b, k if include_background else k - 1)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=0)
    # MONAI's own label-map input path agrees too.
    theirs_idx = compute_dice(
        pred[:, None], target[:, None], include_background=include_background, ignore_empty=False, num_classes=k
    )
    torch.testing.assert_close(ours, theirs_idx.float(), atol=1e-6, rtol=0)
    # One-hot input gives the same as label maps.
    torch.testing.assert_close(dice(p1, t1, include_background=include_background, empty=1.0), ours)
    torch.testing.assert_close(
        dice(p1.bool(), t1.to(torch.uint8), include_background=include_background, empty=1.0), ours
    )


@pytest.mark.parametrize("dim", [2, 3])
def test_empty_masks_nan_against_monai(dim):
    k, b = 3, 6
    target = random_labels(b, k, SPATIAL[dim], 7)
    pred = noisy_copy(target, k, 0.2, 8)
    target[0] = 0
    pred[0] = 0  # both empty for every foreground class
    target[1] = 0
    pred[1].view(-1)[:3] = 2  # class 2 predicted, target empty
    ours = dice(pred, target, num_classes=k)
    theirs = compute_dice(one_hot(pred, k), one_hot(target, k), include_background=False, ignore_empty=True)
    both_empty = (one_hot(pred, k).flatten(2).sum(2) == 0) & (one_hot(target, k).flatten(2).sum(2) == 0)
    both_empty = both_empty[:, 1:]
    assert torch.isnan(ours[0]).all() and both_empty[0].all()
    assert ours[1, 1] == 0 and torch.isnan(theirs[1, 1])  # MONAI ignores any empty target; we score 0
    assert torch.equal(torch.isnan(ours), both_empty)
    target_present = ~torch.isnan(theirs)
    torch.testing.assert_close(ours[target_present], theirs[target_present].float())
    # DiceMetric's mean over non-nan entries equals our nanmean where the nan patterns agree.
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    metric(one_hot(pred, k), one_hot(target, k))
    assert float(mean_dice(pred, target, num_classes=k, empty=1.0)) == pytest.approx(
        float(metric.aggregate()), abs=1e-6
    )


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("dim", [2, 3])
def test_iou_against_monai(dim, include_background):
    k, b = 3, 5
    target = random_labels(b, k, SPATIAL[dim], 11)
    pred = noisy_copy(target, k, 0.4, 12)
    ours = iou(pred, target, num_classes=k, include_background=include_background, empty=1.0)
    theirs = compute_iou(
        one_hot(pred, k), one_hot(target, k), include_background=include_background, ignore_empty=False
    )
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=0)
    d = dice(pred, target, num_classes=k, include_background=include_background, empty=1.0)
    torch.testing.assert_close(ours, d / (2 - d), atol=1e-6, rtol=0)
    assert float(mean_iou(pred, target, num_classes=k)) == pytest.approx(float(torch.nanmean(iou(pred, target, k))))


@settings(max_examples=60, deadline=None, database=None)
@given(
    b=st.integers(1, 4),
    k=st.integers(2, 4),
    spatial=st.sampled_from([(5, 4), (3, 4, 2), (1, 7)]),
    seed=st.integers(0, 10_000),
    flip=st.floats(0.0, 1.0),
)
def test_dice_hypothesis_against_monai(b, k, spatial, seed, flip):
    target = random_labels(b, k, spatial, seed)
    pred = noisy_copy(target, k, flip, seed + 1)
    ours = dice(pred, target, num_classes=k, include_background=True, empty=1.0)
    theirs = compute_dice(one_hot(pred, k), one_hot(target, k), include_background=True, ignore_empty=False)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=0)
    assert ((ours >= 0) & (ours <= 1)).all()


def test_binary_single_channel():
    target = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    target[:, :, 1:4, 1:4] = True
    pred = torch.zeros_like(target)
    pred[:, :, 2:5, 2:5] = True
    ours = dice(pred, target)  # the single channel is the foreground: kept without background
    assert ours.shape == (2, 1)
    torch.testing.assert_close(ours, torch.full((2, 1), 2 * 4 / 18))
    theirs = compute_dice(pred.float(), target.float(), include_background=False)
    torch.testing.assert_close(ours, theirs.float())


def test_soft_dice_for_probabilities():
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    prob = torch.tensor([[[0.5, 1.0, 0.5, 0.0]]])
    assert float(dice(prob, target)) == pytest.approx(2 * 1.5 / (2 + 2))


def test_spacing_invariant_and_checked():
    k = 3
    target = random_labels(2, k, (4, 5, 6), 3)
    pred = noisy_copy(target, k, 0.3, 4)
    base = dice(pred, target, num_classes=k)
    torch.testing.assert_close(dice(pred, target, num_classes=k, spacing=(2.0, 0.5, 1.0)), base)
    with pytest.raises(ValueError, match="spacing"):
        dice(pred, target, num_classes=k, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        dice(pred, target, num_classes=k, spacing=(1.0, 0.0, 1.0))


def test_mean_dice_and_all_empty():
    zeros = torch.zeros(3, 4, 4, dtype=torch.long)
    assert torch.isnan(mean_dice(zeros, zeros, num_classes=3))
    assert float(mean_dice(zeros, zeros, num_classes=3, empty=1.0)) == 1.0
    assert float(mean_dice(zeros, zeros, num_classes=3, include_background=True)) == 1.0
    labels = random_labels(4, 3, (8, 8), 5)
    assert float(mean_dice(labels, labels, num_classes=3)) == 1.0


def test_one_hot():
    labels = torch.tensor([[[0, 2], [1, 1]]])
    oh = one_hot(labels, 3)
    assert oh.shape == (1, 3, 2, 2) and oh.dtype == torch.float32
    assert torch.equal(oh.argmax(1), labels) and torch.equal(oh.sum(1), torch.ones(1, 2, 2))
    assert one_hot(labels, 3, dtype=torch.bool).dtype == torch.bool
    with pytest.raises(ValueError, match="\\[0, 2\\)"):
        one_hot(labels, 2)


def test_bad_inputs():
    a = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, torch.zeros(2, 4, 5, dtype=torch.long), num_classes=2)
    with pytest.raises(TypeError, match="label maps"):
        dice(a.float(), a.float(), num_classes=2)
    with pytest.raises(ValueError, match="values must lie"):
        dice(a + 3, a, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        dice(torch.zeros(4, 4), torch.zeros(4, 4))


# --- Dice over thresholds and the best threshold (threshold: calibrate) -----------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_dice_over_thresholds_against_sklearn(dim):
    from sklearn.metrics import f1_score

    from labelwise.metrics.segmentation import dice_over_thresholds

    g = torch.Generator().manual_seed(dim)
    shape = (12, 14) if dim == 2 else (6, 7, 8)
    probability = torch.rand(shape, generator=g)
    target = torch.rand(shape, generator=g) > 0.7
    roi = torch.rand(shape, generator=g) > 0.3
    thresholds = [0.0, 0.1, 0.33, 0.5, float(probability.flatten()[3]), 0.9, 1.0]  # one equal to a voxel: p > t
    got = dice_over_thresholds(probability, target, thresholds, roi)
    inside = roi.flatten().numpy()
    for value, t in zip(got.tolist(), thresholds):
        predicted = (probability.flatten().numpy() > t)[inside]
        truth = target.flatten().numpy()[inside]
        if predicted.any() or truth.any():
            assert value == pytest.approx(f1_score(truth, predicted, zero_division=0.0), abs=1e-12)
        else:
            assert math.isnan(value)


def test_dice_over_thresholds_empty_and_shapes():
    from labelwise.metrics.segmentation import dice_over_thresholds

    empty = torch.zeros(5, 5)
    assert math.isnan(float(dice_over_thresholds(empty, empty.bool(), [0.5])[0]))  # both empty
    assert float(dice_over_thresholds(torch.ones(5, 5), empty.bool(), [0.5])[0]) == 0.0  # truth empty, predicted
    with pytest.raises(ValueError, match="shapes differ"):
        dice_over_thresholds(torch.zeros(4, 5), empty.bool(), [0.5])


def test_best_threshold_by_hand():
    from labelwise.metrics.segmentation import best_threshold

    # foreground at 0.375 and 0.625, background at 0.125 and 0.5 (exact in float32): t in [0.125, 0.375) keeps both
    # foreground voxels and one background voxel, Dice 2*2/(3+2) = 0.8; t in [0.5, 0.625): 2/3; t in [0.375, 0.5):
    # 0.5; below 0.125: 4/6. Best: 0.8, at 0.13 ... 0.37, of which 0.37 is nearest 0.5.
    p = torch.tensor([[0.375, 0.625, 0.125, 0.5]])
    y = torch.tensor([[True, True, False, False]])
    t, score = best_threshold([p], [y])
    assert t == pytest.approx(0.37) and score == pytest.approx(0.8)
    # a roi that hides the background voxel at 0.5: t = 0.25 then keeps the foreground alone (Dice 1; 0.8 without it)
    roi = torch.tensor([[True, True, True, False]])
    assert best_threshold([p], [y], [roi], thresholds=[0.1, 0.25, 0.45]) == (pytest.approx(0.25), pytest.approx(1.0))
    assert best_threshold([p], [y], thresholds=[0.1, 0.25, 0.45]) == (pytest.approx(0.25), pytest.approx(0.8))
    # tolerance: the means within it of the best are 0.13 ... 0.37 (0.8) and 0.50 ... 0.62 (2/3 = 0.8 - 0.133):
    # with 0.1 only the first, with 0.15 both, and 0.5 is nearest 0.5
    assert best_threshold([p], [y], tolerance=0.1) == (pytest.approx(0.37), pytest.approx(0.8))
    assert best_threshold([p], [y], tolerance=0.15) == (pytest.approx(0.5), pytest.approx(2 / 3))
    # the mean over cases, a case with both masks empty left out; none with a foreground: (0.5, nan)
    t, score = best_threshold([p, torch.zeros(1, 4)], [y, torch.zeros(1, 4, dtype=torch.bool)], thresholds=[0.25])
    assert score == pytest.approx(0.8)
    t, score = best_threshold([torch.zeros(1, 4)], [torch.zeros(1, 4, dtype=torch.bool)])
    assert t == 0.5 and math.isnan(score)
