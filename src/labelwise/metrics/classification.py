"""Classification metrics in pure torch (any device), vectorised over the batch.

Every function takes predictions as logits ``(B, K)`` (the argmax is taken; a single column ``(B, 1)`` is
read as one binary logit, positive meaning class 1) or as class indices ``(B,)``, and targets ``(B,)``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "correct",
    "f1_from_counts",
    "macro_f1",
    "to_prediction",
]


def to_prediction(pred_or_logits: Tensor) -> Tensor:
    """Class indices ``(B,)`` int64 from logits ``(B, K)`` (argmax; ``(B, 1)``: logit > 0) or indices ``(B,)``."""
    x = torch.as_tensor(pred_or_logits)
    if x.ndim == 2:
        return (x[:, 0] > 0).long() if x.shape[1] == 1 else x.argmax(dim=1)
    if x.ndim == 1:
        return x.long()
    raise ValueError(f"expected logits (B, K) or class indices (B,), got shape {tuple(x.shape)}")


def _pair(pred_or_logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred = to_prediction(pred_or_logits)
    target = torch.as_tensor(target, device=pred.device).long()
    if target.ndim != 1 or target.shape[0] != pred.shape[0]:
        raise ValueError(f"target must be (B,) with B = {pred.shape[0]}, got shape {tuple(target.shape)}")
    return pred, target


def correct(pred_or_logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample correctness ``(B,)`` bool."""
    pred, target = _pair(pred_or_logits, target)
    return pred == target


def accuracy(pred_or_logits: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct predictions, a 0-d float tensor (nan for an empty batch)."""
    return correct(pred_or_logits, target).float().mean()


def confusion_matrix(pred_or_logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``(K, K)`` int64: row = true class, column = predicted class (scikit-learn's layout)."""
    pred, target = _pair(pred_or_logits, target)
    k = int(num_classes)
    if pred.numel():
        lo, hi = int(torch.minimum(pred.min(), target.min())), int(torch.maximum(pred.max(), target.max()))
        if lo < 0 or hi >= k:
            raise ValueError(f"class indices must lie in [0, {k}), got values in [{lo}, {hi}]")
    return torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)


def balanced_accuracy(pred_or_logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean per-class recall over the classes present in ``target`` (as scikit-learn), 0-d float tensor."""
    cm = confusion_matrix(pred_or_logits, target, num_classes).float()
    support = cm.sum(dim=1)
    recall = cm.diagonal() / support
    return recall[support > 0].mean()


def f1_from_counts(tp: Tensor, predicted: Tensor, actual: Tensor, zero_division: float = float("nan")) -> Tensor:
    """The one F1: ``2TP / (predicted + actual)`` = ``2TP / (2TP + FP + FN)`` of each entry, from the true positives
    ``tp`` (a float tensor: the result has its dtype), the predicted positives and the actual positives (same
    shape); ``zero_division`` where nothing is predicted nor actual (nan: left out of a mean that skips nan)."""
    denominator = predicted + actual
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.full_like(tp, zero_division))


def macro_f1(pred_or_logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Unweighted mean of per-class F1 (:func:`f1_from_counts`), 0-d float tensor.

    Classes absent from both predictions and targets are skipped (as scikit-learn's default labels do);
    a class only predicted, or only in the target, counts with F1 = 0."""
    cm = confusion_matrix(pred_or_logits, target, num_classes).float()
    predicted, actual = cm.sum(dim=0), cm.sum(dim=1)
    return f1_from_counts(cm.diagonal(), predicted, actual)[predicted + actual > 0].mean()
