"""Datasets held in memory as arrays (built-in synthetic sets and ``.npz`` files)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from labelwise.data.config import DataConfig
from labelwise.data.intensity import TRAINED_INTENSITY, preprocess_image
from labelwise.errors import DataError


class ArrayDataset(Dataset):
    """Samples ``{"image": (C, *spatial) float32, "target": () or (K,) or (*spatial) int64, "labelled": () bool,
    "index": ()}``; an unlabelled sample's target is -1 (never a real label)."""

    def __init__(self, image: np.ndarray, target: np.ndarray, indices: np.ndarray, labelled: np.ndarray | None = None):
        self.image = torch.from_numpy(np.ascontiguousarray(image[indices], dtype=np.float32))
        self.target = torch.from_numpy(np.ascontiguousarray(target[indices]).astype(np.int64))
        self.indices = torch.from_numpy(indices.astype(np.int64))
        flags = np.ones(len(indices), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)[indices]
        self.labelled = torch.from_numpy(flags)
        if not flags.all():
            self.target[~self.labelled] = -1

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.image[i],
            "target": self.target[i],
            "labelled": self.labelled[i],
            "index": self.indices[i],
        }

    def subset(self, rows: torch.Tensor) -> ArrayDataset:
        """The samples at ``rows`` (positions in this dataset), as a dataset of their own."""
        out = ArrayDataset.__new__(ArrayDataset)
        out.image, out.target = self.image[rows], self.target[rows]
        out.indices, out.labelled = self.indices[rows], self.labelled[rows]
        return out


@dataclass
class DataBundle:
    """The splits of one dataset and what a model needs to know about it."""

    # ArrayDataset (arrays in memory), or VolumeDataset and PatchDataset (a manifest's segmentation cases): typed Any,
    # as the code that takes a split uses what its task's kind of dataset has
    splits: dict[str, Any]
    task: str
    num_classes: int
    in_channels: int
    spatial_dims: int
    class_names: list[str] = field(default_factory=list)
    ids: np.ndarray | None = None  # one id per sample of the file (its ``ids`` array), when it has one
    multilabel: bool = False  # classification with several 0/1 labels per sample (targets (K,))
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # group of every sample (by ``index``)
    image_size: tuple[int, ...] | None = None  # spatial size of a training sample (a patch, for patch training)
    # how an input file becomes a sample, with the statistics measured on the training split (see preprocess_image)
    preprocessing: dict = field(default_factory=lambda: {"intensity": "none"})
    raters: dict | None = None  # data.raters: the fit that fused several raters' masks (raters.json in the run)
    # per-voxel maps the training cases carry (labelwise.data.patches.MAPS): "weight" (a weight column), "soft" (soft
    # labels), "votes" (data.raters: sample)
    maps: tuple[str, ...] = ()
    unlabelled_voxels: bool = False  # some masks leave voxels without a label (data.ignore, an ignore column)

    def split(self, name: str) -> Any:
        """One split (see ``splits``); a clear error when it is empty."""
        if name not in self.splits or len(self.splits[name]) == 0:
            raise DataError(f"the data has no samples in split {name!r} (splits: {sorted(self.splits)})")
        return self.splits[name]


def load_data(cfg: DataConfig, keep_unlabelled: bool = False, seed: int = 0) -> DataBundle:
    """Generate (``data.synth``) or read (``data.path``, an ``.npz``; ``data.manifest``, image files) the dataset
    the config names. Unlabelled training cases of a manifest are kept only with ``keep_unlabelled`` (methods
    that learn from them); otherwise they are left out. ``seed`` draws the training patches.

    An ``.npz`` holds ``image`` (N, C, *spatial), ``split`` (N,) of 'train'/'val'/'test', and ``label`` (N,)
    for classification or ``mask`` (N, *spatial) for segmentation; optional ``class_names``, ``ids`` (N,) and
    ``labelled`` (N,); a MedMNIST file is read as it is (:func:`labelwise.data.npz.from_medmnist`). Classification
    images are resized to ``data.image_size`` when given (recorded, so predict resizes its inputs the same way)."""
    from labelwise.data.npz import load_npz
    from labelwise.data.synth import make_shapes

    if cfg.manifest is not None and cfg.task == "classification":
        return _load_table(cfg, keep_unlabelled)
    if cfg.manifest is not None:
        return _load_manifest(cfg, keep_unlabelled, seed)
    target_key = cfg.labels[0] if cfg.task == "classification" else "mask"  # an .npz key: label, or labels (tags)
    if cfg.task == "classification" and len(cfg.labels) != 1:
        raise DataError(f"data.labels: an .npz holds its labels in one array; name its key, got {cfg.labels}")
    if cfg.synth is not None:
        arrays = make_shapes(**cfg.synth.model_dump(exclude={"kind"}))
        source = f"built-in {cfg.synth.kind}"
    else:
        assert cfg.path is not None  # DataConfig holds exactly one of path, synth and manifest
        arrays = load_npz(cfg.path, required=("image", "split", target_key))
        source = str(cfg.path)
    image, target, split = arrays["image"], arrays[target_key], arrays["split"].astype(str)
    if image.ndim not in (4, 5):
        raise DataError(f"{source}: image must be (N, C, H, W) or (N, C, D, H, W), got shape {image.shape}")
    preprocessing: dict = {"intensity": "none"}
    if cfg.image_size is not None:
        if cfg.task != "classification":
            raise DataError(
                "data.image_size resizes classification images; segmentation trains at the data's size "
                "(manifest data: data.spacing and data.patch_size)"
            )
        preprocessing["image_size"] = list(cfg.image_size)  # preprocess_image checks its axes against the images'
        image = np.stack([preprocess_image(i, preprocessing) for i in image])
    if cfg.task == "segmentation" and target.shape[1:] != image.shape[2:]:
        raise DataError(f"{source}: mask shape {target.shape} does not match image shape {image.shape}")
    multilabel = cfg.task == "classification" and target.ndim == 2
    if cfg.task == "classification" and target.ndim not in (1, 2):
        raise DataError(f"{source}: label must be (N,) classes or (N, K) 0/1 tags, got shape {target.shape}")
    if multilabel and not np.isin(target, (0, 1)).all():
        raise DataError(f"{source}: a label of shape (N, K) holds tags and must be 0 or 1")
    labelled = arrays["labelled"].astype(bool) if "labelled" in arrays else None
    if labelled is not None and labelled.shape != split.shape:
        raise DataError(f"{source}: labelled must be (N,) like split, got shape {labelled.shape}")
    if labelled is not None:
        labelled = labelled | (split != "train")  # the flag concerns training: val and test are always scored
    scored = target if labelled is None else target[labelled]
    if scored.size and scored.min() < 0:
        raise DataError(f"{source}: {target_key} has negative values")
    class_names = [str(c) for c in arrays.get("class_names", [])]
    if cfg.class_names is not None:  # segmentation (DataConfig checks): the config names the mask's labels
        class_names = check_class_names(cfg.class_names, int(scored.max()), source)
    num_classes = target.shape[1] if multilabel else int(scored.max()) + 1
    if cfg.task == "classification":
        num_classes = max(num_classes, len(class_names))
    else:
        num_classes = max(num_classes, len(class_names) + 1)
    splits = {
        name: ArrayDataset(image, target, _kept(split, name, labelled, keep_unlabelled), labelled)
        for name in ("train", "val", "test")
    }
    unknown = sorted(set(np.unique(split)) - set(splits))
    if unknown:
        raise DataError(f"{source}: unknown split names {unknown}; expected train, val, test")
    return DataBundle(
        splits=splits,
        task=cfg.task,
        num_classes=num_classes,
        in_channels=image.shape[1],
        spatial_dims=image.ndim - 2,
        image_size=tuple(image.shape[2:]),
        class_names=class_names,
        ids=arrays["ids"].astype(str) if "ids" in arrays else None,
        multilabel=multilabel,
        attributes={
            k.removeprefix("attribute_"): v.astype(str) for k, v in arrays.items() if k.startswith("attribute_")
        },
        preprocessing=preprocessing,
    )


def _kept(split: np.ndarray, name: str, labelled: np.ndarray | None, keep_unlabelled: bool) -> np.ndarray:
    """Rows of split ``name``; unlabelled training rows only with ``keep_unlabelled`` (val/test are always scored)."""
    chosen = split == name
    if labelled is not None and name == "train" and not keep_unlabelled:
        chosen &= labelled
    return np.flatnonzero(chosen)


def _load_table(cfg: DataConfig, keep_unlabelled: bool) -> DataBundle:
    """A classification table (:mod:`labelwise.data.table`) read into memory, images resized to
    ``data.image_size`` and normalised (``data.intensity``; ``channel``: the training split's mean and std)."""
    from labelwise.data.table import load_images, read_table

    assert cfg.manifest is not None  # load_data reads a table for a manifest
    table = read_table(cfg.manifest, cfg.labels, cfg.attributes)
    image = load_images(table.images, cfg.modalities, cfg.image_size)
    train_rows = table.splits == "train"
    preprocessing = {
        "intensity": cfg.intensity,
        "modalities": list(cfg.modalities),
        "image_size": list(cfg.image_size) if cfg.image_size else None,
    }
    if cfg.intensity == "channel":
        axes = (0, *range(2, image.ndim))
        preprocessing["channel_mean"] = image[train_rows].mean(axis=axes, dtype=np.float64).tolist()
        preprocessing["channel_std"] = image[train_rows].std(axis=axes, dtype=np.float64).tolist()
    image = np.stack([preprocess_image(i, preprocessing) for i in image])
    if not (table.labelled & train_rows).any():
        raise DataError(f"{cfg.manifest}: no training row may use its label (use_label)")
    splits = {
        name: ArrayDataset(
            image, table.target, _kept(table.splits, name, table.labelled, keep_unlabelled), table.labelled
        )
        for name in ("train", "val", "test")
    }
    return DataBundle(
        splits=splits,
        task="classification",
        num_classes=len(table.class_names),
        in_channels=image.shape[1],
        spatial_dims=image.ndim - 2,
        image_size=tuple(image.shape[2:]),
        class_names=table.class_names,
        ids=np.array(table.ids),
        multilabel=table.multilabel,
        attributes=table.attributes,
        preprocessing=preprocessing,
    )


def _load_manifest(cfg: DataConfig, keep_unlabelled: bool, seed: int) -> DataBundle:
    """Cases of a manifest: whole volumes for val and test, random patches (``data.patch_size``) or whole images
    for training, read from the case cache (:mod:`labelwise.data.cache`: preprocessed once into memory-mapped
    files in ``data.cache``, by default ``.labelwise-cache`` next to the manifest), so no split is held in memory."""
    from labelwise.data.cache import CaseCache, cache_folder
    from labelwise.data.manifest import read_manifest
    from labelwise.data.patches import PatchDataset
    from labelwise.data.raters import fuse_cases

    assert cfg.manifest is not None  # load_data reads cases for a manifest
    cases = read_manifest(cfg.manifest)
    chosen = {
        name: [i for i, c in enumerate(cases) if c.split == name and (c.labelled or keep_unlabelled)]
        for name in ("train", "val", "test")
    }
    if not chosen["train"]:
        raise DataError(
            f"{cfg.manifest}: no usable training cases (unlabelled ones are used only by semi-supervised methods)"
        )
    if not any(cases[i].labelled for i in chosen["train"]):
        raise DataError(f"{cfg.manifest}: the training cases have no labels")
    folder = cache_folder(cfg.manifest, cfg.cache)
    soft = cfg.soft_labels or (cfg.raters == "mean" and any(len(c.raters) > 1 for c in cases))
    cases, raters = fuse_cases(cases, chosen["train"], cfg.raters, folder / "raters", cfg.ignore)
    cache = CaseCache(folder, cfg.modalities)
    spacing = target_spacing([cases[i] for i in chosen["train"]], cfg.spacing, cfg.reorient, cfg.modalities)
    preprocessing: dict = {"intensity": cfg.intensity, "reorient": bool(cfg.reorient), "spacing": spacing}
    if cfg.ignore:  # only then: the cache keys of runs without it stay as they were
        preprocessing["ignore"] = sorted(cfg.ignore)
    if soft:  # likewise: labels read as foreground probabilities
        preprocessing["soft_labels"] = True
    if cfg.intensity in TRAINED_INTENSITY:  # statistics of the training split, streamed one case at a time
        preprocessing.update(
            cache.statistics(
                [cases[i] for i in chosen["train"]], cfg.intensity, seed, cfg.reorient, spacing, cfg.ignore, soft
            )
        )
    volumes = cache.volumes(
        {name: ([cases[i] for i in rows], np.array(rows, dtype=np.int64)) for name, rows in chosen.items()},
        preprocessing,
    )
    if cfg.sparse_masks:
        train = volumes["train"]
        labelled = [p for p, flag in enumerate(train.labelled.tolist()) if flag]
        foreground = train.foreground
        assert foreground is not None  # the cache holds every labelled case's foreground indices
        counts = [len(foreground[p]) for p in labelled]
        sparse = {chosen["train"][labelled[k]] for k in sparse_positions(counts, cfg.sparse_masks)}
        if sparse:
            kept = "used as unlabelled images" if keep_unlabelled else "left out of training"
            print(
                f"labelwise: data.sparse_masks: {len(sparse)} of {len(labelled)} training masks have fewer "
                f"foreground voxels than {cfg.sparse_masks:g} x the median ({np.median(counts):.0f}); "
                f"{kept}: {', '.join(cases[i].id for i in sorted(sparse))}",
                file=sys.stderr,
                flush=True,
            )
            cases = [replace(c, label=None) if i in sparse else c for i, c in enumerate(cases)]
            chosen["train"] = [i for i in chosen["train"] if keep_unlabelled or i not in sparse]
            volumes = cache.volumes(
                {name: ([cases[i] for i in rows], np.array(rows, dtype=np.int64)) for name, rows in chosen.items()},
                preprocessing,
            )
    splits: dict[str, Dataset] = dict(volumes)
    train = volumes["train"]
    first = train.shapes[0]
    spatial_dims, in_channels = len(first) - 1, first[0]
    top = max(
        m for split in volumes.values() for m, labelled in zip(split.label_max, split.labelled.tolist()) if labelled
    )
    unlabelled_voxels = bool(cfg.ignore) or any(c.ignore is not None for c in train.cases)
    if cfg.patch_size is not None:
        splits["train"] = PatchDataset(
            train,
            cfg.patch_size,
            cfg.patches_per_volume,
            cfg.foreground_ratio,
            seed,
            labelled_centres=unlabelled_voxels,
        )
    elif len({s[1:] for s in train.shapes}) > 1:
        raise DataError(f"{cfg.manifest}: training images differ in size; set data.patch_size to train on patches")
    size = tuple(cfg.patch_size) if cfg.patch_size is not None else tuple(first[1:])
    class_names = check_class_names(cfg.class_names, top, str(cfg.manifest)) if cfg.class_names else []
    return DataBundle(
        splits=splits,
        task="segmentation",
        num_classes=max(2, top + 1, len(class_names) + 1),
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        image_size=size,
        class_names=class_names,
        ids=np.array([c.id for c in cases]),
        preprocessing=preprocessing,
        raters=raters,
        maps=tuple(train.maps),
        unlabelled_voxels=unlabelled_voxels,
    )


def sparse_positions(counts: Sequence[int], share: float) -> list[int]:
    """The positions in ``counts`` (foreground voxels per mask) below ``share`` x their median: masks that leave
    out most of what the others trace (``data.sparse_masks``)."""
    if not len(counts) or share <= 0:
        return []
    limit = share * float(np.median(counts))
    return [p for p, c in enumerate(counts) if c < limit]


def target_spacing(
    cases: Sequence[Any],
    spacing: Sequence[float] | str | None,
    reorient: bool = True,
    modalities: Sequence[str] = ("rnflt",),
) -> list[float] | None:
    """The spacing a manifest's cases are resampled to (``data.spacing``): the values given, None (no resampling),
    or ``"median"``: the per-axis median of the training ``cases``' spacings (as reoriented, when ``reorient``;
    NIfTI: read from the headers alone)."""
    from labelwise.data.volumes import read_spacing

    if spacing is None:
        return None
    if spacing != "median":
        return [float(s) for s in spacing]
    spacings = [read_spacing(c.image, reorient, modalities) for c in cases]
    if len({len(s) for s in spacings}) > 1:
        raise DataError("data.spacing: median: the training cases differ in their number of spatial axes")
    return [round(float(s), 6) for s in np.median(np.asarray(spacings, dtype=np.float64), axis=0)]


def check_class_names(names: Sequence[str], highest: int, source: str) -> list[str]:
    """``data.class_names`` (the names of labels 1, 2, ...) checked against the ``highest`` label of the masks."""
    if len(names) < highest:
        raise DataError(
            f"data.class_names names {len(names)} label(s) ({', '.join(names)}) but {source}'s masks hold labels up "
            f"to {highest}; name every label from 1 to {highest}"
        )
    return list(names)
