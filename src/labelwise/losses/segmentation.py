"""Segmentation losses on logits: Focal Tversky, and the multi-scale supervision (MSS) sum of DS6.

Focal Tversky: Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for Lesion
Segmentation", ISBI 2019 (arXiv:1810.07842). MSS: Chatterjee et al., "DS6, Deformation-aware Semi-supervised
Learning: Application to Small Vessel Segmentation with Noisy Training Data", J. Imaging 8(10):259, 2022.

Logits and targets are channel-first, ``(B, C, *spatial)`` in 2D or 3D. Each channel is a binary problem with its own
sigmoid (one channel, the paper's case; several: multi-label, the loss averaged over channels).

Dice + cross-entropy (:func:`dice_ce_loss`) is MONAI's ``DiceCELoss`` on integer label maps, with the voxels that
carry no label (:data:`labelwise.metrics.surface.IGNORE`, ``data.ignore``) left out of both terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from labelwise.errors import ConfigError, DataError
from labelwise.metrics.surface import IGNORE

__all__ = ["MSS_WEIGHTS", "dice_ce_loss", "focal_tversky_loss", "mss_loss", "soft_cross_entropy", "soft_dice_ce_loss"]

Reduction = Literal["batch", "mean", "none"]
MSS_WEIGHTS = (1.0, 0.66, 0.34)


def _nonnegative(name: str, value: float, strict: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (strict and value == 0)
    ):
        raise ConfigError(f"{name}: expected a {'positive' if strict else 'non-negative'} number, got {value!r}")
    return float(value)


def focal_tversky_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 0.75,
    smooth: float = 1.0,
    reduction: Reduction = "batch",
    weight: Tensor | None = None,
) -> Tensor:
    """Focal Tversky loss ``(1 - TI) ** gamma`` with ``TI = (TP + smooth) / (TP + alpha FN + beta FP + smooth)``.

    Soft counts on ``p = sigmoid(logits)`` (in float32 at least): ``TP = sum p y``, ``FN = sum (1 - p) y``,
    ``FP = sum p (1 - y)``; ``alpha`` weighs false negatives, ``beta`` false positives (Abraham & Khan 2019; DS6 uses
    the defaults). ``logits`` and ``target`` (values in [0, 1], soft labels allowed) are ``(B, C, *spatial)``.
    ``smooth = 0`` is allowed but gives NaN where a channel has neither target nor predicted foreground.

    ``reduction``: "batch" sums the counts over the batch and space, one index per channel, then averages the
    channels: a scalar, as in DS6's code; "mean": one index per sample and channel, averaged; "none": those, ``(B, C)``.
    ``gamma < 1`` (0.75 here and in DS6) makes the loss exceed ``1 - TI`` for TI in (0, 1), most of all near TI = 1,
    so nearly-right predictions keep a sizeable gradient; it stays finite (zero at a perfect prediction).
    ``weight`` (broadcastable to the logits, e.g. a 0/1 confidence mask ``(B, 1, *spatial)``) weighs every voxel's
    soft counts.
    """
    alpha, beta, smooth = _nonnegative("alpha", alpha), _nonnegative("beta", beta), _nonnegative("smooth", smooth)
    gamma = _nonnegative("gamma", gamma, strict=True)
    if reduction not in ("batch", "mean", "none"):
        raise ConfigError(f"reduction: expected 'batch', 'mean' or 'none', got {reduction!r}")
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim < 3:
        got = f"{logits.dtype} shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        raise DataError(f"logits: expected a float tensor (B, C, *spatial), got {got}")
    if not isinstance(target, Tensor) or target.shape != logits.shape:
        found = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise DataError(f"target: expected the logits' shape {tuple(logits.shape)}, got {found}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    y = target.to(dtype)
    if y.numel():
        low, high = torch.aminmax(y.detach())
        if low < 0 or high > 1:
            raise DataError(
                f"target: expected values in [0, 1] (binary or soft labels), got [{low.item()}, {high.item()}]"
            )
    p = torch.sigmoid(logits.to(dtype))
    dims = [0, *range(2, p.ndim)] if reduction == "batch" else list(range(2, p.ndim))
    w = torch.ones((), dtype=dtype, device=p.device) if weight is None else weight.to(dtype)
    tp = (w * p * y).sum(dims)
    fn = (w * (1 - p) * y).sum(dims)
    fp = (w * p * (1 - y)).sum(dims)
    tversky = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    # 1 - TI >= 0; clamping at the smallest normal number keeps d/dx x**gamma finite for gamma < 1 (zero at x = 0).
    loss = (1 - tversky).clamp_min(torch.finfo(dtype).tiny) ** gamma
    return loss if reduction == "none" else loss.mean()


def _check_soft_target(name: str, logits: Tensor, target: Tensor) -> None:
    if (
        not isinstance(target, Tensor)
        or not isinstance(logits, Tensor)
        or target.shape != logits.shape
        or logits.ndim < 3
    ):
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise DataError(
            f"{name}: logits (B, K, *spatial) and a target of their shape, got "
            f"{tuple(getattr(logits, 'shape', ()))} and {got}"
        )


def soft_dice_ce_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, smooth: float = 1e-5) -> Tensor:
    """Dice + cross-entropy of softmax ``logits`` ``(B, K, *spatial)`` against class probabilities ``target`` of the
    same shape (a soft target, e.g. a teacher's softmax): the mean over samples and classes of
    ``1 - (2 sum p t + smooth) / (sum p + sum t + smooth)`` plus the mean over voxels of ``-sum_k t log p``. With a
    one-hot target it equals MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)``. ``weight`` (broadcastable to
    ``(B, 1, *spatial)``, e.g. a 0/1 confidence mask) weighs every voxel in both terms."""
    _check_soft_target("soft_dice_ce_loss", logits, target)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_p = torch.log_softmax(logits.to(dtype), dim=1)
    p, t = log_p.exp(), target.to(dtype)
    w = torch.ones((), dtype=dtype, device=p.device) if weight is None else weight.to(dtype)
    dims = list(range(2, p.ndim))
    dice = 1 - (2 * (w * p * t).sum(dims) + smooth) / ((w * p).sum(dims) + (w * t).sum(dims) + smooth)
    cross_entropy = -(w * t * log_p).sum(1)
    return dice.mean() + cross_entropy.mean()


def dice_ce_loss(
    logits: Tensor,
    target: Tensor,
    label_smoothing: float = 0.0,
    smooth: float = 1e-5,
    weight: Tensor | None = None,
) -> Tensor:
    """Dice + cross-entropy of softmax ``logits`` ``(B, K, *spatial)`` against an integer label map ``target``
    ``(B, 1, *spatial)``: the mean over samples and classes of ``1 - (2 sum p t + smooth) / (sum p + sum t +
    smooth)`` (``t`` one-hot) plus the mean over voxels of the cross-entropy (with ``label_smoothing``), the values of
    MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, label_smoothing=...)``. Voxels of label
    :data:`~labelwise.metrics.surface.IGNORE` carry no label: both terms run over the others only, so the loss
    equals the same loss over the labelled voxels alone (0 when a batch has none).

    ``target`` may instead hold class probabilities ``(B, K, *spatial)`` (soft targets, ``data.soft_labels``): ``t``
    is then that target in both terms (cross-entropy ``-sum_k t_k log p_k``, smoothed as torch does:
    ``(1 - label_smoothing) t + label_smoothing / K``). ``weight`` ``(B, 1, *spatial)``, >= 0 (``weight`` column
    of a manifest): every voxel's products in the Dice sums are multiplied by it and the cross-entropy is the
    weighted mean ``sum w l / sum w``, so an integer weight counts a voxel that many times and a weight of 0 is a
    voxel without a label."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    classes = logits.shape[1] if isinstance(logits, Tensor) and logits.ndim >= 3 else 0
    soft = isinstance(target, Tensor) and target.shape == logits.shape and target.is_floating_point() and classes > 1
    if not soft and (not isinstance(target, Tensor) or target.ndim != logits.ndim or target.shape[1] != 1):
        found = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise DataError(
            f"target: expected a label map (B, 1, *spatial) or class probabilities shaped like the logits "
            f"{tuple(logits.shape)}, got {found}"
        )
    z = logits.to(dtype)
    p = torch.softmax(z, dim=1)
    w: Tensor | None = None
    if soft:
        labels, onehot = None, target.to(dtype)
    else:
        labels = target[:, 0].long()
        labelled = labels != IGNORE
        onehot = torch.nn.functional.one_hot(labels.clamp_min(0), classes).movedim(-1, 1).to(dtype)
        if not bool(labelled.all()):  # voxels without a label: out of every sum (the usual case skips the products)
            w = labelled.unsqueeze(1).to(dtype)
    if weight is not None:
        if weight.ndim != logits.ndim or weight.shape[1] != 1 or weight.shape[2:] != logits.shape[2:]:
            raise DataError(
                f"weight: expected (B, 1, *spatial) for logits {tuple(logits.shape)}, got {tuple(weight.shape)}"
            )
        w = weight.to(dtype) if w is None else w * weight.to(dtype)
    dims = list(range(2, p.ndim))
    pw, tw = (p, onehot) if w is None else (p * w, onehot * w)
    dice = 1 - (2 * (pw * onehot).sum(dims) + smooth) / (pw.sum(dims) + tw.sum(dims) + smooth)
    if labels is not None and weight is None:  # hard labels: torch's cross-entropy (ignore_index: IGNORE)
        if w is not None and not bool(w.any()):
            return dice.mean() + 0 * z.sum()  # no labelled voxel: no cross-entropy (its mean over none is nan)
        cross_entropy = torch.nn.functional.cross_entropy(
            z, labels, ignore_index=IGNORE, label_smoothing=label_smoothing
        )
        return dice.mean() + cross_entropy
    t = onehot * (1 - label_smoothing) + label_smoothing / classes if label_smoothing else onehot
    per_voxel = -(t * torch.log_softmax(z, dim=1)).sum(1, keepdim=True)
    if w is None:
        return dice.mean() + per_voxel.mean()
    total = w.expand_as(per_voxel).sum()
    if not bool(total > 0):
        return dice.mean() + 0 * z.sum()
    return dice.mean() + (w * per_voxel).sum() / total


def soft_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy of ``logits`` ``(B, K, *spatial)`` against probabilities ``target`` of the same shape, averaged
    over voxels: one channel is a sigmoid (binary cross-entropy against ``target``), several a softmax
    (``-sum_k t log p``). Unlike Dice or Tversky losses against a soft target, its gradient ``p - t`` vanishes where
    the prediction equals the target, so a network made to agree with its own (detached) output does not drift
    towards foreground. ``weight`` (broadcastable to ``(B, 1, *spatial)``) weighs every voxel."""
    _check_soft_target("soft_cross_entropy", logits, target)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    z, t = logits.to(dtype), target.to(dtype)
    if z.shape[1] == 1:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    else:
        loss = -(t * torch.log_softmax(z, dim=1)).sum(1, keepdim=True)
    return (loss if weight is None else weight.to(dtype) * loss).mean()


def mss_loss(
    outputs: Tensor | Sequence[Tensor],
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = focal_tversky_loss,
    weights: Sequence[float] = MSS_WEIGHTS,
) -> Tensor:
    """Multi-scale supervision (DS6): ``sum_k weights[k] * loss_fn(outputs[k], target)``, every output full-size.

    ``outputs``: :class:`~labelwise.models.UNetMSS`'s train-mode tuple ``(full, half_up, quarter_up)``, one weight
    each (DS6: 1.0, 0.66, 0.34; not normalised); a single tensor gives ``loss_fn(outputs, target)`` unweighted.
    """
    if isinstance(outputs, Tensor):
        return loss_fn(outputs, target)
    if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Sequence) or not outputs:
        raise DataError(f"outputs: expected a tensor or a non-empty tuple of tensors, got {type(outputs).__name__}")
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(outputs):
        raise ConfigError(f"weights: expected one weight per output ({len(outputs)}), got {weights!r}")
    weights = [_nonnegative(f"weights[{k}]", w) for k, w in enumerate(weights)]
    for k, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise DataError(f"outputs[{k}]: expected a tensor of logits, got {type(out).__name__}")
        if out.shape != outputs[0].shape:
            raise DataError(
                f"outputs[{k}]: expected full-size logits shaped like outputs[0] {tuple(outputs[0].shape)}, "
                f"got {tuple(out.shape)}"
            )
    return sum(w * loss_fn(out, target) for w, out in zip(weights, outputs))  # type: ignore[return-value]


def self_corrected_target(
    foreground: torch.Tensor, target: torch.Tensor, threshold: float, band: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label self-correction towards the foreground, away from the labelled structures: a background pixel of
    ``target`` ``(B, *spatial)`` (0/1) becomes foreground where the network's ``foreground`` probability (same shape,
    no gradient) exceeds ``threshold`` and no labelled foreground lies within ``band`` pixels (a cube of side
    2 * band + 1). Borders of labelled structures, where a mask that is off by a pixel or two disagrees with the
    network, are never changed; a structure the mask left out altogether (a missed thin vessel) is. Returns the
    corrected target and the mask of changed pixels."""
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    labelled = (target > 0).float().unsqueeze(1)
    if band:
        pool = torch.nn.functional.max_pool3d if target.ndim == 4 else torch.nn.functional.max_pool2d
        labelled = pool(labelled, kernel_size=2 * band + 1, stride=1, padding=band)
    changed = (labelled[:, 0] == 0) & (foreground > threshold) & (target != IGNORE)  # no label: stays without
    return torch.where(changed, torch.ones_like(target), target), changed
