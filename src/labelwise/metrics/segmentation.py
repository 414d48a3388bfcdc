"""Segmentation overlap metrics (Dice, IoU) in pure torch, for 2D and 3D, vectorised over the batch.

Predictions and targets come in one of two forms, both the same form:

* integer label maps ``(B, *spatial)`` with values in ``[0, num_classes)``; pass ``num_classes``;
* binary or one-hot masks ``(B, K, *spatial)``; leave ``num_classes=None``. Bool and integer masks are
  counted exactly; floating masks are used as they are (probabilities give the *soft* Dice, so binarise
  first for the usual hard score).

Channel/class 0 is the background; ``include_background=False`` drops it from the result (except for a
single-channel mask ``(B, 1, *spatial)``, whose only channel is the foreground, as in MONAI).

Spacing: on a regular grid every voxel has the same volume, so physical voxel sizes cancel in the
overlap ratios: Dice and IoU are spacing-invariant. ``spacing`` is accepted (and checked) only so that
calls look the same as for distance-based metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "best_threshold",
    "calibration_nll",
    "dice",
    "dice_over_thresholds",
    "fit_isotonic",
    "fit_temperature",
    "foreground_probability",
    "interpolate",
    "iou",
    "labelled_voxels",
    "mean_dice",
    "mean_iou",
    "one_hot",
]


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Label map ``(B, *spatial)`` int -> one-hot ``(B, K, *spatial)`` of ``dtype``."""
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"one_hot expects an integer label map, got dtype {labels.dtype}")
    _check_range(labels, num_classes, "labels")
    classes = torch.arange(num_classes, device=labels.device).view(1, num_classes, *([1] * (labels.ndim - 1)))
    return (labels.unsqueeze(1) == classes).to(dtype)


def dice(
    pred: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    empty: float = math.nan,
) -> Tensor:
    """Per-sample, per-class Dice ``2|P∩T| / (|P| + |T|)``, float32 ``(B, K')``.

    ``K' = K - 1`` without the background, ``K`` with it. Where prediction and target are both empty for a
    class the score is ``empty`` (default nan, so that a nanmean skips it); an empty target with a
    non-empty prediction scores 0. Dice is spacing-invariant (see the module docstring)."""
    inter, p, t = _overlaps(pred, target, num_classes, include_background, spacing)
    total = p + t
    return torch.where(total > 0, 2 * inter / total.clamp_min(1e-12), torch.full_like(total, empty))


def iou(
    pred: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    empty: float = math.nan,
) -> Tensor:
    """Per-sample, per-class IoU (Jaccard) ``|P∩T| / |P∪T|``, float32 ``(B, K')``; arguments as :func:`dice`."""
    inter, p, t = _overlaps(pred, target, num_classes, include_background, spacing)
    union = p + t - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.full_like(union, empty))


def mean_dice(
    pred: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    empty: float = math.nan,
) -> Tensor:
    """Mean of :func:`dice` over samples and classes, ignoring nan; 0-d tensor (nan if nothing is left)."""
    return torch.nanmean(dice(pred, target, num_classes, include_background, spacing, empty))


def mean_iou(
    pred: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    include_background: bool = False,
    spacing: Sequence[float] | None = None,
    empty: float = math.nan,
) -> Tensor:
    """Mean of :func:`iou` over samples and classes, ignoring nan; 0-d tensor (nan if nothing is left)."""
    return torch.nanmean(iou(pred, target, num_classes, include_background, spacing, empty))


def dice_over_thresholds(
    probability: Tensor, target: Tensor, thresholds: Sequence[float] | Tensor, roi: Tensor | None = None
) -> Tensor:
    """Foreground Dice of ``probability > t`` against the binary ``target`` (both ``(*spatial)``, one case) for every
    ``t`` of ``thresholds``, float64 ``(T,)``, inside ``roi`` (bool, same shape) when given; nan where both masks are
    empty. Exact, from the sorted probabilities of the foreground and background voxels (no loop over thresholds)."""
    if probability.shape != target.shape or (roi is not None and roi.shape != target.shape):
        raise ValueError(
            f"dice_over_thresholds: shapes differ: probability {tuple(probability.shape)}, target "
            f"{tuple(target.shape)}" + (f", roi {tuple(roi.shape)}" if roi is not None else "")
        )
    p, y = probability.detach().double().reshape(-1), target.detach().reshape(-1) > 0
    if roi is not None:
        inside = roi.detach().reshape(-1).bool()
        p, y = p[inside], y[inside]
    t = torch.as_tensor(thresholds, dtype=torch.float64, device=p.device).reshape(-1)
    fg, bg = p[y].sort().values, p[~y].sort().values
    tp = fg.numel() - torch.searchsorted(fg, t, right=True)  # foreground voxels with p > t
    fp = bg.numel() - torch.searchsorted(bg, t, right=True)
    total = (tp + fp + fg.numel()).double()
    return torch.where(total > 0, 2 * tp.double() / total.clamp_min(1), torch.full_like(total, math.nan))


def best_threshold(
    probabilities: Sequence[Tensor],
    targets: Sequence[Tensor],
    rois: Sequence[Tensor | None] | None = None,
    thresholds: Sequence[float] | Tensor | None = None,
    tolerance: float = 0.0,
) -> tuple[float, float]:
    """The threshold of ``thresholds`` (default 0.01, 0.02, ..., 0.99) whose mean Dice over the cases (each case's
    :func:`dice_over_thresholds`, nan cases left out) is highest, and that mean; among the thresholds within
    ``tolerance`` of the highest mean the one nearest 0.5 (so that a few cases move the threshold only for a gain
    larger than their noise). ``(0.5, nan)`` when no case has a foreground voxel."""
    grid = (
        torch.arange(1, 100, dtype=torch.float64) / 100
        if thresholds is None
        else torch.as_tensor(thresholds, dtype=torch.float64)
    )
    rois = list(rois) if rois is not None else [None] * len(probabilities)
    scores = torch.stack([dice_over_thresholds(p, y, grid, r) for p, y, r in zip(probabilities, targets, rois)])
    mean = torch.nanmean(scores, dim=0)
    if not bool(torch.isfinite(mean).any()):
        return 0.5, math.nan
    mean = torch.nan_to_num(mean, nan=-1.0)
    candidates = torch.nonzero(mean >= mean.max() - max(tolerance, 1e-12)).reshape(-1)
    pick = candidates[(grid[candidates] - 0.5).abs().argmin()]
    return float(grid[pick]), float(mean[pick])


def _overlaps(
    pred: Tensor, target: Tensor, num_classes: int | None, include_background: bool, spacing: Sequence[float] | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``|P∩T|``, ``|P|``, ``|T|`` per sample and class, each float32 ``(B, K')``."""
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, device=pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if num_classes is not None:  # integer label maps (B, *spatial)
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                "with num_classes, pass integer label maps (B, *spatial); "
                "for one-hot or binary masks (B, K, *spatial) leave num_classes=None"
            )
        if pred.ndim < 2:
            raise ValueError(f"label maps must be (B, *spatial), got shape {tuple(pred.shape)}")
        k = int(num_classes)
        _check_range(pred, k, "prediction")
        _check_range(target, k, "target")
        _check_spacing(spacing, pred.ndim - 1)
        b = pred.shape[0]
        sample = torch.arange(b, device=pred.device).view(b, *([1] * (pred.ndim - 1)))
        index = ((sample * k + target.long()) * k + pred.long()).reshape(-1)
        cm = torch.bincount(index, minlength=b * k * k).reshape(b, k, k)  # (B, true, predicted)
        inter, p, t = cm.diagonal(dim1=1, dim2=2), cm.sum(dim=1), cm.sum(dim=2)
    else:  # binary / one-hot masks (B, K, *spatial)
        if pred.ndim < 3:
            raise ValueError(
                f"masks must be (B, K, *spatial), got shape {tuple(pred.shape)}; "
                "for label maps (B, *spatial) pass num_classes"
            )
        _check_spacing(spacing, pred.ndim - 2)
        if pred.is_floating_point() or target.is_floating_point():
            pf, tf = pred.float(), target.float()
            inter, p, t = (pf * tf).flatten(2).sum(2), pf.flatten(2).sum(2), tf.flatten(2).sum(2)
        else:
            pb, tb = pred != 0, target != 0
            inter, p, t = (pb & tb).flatten(2).sum(2), pb.flatten(2).sum(2), tb.flatten(2).sum(2)
        k = pred.shape[1]
    first = 0 if include_background or k == 1 else 1
    return inter[:, first:].float(), p[:, first:].float(), t[:, first:].float()


def _check_range(labels: Tensor, num_classes: int, what: str) -> None:
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{what} values must lie in [0, {num_classes}), got values in [{lo}, {hi}]")


def _check_spacing(spacing: Sequence[float] | None, spatial_dims: int) -> None:
    if spacing is None:
        return
    values = [float(s) for s in spacing]
    if len(values) != spatial_dims or not all(s > 0 for s in values):
        raise ValueError(f"spacing must be {spatial_dims} positive numbers (one per spatial axis), got {spacing!r}")


TEMPERATURE_BOUNDS = (0.05, 20.0)
TEMPERATURE_VOXELS = 2_000_000  # fit_temperature: at most this many voxels (drawn with a fixed seed) give the fit


def labelled_voxels(
    logits: Sequence[Tensor], targets: Sequence[Tensor], regions: Sequence[Tensor | None] | None = None
) -> tuple[Tensor, Tensor]:
    """The logits ``(N, K)`` float64 and labels ``(N,)`` of the voxels of segmentation cases (logits ``(K,
    *spatial)``, label maps ``(*spatial)``) inside each case's region (a bool mask or None: everywhere), voxels of a
    negative label (no label) left out; one channel: labels 0/1 (foreground > 0)."""
    rows, labels = [], []
    regions = list(regions) if regions is not None else [None] * len(logits)
    for z, y, region in zip(logits, targets, regions, strict=True):
        keep = y >= 0 if region is None else (y >= 0) & region.bool()
        rows.append(z.detach().double().reshape(z.shape[0], -1)[:, keep.reshape(-1)].T)
        labels.append(y.reshape(-1)[keep.reshape(-1)].long())
    z, y = torch.cat(rows), torch.cat(labels)
    return z, (y > 0).long() if z.shape[1] == 1 else y


def calibration_nll(z: Tensor, y: Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``logits / temperature`` (one channel: sigmoid)."""
    if z.shape[1] == 1:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0] / temperature, y.double()))
    return float(torch.nn.functional.cross_entropy(z / temperature, y))


def foreground_probability(z: Tensor, temperature: float = 1.0) -> Tensor:
    """The foreground probability of logits ``(N, K)`` at ``temperature``: sigmoid of one channel, else 1 - the
    softmax's background."""
    z = z / temperature
    return torch.sigmoid(z[:, 0]) if z.shape[1] == 1 else 1 - torch.softmax(z, dim=1)[:, 0]


def fit_temperature(
    logits: Sequence[Tensor], targets: Sequence[Tensor], regions: Sequence[Tensor | None] | None = None
) -> float:
    """Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) of segmentation
    logits: the ``T`` in :data:`TEMPERATURE_BOUNDS` minimising :func:`calibration_nll` of the voxels of
    :func:`labelled_voxels` (at most :data:`TEMPERATURE_VOXELS` of them, drawn with a fixed seed), found by a bounded
    search on ``log T``. Dividing logits by ``T`` changes no argmax and no 0.5 threshold: only how sure the
    probabilities are."""
    from scipy.optimize import minimize_scalar

    z, y = labelled_voxels(logits, targets, regions)
    if len(y) == 0:
        return 1.0
    if len(y) > TEMPERATURE_VOXELS:
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:TEMPERATURE_VOXELS]
        z, y = z[pick], y[pick]
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda t: calibration_nll(z, y, math.exp(t)), bounds=(low, high), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(found.x))


def fit_isotonic(probability: Tensor, labels: Tensor) -> tuple[list[float], list[float]]:
    """Isotonic recalibration (Zadrozny and Elkan, KDD 2002) of a foreground probability: the non-decreasing map
    fitted by least squares to the labels ``labels`` (0/1) of voxels with probability ``probability`` (both
    ``(N,)``; at most :data:`TEMPERATURE_VOXELS` of them, drawn with a fixed seed), by scikit-learn's
    ``IsotonicRegression``, as its knots ``(xs, ys)`` for :func:`interpolate` (linear between knots, constant beyond
    them, as its ``predict``). No voxels: the identity."""
    from sklearn.isotonic import IsotonicRegression

    p, y = probability.detach().double().reshape(-1).cpu(), labels.detach().reshape(-1).cpu() > 0
    if len(p) == 0:
        return [0.0, 1.0], [0.0, 1.0]
    if len(p) > TEMPERATURE_VOXELS:
        pick = torch.randperm(len(p), generator=torch.Generator().manual_seed(0))[:TEMPERATURE_VOXELS]
        p, y = p[pick], y[pick]
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p.numpy(), y.double().numpy())
    return [float(v) for v in fitted.X_thresholds_], [float(v) for v in fitted.y_thresholds_]


def interpolate(values: Tensor, xs: Sequence[float], ys: Sequence[float]) -> Tensor:
    """The piecewise-linear map through the knots ``(xs, ys)`` (``xs`` increasing) at ``values``, constant beyond
    the first and last knot: ``numpy.interp`` in torch, on the values' device, in float64 (knots can lie closer than
    float32 resolves), returned in the values' dtype."""
    x = torch.as_tensor(xs, dtype=torch.float64, device=values.device)
    y = torch.as_tensor(ys, dtype=torch.float64, device=values.device)
    if len(x) == 1:
        return torch.full_like(values, float(y[0]))
    v = values.double().contiguous()
    right = torch.searchsorted(x, v, right=True).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[right - 1], x[right], y[right - 1], y[right]
    share = ((v - x0) / (x1 - x0).clamp_min(torch.finfo(torch.float64).tiny)).clamp(0, 1)
    return (y0 + share * (y1 - y0)).to(values.dtype)
