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
    theirs_idx = compute_dice(pred[:, None], target[:, None], include_background=include_background,
                              ignore_empty=False, num_classes=k)
    torch.testing.assert_close(ours, theirs_idx.float(), atol=1e-6, rtol=0)
    # One-hot input gives the same as label maps.
    torch.testing.assert_close(dice(p1, t1, include_background=include_background, empty=1.0), ours)
    torch.testing.assert_close(dice(p1.bool(), t1.to(torch.uint8), include_background=include_background,
                                    empty=1.0), ours)


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
    assert float(mean_dice(pred, target, num_classes=k, empty=1.0)) == pytest.approx(float(metric.aggregate()), abs=1e-6)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("dim", [2, 3])
def test_iou_against_monai(dim, include_background):
    k, b = 3, 5
    target = random_labels(b, k, SPATIAL[dim], 11)
    pred = noisy_copy(target, k, 0.4, 12)
    ours = iou(pred, target, num_classes=k, include_background=include_background, empty=1.0)
    theirs = compute_iou(one_hot(pred, k), one_hot(target, k), include_background=include_background, ignore_empty=False)
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
