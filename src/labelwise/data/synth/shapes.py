"""The built-in ``shapes`` dataset: one bright shape per image on a smooth, noisy background.

Works for 2D images and 3D volumes, for classification (``label``) and segmentation (``mask``)."""

from __future__ import annotations

import numpy as np

from labelwise.errors import ConfigError

#: Class names by spatial dimension; class ``k`` is drawn with value ``k + 1`` in the mask.
CLASS_NAMES = {
    2: ("disc", "square", "cross", "ring"),
    3: ("ball", "cube", "cross", "shell"),
}
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # train, val, test
_CHUNK_VOXELS = 1 << 22  # samples are generated in chunks of about this many voxels (bounded memory)


def make_shapes(
    n: int, size: int = 32, dim: int = 2, num_classes: int = 3, noise: float = 0.3, seed: int = 0
) -> dict[str, np.ndarray]:
    """``n`` samples, each one shape on a smooth random background plus gaussian noise.

    Classes: 0 disc/ball, 1 square/cube, 2 cross (a thick bar along each axis), 3 ring/shell (only with
    ``num_classes=4``). Each shape has a random size (radius ``size/8 .. size/4``), a random integer centre
    that keeps it fully inside the image with a one-pixel margin, and an intensity ``0.5 .. 1.0`` above the
    background, which is a random linear gradient plus a low-frequency cosine wave.

    Returns (all deterministic for ``seed``):
        ``image`` float32 (n, 1, *[size]*dim); ``label`` int64 (n,); ``mask`` uint8 (n, *[size]*dim) with 0 for
        background and ``label + 1`` on the object; ``split`` unicode (n,) of 'train'/'val'/'test' (about
        70/15/15, stratified by class); ``class_names`` unicode (num_classes,).
    Classes are balanced (round-robin, then shuffled). Raises :class:`ConfigError` on out-of-range arguments."""
    _check_args(n, size, dim, num_classes, noise)
    rng = np.random.default_rng(seed)

    # Labels round-robin and a stratified split by rank within each class, then one shuffle of both.
    label = np.arange(n, dtype=np.int64) % num_classes
    split = _stratified_split(label, num_classes)
    order = rng.permutation(n)
    label, split = label[order], split[order]

    # Per-sample parameters (small arrays, drawn once, so chunking below does not change them).
    radius = rng.uniform(size / 8, size / 4, n)
    lo = np.ceil(radius + 1.0)
    hi = np.maximum(np.floor(size - 2.0 - radius), lo)
    centre = lo[:, None] + np.floor(rng.random((n, dim)) * (hi - lo + 1)[:, None])  # (n, dim) integers
    contrast = rng.uniform(0.5, 1.0, n)
    offset = rng.uniform(-0.2, 0.2, n)
    gradient = rng.normal(0.0, 1.0, (n, dim))
    gradient *= (rng.uniform(0.0, 0.3, n) / np.linalg.norm(gradient, axis=1).clip(1e-12))[:, None]  # total span
    wave_dir = rng.normal(0.0, 1.0, (n, dim))
    wave_dir *= (rng.uniform(0.5, 1.5, n) / np.linalg.norm(wave_dir, axis=1).clip(1e-12))[:, None]  # cycles/image
    wave_amp = rng.uniform(0.0, 0.15, n)
    wave_phase = rng.uniform(0.0, 2 * np.pi, n)

    spatial = (size,) * dim
    image = np.empty((n, 1, *spatial), dtype=np.float32)
    mask = np.empty((n, *spatial), dtype=np.uint8)
    per_chunk = max(1, _CHUNK_VOXELS // size**dim)
    # Unit coordinates in [-0.5, 0.5) per axis, broadcastable against (chunk, *spatial).
    unit = [
        ((np.arange(size) + 0.5) / size - 0.5).reshape((1,) + (1,) * a + (size,) + (1,) * (dim - a - 1))
        for a in range(dim)
    ]
    for start in range(0, n, per_chunk):
        s = slice(start, min(start + per_chunk, n))
        m = _draw_masks(label[s], centre[s], radius[s], size, dim)
        bg = _column(offset[s], dim) + sum(_column(gradient[s, a], dim) * unit[a] for a in range(dim))
        phase = sum(_column(wave_dir[s, a], dim) * unit[a] for a in range(dim))
        bg = bg + _column(wave_amp[s], dim) * np.cos(2 * np.pi * phase + _column(wave_phase[s], dim))
        img = bg + _column(contrast[s], dim) * m
        if noise > 0:
            img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
        image[s, 0] = img
        mask[s] = np.where(m, (label[s] + 1).astype(np.uint8).reshape((-1,) + (1,) * dim), 0)
    return {
        "image": image,
        "label": label,
        "mask": mask,
        "split": split,
        "class_names": np.array(CLASS_NAMES[dim][:num_classes], dtype=np.str_),
    }


def _check_args(n: int, size: int, dim: int, num_classes: int, noise: float) -> None:
    problems = []
    if int(n) != n or n < 1:
        problems.append(f"n must be a positive integer, got {n!r}")
    if int(size) != size or size < 8:
        problems.append(f"size must be an integer >= 8, got {size!r}")
    if dim not in (2, 3):
        problems.append(f"dim must be 2 or 3, got {dim!r}")
    if num_classes not in (2, 3, 4):
        problems.append(f"num_classes must be 2, 3 or 4, got {num_classes!r}")
    if not noise >= 0:
        problems.append(f"noise must be >= 0, got {noise!r}")
    if problems:
        raise ConfigError("shapes: " + "; ".join(problems))


def _stratified_split(label: np.ndarray, num_classes: int) -> np.ndarray:
    """'train'/'val'/'test' by each sample's rank within its class (label is round-robin, so rank = i // K)."""
    rank = np.arange(len(label)) // num_classes
    count = np.bincount(label, minlength=num_classes)[label]
    train_end = np.round(SPLIT_FRACTIONS[0] * count)
    val_end = np.round((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * count)
    split = np.full(len(label), "test", dtype="<U5")
    split[rank < val_end] = "val"
    split[rank < train_end] = "train"
    return split


def _column(values: np.ndarray, dim: int) -> np.ndarray:
    """(m,) -> (m, 1, ..., 1) float32, broadcastable against (m, *spatial)."""
    return values.astype(np.float32).reshape((-1,) + (1,) * dim)


def _draw_masks(label: np.ndarray, centre: np.ndarray, radius: np.ndarray, size: int, dim: int) -> np.ndarray:
    """Boolean object masks (m, *[size]*dim), vectorised over the samples of each class."""
    out = np.zeros((len(label),) + (size,) * dim, dtype=bool)
    grid = np.arange(size, dtype=np.float32)
    for k in np.unique(label):
        idx = np.flatnonzero(label == k)
        r = _column(radius[idx], dim)
        # Offsets from the centre along each axis, each broadcastable to (m, *spatial).
        d = [
            np.abs(grid.reshape((1,) + (1,) * a + (size,) + (1,) * (dim - a - 1)) - _column(centre[idx, a], dim))
            for a in range(dim)
        ]
        if k == 0:  # disc / ball
            m = sum(x * x for x in d) <= r * r
        elif k == 1:  # square / cube of about the disc's area
            m = np.maximum.reduce(np.broadcast_arrays(*d)) <= np.maximum(0.85 * r, 1.0)
        elif k == 2:  # cross: inside the box of half-side r, and thin (|x| <= r/3) along all axes but one
            inside = np.maximum.reduce(np.broadcast_arrays(*d)) <= r
            thick = sum((x > r / 3).astype(np.int8) for x in d)
            m = inside & (thick <= 1)
        else:  # ring / shell
            d2 = sum(x * x for x in d)
            m = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
        out[idx] = m
    return out
