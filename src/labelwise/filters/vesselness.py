"""Multi-scale Frangi vesselness and the thresholded ``frangi`` baseline segmentation, in 2D and 3D.

Frangi et al., "Multiscale vessel enhancement filtering", MICCAI 1998 (through ``skimage.filters.frangi``). This
is how semi-automatic vessel masks are usually made (Chatterjee et al., "DS6", J. Imaging 2022) and the
classical baseline a learned vessel segmenter is compared with::

    prob = vesselness(image)                                 # float32 (*spatial) in [0, 1]
    mask, prob = frangi_segment(image, threshold="otsu")     # int64 0/1 and the vesselness

Scales (``sigmas``) are in voxels of the finest axis. ``skimage`` has no spacing argument, so with an anisotropic
``spacing`` the image is resampled (linear) to an isotropic grid at the finest spacing, filtered there, and the
vesselness resampled back to the input grid; the absolute spacing (mm or else) does not change the scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelwise.errors import ConfigError, DataError

__all__ = ["DEFAULT_SIGMAS", "frangi_segment", "remove_small_components", "vesselness"]

DEFAULT_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0)


def _check_image(image: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise DataError(f"vesselness: image must be (*spatial) with 2 or 3 axes, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"vesselness: image must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise DataError("vesselness: image holds NaN or infinite values")
    if spacing is None:
        return array, None
    space = np.asarray(spacing, dtype=np.float64).ravel()
    if space.size != array.ndim or not np.all(np.isfinite(space)) or np.any(space <= 0):
        raise ConfigError(f"vesselness: spacing must be {array.ndim} positive numbers, got {tuple(spacing)}")
    return array, space


def _check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise ConfigError(f"vesselness: sigmas must be a sequence of positive numbers, got {sigmas!r}") from None
    if not values or not all(np.isfinite(s) and s > 0 for s in values):
        raise ConfigError(f"vesselness: sigmas must be a non-empty sequence of positive numbers, got {sigmas!r}")
    return values


def vesselness(
    image: np.ndarray,
    spacing: Sequence[float] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    bright: bool = True,
    structure: float | None = None,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """Frangi vesselness of ``image`` (*spatial), 2D or 3D, scaled by its maximum: float32 (*spatial) in [0, 1].

    ``sigmas``: Gaussian scales in voxels of the finest axis (a tube of radius r answers best near sigma = r).
    ``spacing``: one size per axis; only its anisotropy matters (see the module note). ``bright``: vessels brighter
    than the background (angiography); ``False`` for dark vessels (fundus green channel). An image with no tubular
    structure (constant, say) gives all zeros. Raises :class:`DataError` / :class:`ConfigError` on bad input.

    ``structure``: Frangi's structureness constant c (the paper's eq. 13) as a share of the 99th percentile of the
    Hessian's norm at the smallest scale inside ``region`` (bool, *spatial; default everywhere); with scales that
    follow the vessels it answers alike at any resolution. ``None``: scikit-image's default, half the largest norm at
    the smallest scale over the whole image, which the strongest edge (a fundus photograph's border) sets, and which
    below a scale of about one voxel shrinks with the sampled Gaussian derivative (at 0.5 the constant is so small
    that every scale's structureness saturates).

    Note: skimage's filter tells polarity by the sign of the cross-vessel eigenvalues, which it cannot do for a
    perfectly straight, noise-free tube (its along-vessel eigenvalue is 0 to rounding): such a synthetic tube
    answers whatever ``bright`` says. Any noise or curvature (real images) restores the polarity."""
    from skimage.filters import frangi

    array, space = _check_image(image, spacing)
    scales = _check_sigmas(sigmas)
    if structure is not None and not (np.isfinite(structure) and structure > 0):
        raise ConfigError(f"vesselness: structure must be a positive number, got {structure!r}")
    if region is not None and np.shape(region) != array.shape:
        raise DataError(f"vesselness: region {np.shape(region)} and image {array.shape} differ in shape")
    shape = array.shape
    factors = None if space is None else space / space.min()
    resample = factors is not None and not np.allclose(factors, 1.0)
    if resample:
        from scipy.ndimage import zoom

        assert factors is not None  # resample implies factors
        array = zoom(array, factors, order=1, mode="nearest", grid_mode=False)
        if region is not None:
            region = zoom(np.asarray(region, np.float32), factors, order=1, mode="nearest", grid_mode=False) > 0.5
    if float(array.max()) == float(array.min()):
        return np.zeros(shape, dtype=np.float32)
    gamma = None
    if structure is not None:
        from skimage.feature import hessian_matrix, hessian_matrix_eigvals

        eigenvalues = hessian_matrix_eigvals(
            hessian_matrix(array, min(scales), mode="reflect", use_gaussian_derivatives=True)
        )
        norm = np.sqrt((eigenvalues**2).sum(0))
        inside = norm if region is None or not np.any(region) else norm[np.asarray(region, bool)]
        gamma = float(structure) * float(np.percentile(inside, 99))
        if not gamma > 0:
            gamma = None
    response = frangi(array, sigmas=scales, black_ridges=not bright, gamma=gamma, mode="reflect")
    response = np.nan_to_num(np.asarray(response, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    response = np.maximum(response, 0.0)
    if resample:
        from scipy.ndimage import affine_transform

        # zoom(grid_mode=False) maps the corner voxel centres onto each other: scale (n' - 1) / (n - 1) per axis.
        scale = [(m - 1) / (n - 1) if n > 1 else 1.0 for m, n in zip(response.shape, shape)]
        response = affine_transform(response, np.asarray(scale), output_shape=shape, order=1, mode="nearest")
        response = np.maximum(response, 0.0)
    top = float(response.max())
    if not top > 0:
        return np.zeros(shape, dtype=np.float32)
    return np.clip(response / top, 0.0, 1.0).astype(np.float32)


def frangi_segment(
    image: np.ndarray,
    threshold: str | float = "otsu",
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    spacing: Sequence[float] | None = None,
    bright: bool = True,
    min_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Vessel mask by thresholding :func:`vesselness`: returns (mask int64 0/1, probability float32), both (*spatial).

    ``threshold``: ``"otsu"`` (Otsu's threshold of the vesselness values; foreground is strictly above it) or a
    number in [0, 1] on the max-normalised vesselness. ``min_size`` > 0 removes connected components (full
    connectivity) of fewer voxels. A constant image gives an empty mask and a zero probability."""
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ConfigError(f"frangi_segment: threshold must be 'otsu' or a number in [0, 1], got {threshold!r}")
    elif (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.floating, np.integer))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ConfigError(f"frangi_segment: threshold must be 'otsu' or a number in [0, 1], got {threshold!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ConfigError(f"frangi_segment: min_size must be an integer >= 0, got {min_size!r}")
    probability = vesselness(image, spacing=spacing, sigmas=sigmas, bright=bright)
    if float(probability.max()) <= float(probability.min()):
        return np.zeros(probability.shape, dtype=np.int64), probability
    if threshold == "otsu":
        level = otsu_threshold(probability)
    else:
        level = float(threshold)
    mask = probability > level
    if min_size > 0 and mask.any():
        mask = remove_small_components(mask, min_size)
    return mask.astype(np.int64), probability


def remove_small_components(mask: np.ndarray, min_size: int, connectivity: int | None = None) -> np.ndarray:
    """``mask`` (bool, *spatial) without its connected components of fewer than ``min_size`` voxels. ``connectivity``:
    how many axes a step between neighbours may change (1: faces only; None: all, full connectivity). The one
    component filter: the Frangi masks and label noise use full connectivity, a model's masks face connectivity
    (:func:`labelwise.models.outputs.remove_small_components`, per class)."""
    from scipy.ndimage import generate_binary_structure, label

    structure = generate_binary_structure(mask.ndim, mask.ndim if connectivity is None else connectivity)
    labels, count = label(mask, structure=structure)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def otsu_threshold(values: np.ndarray, default: float = 0.5) -> float:
    """Otsu's threshold of ``values`` (computed in float64, so that a float32 map spanning a few ulps still has 256
    histogram bins); ``default`` for an empty or constant map, which has none."""
    from skimage.filters import threshold_otsu

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not float(values.max()) > float(values.min()):
        return float(default)
    return float(threshold_otsu(values))
