"""Saliency-map metrics in pure torch, for 2D and 3D, vectorised over the batch.

Localisation (a map against a bool mask of where the object is): :func:`pointing_game`,
:func:`energy_pointing_game`, :func:`map_iou`; :func:`box_masks` turns bounding boxes into such masks. They take
``maps`` ``(B, *S)`` or ``(B, K, *S)`` (K maps per sample, e.g. one per class) and ``masks`` ``(B, *S)`` (shared by
the K maps) or ``(B, K, *S)``, and return float32 ``(B,)`` or ``(B, K)`` with nan where a score is undefined, so
average with ``torch.nanmean``. A 4-D ``maps`` with a 4-D ``masks`` is either ``(B, D, H, W)`` or
``(B, K, H, W)``: pass ``spatial_dims`` there.

Faithfulness (does the model's score follow the map?): :func:`deletion_auc`, :func:`insertion_auc`,
:func:`average_drop_increase`. They take ``images`` ``(B, C, *S)``, one map per image ``(B, *S')`` (resized to
``S`` when it differs) and target classes ``(B,)``, and run the model in eval mode without gradients."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelwise.errors import ConfigError, DataError

POINTING_TOLERANCE = 15.0  # pixels: the pointing game's tolerance in Zhang et al. (ECCV 2016)

__all__ = [
    "average_drop_increase",
    "box_masks",
    "deletion_auc",
    "energy_pointing_game",
    "gaussian_blur",
    "insertion_auc",
    "map_iou",
    "pointing_game",
]

ACTIVATIONS = ("softmax", "sigmoid", None)


# --- localisation -------------------------------------------------------------------------------------------


def pointing_game(
    maps: Tensor, masks: Tensor, tolerance: float = POINTING_TOLERANCE, *, spatial_dims: int | None = None
) -> Tensor:
    """Pointing game (Zhang et al., ECCV 2016): 1.0 if the map's maximum lies within ``tolerance`` pixels
    (Euclidean; default 15, the paper's) of a mask pixel, else 0.0; float32 ``(B,)`` or ``(B, K)``.

    The maximum is the first argmax in flattened order; a constant map points nowhere (a miss); an empty mask
    gives nan. The accuracy is the nanmean of the result, left to the caller. Computed as the mask dilated by a
    ball of radius ``tolerance``, read only at the maximum (the ball's offsets gathered around it)."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a finite number >= 0 (pixels), got {tolerance!r}")
    values, inside, shape, has_k = _flatten_pairs(maps, masks, spatial_dims)
    device = values.device
    size = torch.tensor(shape, device=device)
    strides = torch.tensor([math.prod(shape[a + 1 :]) for a in range(len(shape))], device=device)

    peak = torch.stack(torch.unravel_index(values.argmax(-1), shape), dim=-1)  # (B, K, d)
    pos = peak.unsqueeze(-2) + _ball(tolerance, len(shape), device)  # (B, K, M, d)
    in_image = ((pos >= 0) & (pos < size)).all(-1)
    index = (torch.minimum(pos.clamp_min(0), size - 1) * strides).sum(-1)  # (B, K, M)
    hit = (inside.gather(-1, index) & in_image).any(-1) & (values.amax(-1) > values.amin(-1))
    out = torch.where(inside.any(-1), hit.float(), torch.nan)
    return out if has_k else out.squeeze(1)


def energy_pointing_game(maps: Tensor, masks: Tensor, *, spatial_dims: int | None = None) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020): share of the map's mass inside the mask,
    ``sum(map * mask) / sum(map)`` with the map clamped at 0; float32 ``(B,)`` or ``(B, K)``.

    nan where the clamped map sums to 0 or the mask is empty."""
    values, inside, _, has_k = _flatten_pairs(maps, masks, spatial_dims)
    values = values.clamp_min(0)
    total = values.sum(-1)
    share = (values * inside).sum(-1) / total
    out = torch.where((total > 0) & inside.any(-1), share, torch.nan).float()
    return out if has_k else out.squeeze(1)


def map_iou(maps: Tensor, masks: Tensor, threshold: float = 0.5, *, spatial_dims: int | None = None) -> Tensor:
    """IoU of the binarised map with the mask; float32 ``(B,)`` or ``(B, K)``.

    Each map is min-max normalised to [0, 1] and kept where ``>= threshold``; a constant map keeps nothing.
    nan where the union is empty."""
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    values, inside, _, has_k = _flatten_pairs(maps, masks, spatial_dims)
    lo, hi = values.amin(-1, keepdim=True), values.amax(-1, keepdim=True)
    kept = (hi > lo) & ((values - lo) / (hi - lo) >= threshold)
    union = (kept | inside).sum(-1)
    out = torch.where(union > 0, (kept & inside).sum(-1) / union, torch.nan).float()
    return out if has_k else out.squeeze(1)


def box_masks(boxes: Tensor, shape: Sequence[int]) -> Tensor:
    """Union of each sample's boxes as a bool mask ``(B, *shape)``; boxes int ``(B, N, 2d)``, half-open
    ``[y0, x0, y1, x1]`` (2D) or ``[z0, y0, x0, z1, y1, x1]`` (3D).

    Rows with a negative coordinate or an empty extent are padding and ignored; boxes are clipped to the image."""
    shape = tuple(shape)
    d = len(shape)
    if d not in (2, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ConfigError(f"shape must be 2 or 3 positive ints (H, W) or (D, H, W), got {shape!r}")
    if not isinstance(boxes, Tensor) or boxes.is_floating_point() or boxes.is_complex() or boxes.dtype == torch.bool:
        raise DataError(f"boxes must be an integer tensor (B, N, {2 * d}), got {_describe(boxes)}")
    if boxes.ndim != 3 or boxes.shape[-1] != 2 * d:
        raise DataError(f"boxes must be (B, N, {2 * d}) for a {d}D shape {shape}, got shape {tuple(boxes.shape)}")
    b, n = boxes.shape[:2]
    lo, hi = boxes[..., :d], boxes[..., d:]
    inside = ((boxes >= 0).all(-1) & (hi > lo).all(-1)).view(b, n, *[1] * d)
    for axis, length in enumerate(shape):
        coord = torch.arange(length, device=boxes.device).view([length if a == axis else 1 for a in range(d)])
        start, stop = lo[..., axis].view(b, n, *[1] * d), hi[..., axis].view(b, n, *[1] * d)
        inside = inside & (coord >= start) & (coord < stop)
    return inside.expand(b, n, *shape).any(1)


# --- faithfulness -------------------------------------------------------------------------------------------


def deletion_auc(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    steps: int = 32,
    baseline: float | Tensor = 0.0,
    batch_size: int = 64,
    activation: str | None = "softmax",
    return_curves: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Deletion AUC (Petsiuk et al., RISE, BMVC 2018): the target's score as the most salient pixels are replaced
    by ``baseline``, ``round(t P / steps)`` of them at step ``t``; trapezoid area over ``t / steps``. Lower is better.

    images ``(B, C, *S)``, maps ``(B, *S')``, targets ``(B,)``; baseline a float or a tensor broadcastable to
    ``(C, *S)``. Returns float32 ``(B,)``, or ``(auc, curves (B, steps + 1))`` with ``return_curves``."""
    maps = _check_images(images, maps, targets)
    _check_run(steps, batch_size, activation)
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    try:
        fits = torch.broadcast_shapes(base.shape, images.shape[1:]) == images.shape[1:]
    except RuntimeError:
        fits = False
    if not fits:
        raise DataError(
            f"baseline must be a float or broadcastable to one image {tuple(images.shape[1:])}, "
            f"got shape {tuple(base.shape)}"
        )
    curves = _curves(model, base.expand(images.shape), images, maps, targets, steps, batch_size, activation)
    auc = torch.trapezoid(curves, dx=1.0 / steps, dim=1)
    return (auc, curves) if return_curves else auc


def insertion_auc(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    steps: int = 32,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    activation: str | None = "softmax",
    return_curves: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Insertion AUC (Petsiuk et al., RISE, BMVC 2018): the target's score as the most salient pixels are copied
    from the image onto a blurred copy (:func:`gaussian_blur`, ``blur_sigma``); trapezoid area. Higher is better.

    images ``(B, C, *S)``, maps ``(B, *S')``, targets ``(B,)``. Returns float32 ``(B,)``, or
    ``(auc, curves (B, steps + 1))`` with ``return_curves``."""
    maps = _check_images(images, maps, targets)
    _check_run(steps, batch_size, activation)
    blurred = gaussian_blur(images, blur_sigma)
    curves = _curves(model, images, blurred, maps, targets, steps, batch_size, activation)
    auc = torch.trapezoid(curves, dx=1.0 / steps, dim=1)
    return (auc, curves) if return_curves else auc


def average_drop_increase(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    activation: str | None = "softmax",
) -> tuple[Tensor, Tensor]:
    """Per-image drop and increase (Chattopadhyay et al., Grad-CAM++, WACV 2018), float32 ``(B,)`` each.

    With Y the target's score on the image and O on ``image * map`` (map min-max normalised to [0, 1], a constant
    map to 0): drop ``= max(0, Y - O) / Y * 100``, increase ``= 100 * [O > Y]``. Their means are Average Drop % and
    Increase in Confidence %; Y should be positive (a probability)."""
    maps = _check_images(images, maps, targets)
    _check_activation(activation)
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    weights = torch.where(hi > lo, (flat - lo) / (hi - lo), 0.0).view_as(maps).unsqueeze(1)
    with _evaluating(model):
        y = _scores(model, images, targets, activation)
        o = _scores(model, images * weights, targets, activation)
    return ((y - o).clamp_min(0) / y * 100).float(), (o > y).float() * 100


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``images`` ``(N, C, *S)`` over ``S``, ``sigma`` in pixels; kernel radius
    ``ceil(3 sigma)``, edges replicated (scipy's ``gaussian_filter(mode='nearest', radius=ceil(3 sigma))``)."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"blur_sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim < 3:
        raise DataError(f"images must be a floating tensor (N, C, *S), got {_describe(images)}")
    if sigma == 0:
        return images
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = images
    for axis in range(2, images.ndim):
        moved = out.movedim(axis, -1)
        rows = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (radius, radius), mode="replicate")
        out = F.conv1d(rows, kernel).view(moved.shape).movedim(-1, axis)
    return out


# --- helpers ------------------------------------------------------------------------------------------------


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__}"


def _flatten_pairs(
    maps: Tensor, masks: Tensor, spatial_dims: int | None
) -> tuple[Tensor, Tensor, tuple[int, ...], bool]:
    """Check maps and masks; maps ``(B, K, P)`` (float32 at least), masks ``(B, K, P)`` bool, ``S``, has-K."""
    if not isinstance(maps, Tensor) or not maps.is_floating_point():
        raise DataError(f"maps must be a floating tensor (B, *S) or (B, K, *S), got {_describe(maps)}")
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool:
        raise DataError(f"masks must be a bool tensor (B, *S) or (B, K, *S), got {_describe(masks)}")
    if spatial_dims is None:
        if maps.ndim == 4 and masks.ndim == 4:
            raise DataError(
                f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} are both 4-D: 3D maps (B, D, H, W) or "
                "2D maps (B, K, H, W)? Pass spatial_dims=3 or spatial_dims=2"
            )
        spatial_dims = {3: 2, 4: 2, 5: 3}.get(maps.ndim, 0)
    elif spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if spatial_dims == 0 or maps.ndim not in (spatial_dims + 1, spatial_dims + 2):
        raise DataError(
            f"maps must be (B, *S) or (B, K, *S) with S 2D or 3D (spatial_dims={spatial_dims or 'inferred'}), "
            f"got shape {tuple(maps.shape)}"
        )
    has_k = maps.ndim == spatial_dims + 2
    shape = tuple(maps.shape[-spatial_dims:])
    allowed = [tuple(maps.shape)] + ([(maps.shape[0], *shape)] if has_k else [])
    if tuple(masks.shape) not in allowed:
        raise DataError(
            f"masks must have shape {' or '.join(map(str, allowed))} to match maps {tuple(maps.shape)}, "
            f"got shape {tuple(masks.shape)}"
        )
    values = maps.to(torch.promote_types(maps.dtype, torch.float32))
    if not has_k:
        values = values.unsqueeze(1)
    if masks.ndim < values.ndim:
        masks = masks.unsqueeze(1)
    return values.flatten(2), masks.expand(values.shape).flatten(2), shape, has_k


def _ball(radius: float, d: int, device: torch.device) -> Tensor:
    """Integer offsets ``(M, d)`` within Euclidean distance ``radius`` of the origin."""
    r = math.floor(radius)
    axis = torch.arange(-r, r + 1, device=device)
    grid = torch.cartesian_prod(*[axis] * d).view(-1, d)
    return grid[(grid**2).sum(1) <= radius**2]


def _check_images(images: Tensor, maps: Tensor, targets: Tensor) -> Tensor:
    """Check the faithfulness inputs; return the maps resized (bi/trilinear) to the images' ``S``."""
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim not in (4, 5):
        raise DataError(f"images must be a floating tensor (B, C, H, W) or (B, C, D, H, W), got {_describe(images)}")
    b, shape = images.shape[0], tuple(images.shape[2:])
    if not isinstance(maps, Tensor) or not maps.is_floating_point():
        raise DataError(f"maps must be a floating tensor (B, *S), got {_describe(maps)}")
    if maps.ndim != images.ndim - 1 or maps.shape[0] != b:
        expected = "(B, H, W)" if len(shape) == 2 else "(B, D, H, W)"
        raise DataError(
            f"maps must be {expected} with B = {b} to match images {tuple(images.shape)}, got shape {tuple(maps.shape)}"
        )
    if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise DataError(f"targets must be integer class indices (B,), got {_describe(targets)}")
    if tuple(targets.shape) != (b,):
        raise DataError(f"targets must be (B,) with B = {b} to match images, got shape {tuple(targets.shape)}")
    if tuple(maps.shape[1:]) != shape:
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        maps = F.interpolate(maps.unsqueeze(1), size=shape, mode=mode, align_corners=False).squeeze(1)
    return maps


def _check_run(steps: int, batch_size: int, activation: str | None) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    _check_activation(activation)


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")


@contextmanager
def _evaluating(model: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Eval mode and no gradients inside; every submodule's train/eval flag restored after."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [m.training for m in modules]
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


def _scores(model: Callable[[Tensor], Tensor], x: Tensor, targets: Tensor, activation: str | None) -> Tensor:
    """The model's score of each target class ``(N,)``, float32 or wider; the model must return ``(N, num_classes)``."""
    out = model(x)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise DataError(f"the model must return scores (N, num_classes) for N = {x.shape[0]}, got {_describe(out)}")
    if targets.numel() and (targets.min() < 0 or targets.max() >= out.shape[1]):
        lo, hi = int(targets.min()), int(targets.max())
        raise DataError(f"targets must lie in [0, {out.shape[1]}) (the model's classes), got values in [{lo}, {hi}]")
    out = out.to(torch.promote_types(out.dtype, torch.float32))
    if activation == "softmax":
        out = out.softmax(1)
    elif activation == "sigmoid":
        out = out.sigmoid()
    return out.gather(1, targets.view(-1, 1).to(out.device)).squeeze(1)


def _curves(
    model: Callable[[Tensor], Tensor],
    top: Tensor,
    rest: Tensor,
    maps: Tensor,
    targets: Tensor,
    steps: int,
    batch_size: int,
    activation: str | None,
) -> Tensor:
    """Scores ``(B, steps + 1)``: at step t the ``round(t P / steps)`` most salient pixels come from ``top``, the
    others from ``rest`` (both ``(B, C, *S)``); (image, step) pairs run through the model ``batch_size`` at once."""
    b, shape = rest.shape[0], rest.shape[2:]
    pixels = math.prod(shape)
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    positions = torch.arange(pixels, device=order.device).expand(b, pixels)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[i, p]: place of pixel p in image i's order
    counts = torch.tensor([round(t * pixels / steps) for t in range(steps + 1)], device=order.device)
    pairs = b * (steps + 1)
    scores = []
    with _evaluating(model):
        for start in range(0, pairs, batch_size):
            pair = torch.arange(start, min(start + batch_size, pairs), device=order.device)
            image, step = pair // (steps + 1), pair % (steps + 1)
            swap = (rank[image] < counts[step, None]).view(len(pair), 1, *shape)
            x = torch.where(swap, top[image], rest[image])
            scores.append(_scores(model, x, targets[image], activation))
    return torch.cat(scores).view(b, steps + 1).float()
