"""Training losses: Focal Tversky and multi-scale supervision (:mod:`labelwise.losses.segmentation`); MONAI supplies
Dice + cross-entropy."""

from labelwise.losses.segmentation import (
    MSS_WEIGHTS,
    focal_tversky_loss,
    mss_loss,
    self_corrected_target,
    soft_cross_entropy,
    soft_dice_ce_loss,
)

__all__ = [
    "MSS_WEIGHTS",
    "focal_tversky_loss",
    "mss_loss",
    "self_corrected_target",
    "soft_cross_entropy",
    "soft_dice_ce_loss",
]
