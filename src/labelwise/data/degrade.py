"""Label-noise simulators for segmentation masks: a clean training set made imperfect in a known way.

Each kind models one way real vessel (or organ) masks go wrong; ``strength`` is in voxels of the mask's own grid
(pixels in 2D) except for ``drop`` (a share) and ``semi-automatic`` (a component size)::

    noisy = degrade_mask("thin", mask, strength=3)                     # vessels narrower than 3 px gone
    manifest = degrade_manifest("drive.csv", "semi-automatic", out="drive-semi")  # labelwise data degrade

:func:`degrade_manifest` writes the degraded masks of the training cases and a manifest whose training rows point
at them, with the clean mask in the ``truth`` column (scored at the end of a run next to the noisy label);
validation and test cases keep their references, so a run is still selected and scored against clean masks.
Masks must hold one foreground class (0/1, or 0/k read as foreground).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError, DataError

__all__ = ["DEFAULT_STRENGTH", "KINDS", "degrade_manifest", "degrade_mask", "dilate", "drop", "erode",
           "semi_automatic", "thin"]

KINDS = ("thin", "erode", "dilate", "drop", "semi-automatic")
DEFAULT_STRENGTH = {"thin": 3.0, "erode": 1.0, "dilate": 1.0, "drop": 0.3, "semi-automatic": 30.0}
STRENGTH_MEANING = {"thin": "the narrowest vessel width kept, voxels", "erode": "the border shift, voxels",
                    "dilate": "the border shift, voxels", "drop": "the share of connected components removed",
                    "semi-automatic": "the smallest connected component kept, voxels"}


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise DataError(f"degrade: a mask must be 2D or 3D, got shape {mask.shape}")
    if np.unique(mask[mask > 0]).size > 1:
        raise DataError("degrade: the mask holds several foreground classes; the simulators model one (vessels)")
    return mask > 0


def _ball(radius: float, dims: int) -> np.ndarray:
    r = int(np.floor(radius))
    grid = np.indices((2 * r + 1,) * dims) - r
    return (grid ** 2).sum(0) <= radius ** 2


def thin(mask: np.ndarray, width: float) -> np.ndarray:
    """The mask without its vessels narrower than ``width`` voxels: what a vesselness threshold misses.

    The width at a voxel is its local thickness: the diameter of the largest ball inside the mask that holds it,
    balls centred on the skeleton, a centre at distance d from the background giving diameter 2d - 1 (a line one
    voxel across has width 1, three across width 3; an even width w reads as w - 1 on the voxel grid). Voxels
    thinner than ``width`` are removed, so a thin branch leaving a thick trunk goes and the trunk stays whole."""
    from scipy.ndimage import binary_dilation, distance_transform_edt
    from skimage.morphology import skeletonize

    foreground = _binary(mask)
    if not foreground.any() or width <= 1:
        return foreground.astype(np.int64)
    depth = distance_transform_edt(foreground)
    centres = skeletonize(foreground) & foreground
    thickness = np.zeros(foreground.shape, np.float64)
    for d in np.unique(depth[centres]):  # ascending: a thicker ball overwrites a thinner one
        covered = binary_dilation(centres & (depth == d), _ball(d - 1e-6, foreground.ndim)) & foreground
        thickness[covered] = 2.0 * d - 1.0
    return (foreground & (thickness >= width - 1e-6)).astype(np.int64)


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """The mask with its borders moved in by ``radius`` voxels (a ball): a tracer that stays inside the lumen;
    vessels thinner than twice the radius vanish."""
    from scipy.ndimage import binary_erosion

    foreground = _binary(mask)
    if radius < 1:
        return foreground.astype(np.int64)
    return binary_erosion(foreground, _ball(radius, foreground.ndim), border_value=0).astype(np.int64)


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """The mask with its borders moved out by ``radius`` voxels (a ball): a generous brush, partial volume counted
    as vessel; neighbouring vessels merge."""
    from scipy.ndimage import binary_dilation

    foreground = _binary(mask)
    if radius < 1:
        return foreground.astype(np.int64)
    return binary_dilation(foreground, _ball(radius, foreground.ndim)).astype(np.int64)


def drop(mask: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The mask without a random ``share`` of its connected components (full connectivity; the number removed is
    rounded): structures an annotator did not trace at all."""
    from scipy.ndimage import generate_binary_structure, label

    foreground = _binary(mask)
    labels, count = label(foreground, structure=generate_binary_structure(foreground.ndim, foreground.ndim))
    removed = int(round(share * count))
    if removed == 0:
        return foreground.astype(np.int64)
    gone = rng.choice(np.arange(1, count + 1), size=removed, replace=False)
    return (foreground & ~np.isin(labels, gone)).astype(np.int64)


def semi_automatic(image: np.ndarray, mask: np.ndarray, min_size: float, roi: np.ndarray | None = None,
                   spacing: Sequence[float] | None = None) -> np.ndarray:
    """The mask a semi-automatic pipeline makes from ``image`` (``(C, *spatial)``) itself, as DS6's training labels
    were made: Frangi vesselness, Otsu's threshold, connected components under ``min_size`` voxels removed
    (:func:`labelwise.filters.vesselness.frangi_segment`). Its errors are the filter's: faint small vessels
    missed, large ones thinned, junctions and edges broken, blobs and borders answered.

    The clean ``mask`` only makes the choices the person running the filter would make: the channel where the
    vessels stand out most and their polarity (brighter or darker than the background). With ``roi`` the filter's
    answer outside it and within twice the largest scale of its border is dropped (a fundus photograph's border is
    a strong edge the filter answers as a vessel; the person would erase that ring) and Otsu's threshold is taken
    inside it."""
    from labelwise.filters.vesselness import DEFAULT_SIGMAS, otsu_threshold, remove_small_components, vesselness

    foreground = _binary(mask)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == foreground.ndim:
        image = image[None]
    if image.shape[1:] != foreground.shape:
        raise DataError(f"degrade: image {image.shape[1:]} and mask {foreground.shape} differ in shape")
    inside = np.ones(foreground.shape, bool) if roi is None else np.asarray(roi) > 0
    if not foreground.any():
        return foreground.astype(np.int64)
    best, bright, contrast = 0, True, -1.0
    for c, channel in enumerate(image):
        vessel, background = channel[foreground & inside], channel[~foreground & inside]
        if not vessel.size or not background.size:
            continue
        score = (float(vessel.mean()) - float(background.mean())) / (float(background.std()) + 1e-8)
        if abs(score) > contrast:
            best, bright, contrast = c, score > 0, abs(score)
    answer = vesselness(image[best], spacing=spacing, sigmas=DEFAULT_SIGMAS, bright=bright)
    if roi is not None:
        from scipy.ndimage import binary_erosion

        inside = binary_erosion(inside, _ball(2 * max(DEFAULT_SIGMAS), inside.ndim), border_value=1)
    answer = np.where(inside, answer, 0.0)
    out = answer > otsu_threshold(answer[inside])
    if min_size > 0 and out.any():
        out = remove_small_components(out, int(min_size))
    return out.astype(np.int64)


def _check(kind: str, strength: float | None) -> float:
    if kind not in KINDS:
        raise ConfigError(f"degrade: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    value = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    if not np.isfinite(value) or value < 0 or (kind == "drop" and value > 1):
        limits = "in [0, 1]" if kind == "drop" else ">= 0"
        raise ConfigError(f"degrade: --strength for {kind} ({STRENGTH_MEANING[kind]}) must be {limits}, got {strength}")
    return value


def degrade_mask(kind: str, mask: np.ndarray, strength: float | None = None, rng: np.random.Generator | None = None,
                 image: np.ndarray | None = None, roi: np.ndarray | None = None,
                 spacing: Sequence[float] | None = None) -> np.ndarray:
    """``mask`` degraded by ``kind`` (:data:`KINDS`) at ``strength`` (default :data:`DEFAULT_STRENGTH`); int64 0/1.
    ``drop`` draws from ``rng``; ``semi-automatic`` needs the ``image`` (``roi`` and ``spacing`` optional)."""
    value = _check(kind, strength)
    if kind == "thin":
        return thin(mask, value)
    if kind == "erode":
        return erode(mask, value)
    if kind == "dilate":
        return dilate(mask, value)
    if kind == "drop":
        return drop(mask, value, rng if rng is not None else np.random.default_rng(0))
    if image is None:
        raise ConfigError("degrade: semi-automatic makes the mask from the image; pass image=")
    return semi_automatic(image, mask, value, roi=roi, spacing=spacing)


def degrade_manifest(manifest: str | Path, kind: str, out: str | Path, strength: float | None = None,
                     seed: int = 0, progress=None) -> Path:
    """Write ``out/labels/<id>`` (the degraded masks of the labelled training cases: pictures as PNG, NIfTI with
    their own affine, arrays as ``.npy``) and ``out/manifest.csv``: the same cases, training labels replaced, the
    clean mask in ``truth`` (an existing ``truth`` is kept), other splits unchanged. Returns the manifest path.
    ``progress(done, total, case_id)`` is called after each case."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.pairing import write_manifest
    from labelwise.data.volumes import PICTURE_SUFFIXES, read_image, read_volume, suffix_of, write_volume

    value = _check(kind, strength)
    cases = read_manifest(manifest)
    out = Path(out)
    target = out / "manifest.csv"
    if Path(manifest).resolve() == target.resolve():
        raise ConfigError(f"degrade: --out {out} would overwrite the input manifest {manifest}")
    todo = {c.id for c in cases if c.split == "train" and c.labelled}  # the cases degraded; the rest kept as they are
    if not todo:
        raise DataError(f"{manifest}: no labelled training case to degrade")
    rows, done = [], 0
    for case in cases:
        row = {"id": case.id, "image": case.image, "label": case.label or "", "split": case.split,
               "truth": case.truth or "", "roi": case.roi or ""}
        rows.append(row)
        if case.id not in todo:
            continue
        # keyed by the case id: the same case degrades alike whatever the manifest's order
        rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])
        label = read_volume(case.label, mask=True)
        image = roi = None
        if kind == "semi-automatic":
            image = read_image(case.image).array
            roi = read_volume(case.roi, mask=True).array if case.roi is not None else None
        try:
            noisy = degrade_mask(kind, label.array, value, rng, image=image, roi=roi, spacing=label.spacing)
        except DataError as err:
            raise DataError(f"{case.id} ({case.label}): {err}") from None
        suffix = suffix_of(case.label)
        path = out / "labels" / f"{case.id}{'.png' if suffix in PICTURE_SUFFIXES else suffix}"
        write_volume(path, noisy.astype(np.uint8), spacing=label.spacing, affine=label.affine)
        row["truth"], row["label"] = case.truth or case.label, path
        done += 1
        if progress is not None:
            progress(done, len(todo), case.id)
    write_manifest(rows, target)
    return target
