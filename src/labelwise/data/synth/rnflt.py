"""The built-in ``rnflt`` dataset: synthetic retinal nerve fibre layer thickness maps in the Harvard-GDP layout.

A stand-in for Harvard-GDP (Luo et al., ICCV 2023): one ``data_XXXX.npz`` per patient with ``rnflt`` (225 x 225,
microns), ``glaucoma``, ``progression`` (6 labels), ``md``, ``tds`` (52 values), ``age``, ``male``, ``race``,
``hispanic`` (read back by :func:`labelwise.data.harvard.read_patients`).

The map covers 6 x 6 mm around the optic disc (at the centre, no measurement inside: 0). A healthy layer is thick
along the superior and inferior arcuate bundles (the "double hump"), thinner nasally, thinnest temporally, and
decays away from the disc. Glaucoma thins the arcuate bundles: per hemifield a severity and a wedge-shaped defect.
The visual field is the 24-2 grid of 52 points (:data:`VF_POINTS`, degrees; the blind spot's two points left out),
the superior field seen by the inferior retina: each point's total deviation falls with the thinning of the bundle
sector its axons enter the disc through (plus noise), and ``md`` is their mean plus noise. Progression: a latent
rate grows with severity and age; the six labels are six noisy criteria on it (correlated, different prevalence).

Groups differ on purpose, so that per-group figures are not trivial: glaucoma prevalence, the healthy thickness
and the image noise depend on ``race`` (0, 1, 2), the thickness on ``age`` and, a little, on ``male``. Every
constant is below; none was tuned to make any method win."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError
from labelwise.io import atomic_open

__all__ = ["VF_POINTS", "make_patient", "patient_seed", "save_patient", "write_rnflt"]

SIZE = 225
MM = 6.0  # the map spans 6 x 6 mm
DISC_RADIUS_MM = 0.9
DECAY_MM = 1.6  # the layer thins away from the disc margin over this length
SUPERIOR, INFERIOR = math.radians(100), math.radians(260)  # bundle directions (image angle, 0 = right, 90 = up)
BUNDLE_WIDTH = math.radians(38)
RACE_SHARE = (0.25, 0.25, 0.5)  # race 0, 1, 2
GLAUCOMA_PREVALENCE = (0.45, 0.65, 0.4)  # by race
THICKNESS_OFFSET = (6.0, 9.0, 0.0)  # microns added to the healthy layer, by race
NOISE = (4.0, 7.0, 4.0)  # image noise (microns), by race
MALE_SHARE, HISPANIC_SHARE = 0.45, 0.1


def _vf_points() -> np.ndarray:
    """The 52 points of the 24-2 grid (x, y) in degrees, row by row from the top, left to right (right eye
    view), without the two blind-spot points (15, +-3)."""
    rows = {
        21: (-9, -3, 3, 9),
        15: (-15, -9, -3, 3, 9, 15),
        9: (-21, -15, -9, -3, 3, 9, 15, 21),
        3: (-27, -21, -15, -9, -3, 3, 9, 15, 21),
    }
    points = []
    for y in (21, 15, 9, 3, -3, -9, -15, -21):
        for x in rows[abs(y)]:
            if not (x == 15 and abs(y) == 3):
                points.append((x, y))
    return np.array(points, dtype=np.float64)


VF_POINTS = _vf_points()


@functools.lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Distance from the disc centre (mm) and image angle (radians) of every map pixel (cached; not modified)."""
    axis = (np.arange(SIZE) - (SIZE - 1) / 2) * MM / SIZE
    x, y = np.meshgrid(axis, -axis)  # row 0 is the top: y up
    return np.hypot(x, y), np.arctan2(y, x) % (2 * np.pi)


def _bump(angle: np.ndarray, centre: float, width: float) -> np.ndarray:
    difference = np.angle(np.exp(1j * (angle - centre)))
    return np.exp(-0.5 * (difference / width) ** 2)


def _entry_angle(points: np.ndarray) -> np.ndarray:
    """The disc angle through which the axons of each visual-field point enter: a superior-field point is seen by
    the inferior retina, so it enters through the inferior bundle; farther from the fovea, nearer its centre."""
    x, y = points[:, 0], points[:, 1]
    spread = np.radians(45) * np.clip(1 - np.hypot(x, y) / 40, 0, 1) * np.sign(x + 1e-9)
    return np.where(y > 0, INFERIOR - spread, SUPERIOR + spread) % (2 * np.pi)


def make_patient(seed: int) -> dict[str, np.ndarray]:
    """One patient (the keys of the layout), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    race = int(rng.choice(3, p=RACE_SHARE))
    male = int(rng.random() < MALE_SHARE)
    hispanic = int(rng.random() < HISPANIC_SHARE)
    age = float(np.clip(rng.normal(62, 11), 25, 95))
    glaucoma = int(rng.random() < GLAUCOMA_PREVALENCE[race])

    radius, angle = _grid()
    outside = np.clip(radius - DISC_RADIUS_MM, 0, None)
    profile = np.exp(-outside / DECAY_MM)
    healthy_bundles = (
        _bump(angle, SUPERIOR, BUNDLE_WIDTH)
        + _bump(angle, INFERIOR, BUNDLE_WIDTH)
        + 0.35 * _bump(angle, 0.0, math.radians(50))
    )
    base = 35 + THICKNESS_OFFSET[race] - 0.25 * (age - 62) + 2.0 * male

    # disease: per hemifield a severity and a wedge defect inside the bundle
    severity = np.zeros(2)
    if glaucoma:
        severity = rng.beta(2.0, 2.5, size=2) * (rng.random(2) < [0.8, 0.6])
        if severity.max() < 0.15:
            severity[rng.integers(2)] = rng.uniform(0.15, 0.6)
    loss = np.zeros_like(angle)
    for hemi, centre in enumerate((SUPERIOR, INFERIOR)):
        if severity[hemi] > 0:
            wedge = _bump(angle, centre + rng.normal(0, math.radians(12)), math.radians(rng.uniform(12, 30)))
            loss = np.maximum(loss, severity[hemi] * (0.5 * _bump(angle, centre, BUNDLE_WIDTH) + 0.5 * wedge))
    bundles = 85 * healthy_bundles * (1 - np.clip(loss, 0, 0.95))
    thickness = (base + bundles) * profile + 12 * (1 - profile)
    thickness = thickness + rng.normal(0, NOISE[race], thickness.shape)
    thickness = np.where(radius < DISC_RADIUS_MM, 0.0, np.clip(thickness, 0, None)).astype(np.float32)

    # visual field: total deviation from the thinning where each point's axons enter the disc
    sector_loss = np.array([float(loss.ravel()[pixels].mean()) if pixels.size else 0.0 for pixels in _sectors()])
    tds = (-28 * sector_loss**1.3 + rng.normal(0, 1.5, len(VF_POINTS))).astype(np.float32)
    md = float(tds.mean() + rng.normal(0, 0.5))

    # progression: six noisy criteria on one latent rate
    rate = 1.6 * severity.sum() + 0.03 * (age - 62) + rng.normal(0, 0.45)
    cutoffs = np.array([0.6, 0.9, 1.1, 0.8, 1.3, 1.0])
    progression = ((rate + rng.normal(0, 0.3, 6)) > cutoffs).astype(np.int64) * (glaucoma or rng.random() < 0.1)
    return {
        "rnflt": thickness,
        "glaucoma": np.array(glaucoma),
        "progression": progression,
        "md": np.array(md),
        "tds": tds,
        "age": np.array(age),
        "male": np.array(male),
        "race": np.array(race),
        "hispanic": np.array(hispanic),
    }


@functools.lru_cache(maxsize=1)
def _sectors() -> tuple[np.ndarray, ...]:
    """Per visual-field point, the flat indices of the map pixels whose thinning it sees: a 20-degree sector
    around the angle its axons enter the disc through (:func:`_entry_angle`), near the disc margin (cached)."""
    radius, angle = _grid()
    near = (radius > DISC_RADIUS_MM) & (radius < DISC_RADIUS_MM + 0.6)
    return tuple(
        np.flatnonzero(near & (np.abs(np.angle(np.exp(1j * (angle - direction)))) < math.radians(10)))
        for direction in _entry_angle(VF_POINTS)
    )


def patient_seed(seed: int, index: int) -> int:
    """The seed of patient ``index`` of a set drawn with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def save_patient(out: str | Path, index: int, patient: dict[str, np.ndarray]) -> Path:
    """``out/data_{index + 1:04d}.npz`` (folders created; written atomically)."""
    path = Path(out) / f"data_{index + 1:04d}.npz"
    with atomic_open(path) as f:
        np.savez_compressed(f, **patient)  # type: ignore[arg-type]  # numpy's stub: **arrays could name allow_pickle
    return path


def write_rnflt(out: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` patients as ``out/data_0001.npz`` ...; patient ``i`` depends on ``(seed, i)`` only."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"write_rnflt: n must be an integer >= 1, got {n!r}")
    return [save_patient(out, i, make_patient(patient_seed(seed, i))) for i in range(int(n))]
