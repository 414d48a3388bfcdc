"""A trained run's network, rebuilt from its directory, and new inputs read the way it was trained on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labelwise.data.volumes import NIFTI_SUFFIXES, PICTURE_SUFFIXES, suffix_of
from labelwise.errors import DataError, LabelwiseError

IMAGE_SUFFIXES = (*PICTURE_SUFFIXES, ".bmp")
ARRAY_SUFFIXES = (".npy",)


@dataclass
class Trained:
    """A run's predicting network (eval mode, CPU) and what it was trained on."""

    model: nn.Module
    run_dir: Path
    checkpoint: Path
    task: str
    num_classes: int
    in_channels: int
    spatial_dims: int
    class_names: list[str]

    def class_name(self, k: int) -> str:
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)


def load_trained(path: str | Path) -> Trained:
    """A run directory (its latest checkpoint; with ``trainer.select_best``, the best validation weights it tested)
    or one checkpoint folder ``RUN/checkpoints/step-XXXXXX`` (or ``RUN/checkpoints/best``)."""
    from labelwise.config import load_config
    from labelwise.data.datasets import DataBundle, load_data
    from labelwise.engine.checkpoint import WEIGHTS, latest_checkpoint, load_weights
    from labelwise.engine.rundir import RunDir
    from labelwise.methods import METHODS

    path = Path(path)
    if (path / WEIGHTS).is_file():
        checkpoint, run_dir = path, path.parent.parent
    elif (path / "config.yaml").is_file() and RunDir(path).summary().get("tested_step") is not None:
        run_dir, checkpoint = path, path / "checkpoints" / "best"  # trainer.select_best: the weights it tested
    elif (path / "config.yaml").is_file():
        run_dir, checkpoint = path, latest_checkpoint(path / "checkpoints")
        if checkpoint is None:
            raise LabelwiseError(f"{path}: the run has no complete checkpoint yet (checkpoints/latest.json)")
    else:
        raise LabelwiseError(f"{path}: neither a run directory (config.yaml) nor a checkpoint folder ({WEIGHTS})")
    if not (run_dir / "config.yaml").is_file():
        raise LabelwiseError(f"{checkpoint}: its run directory {run_dir} has no config.yaml")
    cfg = load_config(run_dir / "config.yaml")
    info = RunDir(run_dir).summary().get("data")
    if info:
        data = DataBundle(splits={}, task=info["task"], num_classes=info["num_classes"], in_channels=info["in_channels"],
                          spatial_dims=info["spatial_dims"], class_names=list(info.get("class_names") or []),
                          image_size=tuple(info["image_size"]) if info.get("image_size") else None)
    else:  # a run from before summary.json recorded the data's sizes: read the data once
        data = load_data(cfg.data)
    method = METHODS[cfg.method.name](cfg, data)
    load_weights(checkpoint, method.networks)
    model = method.networks.get("model") or next(iter(method.networks.values()))
    return Trained(model.eval(), run_dir, checkpoint, data.task, data.num_classes, data.in_channels,
                   data.spatial_dims, data.class_names)


def input_files(paths: Sequence[str | Path], suffixes: Sequence[str] | None = None) -> list[Path]:
    """Files given, and the readable files inside folders given (sorted); a clear error for anything else.
    ``suffixes``: the accepted file types (default: pictures, ``.npy`` and NIfTI)."""
    suffixes = tuple(suffixes or IMAGE_SUFFIXES + ARRAY_SUFFIXES + NIFTI_SUFFIXES)
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and suffix_of(p) in suffixes)
            if not found:
                raise DataError(f"{path}: no images or volumes ({', '.join(suffixes)})")
            files += found
        elif path.is_file():
            if suffix_of(path) not in suffixes:
                raise DataError(f"{path}: unsupported file type; expected one of {', '.join(suffixes)}")
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def read_input(path: Path, in_channels: int, spatial_dims: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """One input as float32 ``(C, *spatial)`` and its NIfTI affine (None otherwise).

    Images (png, jpg, ...) are scaled to [0, 1] as the built-in datasets are; ``.npy`` and NIfTI values are used as
    stored. A grey image given to a colour model is repeated over 3 channels, a colour one given to a grey model is
    averaged. NIfTI volumes are ``(X, Y, Z)`` or ``(X, Y, Z, C)`` and become ``(C, X, Y, Z)``."""
    suffix, affine = suffix_of(path), None
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
                array = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read image: {err}") from None
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    elif suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            image = nib.load(str(path))
            array, affine = np.asarray(image.dataobj, dtype=np.float32), image.affine
        except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
            raise DataError(f"{path}: cannot read NIfTI: {err}") from None
        array = array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)
    else:
        try:
            array = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read array: {err}") from None
        if array.ndim == spatial_dims:
            array = array[None]
    return torch.from_numpy(np.ascontiguousarray(fit_channels(array, path, in_channels, spatial_dims))), affine


def fit_channels(array: np.ndarray, path: Path, in_channels: int, spatial_dims: int) -> np.ndarray:
    """``array`` ``(C, *spatial)`` checked against the network's input: a grey input given to a colour model is
    repeated over its channels, a colour one given to a grey model averaged; anything else is a DataError."""
    if array.ndim != spatial_dims + 1:
        raise DataError(f"{path}: shape {array.shape}; the model takes {spatial_dims}D inputs "
                        f"({in_channels}, {', '.join(['size'] * spatial_dims)})")
    channels = array.shape[0]
    if channels != in_channels:
        if channels == 1:
            array = np.repeat(array, in_channels, axis=0)
        elif in_channels == 1 and channels == 3:
            array = array.mean(0, keepdims=True)
        else:
            raise DataError(f"{path}: {channels} channels; the model takes {in_channels}")
    return array
