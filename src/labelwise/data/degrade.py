"""Label-noise simulators for segmentation masks: a clean training set made imperfect in a known way.

Each kind models one way real vessel (or organ) masks go wrong. ``strength`` (:data:`STRENGTH_MEANING`) is in
voxels of the mask's own grid (pixels in 2D) for ``thin``, ``erode`` and ``dilate``, so on a finer grid the same
noise takes a strength scaled by the resolution and rounded (the balls are digital); ``drop`` (a share),
``semi-automatic`` (a component size in squares / cubes of the vessels' mean width) and ``mixed`` (a scale on its
pixel kinds' draws) need no scaling::

    noisy = degrade_mask("thin", mask, strength=3)                     # vessels narrower than 3 px gone
    manifest = degrade_manifest("drive.csv", "semi-automatic", out="drive-semi")  # labelwise data degrade

:func:`degrade_manifest` writes the degraded masks of the training cases, ``noise.csv`` (what each case got and
its Dice to the clean mask) and a manifest whose training rows point at them, with the clean mask in the ``truth``
column (scored at the end of a run next to the noisy label); validation and test cases keep their references, so a
run is still selected and scored against clean masks. Masks must hold one foreground class (0/1, or 0/k read as
foreground).
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_STRENGTH",
    "KINDS",
    "MIXED_KINDS",
    "MIXED_RANGE",
    "STRENGTH_MEANING",
    "degrade_manifest",
    "degrade_mask",
    "dilate",
    "draw_mixed",
    "drop",
    "erode",
    "estimate_field_of_view",
    "local_thickness",
    "semi_automatic",
    "thin",
    "vessel_scales",
]

KINDS = ("thin", "erode", "dilate", "drop", "semi-automatic", "mixed")
DEFAULT_STRENGTH = {"thin": 3.0, "erode": 1.0, "dilate": 1.0, "drop": 0.3, "semi-automatic": 2.0, "mixed": 1.0}
STRENGTH_MEANING = {
    "thin": "the narrowest vessel width kept, voxels of the mask's grid",
    "erode": "the border shift (ball radius), voxels of the mask's grid",
    "dilate": "the border shift (ball radius), voxels of the mask's grid",
    "drop": "the share of connected components removed",
    "semi-automatic": "the smallest connected component kept, in squares (2D) or cubes (3D) of the clean mask's "
    "mean vessel width",
    "mixed": "a scale on the drawn thin / erode / dilate strengths (voxels): the grid's size relative to the one "
    "the ranges are meant for",
}
PIXEL_KINDS = ("thin", "erode", "dilate")  # strength in voxels: scaled by the resolution for the same noise
MIXED_KINDS = ("thin", "erode", "dilate", "drop", "semi-automatic")
# Each mixed case draws its kind uniformly from MIXED_KINDS and its strength uniformly from this range (the pixel
# kinds' ranges times --strength), rounded to 2 decimals.
MIXED_RANGE = {
    "thin": (2.0, 4.0),
    "erode": (1.0, 1.5),
    "dilate": (1.0, 2.0),
    "drop": (0.1, 0.5),
    "semi-automatic": (1.0, 4.0),
}
SCALE_SPAN = 3.0  # semi-automatic: the largest Frangi scale over the smallest
SCALE_COUNT = 4
MIN_SIGMA = 1.0  # voxels: below it scikit-image's sampled Gaussian derivatives answer little
STRUCTURE = 0.15  # Frangi's c as a share of the Hessian norm's 99th percentile in the field of view (vesselness)
FOV_LEVEL = 0.2  # field of view: dark below this share of the way from the background's level to the disc's
FOV_FLAT = 0.1  # ... and a border is only one if its spread is under this share of the image's range
FOV_GAP = 0.3  # ... and the disc's median is this share of the range above the border's
FOV_MIN_SHARE = 0.01  # ... and the border covers at least this share of the image


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
    return (grid**2).sum(0) <= radius**2


def local_thickness(mask: np.ndarray) -> np.ndarray:
    """The local thickness of ``mask`` (*spatial, 2D or 3D; foreground > 0) in voxels: float64 (*spatial), 0 outside.

    At a voxel it is the diameter of the largest ball inside the mask that holds it, balls centred on the skeleton,
    a centre at distance d from the background giving diameter 2d - 1 (a line one voxel across has thickness 1,
    three across 3; an even width w reads as w - 1 on the voxel grid, and its one side that no such ball reaches
    as 1, the voxel itself). Assumes an isotropic grid."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    foreground = _binary(mask)
    thickness = np.zeros(foreground.shape, np.float64)
    if not foreground.any():
        return thickness
    depth = distance_transform_edt(foreground)
    centres = skeletonize(foreground) & foreground
    shape = np.asarray(foreground.shape)
    flat_foreground = foreground.ravel()
    out = thickness.ravel()
    for d in np.unique(depth[centres]):  # ascending: a thicker ball overwrites a thinner one
        points = np.argwhere(centres & (depth == d))
        ball = _ball(d - 1e-6, foreground.ndim)
        offsets = np.argwhere(ball) - (np.asarray(ball.shape) // 2)
        step = max(1, 4_000_000 // (len(offsets) * foreground.ndim))
        for start in range(0, len(points), step):  # the balls painted directly: a dilation per depth is slow
            targets = (points[start : start + step, None, :] + offsets[None]).reshape(-1, foreground.ndim)
            targets = targets[((targets >= 0) & (targets < shape)).all(1)]
            index = np.ravel_multi_index(tuple(targets.T), foreground.shape)
            out[index[flat_foreground[index]]] = 2.0 * d - 1.0
    thickness[foreground & (thickness < 1)] = 1.0  # no centre's ball reaches it: the voxel alone
    return thickness


def thin(mask: np.ndarray, width: float) -> np.ndarray:
    """The mask without its vessels narrower than ``width`` voxels: what a vesselness threshold misses.

    The width at a voxel is its :func:`local_thickness`. Voxels thinner than ``width`` are removed, so a thin branch
    leaving a thick trunk goes and the trunk stays whole."""
    foreground = _binary(mask)
    if not foreground.any() or width <= 1:
        return foreground.astype(np.int64)
    return (foreground & (local_thickness(foreground) >= width - 1e-6)).astype(np.int64)


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


def _finest_factors(spacing: Sequence[float] | None, dims: int) -> np.ndarray:
    """Each axis's spacing over the finest one (ones without ``spacing``): vesselness's scales are in finest voxels."""
    if spacing is None:
        return np.ones(dims)
    space = np.asarray(spacing, dtype=np.float64).ravel()
    if space.size != dims or not np.all(np.isfinite(space)) or np.any(space <= 0):
        raise ConfigError(f"degrade: spacing must be {dims} positive numbers, got {tuple(spacing)}")
    return space / space.min()


def vessel_scales(mask: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[tuple[float, ...], float]:
    """The Frangi scales a person would pick for the vessels of ``mask`` (*spatial), and their mean width: both in
    voxels of the finest axis (the units of :func:`labelwise.filters.vesselness.vesselness`).

    From the :func:`local_thickness` of the mask's vessel voxels (on an isotropic grid at the finest spacing when
    ``spacing`` is anisotropic: the mask resampled linearly, > 0.5): the largest scale is the radius of the widest
    vessels (half the 90th percentile of the thickness), the smallest a third of it and at least one voxel (below
    it the sampled Gaussian derivatives answer little), four scales spaced geometrically; the width is the mean
    thickness. On DRIVE's masks: about (1.1, 1.6, 2.4, 3.4) and 3.8 pixels; both scale with the resolution."""
    foreground = _binary(mask)
    factors = _finest_factors(spacing, foreground.ndim)
    if not np.allclose(factors, 1.0):
        from scipy.ndimage import zoom

        foreground = zoom(foreground.astype(np.float32), factors, order=1, grid_mode=False) > 0.5
    thickness = local_thickness(foreground)[foreground]
    if not thickness.size:
        return (MIN_SIGMA,), 1.0
    largest = max(MIN_SIGMA, float(np.percentile(thickness, 90)) / 2.0)
    smallest = max(MIN_SIGMA, largest / SCALE_SPAN)
    sigmas = tuple(sorted({round(float(s), 3) for s in np.geomspace(smallest, largest, SCALE_COUNT)}))
    return sigmas, float(thickness.mean())


def estimate_field_of_view(image: np.ndarray) -> np.ndarray:
    """The field of view of ``image`` (``(C, *spatial)``, 2D or 3D), bool (*spatial): a fundus photograph is a
    bright disc on a dark, flat background; an image without such a border is all field of view (all True).

    The channel mean is split by Otsu's threshold; the border is the voxels darker than :data:`FOV_LEVEL` of the way
    from the dark class's median to the bright one's that connect (face neighbours) to the image's frame. It counts
    only when it is flat (its 5-95 % spread under :data:`FOV_FLAT` of the image's 1-99 % range), dark (the rest's
    median :data:`FOV_GAP` of the range above its own) and at least :data:`FOV_MIN_SHARE` of the image; the field of
    view is then the largest connected piece of the rest (holes inside it included)."""
    from scipy.ndimage import binary_fill_holes, generate_binary_structure, label

    from labelwise.filters.vesselness import otsu_threshold

    array = np.asarray(image, dtype=np.float32)
    if array.ndim not in (3, 4):
        raise DataError(
            f"estimate_field_of_view: image must be (C, *spatial) with 2 or 3 spatial axes, got shape {array.shape}"
        )
    grey = array.mean(0)
    everything = np.ones(grey.shape, bool)
    if not np.all(np.isfinite(grey)):
        raise DataError("estimate_field_of_view: the image holds NaN or infinite values")
    low, high = (float(v) for v in np.percentile(grey, [1, 99]))
    if not high > low:
        return everything
    split = otsu_threshold(grey)
    dark, bright = float(np.median(grey[grey <= split])), float(np.median(grey[grey > split]))
    candidates = grey <= dark + FOV_LEVEL * (bright - dark)
    labels, _ = label(candidates, structure=generate_binary_structure(grey.ndim, 1))
    frame = np.zeros(grey.shape, bool)
    for axis in range(grey.ndim):
        frame[(slice(None),) * axis + (0,)] = frame[(slice(None),) * axis + (-1,)] = True
    touching = np.unique(labels[frame & candidates])
    border = np.isin(labels, touching[touching > 0])
    if border.mean() < FOV_MIN_SHARE or border.all():
        return everything
    values = grey[border]
    spread = float(np.percentile(values, 95) - np.percentile(values, 5))
    gap = float(np.median(grey[~border]) - np.median(values))
    if spread > FOV_FLAT * (high - low) or gap < FOV_GAP * (high - low):
        return everything
    pieces, _ = label(~border, structure=generate_binary_structure(grey.ndim, grey.ndim))
    largest = np.argmax(np.bincount(pieces.ravel())[1:]) + 1
    return binary_fill_holes(pieces == largest)


def semi_automatic(
    image: np.ndarray,
    mask: np.ndarray,
    min_component: float,
    roi: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """The mask a semi-automatic pipeline makes from ``image`` (``(C, *spatial)``) itself, as DS6's training labels
    were made: Frangi vesselness, Otsu's threshold, connected components under ``min_component`` squares (2D) or
    cubes (3D) of the vessels' mean width removed (:func:`labelwise.filters.vesselness.frangi_segment`). Its errors
    are the filter's: faint small vessels missed, large ones thinned, junctions and edges broken, blobs and borders
    answered.

    The clean ``mask`` only makes the choices the person running the filter would make, so the result holds at any
    resolution: the scales and the mean width (:func:`vessel_scales`, from the vessels' local thickness), the channel
    where the vessels stand out most and their polarity (brighter or darker than the background). Frangi's
    structureness constant is :data:`STRUCTURE` times the 99th percentile of the Hessian's norm at the smallest
    scale inside the field of view (on DRIVE it gives the fixed-scale pipeline's sensitivity, about 0.4). The filter's
    answer outside the field of view (``roi``, else :func:`estimate_field_of_view`) and within twice the largest
    scale of its border is dropped (a fundus photograph's border is a strong edge the filter answers as a vessel; the
    person would erase that ring) and Otsu's threshold is taken inside it. ``spacing``: one size per axis."""
    from scipy.ndimage import distance_transform_edt

    from labelwise.filters.vesselness import otsu_threshold, remove_small_components, vesselness

    foreground = _binary(mask)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == foreground.ndim:
        image = image[None]
    if image.shape[1:] != foreground.shape:
        raise DataError(f"degrade: image {image.shape[1:]} and mask {foreground.shape} differ in shape")
    if roi is not None and np.shape(roi) != foreground.shape:
        raise DataError(f"degrade: roi {np.shape(roi)} and mask {foreground.shape} differ in shape")
    if not foreground.any():
        return foreground.astype(np.int64)
    factors = _finest_factors(spacing, foreground.ndim)
    inside = estimate_field_of_view(image) if roi is None else np.asarray(roi) > 0
    sigmas, width = vessel_scales(foreground, spacing)
    best, bright, contrast = 0, True, -1.0
    for c, channel in enumerate(image):
        vessel, background = channel[foreground & inside], channel[~foreground & inside]
        if not vessel.size or not background.size:
            continue
        score = (float(vessel.mean()) - float(background.mean())) / (float(background.std()) + 1e-8)
        if abs(score) > contrast:
            best, bright, contrast = c, score > 0, abs(score)
    answer = vesselness(image[best], spacing=spacing, sigmas=sigmas, bright=bright, structure=STRUCTURE, region=inside)
    if not inside.all():  # the ring along the border: nearer to the outside than twice the largest scale
        inside = distance_transform_edt(inside, sampling=factors) > 2 * max(sigmas)
    if not inside.any():
        return np.zeros(foreground.shape, np.int64)
    answer = np.where(inside, answer, 0.0)
    out = answer > otsu_threshold(answer[inside])
    voxels = min_component * width**foreground.ndim / float(np.prod(factors))  # finest voxels to the mask's
    if voxels >= 1 and out.any():
        out = remove_small_components(out, int(np.ceil(voxels)))
    return out.astype(np.int64)


def draw_mixed(rng: np.random.Generator, scale: float = 1.0, with_image: bool = True) -> tuple[str, float]:
    """The kind and strength one ``mixed`` case gets: a kind drawn uniformly from :data:`MIXED_KINDS` (without
    ``semi-automatic`` when no image is at hand), a strength uniformly from its :data:`MIXED_RANGE` (times ``scale``
    for the kinds in voxels, :data:`PIXEL_KINDS`), rounded to 2 decimals."""
    kinds = [k for k in MIXED_KINDS if with_image or k != "semi-automatic"]
    kind = kinds[int(rng.integers(len(kinds)))]
    low, high = MIXED_RANGE[kind]
    strength = float(rng.uniform(low, high)) * (scale if kind in PIXEL_KINDS else 1.0)
    return kind, round(strength, 2)


def _check(kind: str, strength: float | None) -> float:
    if kind not in KINDS:
        raise ConfigError(f"degrade: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    value = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    if not np.isfinite(value) or value < 0 or (kind == "drop" and value > 1):
        limits = "in [0, 1]" if kind == "drop" else ">= 0"
        raise ConfigError(f"degrade: --strength for {kind} ({STRENGTH_MEANING[kind]}) must be {limits}, got {strength}")
    return value


def degrade_mask(
    kind: str,
    mask: np.ndarray,
    strength: float | None = None,
    rng: np.random.Generator | None = None,
    image: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """``mask`` degraded by ``kind`` (:data:`KINDS`) at ``strength`` (default :data:`DEFAULT_STRENGTH`, meaning
    :data:`STRENGTH_MEANING`); int64 0/1. ``drop`` and ``mixed`` draw from ``rng`` (``mixed``: :func:`draw_mixed`,
    then that kind with the same ``rng``); ``semi-automatic`` needs the ``image`` (``roi`` and ``spacing``
    optional)."""
    value = _check(kind, strength)
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "mixed":
        kind, value = draw_mixed(rng, value, with_image=image is not None)
    if kind == "thin":
        return thin(mask, value)
    if kind == "erode":
        return erode(mask, value)
    if kind == "dilate":
        return dilate(mask, value)
    if kind == "drop":
        return drop(mask, value, rng)
    if image is None:
        raise ConfigError("degrade: semi-automatic makes the mask from the image; pass image=")
    return semi_automatic(image, mask, value, roi=roi, spacing=spacing)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def degrade_manifest(
    manifest: str | Path, kind: str, out: str | Path, strength: float | None = None, seed: int = 0, progress=None
) -> Path:
    """Write ``out/labels/<id>`` (the degraded masks of the labelled training cases: pictures as PNG, NIfTI with
    their own affine, arrays as ``.npy``), ``out/noise.csv`` (one row per degraded case: ``id``, the ``kind`` and
    ``strength`` applied, what ``mixed`` drew for it, and the ``dice`` of the degraded mask to the clean one over the
    whole grid) and ``out/manifest.csv``: the same cases, training labels replaced, the clean mask in ``truth`` (an
    existing ``truth`` is kept), other splits unchanged. Returns the manifest path. Random draws (``drop``,
    ``mixed``) come from a generator keyed by ``seed`` and the case id, so a case degrades alike whatever the
    manifest's order. ``progress(done, total, case_id)`` is called after each case."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.pairing import write_manifest
    from labelwise.data.volumes import format_of, read_image, read_volume, suffix_of, write_volume
    from labelwise.io import atomic_write

    value = _check(kind, strength)
    cases = read_manifest(manifest)
    out = Path(out)
    target = out / "manifest.csv"
    if Path(manifest).resolve() == target.resolve():
        raise ConfigError(f"degrade: --out {out} would overwrite the input manifest {manifest}")
    todo = {c.id for c in cases if c.split == "train" and c.labelled}  # the cases degraded; the rest kept as they are
    if not todo:
        raise DataError(f"{manifest}: no labelled training case to degrade")
    rows, record, done = [], [], 0
    for case in cases:
        row = {
            "id": case.id,
            "image": case.image,
            "label": case.label or "",
            "split": case.split,
            "truth": case.truth or "",
            "roi": case.roi or "",
        }
        rows.append(row)
        if case.id not in todo:
            continue
        assert case.label is not None  # todo holds labelled cases
        # keyed by the case id: the same case degrades alike whatever the manifest's order
        rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])
        applied, amount = (kind, value) if kind != "mixed" else draw_mixed(rng, value, with_image=True)
        label = read_volume(case.label, mask=True)
        image = roi = None
        if applied == "semi-automatic":
            image = read_image(case.image).array
            roi = read_volume(case.roi, mask=True).array if case.roi is not None else None
        try:
            noisy = degrade_mask(applied, label.array, amount, rng, image=image, roi=roi, spacing=label.spacing)
        except DataError as err:
            raise DataError(f"{case.id} ({case.label}): {err}") from None
        path = out / "labels" / f"{case.id}{format_of(case.label).mask_suffix or suffix_of(case.label)}"
        write_volume(path, noisy.astype(np.uint8), spacing=label.spacing, affine=label.affine)
        record.append(
            {"id": case.id, "kind": applied, "strength": f"{amount:g}", "dice": f"{_dice(noisy, label.array):.4f}"}
        )
        row["truth"], row["label"] = case.truth or case.label, path
        done += 1
        if progress is not None:
            progress(done, len(todo), case.id)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["id", "kind", "strength", "dice"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(record)
    atomic_write(out / "noise.csv", table.getvalue())
    write_manifest(rows, target)
    return target
