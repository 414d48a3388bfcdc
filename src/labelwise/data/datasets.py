"""Datasets held in memory as arrays (built-in synthetic sets and ``.npz`` files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from labelwise.errors import DataError

if TYPE_CHECKING:
    from labelwise.config import DataConfig


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
        return {"image": self.image[i], "target": self.target[i], "labelled": self.labelled[i], "index": self.indices[i]}


@dataclass
class DataBundle:
    """The splits of one dataset and what a model needs to know about it."""

    splits: dict[str, Dataset]
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

    def split(self, name: str) -> ArrayDataset:
        """One split; a clear error when it is empty."""
        if name not in self.splits or len(self.splits[name]) == 0:
            raise DataError(f"the data has no samples in split {name!r} (splits: {sorted(self.splits)})")
        return self.splits[name]


def load_data(cfg: DataConfig, keep_unlabelled: bool = False, seed: int = 0) -> DataBundle:
    """Generate (``data.synth``) or read (``data.path``, an ``.npz``; ``data.manifest``, image files) the dataset
    the config names. Unlabelled training cases of a manifest are kept only with ``keep_unlabelled`` (methods
    that learn from them); otherwise they are left out. ``seed`` draws the training patches.

    An ``.npz`` holds ``image`` (N, C, *spatial), ``split`` (N,) of 'train'/'val'/'test', and ``label`` (N,)
    for classification or ``mask`` (N, *spatial) for segmentation; optional ``class_names`` and ``ids`` (N,)."""
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
        arrays = load_npz(cfg.path, required=("image", "split", target_key))
        source = str(cfg.path)
    image, target, split = arrays["image"], arrays[target_key], arrays["split"].astype(str)
    if image.ndim not in (4, 5):
        raise DataError(f"{source}: image must be (N, C, H, W) or (N, C, D, H, W), got shape {image.shape}")
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
    num_classes = target.shape[1] if multilabel else int(scored.max()) + 1
    if cfg.task == "classification":
        num_classes = max(num_classes, len(class_names))
    else:
        num_classes = max(num_classes, len(class_names) + 1)
    splits = {name: ArrayDataset(image, target, _kept(split, name, labelled, keep_unlabelled), labelled)
              for name in ("train", "val", "test")}
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
        attributes={k.removeprefix("attribute_"): v.astype(str) for k, v in arrays.items() if k.startswith("attribute_")},
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

    table = read_table(cfg.manifest, cfg.labels, cfg.attributes)
    image = load_images(table.images, cfg.modalities, cfg.image_size)
    train_rows = table.splits == "train"
    preprocessing = {"intensity": cfg.intensity, "modalities": list(cfg.modalities),
                     "image_size": list(cfg.image_size) if cfg.image_size else None}
    if cfg.intensity == "channel":
        axes = (0, *range(2, image.ndim))
        preprocessing["channel_mean"] = image[train_rows].mean(axis=axes, dtype=np.float64).tolist()
        preprocessing["channel_std"] = image[train_rows].std(axis=axes, dtype=np.float64).tolist()
    image = np.stack([preprocess_image(i, preprocessing) for i in image])
    if not (table.labelled & train_rows).any():
        raise DataError(f"{cfg.manifest}: no training row may use its label (use_label)")
    splits = {name: ArrayDataset(image, table.target, _kept(table.splits, name, table.labelled, keep_unlabelled),
                                 table.labelled) for name in ("train", "val", "test")}
    return DataBundle(
        splits=splits, task="classification", num_classes=len(table.class_names), in_channels=image.shape[1],
        spatial_dims=image.ndim - 2, image_size=tuple(image.shape[2:]), class_names=table.class_names,
        ids=np.array(table.ids),
        multilabel=table.multilabel, attributes=table.attributes, preprocessing=preprocessing,
    )


def _load_manifest(cfg: DataConfig, keep_unlabelled: bool, seed: int) -> DataBundle:
    """Cases of a manifest: whole volumes for val and test, random patches (``data.patch_size``) or whole images
    for training."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.patches import PatchDataset, load_cases

    cases = read_manifest(cfg.manifest)
    splits: dict[str, Dataset] = {}
    per_image = cfg.intensity not in TRAINED_INTENSITY  # else: raw values first, the training statistics next
    for name in ("train", "val", "test"):
        chosen = [i for i, c in enumerate(cases) if c.split == name and (c.labelled or keep_unlabelled)]
        splits[name] = load_cases([cases[i] for i in chosen], np.array(chosen, dtype=np.int64),
                                  cfg.intensity if per_image else "none")
    train = splits["train"]
    preprocessing: dict = {"intensity": cfg.intensity}
    if not per_image and len(train):
        preprocessing.update(intensity_statistics(train.image, train.target, train.labelled.tolist(), cfg.intensity,
                                                  seed))
        for split in splits.values():
            split.image = [torch.from_numpy(preprocess_image(i.numpy(), preprocessing)) for i in split.image]
    if len(train) == 0:
        raise DataError(f"{cfg.manifest}: no usable training cases (unlabelled ones are used only by "
                        "semi-supervised methods)")
    if not bool(train.labelled.any()):
        raise DataError(f"{cfg.manifest}: the training cases have no labels")
    first = train.image[0]
    spatial_dims, in_channels = first.ndim - 1, first.shape[0]
    for name, split in splits.items():
        for image, case in zip(split.image, split.cases):
            if image.ndim - 1 != spatial_dims or image.shape[0] != in_channels:
                raise DataError(f"{case.image}: {image.shape[0]} channel(s), {image.ndim - 1}D; the training cases "
                                f"have {in_channels}, {spatial_dims}D")
    top = max(int(t.max()) for split in splits.values()
              for t, labelled in zip(split.target, split.labelled.tolist()) if labelled)
    if cfg.patch_size is not None:
        splits["train"] = PatchDataset(train, cfg.patch_size, cfg.patches_per_volume, cfg.foreground_ratio, seed)
    elif len({tuple(i.shape) for i in train.image}) > 1:
        raise DataError(f"{cfg.manifest}: training images differ in size; set data.patch_size to train on patches")
    size = tuple(cfg.patch_size) if cfg.patch_size is not None else tuple(first.shape[1:])
    return DataBundle(splits=splits, task="segmentation", num_classes=max(2, top + 1), in_channels=in_channels,
                      spatial_dims=spatial_dims, image_size=size, class_names=[], ids=np.array([c.id for c in cases]),
                      preprocessing=preprocessing)


TRAINED_INTENSITY = ("channel", "percentile")  # intensity schemes with statistics of the training split
PERCENTILES = (0.5, 99.5)  # percentile: clip to these percentiles of the training foreground (nnU-Net's CT scheme)
FOREGROUND_SAMPLE = 100_000  # percentile: foreground voxels drawn per training case for the statistics


def intensity_statistics(images: list[torch.Tensor], targets: list[torch.Tensor], labelled: list[bool], mode: str,
                         seed: int = 0) -> dict:
    """The training split's statistics of an intensity scheme (what :func:`preprocess_image` needs), per channel:
    ``channel``: ``channel_mean`` / ``channel_std`` over every voxel of every training image; ``percentile``:
    ``clip`` (the 0.5 and 99.5 percentiles of the voxels under the labelled cases' foreground, up to 100,000 drawn
    per case with ``seed``) and ``channel_mean`` / ``channel_std`` of those voxels clipped."""
    channels = images[0].shape[0]
    if mode == "channel":
        count = sum(i[0].numel() for i in images)
        total = sum(i.reshape(channels, -1).double().sum(1) for i in images)
        mean = total / count
        square = sum(((i.reshape(channels, -1).double() - mean[:, None]) ** 2).sum(1) for i in images)
        return {"channel_mean": mean.tolist(), "channel_std": (square / count).sqrt().tolist()}
    rng = np.random.default_rng(seed)
    samples = []
    for image, target, has_label in zip(images, targets, labelled):
        inside = torch.nonzero(target.reshape(-1) > 0).squeeze(1).numpy() if has_label else np.empty(0, np.int64)
        if len(inside) > FOREGROUND_SAMPLE:
            inside = rng.choice(inside, FOREGROUND_SAMPLE, replace=False)
        samples.append(image.reshape(channels, -1)[:, inside].double().numpy())
    values = np.concatenate(samples, axis=1)
    if values.shape[1] == 0:
        raise DataError("data.intensity: percentile needs foreground voxels in the labelled training cases; there are none")
    low, high = np.percentile(values, PERCENTILES, axis=1)
    clipped = np.clip(values, low[:, None], high[:, None])
    return {"clip": [low.tolist(), high.tolist()], "channel_mean": clipped.mean(1).tolist(),
            "channel_std": clipped.std(1).tolist()}


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
            image = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                                                    size=tuple(size), mode=mode, align_corners=False)[0].numpy()
    mode = preprocessing.get("intensity", "none")
    if mode == "percentile":
        low, high = (np.asarray(v, dtype=np.float64).reshape((-1,) + (1,) * (image.ndim - 1))
                     for v in preprocessing["clip"])
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
