"""From a network's logits to what a user gets: probabilities (the run's output activation) and label maps (the
threshold). Training's evaluation, ``labelwise predict`` and ``labelwise explain`` all go through these two
functions, so a run predicts after training exactly as it was scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from labelwise.errors import ConfigError
from labelwise.filters.vesselness import otsu_threshold

__all__ = [
    "ACTIVATIONS",
    "Threshold",
    "activate",
    "flip_uncertainty",
    "most_foreground",
    "parse_threshold",
    "remove_small_components",
    "segment",
]

ACTIVATIONS = ("softmax", "sigmoid")
Threshold = float | Literal["otsu"] | None


def activate(logits: torch.Tensor, activation: str | None) -> torch.Tensor:
    """Probabilities from logits ``(B, K, ...)``: ``softmax`` over the classes (dim 1) or ``sigmoid`` per output
    (a label, or the one foreground channel of a segmenter)."""
    if activation == "softmax":
        return logits.float().softmax(dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    raise ConfigError(f"output activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")


def parse_threshold(threshold: Any) -> Threshold:
    """None (1 output channel: 0.5; K >= 2: argmax), "otsu", or a number in (0, 1) (strings too, as the CLI
    passes them); a ConfigError otherwise."""
    if threshold is None or (isinstance(threshold, str) and threshold.strip().lower() in ("", "argmax", "none")):
        return None
    if isinstance(threshold, str) and threshold.strip().lower() == "otsu":
        return "otsu"
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold: expected a number in (0, 1), 'otsu' or 'argmax', got {threshold!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"threshold: expected a number in (0, 1), 'otsu' or 'argmax', got {threshold!r}")
    return value


def segment(logits: torch.Tensor, threshold: Threshold = None) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """Foreground probability ``(B, *spatial)``, label map ``(B, *spatial)`` int64 and the threshold used per case
    ("argmax" where none) from segmentation logits ``(B, K, *spatial)``.

    One channel: sigmoid, foreground where p > ``threshold`` (None: 0.5; "otsu": Otsu's threshold of each case's
    probability map, 0.5 for a constant map). K >= 2: softmax, probability = 1 - p(background) (summed over the
    foreground classes, without the cancellation); labels: the argmax, or with a threshold, the likeliest foreground
    class where the probability exceeds it."""
    logits = logits.float()
    if logits.ndim < 3:
        raise ConfigError(f"segment: expected logits (B, K, *spatial), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        probability = torch.sigmoid(logits[:, 0])
    else:
        soft = logits.softmax(dim=1)
        probability = soft[:, 1:].sum(dim=1)
        if threshold is None:
            return probability, soft.argmax(dim=1), ["argmax"] * len(logits)
    used = [
        otsu_threshold(p.detach().cpu().numpy())
        if threshold == "otsu"
        else 0.5
        if threshold is None
        else float(threshold)
        for p in probability
    ]
    limit = torch.tensor(used, dtype=probability.dtype, device=probability.device).view(
        -1, *[1] * (probability.ndim - 1)
    )
    foreground = probability > limit
    if logits.shape[1] <= 2:
        return probability, foreground.long(), used
    labels = soft[:, 1:].argmax(dim=1) + 1
    return probability, torch.where(foreground, labels, torch.zeros_like(labels)), used


def most_foreground(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per voxel, the logits of the view in which the foreground is likeliest: ``views`` are logits
    ``(B, K, *spatial)`` of the same images seen otherwise (magnified, ...), with one channel (its logit decides) or
    two (class 1's minus class 0's decides). How a multi-scale filter such as Frangi's keeps the strongest response
    over its scales."""
    stacked = torch.stack(list(views))  # (S, B, K, *spatial)
    channels = stacked.shape[2]
    if channels > 2:
        raise ConfigError(f"most_foreground: binary segmentation logits (1 or 2 channels), got {channels}")
    score = stacked[:, :, 0] if channels == 1 else stacked[:, :, 1] - stacked[:, :, 0]
    pick = score.argmax(dim=0, keepdim=True).unsqueeze(2).expand(1, *stacked.shape[1:])
    return stacked.gather(0, pick)[0]


def flip_uncertainty(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two voxel maps ``(B, *spatial)`` of how unsure a segmenter is, from its logits under ``S`` test-time flips
    ``(S, B, K, *spatial)`` (:meth:`labelwise.methods.base.Method.flip_logits`):

    - entropy: the entropy of the predictive distribution (the flips' class probabilities averaged), over its
      maximum (ln K for K >= 2 softmax classes; one sigmoid channel: ln 2, foreground or not), so in [0, 1];
    - variance: the variance over the flips of the foreground probability as :func:`segment` defines it
      (one channel: the sigmoid; K >= 2: 1 - p(background)), in [0, 0.25]."""
    samples = samples.float()
    if samples.ndim < 4:
        raise ConfigError(f"flip_uncertainty: expected logits (S, B, K, *spatial), got shape {tuple(samples.shape)}")
    if samples.shape[2] == 1:
        foreground = torch.sigmoid(samples[:, :, 0])
        mean = foreground.mean(0)
        entropy = -(torch.xlogy(mean, mean) + torch.xlogy(1 - mean, 1 - mean)) / math.log(2)
    else:
        soft = samples.softmax(dim=2)
        foreground = soft[:, :, 1:].sum(dim=2)
        mean = soft.mean(0)
        entropy = -torch.xlogy(mean, mean).sum(dim=1) / math.log(samples.shape[2])
    return entropy.clamp(0, 1), foreground.var(dim=0, unbiased=False)


def remove_small_components(labels: torch.Tensor, min_size: int) -> torch.Tensor:
    """Label maps ``(B, *spatial)`` with every connected component (per class, face-connected) of fewer than
    ``min_size`` voxels set to background; ``min_size`` <= 1 keeps them all."""
    if min_size <= 1:
        return labels
    import numpy as np

    from labelwise.filters.vesselness import remove_small_components as components_kept

    out = labels.detach().cpu().numpy().copy()
    for case in out:
        for k in np.unique(case):
            if k != 0:
                case[(case == k) & ~components_kept(case == k, min_size, connectivity=1)] = 0
    return torch.from_numpy(out).to(labels.device)
