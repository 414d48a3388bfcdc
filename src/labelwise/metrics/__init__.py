"""Metrics: classification, segmentation overlap, and aggregation (mean ± std, bootstrap CIs).

All tensor metrics are pure torch, work on any device and are vectorised over the batch."""

from labelwise.metrics.aggregate import bootstrap_ci, mean_std
from labelwise.metrics.classification import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    correct,
    macro_f1,
    to_prediction,
)
from labelwise.metrics.segmentation import dice, iou, mean_dice, mean_iou, one_hot

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "confusion_matrix",
    "correct",
    "dice",
    "iou",
    "macro_f1",
    "mean_dice",
    "mean_iou",
    "mean_std",
    "one_hot",
    "to_prediction",
]
