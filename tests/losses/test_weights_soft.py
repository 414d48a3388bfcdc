"""Per-voxel weights and soft targets in the segmentation losses, against oracles: MONAI's DiceCELoss on class
probabilities, and the property that an integer weight counts a voxel that many times (the same loss over a volume
in which each voxel is repeated ``weight`` times), a weight of 0 being a voxel without a label."""

from __future__ import annotations

import pytest
import torch

from labelwise.errors import DataError
from labelwise.losses import dice_ce_loss, focal_tversky_loss
from labelwise.metrics.surface import IGNORE


def repeated(x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``x`` ``(1, C, *spatial)`` flattened to ``(1, C, N)`` with voxel ``v`` repeated ``counts[v]`` times."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return flat.repeat_interleave(counts.reshape(-1), dim=2)


def test_soft_targets_are_monais_dice_ce_on_probabilities():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, 4)
    target = torch.softmax(2 * torch.randn(2, 3, 5, 6, 4), 1)
    for smoothing in (0.0, 0.1):
        expected = DiceCELoss(softmax=True, label_smoothing=smoothing)(logits, target)
        assert float(dice_ce_loss(logits, target, smoothing)) == pytest.approx(float(expected), abs=1e-6)
    labels = torch.randint(0, 3, (2, 1, 5, 6, 4))
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    assert float(dice_ce_loss(logits, onehot)) == pytest.approx(float(dice_ce_loss(logits, labels)), abs=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_integer_weights_count_voxels_that_many_times(soft):
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 6, 7)
    labels = torch.randint(0, 2, (1, 1, 6, 7))
    counts = torch.randint(0, 4, (6, 7))
    counts[0, 0] = 2  # some voxel counts
    target = torch.softmax(torch.randn(1, 2, 6, 7), 1) if soft else labels
    weight = counts.float()[None, None]
    for smoothing in (0.0, 0.1):
        got = dice_ce_loss(logits, target, smoothing, weight=weight)
        expected = dice_ce_loss(repeated(logits, counts), repeated(target, counts), smoothing)
        assert float(got) == pytest.approx(float(expected), abs=1e-5)
    if not soft:  # weight 0 is a voxel without a label, also beside IGNORE
        zero = weight.clone()
        zero[..., :2, :] = 0
        unlabelled = labels.clone()
        unlabelled[..., :2, :] = IGNORE
        assert float(dice_ce_loss(logits, labels, weight=zero)) == pytest.approx(
            float(dice_ce_loss(logits, unlabelled, weight=weight)), abs=1e-6
        )
    nothing = dice_ce_loss(logits, target, weight=torch.zeros_like(weight))
    assert torch.isfinite(nothing)


def test_focal_tversky_weights_count_voxels_that_many_times():
    torch.manual_seed(2)
    logits = torch.randn(1, 1, 6, 7)
    target = torch.rand(1, 1, 6, 7)  # soft
    counts = torch.randint(0, 4, (6, 7))
    got = focal_tversky_loss(logits, target, weight=counts.float()[None, None])
    expected = focal_tversky_loss(repeated(logits, counts), repeated(target, counts))
    assert float(got) == pytest.approx(float(expected), abs=1e-5)


def test_weight_of_the_wrong_shape_is_refused():
    with pytest.raises(DataError, match="weight"):
        dice_ce_loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long), weight=torch.ones(1, 2, 4, 4))
