"""The built-in ``vessels`` dataset: synthetic angiography with a clean vessel mask and a noisy semi-automatic one.

A stand-in for DS6 (Chatterjee et al., "DS6, deformation-aware semi-supervised learning: application to small
vessel segmentation with noisy training data", J. Imaging 2022): 3D time-of-flight MR angiography (or 2D
vessel pictures) whose training labels come from a semi-automatic method that misses the smallest vessels.

Each case holds a few vessel trees entering from the border. A branch is a smooth random walk with momentum; it
ends in a bifurcation whose children follow Murray's law (r^3 = r1^3 + r2^3, Murray 1926) with a log-uniform
split, so side branches of every size leave a trunk and radii run from about 4 voxels down to below one voxel.
The vessel signal has partial volume, so a sub-voxel vessel is faint but there: in 3D (tomographic, TOF MRA) it
is the blood fraction, a disc blurred by a Gaussian point-spread function; in 2D (a projection, like fundus or
X-ray angiography) it is the Beer-Lambert absorption along the chord through the vessel, blurred. Bright vessels
sit on smooth tissue texture, times a smooth bias field (+-20-30 %), with Rician noise. The clean mask
(``truth``) is every voxel whose centre lies within a vessel plus every voxel the centreline passes through (so a
sub-voxel vessel is a thin connected line); the training mask (``noisy``) is what a semi-automatic pipeline
gives: :func:`labelwise.filters.vesselness.frangi_segment` (Otsu) on the noisy image, components under 30 voxels
removed. It misses faint small vessels and thins the edges of large ones; nothing in it is tuned to any method.

Geometry lives in physical units: ``spacing`` scales the axes, radii are drawn in units of the finest spacing
("voxels" below, exactly voxels at isotropic spacing), and the blur is isotropic with sigma 0.5 x the geometric
mean spacing::

    case = make_vessel_case(3, (96, 96, 96), seed=0)     # image, truth, noisy, radius
    manifest = write_vessels("data/vessels", dim=3, n=11, shape=(96, 96, 96))
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from labelwise.data.volumes import write_volume
from labelwise.errors import ConfigError
from labelwise.filters.vesselness import frangi_segment
from labelwise.io import atomic_write

__all__ = ["case_seed", "make_vessel_case", "split_counts", "write_vessels"]

SPLIT_NAMES = ("train", "val", "test")
MIN_SIZE = 16  # smallest allowed size of a spatial axis
STEP = 0.5  # centreline step, voxels: consecutive centreline voxels touch (26- or 8-connected)
PSF_SIGMA = 0.5  # Gaussian point-spread function, voxels (an MR sinc PSF has a FWHM of about 1.2 voxels)
ROOT_RADIUS = (2.5, 4.0)  # radius of the first tree's root, voxels (log-uniform)
OTHER_ROOT_RADIUS = (1.0, 4.0)  # radius of the other trees' roots
STOP_RADIUS = (0.3, 0.5)  # a branch thinner than this at its end does not bifurcate
SHARE = (0.003, 0.5)  # range of the smaller child's share of the parent's r^3 at a bifurcation (log-uniform)
DROP_RADIUS = 0.2  # children thinner than this are not grown
MAX_GENERATIONS = 14
MIN_TREES, MAX_TREES = 2, 12
LENGTH_PER_VOXEL = {2: 2000 / 256**2, 3: 2000 / 96**3}  # trees are added until the centreline is this long
ABSORPTION = 0.35  # 2D: absorption per voxel of path through blood; a 3.5-voxel vessel absorbs 91 %
NOISY_MIN_SIZE = 30  # the semi-automatic mask drops connected components smaller than this (voxels)


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset made with ``seed``: a case does not change when ``n`` does."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _check_case(
    dim: int, shape: int | Sequence[int], spacing: Sequence[float] | None, where: str
) -> tuple[int, tuple[int, ...], np.ndarray]:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim not in (2, 3):
        raise ConfigError(f"{where}: dim must be 2 or 3, got {dim!r}")
    dim = int(dim)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),) * dim
    if isinstance(shape, bool):  # as tuple(True) fails below
        raise ConfigError(f"{where}: shape must be {dim} integers, got {shape!r}")
    try:
        sizes = tuple(shape)
    except TypeError:
        raise ConfigError(f"{where}: shape must be {dim} integers, got {shape!r}") from None
    if len(sizes) != dim or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
        raise ConfigError(f"{where}: shape must be {dim} integers (one per axis for dim={dim}), got {shape!r}")
    if min(sizes) < MIN_SIZE:
        raise ConfigError(f"{where}: shape sizes must be >= {MIN_SIZE}, got {tuple(int(s) for s in sizes)}")
    if spacing is None:
        space = np.ones(dim)
    else:
        try:
            space = np.asarray([float(s) for s in spacing], dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: spacing must be {dim} positive numbers, got {spacing!r}") from None
        if space.size != dim or not np.all(np.isfinite(space)) or np.any(space <= 0):
            raise ConfigError(f"{where}: spacing must be {dim} positive numbers, got {spacing!r}")
    return dim, tuple(int(s) for s in sizes), space


def _check_seed(seed: int, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def make_vessel_case(
    dim: int, shape: int | Sequence[int], seed: int, spacing: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """One synthetic angiogram, deterministic for ``seed``. ``shape``: ``dim`` sizes (or one int for all axes).

    Returns, all (*shape): ``image`` float32 in [0, 1] (bright vessels); ``truth`` int64 0/1 (clean mask);
    ``noisy`` int64 0/1 (the semi-automatic mask, what training sees); ``radius`` float32, the radius in voxels of
    the vessel each truth voxel belongs to (0 outside the truth). Raises :class:`ConfigError` on bad arguments."""
    dim, shape, space = _check_case(dim, shape, spacing, "make_vessel_case")
    rng = np.random.default_rng(_check_seed(seed, "make_vessel_case"))
    branches = _grow_trees(rng, shape, space)
    truth, radius, tubes = _rasterise(branches, shape, space)
    image = _angiogram(rng, tubes, shape, space)
    noisy, _ = frangi_segment(image, threshold="otsu", spacing=tuple(space), min_size=NOISY_MIN_SIZE)
    return {"image": image, "truth": truth, "noisy": noisy, "radius": radius}


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _perpendicular(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``direction``."""
    for _ in range(8):
        vector = rng.normal(size=direction.size)
        vector -= (vector @ direction) * direction
        if np.linalg.norm(vector) > 1e-3:
            return _unit(vector)
    basis = np.zeros(direction.size)
    basis[int(np.argmin(np.abs(direction)))] = 1.0
    return _unit(basis - (basis @ direction) * direction)


def _root(
    rng: np.random.Generator, extent: np.ndarray, unit: float, radii: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(start, direction, radius, generation 0) of a tree entering through a random face of the volume; the radius
    is log-uniform in ``radii`` (voxels)."""
    dim = extent.size
    axis = int(rng.integers(dim))
    inward = 1.0 if rng.integers(2) == 0 else -1.0
    start = rng.uniform(0.2, 0.8, dim) * extent
    start[axis] = 0.0 if inward > 0 else extent[axis]
    direction = np.zeros(dim)
    direction[axis] = inward
    direction = _unit(direction + rng.normal(0.0, 0.35, dim))
    if direction[axis] * inward < 0.5:
        direction[axis] = 0.5 * inward
        direction = _unit(direction)
    return start, direction, float(np.exp(rng.uniform(np.log(radii[0]), np.log(radii[1]))) * unit), 0


def _walk(
    rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, radius: float, extent: np.ndarray, unit: float
) -> tuple[np.ndarray, bool, np.ndarray]:
    """One branch's centreline: (points (k, dim), whether it stayed inside the volume, final heading). A random walk
    of step ``STEP`` whose turning rate is an AR(1) process (momentum), so the curve is smooth."""
    step = STEP * unit
    margin = 2.0 * unit
    length = rng.uniform(8.0, 16.0) * unit + rng.uniform(4.0, 8.0) * radius
    count = max(2, int(np.ceil(length / step)))
    # spread of the turning rate, radians per unit length: thick vessels are straighter
    curvature = rng.uniform(0.06, 0.15) / unit / (1.0 + radius / unit)
    kicks = rng.normal(0.0, curvature, (count, start.size))
    points = [start]
    heading, turning = direction.copy(), np.zeros(start.size)
    for k in range(count):
        turning = 0.9 * turning + 0.436 * kicks[k]  # 0.436 = sqrt(1 - 0.9^2): stationary spread = curvature
        heading = _unit(heading + step * turning)
        point = points[-1] + step * heading
        points.append(point)
        if np.any(point < -margin) or np.any(point > extent + margin):
            return np.asarray(points), False, heading
    return np.asarray(points), True, heading


def _grow_trees(
    rng: np.random.Generator, shape: tuple[int, ...], space: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Vessel trees as branches ``(points (k, dim) physical, radii (k,) physical, contrast)``."""
    dim = len(shape)
    unit = float(space.min())
    extent = (np.asarray(shape) - 1) * space
    target = LENGTH_PER_VOXEL[dim] * float(np.prod(shape)) * unit  # total centreline length to reach
    branches: list[tuple[np.ndarray, np.ndarray, float]] = []
    total = 0.0
    for tree in range(MAX_TREES):
        if tree >= MIN_TREES and total >= target:
            break
        queue = [_root(rng, extent, unit, ROOT_RADIUS if tree == 0 else OTHER_ROOT_RADIUS)]
        grown = 0.0  # this tree's length: a tree stops at half the target, so the vessels come from 2 trees or more
        while queue and grown < 0.5 * target:
            # thinnest first: side branches are grown out before the trunk goes on, so the length cap of a tree in a
            # small volume cuts the trunk, not the small vessels
            start, direction, radius, generation = queue.pop(int(np.argmin([item[2] for item in queue])))
            points, inside, heading = _walk(rng, start, direction, radius, extent, unit)
            end_radius = radius * rng.uniform(0.85, 0.97)
            radii = np.linspace(radius, end_radius, len(points))
            flow = 0.8 + 0.2 * min(1.0, radius / (2.0 * unit))  # time of flight: slow small vessels are darker
            branches.append((points, radii, float(rng.uniform(0.55, 0.7) * flow)))
            total += STEP * unit * (len(points) - 1)
            grown += STEP * unit * (len(points) - 1)
            if not inside or generation + 1 >= MAX_GENERATIONS or end_radius < rng.uniform(*STOP_RADIUS) * unit:
                continue
            # the small child's share of r^3 (Murray's law), log-uniform: side branches of every size leave a trunk
            share = float(np.exp(rng.uniform(np.log(SHARE[0]), np.log(SHARE[1]))))
            side = _perpendicular(rng, heading)
            for child_radius, angle, sign in (
                (end_radius * (1.0 - share) ** (1 / 3), rng.uniform(5, 25), 1.0),
                (end_radius * share ** (1 / 3), rng.uniform(35, 75), -1.0),
            ):
                if child_radius >= DROP_RADIUS * unit:
                    theta = np.deg2rad(angle)
                    child = _unit(np.cos(theta) * heading + sign * np.sin(theta) * side)
                    queue.append((points[-1].copy(), child, child_radius, generation + 1))
    return branches


def _rasterise(
    branches: list[tuple[np.ndarray, np.ndarray, float]], shape: tuple[int, ...], space: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth int64, radius float32 in voxels, tube intensity float32 in [0, 1] with partial volume), all (*shape).

    Each voxel belongs to the tube whose surface is nearest (smallest distance-to-centreline minus radius); the
    distance to a branch is to its polyline, one segment per voxel of length, computed in a box around each."""
    from scipy.special import chndtr

    dim = len(shape)
    unit = float(space.min())
    sigma = PSF_SIGMA * float(np.exp(np.mean(np.log(space))))
    best_sd = np.full(shape, np.inf, dtype=np.float32)  # distance to the tube surface (negative inside)
    best_d = np.full(shape, np.inf, dtype=np.float32)  # distance to that tube's centreline
    best_r = np.zeros(shape, dtype=np.float32)
    best_c = np.zeros(shape, dtype=np.float32)
    coords = [np.arange(n) * s for n, s in zip(shape, space)]
    upper = np.asarray(shape)
    centreline = np.zeros(shape, dtype=bool)
    for points, radii, contrast in branches:
        voxels = np.rint(points / space).astype(np.int64)
        voxels = voxels[np.all((voxels >= 0) & (voxels < upper), axis=1)]
        centreline[tuple(voxels.T)] = True
        every = np.unique(np.r_[np.arange(0, len(points), 2), len(points) - 1])
        ends, widths = points[every], radii[every]
        for j in range(len(ends) - 1):
            p0, p1, r0, r1 = ends[j], ends[j + 1], float(widths[j]), float(widths[j + 1])
            reach = max(r0, r1) + 3.0 * sigma + unit
            lo = np.maximum(np.floor((np.minimum(p0, p1) - reach) / space).astype(np.int64), 0)
            hi = np.minimum(np.ceil((np.maximum(p0, p1) + reach) / space).astype(np.int64) + 1, upper)
            if np.any(hi <= lo):
                continue
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            rel = [
                (coords[a][lo[a] : hi[a]] - p0[a]).reshape([-1 if b == a else 1 for b in range(dim)])
                for a in range(dim)
            ]
            seg = p1 - p0
            t = sum(rel[a] * seg[a] for a in range(dim)) / max(float(seg @ seg), 1e-12)
            t = np.clip(t, 0.0, 1.0)
            dist = np.sqrt(sum((rel[a] - t * seg[a]) ** 2 for a in range(dim)))
            rad = r0 + t * (r1 - r0)
            sd = dist - rad
            better = sd < best_sd[box]
            if not better.any():
                continue
            best_sd[box][better] = sd[better]
            best_d[box][better] = dist[better]
            best_r[box][better] = rad[better]
            best_c[box][better] = contrast
    truth = (best_sd <= 0) | centreline
    radius = np.where(truth, best_r / unit, 0.0).astype(np.float32)
    near = best_sd < 4.0 * sigma
    d, r = best_d[near].astype(np.float64) / unit, best_r[near].astype(np.float64) / unit
    if dim == 3:  # tomographic (TOF MRA): the blood fraction, a disc of radius r blurred by a 2D Gaussian
        profile = chndtr((r * unit / sigma) ** 2, 2, (d * unit / sigma) ** 2)  # non-central chi-square CDF
    else:  # projection (fundus, X-ray): absorption along the chord through the vessel, blurred
        profile = _projected_profile(d, r, sigma / unit)
    tubes = np.zeros(shape, dtype=np.float32)
    tubes[near] = np.clip(profile, 0.0, 1.0) * best_c[near]
    return truth.astype(np.int64), radius, tubes


_TABLE_STEP = 0.01  # voxels, the grid of the 2D profile table


@functools.lru_cache(maxsize=4)
def _projection_table(sigma: float) -> np.ndarray:
    """Blurred Beer-Lambert absorption ``T[r, d]`` of a vessel of radius r seen at distance d (voxels, grid step
    ``_TABLE_STEP``): ``1 - exp(-ABSORPTION * chord)``, chord = 2 sqrt(r^2 - x^2), convolved with a Gaussian."""
    from scipy.ndimage import gaussian_filter1d

    radii = np.arange(0.0, ROOT_RADIUS[1] * 1.5, _TABLE_STEP)
    reach = radii[-1] + 6.0 * sigma
    x = np.arange(-reach, reach + _TABLE_STEP / 2, _TABLE_STEP)
    chord = 2.0 * np.sqrt(np.maximum(radii[:, None] ** 2 - x[None, :] ** 2, 0.0))
    blurred = gaussian_filter1d(1.0 - np.exp(-ABSORPTION * chord), sigma / _TABLE_STEP, axis=1, mode="constant")
    return blurred[:, x.size // 2 :]  # d = 0, step, 2 step, ...


def _projected_profile(d: np.ndarray, r: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`_projection_table` at (r, d) in voxels, bilinear; 0 beyond the table's reach."""
    from scipy.ndimage import map_coordinates

    table = _projection_table(round(float(sigma), 6))
    return map_coordinates(table, [r / _TABLE_STEP, d / _TABLE_STEP], order=1, mode="constant", cval=0.0)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field (*shape) in [-1, 1]: ``cells`` random values per axis, cubic-interpolated."""
    from scipy.ndimage import zoom

    coarse = rng.normal(size=(cells,) * len(shape))
    field = zoom(coarse, [n / cells for n in shape], order=3, mode="reflect", grid_mode=True)
    field = field[tuple(slice(0, n) for n in shape)]
    top = float(np.abs(field).max())
    return field / top if top > 0 else field


def _angiogram(rng: np.random.Generator, tubes: np.ndarray, shape: tuple[int, ...], space: np.ndarray) -> np.ndarray:
    """Bright tubes on textured tissue, times a smooth bias field (+-20-30 %), Rician noise; float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    tissue = 0.22 + 0.03 * _smooth_field(rng, shape, 6)
    grain = gaussian_filter(rng.normal(size=shape), sigma=1.5 * float(space.min()) / space)
    tissue += 0.015 * grain / max(float(grain.std()), 1e-12)
    image = (tissue + tubes) * (1.0 + rng.uniform(0.2, 0.3) * _smooth_field(rng, shape, 4))
    noise = rng.uniform(0.025, 0.045)
    image = np.sqrt((image + rng.normal(0.0, noise, shape)) ** 2 + rng.normal(0.0, noise, shape) ** 2)
    top = float(np.quantile(image, 0.999))
    return np.clip(image / max(top, 1e-12), 0.0, 1.0).astype(np.float32)


def split_counts(n: int, splits: Sequence[int] | None = None) -> tuple[int, int, int]:
    """(train, val, test) case counts: ``splits`` as given (checked), else 6/2/3 for 11 cases and about 55 % /
    18 % / the rest otherwise, with at least one test case when ``n >= 3``."""
    if splits is not None:
        counts = tuple(splits)
        if (
            len(counts) != 3
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in counts)
            or sum(counts) != n
        ):
            raise ConfigError(
                f"write_vessels: splits must be 3 integers >= 0 (train, val, test) summing to n={n}, got {splits!r}"
            )
        return int(counts[0]), int(counts[1]), int(counts[2])
    train = max(1, round(0.55 * n))
    val = min(round(0.18 * n), n - train)
    test = n - train - val
    if n >= 3 and test < 1:
        if val > 0:
            val -= 1
        else:
            train -= 1
        test += 1
    return train, val, test


def write_vessels(
    out: str | Path,
    dim: int,
    n: int,
    shape: int | Sequence[int],
    seed: int = 0,
    spacing: Sequence[float] | None = None,
    splits: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``n`` cases of :func:`make_vessel_case` under ``out``; returns the path of ``manifest.csv``.

    Per case ``vessel_000``, ...: ``images/<id>``, ``labels/<id>`` (the noisy mask), ``truth/<id>`` (the clean
    mask) as ``.nii.gz`` with ``spacing`` in the header (3D) or ``.png`` (2D; 8-bit, masks 0/255; PNG keeps no
    spacing), and ``radius/<id>`` (``.nii.gz`` in 3D, ``.npy`` in 2D; float32 radius in voxels). The manifest has
    columns ``id,image,label,split,truth`` (paths relative to ``out``); splits are train, val, test in case order
    (:func:`split_counts`). Case ``i`` is seeded by :func:`case_seed` ``(seed, i)``. Raises :class:`ConfigError`.
    ``progress`` receives one line per case written."""
    dim, shape, space = _check_case(dim, shape, spacing, "write_vessels")
    seed = _check_seed(seed, "write_vessels")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"write_vessels: n must be an integer >= 1, got {n!r}")
    counts = split_counts(int(n), splits)
    names = [name for name, count in zip(SPLIT_NAMES, counts) for _ in range(count)]
    out = Path(out)
    suffix, radius_suffix = (".nii.gz", ".nii.gz") if dim == 3 else (".png", ".npy")
    spacing_tuple = tuple(float(s) for s in space)
    rows = []
    for index in range(int(n)):
        name = f"vessel_{index:03d}"
        case = make_vessel_case(dim, shape, case_seed(seed, index), spacing_tuple)
        files = {
            key: f"{folder}/{name}{suffix}"
            for key, folder in (("image", "images"), ("label", "labels"), ("truth", "truth"))
        }
        write_volume(out / files["image"], case["image"], spacing=spacing_tuple)
        write_volume(out / files["label"], case["noisy"], spacing=spacing_tuple)
        write_volume(out / files["truth"], case["truth"], spacing=spacing_tuple)
        write_volume(out / "radius" / f"{name}{radius_suffix}", case["radius"], spacing=spacing_tuple)
        rows.append(
            {
                "id": name,
                "image": files["image"],
                "label": files["label"],
                "split": names[index],
                "truth": files["truth"],
            }
        )
        if progress is not None:
            progress(f"[{index + 1}/{n}] {name} ({names[index]}): {int(case['truth'].sum())} vessel voxels")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["id", "image", "label", "split", "truth"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(out / "manifest.csv", text.getvalue())
