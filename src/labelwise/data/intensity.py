"""Intensity preprocessing shared by training and inference: the training split's statistics of an intensity scheme
(:func:`intensity_statistics`) and one image as training saw it (:func:`preprocess_image`), which a run records in
``inference.json``; the case cache (:mod:`labelwise.data.cache`) stores images through the same function."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from labelwise.errors import DataError

__all__ = ["TRAINED_INTENSITY", "intensity_statistics", "intensity_statistics_of", "preprocess_image"]


TRAINED_INTENSITY = ("channel", "percentile")  # intensity schemes with statistics of the training split
PERCENTILES = (0.5, 99.5)  # percentile: clip to these percentiles of the training foreground (nnU-Net's CT scheme)
FOREGROUND_SAMPLE = 100_000  # percentile: foreground voxels drawn per training case for the statistics


def intensity_statistics(
    images: Iterable[torch.Tensor | np.ndarray],
    targets: Iterable[torch.Tensor | np.ndarray],
    labelled: Iterable[bool],
    mode: str,
    seed: int = 0,
) -> dict:
    """The training split's statistics of an intensity scheme (what :func:`preprocess_image` needs), per channel:
    ``channel``: ``channel_mean`` / ``channel_std`` over every voxel of every training image; ``percentile``:
    ``clip`` (the 0.5 and 99.5 percentiles of the voxels under the labelled cases' foreground, up to 100,000 drawn
    per case with ``seed``) and ``channel_mean`` / ``channel_std`` of those voxels clipped. One pass over the
    cases (lazy sequences or generators are read one case at a time): :func:`intensity_statistics_of`."""
    return intensity_statistics_of(
        ((image, target if has_label else None) for image, target, has_label in zip(images, targets, labelled)),
        mode,
        seed,
    )


def intensity_statistics_of(cases: Iterable[tuple[Any, Any]], mode: str, seed: int = 0) -> dict:
    """:func:`intensity_statistics` of ``(image (C, *spatial), label (*spatial) or None when unlabelled)`` pairs,
    streamed: one case in memory at a time. ``channel`` merges each case's count, mean and sum of squared deviations
    (float64; Chan et al.'s pairwise update), so the result is the mean and population std of all voxels together;
    ``percentile`` keeps only the (at most 100,000 per case) foreground voxels it draws."""
    rng = np.random.default_rng(seed)
    channels, count, mean, square, samples = None, 0, None, None, []
    for image, target in cases:
        image = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        flat = image.reshape(image.shape[0], -1)
        if channels is None:
            channels = flat.shape[0]
        elif flat.shape[0] != channels:
            raise DataError(f"data.intensity: a training image has {flat.shape[0]} channel(s), the first {channels}")
        if mode == "channel":
            n = flat.shape[1]
            if n == 0:
                continue
            case_mean = flat.mean(axis=1, dtype=np.float64)
            case_square = ((flat - case_mean[:, None]) ** 2).sum(axis=1)
            if mean is None:
                count, mean, square = n, case_mean, case_square
            else:
                delta, total = case_mean - mean, count + n
                mean = mean + delta * (n / total)
                square = square + case_square + delta**2 * (count * n / total)
                count = total
            continue
        if target is None:
            inside = np.empty(0, np.int64)
        else:
            target = target.numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
            inside = np.flatnonzero(target.reshape(-1) > 0)
        if len(inside) > FOREGROUND_SAMPLE:
            inside = rng.choice(inside, FOREGROUND_SAMPLE, replace=False)
        samples.append(flat[:, inside].astype(np.float64))
    if channels is None:
        raise DataError(f"data.intensity: {mode} needs training images; there are none")
    if mode == "channel":
        assert mean is not None and square is not None  # set by the first case with voxels
        return {"channel_mean": mean.tolist(), "channel_std": np.sqrt(square / count).tolist()}
    values = np.concatenate(samples, axis=1)
    if values.shape[1] == 0:
        raise DataError(
            "data.intensity: percentile needs foreground voxels in the labelled training cases; there are none"
        )
    low, high = np.percentile(values, PERCENTILES, axis=1)
    clipped = np.clip(values, low[:, None], high[:, None])
    return {
        "clip": [low.tolist(), high.tolist()],
        "channel_mean": clipped.mean(1).tolist(),
        "channel_std": clipped.std(1).tolist(),
    }


def preprocess_image(image: np.ndarray, preprocessing: dict) -> np.ndarray:
    """One image ``(C, *spatial)`` as training saw it: resized to ``image_size`` (bilinear/trilinear) when given, then
    normalised by ``intensity``: ``channel`` with the training split's ``channel_mean`` / ``channel_std``,
    ``percentile`` clipped to the training foreground's ``clip`` percentiles first (:func:`intensity_statistics`),
    else per image (:func:`labelwise.data.patches.normalize_intensity`). ``preprocessing`` is what a run records in
    ``inference.json``, so training and inference share this one function."""
    from labelwise.data.patches import normalize_intensity

    size = preprocessing.get("image_size")
    if size:
        import torch

        if len(size) != image.ndim - 1:
            raise DataError(f"image_size {list(size)} has {len(size)} sizes but the image is {image.ndim - 1}D")
        if tuple(image.shape[1:]) != tuple(size):
            mode = "bilinear" if len(size) == 2 else "trilinear"
            image = torch.nn.functional.interpolate(
                torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                size=tuple(size),
                mode=mode,
                align_corners=False,
            )[0].numpy()
    mode = preprocessing.get("intensity", "none")
    if mode == "percentile":
        low, high = (
            np.asarray(v, dtype=np.float64).reshape((-1,) + (1,) * (image.ndim - 1)) for v in preprocessing["clip"]
        )
        if low.size != image.shape[0]:
            raise DataError(f"the image has {image.shape[0]} channel(s); the training statistics {low.size}")
        image = np.clip(image, low, high)
    if mode in ("channel", "percentile"):
        mean = np.asarray(preprocessing["channel_mean"], dtype=np.float64)
        std = np.asarray(preprocessing["channel_std"], dtype=np.float64)
        if mean.size != image.shape[0]:
            raise DataError(f"the image has {image.shape[0]} channel(s); the training statistics {mean.size}")
        shape = (-1,) + (1,) * (image.ndim - 1)
        return ((image - mean.reshape(shape)) / np.where(std > 0, std, 1.0).reshape(shape)).astype(np.float32)
    return normalize_intensity(image, mode).astype(np.float32)
