"""Whole volumes, and random patches drawn from them for training (2D and 3D).

:class:`VolumeDataset` gives the cases of one split: images ``(C, *spatial)`` float32 and masks ``(*spatial)``
int64, each of its own size; :func:`load_cases` holds them in memory, :mod:`labelwise.data.cache` reads them from
memory-mapped files on access (what a run on a manifest uses). :class:`PatchDataset` turns the training cases into
``patches_per_volume`` random patches each: sample ``i`` is a pure function of ``(seed, i)`` (so any number of
loader workers and a resumed run see the same patches), centred with probability ``foreground_ratio`` on a random
foreground voxel of a labelled case, otherwise anywhere (with voxels without a label, ``data.ignore`` or an
``ignore`` column: on a voxel that carries a label, and that voxel lies anywhere in the patch, not in its middle);
volumes smaller than the patch are zero-padded. Where some case carries a per-voxel map (:data:`MAPS`: a ``weight``
column, soft labels, raters' vote codes) every sample has it under its name, cut like the mask (a case without one
gets :func:`map_or_default`'s)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from labelwise.data.manifest import Case
from labelwise.data.volumes import Volume, read_image, read_map, read_volume, to_grid
from labelwise.errors import DataError
from labelwise.metrics.surface import IGNORE, mark_ignored

__all__ = [
    "MAPS",
    "SOFT_THRESHOLD",
    "CaseArrays",
    "PatchDataset",
    "VolumeDataset",
    "load_cases",
    "normalize_intensity",
    "read_case",
    "read_label",
    "read_mask",
]

SOFT_THRESHOLD = 0.5  # a soft label's mask (patch sampling, scores): where its probability exceeds it
# per-voxel maps a case may carry besides its label: loss weights, soft labels, each rater's label (data.raters: sample)
MAPS = ("weight", "soft", "votes")
CENTRE_TRIES = 32  # data.ignore: random centres drawn until one carries a label (else the last one is kept)

Intensity = Literal["max", "zscore", "none"]  # per image; "channel" and "percentile" need training statistics


def normalize_intensity(image: np.ndarray, mode: Intensity) -> np.ndarray:
    """Per volume: ``max`` divides by the largest absolute value, ``zscore`` subtracts the mean and divides by the
    standard deviation, ``none`` keeps the values. A constant volume is left unscaled (no division by zero)."""
    if mode == "max":
        top = float(np.abs(image).max(initial=0.0))
        return image / top if top > 0 else image
    if mode == "zscore":
        std = float(image.std())
        return (image - image.mean()) / std if std > 0 else image - image.mean()
    return image


class VolumeDataset(Dataset):
    """Whole cases: ``{"image": (C, *spatial), "target": (*spatial), "labelled": (), "index": ()}``.

    ``image``, ``target`` and ``rois`` are sequences with one entry per case: lists of tensors in memory, or lazy
    sequences that read each case from its memory-mapped files on access (:mod:`labelwise.data.cache`); either way
    ``image[i]`` is a tensor. ``foreground`` (optional): per case, the flat indices of its foreground voxels."""

    def __init__(
        self,
        cases: Sequence[Case],
        images: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        spacings: list[tuple[float, ...]],
        affines: list[np.ndarray | None],
        indices: np.ndarray,
        rois: Sequence[torch.Tensor | None] | None = None,
        foreground: Sequence[Any] | None = None,
        maps: Mapping[str, Sequence[torch.Tensor | None]] | None = None,
    ):
        self.cases = list(cases)
        self.image, self.target = images, targets
        self.rois = rois if rois is not None else [None] * len(self.cases)  # region-of-interest masks (bool) or None
        self.foreground = foreground
        # per-voxel maps some case carries, by name (:data:`MAPS`): per case a tensor or None
        self.maps = {name: cases_maps for name, cases_maps in (maps or {}).items()}
        self.spacings, self.affines = spacings, affines
        self.labelled = torch.tensor([c.labelled for c in self.cases], dtype=torch.bool)
        self.indices = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        self.ids = [c.id for c in self.cases]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """``(C, *spatial)`` of every image (a lazy sequence knows them without reading the images)."""
        known = getattr(self.image, "shapes", None)
        return list(known) if known is not None else [tuple(i.shape) for i in self.image]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        target = self.target[i]
        return {
            "image": self.image[i],
            "target": target,
            "labelled": self.labelled[i],
            "index": self.indices[i],
            **{name: map_or_default(name, cases_maps[i], target) for name, cases_maps in self.maps.items()},
        }


def map_or_default(name: str, value: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """A case's map ``name``, or what stands for it where the case has none (a batch holds one for every sample):
    weight 1 everywhere; a soft target equal to the label (foreground 1, else 0); vote codes 0 (only an unlabelled
    case lacks them: data.raters: sample refuses labelled training cases without raters)."""
    if value is not None:
        return value
    if name == "votes":
        return torch.zeros(target.shape, dtype=torch.int64)
    return torch.ones(target.shape) if name == "weight" else (target == 1).float()


def load_cases(
    cases: Sequence[Case],
    indices: np.ndarray,
    intensity: Intensity = "max",
    ignore: Sequence[int] = (),
    soft: bool = False,
) -> VolumeDataset:
    """Read the cases' images, labels (unlabelled: an all-zero target), regions of interest and maps (weights, soft
    labels), checking that each mask matches its image in shape and spacing and that every image has the same
    channels and number of spatial axes; images normalised per image by ``intensity``; ``ignore``, ``soft``: as
    :func:`read_case`."""
    images: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    spacings: list[tuple[float, ...]] = []
    affines: list[np.ndarray | None] = []
    rois: list[torch.Tensor | None] = []
    maps: dict[str, list[torch.Tensor | None]] = {name: [] for name in MAPS}
    for case in cases:
        image, target, roi, *rest = read_case(case, ignore=ignore, soft=soft)
        for name, values in zip(MAPS, rest):  # CaseArrays' last fields are the maps, in MAPS's order
            maps[name].append(torch.from_numpy(values) if values is not None else None)
        if images and (image.array.shape[0], image.array.ndim) != (images[0].shape[0], images[0].ndim):
            raise DataError(
                f"{case.image}: {image.array.shape[0]} channel(s), {image.array.ndim - 1}D; the first "
                f"case has {images[0].shape[0]}, {images[0].ndim - 1}D"
            )
        rois.append(torch.from_numpy(roi) if roi is not None else None)
        images.append(
            torch.from_numpy(np.ascontiguousarray(normalize_intensity(image.array, intensity), dtype=np.float32))
        )
        targets.append(
            torch.from_numpy(target if target is not None else np.zeros(image.array.shape[1:], dtype=np.int64))
        )
        spacings.append(image.spacing)
        affines.append(image.affine)
    present = {name: values for name, values in maps.items() if any(v is not None for v in values)}
    return VolumeDataset(cases, images, targets, spacings, affines, indices, rois, maps=present)


class CaseArrays(NamedTuple):
    """One case as :func:`read_case` reads it."""

    image: Volume
    target: np.ndarray | None  # int64 labels (*spatial), IGNORE where there is none; None: unlabelled
    roi: np.ndarray | None  # bool (*spatial); None: no region of interest
    weight: np.ndarray | None = None  # float32 per-voxel loss weights (a manifest's weight column)
    soft: np.ndarray | None = None  # float32 foreground probability (data.soft_labels)
    votes: np.ndarray | None = None  # int64 codes of the raters' labels (data.raters: sample)


def read_case(
    case: Case,
    modalities: Sequence[str] = ("rnflt",),
    masks: bool = True,
    reorient: bool = False,
    spacing: Sequence[float] | None = None,
    ignore: Sequence[int] = (),
    soft: bool = False,
) -> CaseArrays:
    """One case: its image (the one reader, :func:`labelwise.data.volumes.read_image`; values as in the file), its
    label (:func:`read_label`), region of interest ``(*spatial)`` bool (None without one), loss weights (None without
    a ``weight`` column), with ``soft`` its foreground probability, and its raters' vote codes (``Case.votes``,
    ``data.raters: sample``), each checked against the image's shape and spacing; ``masks=False``: the image alone.
    ``reorient``, ``spacing``: all of them then put on the training grid (:func:`labelwise.data.volumes.to_grid`:
    reoriented to RAS+, resampled to ``spacing``, masks and weights by nearest neighbour, soft labels linearly and
    their mask then made on that grid); the image's ``grid`` says what was done (None when neither is asked)."""
    image = read_image(case.image, modalities)
    if image.array.ndim not in (3, 4):
        raise DataError(f"{case.image}: image of shape {image.array.shape}; expected 2D or 3D")
    if not masks:
        return CaseArrays(image, None, None)
    grid = (image.spacing, image.array.shape[1:], case.image)
    probability = read_probability(case.label, *grid) if soft and case.label is not None else None
    target = read_label(case, ignore, probability, grid)
    roi = read_mask(case.roi, *grid) > 0 if case.roi is not None else None
    weight = _read_map(case.weight, "weight", *grid) if case.weight is not None else None
    votes = read_mask(case.votes, *grid) if case.votes is not None else None
    if reorient or spacing is not None:
        original = image
        image, (target, roi, weight, votes) = to_grid(image, reorient, spacing, (target, roi, weight, votes))
        if probability is not None and target is not None:  # a probability: linearly, and its mask made on the grid
            maps = probability if probability.ndim == image.array.ndim else probability[None]
            moved = to_grid(Volume(maps, original.spacing, original.affine), reorient, spacing)[0].array
            probability = moved if probability.ndim == image.array.ndim else moved[0]
            target = np.where(target == IGNORE, IGNORE, soft_label_mask(probability, image.array.ndim - 1))
    return CaseArrays(image, target, roi, weight, probability, votes)


def read_label(
    case: Case,
    ignore: Sequence[int] = (),
    probability: np.ndarray | None = None,
    grid: tuple[tuple[float, ...] | None, tuple[int, ...], Path] | None = None,
) -> np.ndarray | None:
    """A case's label as training and scoring see it, on its file's grid: ``(*spatial)`` int64 (None when
    unlabelled), voxels of a value in ``ignore`` (``data.ignore``) and those of the case's ``ignore`` mask
    :data:`~labelwise.metrics.surface.IGNORE` (no label). With a ``probability`` read from the label file
    (``data.soft_labels``, :func:`read_probability`) the label is where the foreground probability exceeds 0.5, or
    with one map per class ``(K, *spatial)`` (told apart by ``grid``'s shape) the likeliest class (ties: the lower).
    ``grid``: the image's spacing, spatial shape and path the masks are checked against (default: the label's
    own)."""
    if case.label is None:
        return None
    if probability is not None:
        target = soft_label_mask(probability, len(grid[1]) if grid is not None else probability.ndim)
    else:
        spacing, spatial, image = grid if grid is not None else (None, None, case.image)
        target = mark_ignored(read_mask(case.label, spacing, spatial, image, ignore), ignore)
    if case.ignore is not None:
        spacing, spatial, image = grid if grid is not None else (None, target.shape, case.image)
        target = np.where(read_mask(case.ignore, spacing, spatial, image) > 0, IGNORE, target)
    return target


def _read_map(path: Path, kind: str, spacing: tuple[float, ...], spatial: tuple[int, ...], image: Path) -> np.ndarray:
    volume = read_map(path, kind)
    _check_grid(path, volume, spacing, spatial, image, f"{kind} map")
    return volume.array


def soft_label_mask(probability: np.ndarray, spatial_dims: int) -> np.ndarray:
    """The label map ``(*spatial)`` int64 of a soft label: where the foreground probability exceeds
    :data:`SOFT_THRESHOLD`, or with one map per class ``(K, *spatial)`` (one axis more than ``spatial_dims``) the
    likeliest class (ties: the lower)."""
    if probability.ndim == spatial_dims + 1:
        return probability.argmax(axis=0).astype(np.int64)
    return (probability > SOFT_THRESHOLD).astype(np.int64)


def read_probability(
    path: Path, spacing: tuple[float, ...] | None, spatial: tuple[int, ...], image: Path
) -> np.ndarray:
    """A soft label (``data.soft_labels``) checked against its image's ``spacing`` (None: not checked) and
    ``spatial`` shape: the foreground probability ``(*spatial)``, or one probability map per class ``(K,
    *spatial)`` for K >= 3 classes (``.npy`` ``(K, *spatial)``, NIfTI ``(X, Y, Z, K)``), which must sum to 1 at
    every voxel; a file of two class maps gives its second (the foreground's)."""
    return read_probability_volume(path, spacing, spatial, image).array


def read_probability_volume(
    path: Path, spacing: tuple[float, ...] | None, spatial: tuple[int, ...], image: Path
) -> Volume:
    """:func:`read_probability` with the file's spacing (of the spatial axes) and affine."""
    volume = read_map(path, "probability")
    array = volume.array
    if array.ndim != len(spatial) + 1:
        _check_grid(path, volume, spacing, spatial, image, "probability map")
        return volume
    classes = Volume(array[0], tuple(volume.spacing[-len(spatial) :]), volume.affine)
    _check_grid(path, classes, spacing, spatial, image, "probability maps' (one per class)")
    if array.shape[0] < 2:
        raise DataError(f"{path}: {array.shape[0]} class probability map; expected one per class, background first")
    total = array.sum(axis=0, dtype=np.float64)
    if not np.allclose(total, 1.0, atol=1e-3):
        raise DataError(
            f"{path}: one probability map per class must sum to 1 at every voxel; the sums lie in "
            f"[{total.min():.4g}, {total.max():.4g}]"
        )
    return Volume(np.ascontiguousarray(array[1]) if array.shape[0] == 2 else array, classes.spacing, volume.affine)


def _check_grid(
    path: Path,
    volume: Volume,
    spacing: tuple[float, ...] | None,
    spatial: tuple[int, ...] | None,
    image: Path,
    what: str = "mask",
) -> None:
    if spatial is not None and volume.array.shape != tuple(spatial):
        raise DataError(f"{path}: {what} shape {volume.array.shape} differs from its image {image} {tuple(spatial)}")
    if spacing is not None and not np.allclose(volume.spacing, spacing, rtol=1e-3):
        raise DataError(f"{path}: spacing {volume.spacing} differs from its image {image} {spacing}")


def read_mask(
    path: Path,
    spacing: tuple[float, ...] | None,
    spatial: tuple[int, ...] | None,
    image: Path,
    ignore: Sequence[int] = (),
) -> np.ndarray:
    """The mask at ``path`` (labels or a region of interest), checked against its image's shape and spacing;
    ``ignore``: as :func:`labelwise.data.volumes.read_volume`."""
    mask = read_volume(path, mask=True, ignore=ignore)
    if 255 in ignore and set(np.unique(mask.array).tolist()) == {0, 255}:
        print(
            f"labelwise: data.ignore: {path} holds only 0 and 255; its 255s are read as unlabelled, not as the "
            "foreground of a 0/255 mask (store the foreground as 1, or mark unlabelled voxels with another value)",
            file=sys.stderr,
            flush=True,
        )
    _check_grid(path, mask, spacing, spatial, image)
    return mask.array


class PatchDataset(Dataset):
    """``patches_per_volume`` random patches of every case of ``volumes``: the same keys as
    :class:`VolumeDataset`, cut to ``patch_size``; ``index`` is the sample number."""

    def __init__(
        self,
        volumes: VolumeDataset,
        patch_size: Sequence[int],
        patches_per_volume: int = 100,
        foreground_ratio: float = 0.5,
        seed: int = 0,
        labelled_centres: bool = False,
    ):
        self.shapes = volumes.shapes
        dims = len(self.shapes[0]) - 1 if len(volumes) else len(patch_size)
        if len(patch_size) != dims:
            raise DataError(
                f"data.patch_size: {list(patch_size)} has {len(patch_size)} axes but the images are {dims}D"
            )
        self.volumes, self.patch = volumes, tuple(int(p) for p in patch_size)
        self.patches_per_volume, self.foreground_ratio, self.seed = patches_per_volume, foreground_ratio, seed
        self.labelled_centres = labelled_centres  # data.ignore: no centre on a voxel without a label
        # flat indices of foreground voxels, per labelled case (int32 where they fit): the volumes' own (a cache
        # holds them on disk), else computed here
        self.foreground = (
            volumes.foreground
            if volumes.foreground is not None
            else [
                torch.nonzero(t.reshape(-1) > 0).squeeze(1).to(torch.int64 if t.numel() > 2**31 else torch.int32)
                if labelled
                else torch.empty(0, dtype=torch.int32)
                for t, labelled in zip(volumes.target, volumes.labelled.tolist())
            ]
        )
        self.indices = torch.arange(len(self))
        self.image, self.target = None, None  # patches are drawn on access; there is no stacked array

    def __len__(self) -> int:
        return len(self.volumes) * self.patches_per_volume

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        v = int(i) % len(self.volumes)
        spatial = tuple(self.shapes[v][1:])
        foreground = self.foreground[v]
        centre: tuple[int | np.integer, ...]
        if len(foreground) and rng.random() < self.foreground_ratio:
            centre = np.unravel_index(int(foreground[rng.integers(len(foreground))]), spatial)
        else:
            centre = tuple(int(rng.integers(s)) for s in spatial)
            for _ in range(CENTRE_TRIES - 1 if self.labelled_centres else 0):
                if (
                    int(_window(self.volumes.target, v, tuple(slice(c, c + 1) for c in centre)).reshape(-1)[0])
                    != IGNORE
                ):
                    break
                centre = tuple(int(rng.integers(s)) for s in spatial)
        # the centre in the middle of the patch; with voxels without a label, anywhere in it: labelled voxels that lie
        # in a regular pattern (every k-th slice annotated) would otherwise always fall on the same positions of the
        # patch, and the network learns to be right there only
        offsets = [int(rng.integers(p)) if self.labelled_centres else p // 2 for p in self.patch]
        starts = [min(max(c - o, 0), max(s - p, 0)) for c, o, p, s in zip(centre, offsets, self.patch, spatial)]
        window = tuple(slice(a, a + p) for a, p in zip(starts, self.patch))
        image_patch = _window(self.volumes.image, v, (slice(None), *window))
        target_patch = _window(self.volumes.target, v, window)
        maps = {  # the spatial window of each (the last axes: soft labels may have one map per class first)
            name: map_or_default(name, _window(cases, v, (Ellipsis, *window)) if _has(cases, v) else None, target_patch)
            for name, cases in self.volumes.maps.items()
        }
        if tuple(target_patch.shape) != self.patch:  # the volume is smaller than the patch along some axis
            pad = [x for got, want in zip(reversed(target_patch.shape), reversed(self.patch)) for x in (0, want - got)]
            image_patch = torch.nn.functional.pad(image_patch, pad)
            target_patch = torch.nn.functional.pad(target_patch, pad)
            # the padding is labelled background, as without maps: weight 1, probability 0 (per class: background 1)
            maps = {k: torch.nn.functional.pad(m, pad, value=float(k == "weight")) for k, m in maps.items()}
            if "soft" in maps and maps["soft"].ndim > target_patch.ndim:
                maps["soft"][0] += 1 - maps["soft"].sum(dim=0)
        return {
            "image": image_patch.contiguous(),
            "target": target_patch.contiguous(),
            "labelled": self.volumes.labelled[v],
            "index": torch.tensor(int(i)),
            **{name: m.contiguous() for name, m in maps.items()},
        }


def _has(cases: Sequence[torch.Tensor | None], v: int) -> bool:
    """Whether case ``v`` has the map (a lazy sequence answers without reading it)."""
    has = getattr(cases, "has", None)
    return bool(has(v)) if has is not None else cases[v] is not None


def _window(
    cases: Sequence[torch.Tensor] | Sequence[torch.Tensor | None], v: int, index: tuple[Any, ...]
) -> torch.Tensor:
    """``cases[v][index]``, reading only the window when ``cases`` is a lazy sequence of memory-mapped files."""
    read = getattr(cases, "read", None)
    if read is not None:
        return read(v, index)
    case = cases[v]
    assert case is not None  # maps: asked only of the cases that have one (_has)
    return case[index]
