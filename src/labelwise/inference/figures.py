"""The figures of predicted masks: a 3D volume's projection (:func:`project`), a mask over its image
(:func:`mask_overlay_rgb`) and the difference of a prediction and a reference (:func:`diff_rgb`: true positives
white, false negatives red, false positives blue)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError, DataError
from labelwise.explain.outputs import png_bytes, upscale
from labelwise.io import atomic_write

__all__ = ["FN_RGB", "FP_RGB", "LABEL_RGB", "TP_RGB", "diff_rgb", "mask_overlay_rgb", "project", "write_png"]

TP_RGB, FN_RGB, FP_RGB = (255, 255, 255), (255, 0, 0), (0, 64, 255)
LABEL_RGB = ((255, 210, 0), (0, 220, 90), (255, 60, 200), (0, 200, 255), (255, 130, 0), (160, 90, 255))


def project(
    volume: np.ndarray,
    affine: np.ndarray | None = None,
    axis: int | None = None,
    reduce: Callable[..., np.ndarray] = np.max,
) -> np.ndarray:
    """The 2D view of a 3D ``volume`` ``(X, Y, Z)`` that the figures show: ``reduce`` (maximum) along ``axis``.

    ``axis`` None: with an ``affine``, the volume is first turned to RAS axes and projected along
    superior-inferior, else along the last axis. The projection is then rotated 90 degrees (``np.rot90``) so that
    the second remaining axis (anterior) points up. A 2D array is returned as it is."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return volume
    if volume.ndim != 3:
        raise DataError(f"projection: expected a 2D or 3D array, got shape {volume.shape}")
    if axis is None:
        if affine is not None:
            from nibabel.orientations import apply_orientation, io_orientation

            volume = apply_orientation(volume, io_orientation(np.asarray(affine, dtype=np.float64)))
        axis = 2
    if not -3 <= axis < 3:
        raise ConfigError(f"mip axis: expected 0, 1 or 2, got {axis}")
    return np.rot90(reduce(volume, axis=axis))


def _grey(image: np.ndarray) -> np.ndarray:
    """``image`` (2D) scaled to [0, 1] between its 0.5th and 99.5th percentiles (constant: 0)."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(image, (0.5, 99.5)) if image.size else (0.0, 0.0)
    if not high > low:
        low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
    if not high > low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of bool ``mask`` with a face neighbour outside it (outside the image counts as outside): ``mask &
    ~scipy.ndimage.binary_erosion(mask, border_value=0)``, in numpy (a cold ``labelwise predict`` imports no scipy)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = mask.copy()
    for axis in range(mask.ndim):
        for start in (0, 2):  # the neighbour before and after along ``axis``
            inner &= padded[
                tuple(slice(start, start + n) if a == axis else slice(1, 1 + n) for a, n in enumerate(mask.shape))
            ]
    return mask & ~inner


def mask_overlay_rgb(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 ``(H, W, 3)``: grey ``image`` ``(H, W)`` with each label > 0 of ``labels`` filled in its colour
    (blended by ``alpha``) and outlined in it."""
    grey = _grey(image)
    if labels.shape != grey.shape:
        raise DataError(f"overlay: mask shape {labels.shape} differs from the image's {grey.shape}")
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for label in (int(v) for v in np.unique(labels) if v > 0):
        region = labels == label
        colour = np.asarray(LABEL_RGB[(label - 1) % len(LABEL_RGB)], dtype=np.float64) / 255
        rgb[region] = (1 - alpha) * rgb[region] + alpha * colour
        rgb[_boundary(region)] = colour
    return np.round(rgb * 255).astype(np.uint8)


def diff_rgb(image: np.ndarray, prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)``: the difference of two 2D binary masks (projections, for volumes) over the dimmed grey
    ``image``: white where both are set (true positives), red where only the reference is (false negatives), blue
    where only the prediction is (false positives)."""
    prediction, reference = np.asarray(prediction) > 0, np.asarray(reference) > 0
    grey = _grey(image) * 0.5
    rgb = np.round(np.repeat(grey[..., None], 3, axis=2) * 255).astype(np.uint8)
    rgb[prediction & reference] = TP_RGB
    rgb[reference & ~prediction] = FN_RGB
    rgb[prediction & ~reference] = FP_RGB
    return rgb


def write_png(path: Path, rgb: np.ndarray, title: str) -> None:
    """``rgb`` ``(H, W, 3)`` uint8 upscaled and titled, as a PNG file ``path`` (written atomically)."""
    atomic_write(path, png_bytes(upscale(rgb), title))
