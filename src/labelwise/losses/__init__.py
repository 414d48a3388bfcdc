"""Training losses (:mod:`labelwise.losses.segmentation`): Dice + cross-entropy (MONAI's values, voxels without a
label left out), Focal Tversky and multi-scale supervision."""

from labelwise.losses.segmentation import (
    MSS_WEIGHTS,
    dice_ce_loss,
    focal_tversky_loss,
    mss_loss,
    self_corrected_target,
    soft_cross_entropy,
    soft_dice_ce_loss,
)

__all__ = [
    "MSS_WEIGHTS",
    "dice_ce_loss",
    "focal_tversky_loss",
    "mss_loss",
    "self_corrected_target",
    "soft_cross_entropy",
    "soft_dice_ce_loss",
]
