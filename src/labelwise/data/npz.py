"""Read and write datasets as ``.npz`` files (plain arrays, no pickles)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from labelwise.errors import DataError
from labelwise.io import atomic_open

#: Keys whose first dimension is the sample axis and must agree when present.
SAMPLE_KEYS = ("image", "label", "mask", "split")


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray], *, compress: bool = False) -> Path:
    """Write ``arrays`` to ``path`` atomically (a temporary file in the same folder, then ``os.replace``).

    The name is used as given (no ``.npz`` is appended); parent folders are created. Object arrays are
    refused with :class:`DataError`, since :func:`load_npz` reads without pickles. Returns the path."""
    path = Path(path)
    plain = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise DataError(f"{path}: array {key!r} has dtype object, which .npz files cannot hold without pickles")
        plain[key] = value
    with atomic_open(path) as f:
        (np.savez_compressed if compress else np.savez)(f, allow_pickle=False, **plain)
    return path


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read without pickles. A MedMNIST file (``train_images``, ``train_labels``,
    ...) is read into labelwise's dataset layout (:func:`from_medmnist`).

    Raises :class:`DataError` naming the file when it is missing or unreadable, lacks a ``required`` key, or
    when the first (sample) dimensions of ``image``/``label``/``mask``/``split`` disagree."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with path.open("rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise DataError(f"{path}: a single .npy array, not an .npz archive of named arrays")
        if not magic.startswith(b"PK"):
            raise DataError(f"{path}: not an .npz archive (it is not a zip file)")
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive")
        with data:
            for key in data.files:
                try:
                    arrays[key] = data[key]
                except ValueError as err:
                    raise DataError(f"{path}: cannot read array {key!r}: {err}") from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read as .npz: {err}") from None
    if is_medmnist(arrays):
        arrays = from_medmnist(arrays, str(path))
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})")
    present = {key: arrays[key].shape for key in SAMPLE_KEYS if key in arrays}
    for key, shape in present.items():
        if len(shape) == 0:
            raise DataError(f"{path}: array {key!r} must have a sample dimension, got a scalar")
    if len({shape[0] for shape in present.values()}) > 1:
        shapes = ", ".join(f"{key} {shape}" for key, shape in present.items())
        raise DataError(f"{path}: arrays disagree on the number of samples (first dimension): {shapes}")
    return arrays


#: The splits of a MedMNIST file, each stored as ``{split}_images`` and ``{split}_labels``.
MEDMNIST_SPLITS = ("train", "val", "test")


def is_medmnist(keys) -> bool:
    """Whether arrays named ``keys`` are in MedMNIST's layout (``train_images`` and ``train_labels``, and no
    labelwise ``image``)."""
    keys = set(keys)
    return "image" not in keys and {"train_images", "train_labels"} <= keys


def from_medmnist(arrays: Mapping[str, np.ndarray], source: str = "MedMNIST file") -> dict[str, np.ndarray]:
    """labelwise's dataset layout from MedMNIST's (Yang et al. 2023, the ``.npz`` files as they are downloaded).

    MedMNIST stores ``{split}_images`` of ``(N, H, W)`` (grey), ``(N, H, W, 3)`` (colour) or ``(N, D, H, W)`` (3D,
    grey) uint8 values and ``{split}_labels`` of ``(N,)`` or ``(N, 1)`` classes or ``(N, K)`` 0/1 tags (ChestMNIST),
    for the splits train, val and test. The result holds ``image`` ``(N, C, *spatial)`` float32 in [0, 1],
    ``label`` ``(N,)`` or ``(N, K)``, ``split`` and ``ids`` (``train-00000``, ...), every split present in order."""
    images, labels, splits, ids = [], [], [], []
    for name in MEDMNIST_SPLITS:
        if f"{name}_images" not in arrays:
            continue
        if f"{name}_labels" not in arrays:
            raise DataError(f"{source}: {name}_images has no {name}_labels")
        image, label = np.asarray(arrays[f"{name}_images"]), np.asarray(arrays[f"{name}_labels"])
        if image.ndim == 3:  # (N, H, W) grey
            image = image[:, None]
        elif image.ndim == 4 and image.shape[-1] == 3:  # (N, H, W, 3) colour
            image = np.moveaxis(image, -1, 1)
        elif image.ndim == 4:  # (N, D, H, W) grey volumes
            image = image[:, None]
        else:
            raise DataError(
                f"{source}: {name}_images must be (N, H, W), (N, H, W, 3) or (N, D, H, W), got shape {image.shape}"
            )
        if label.ndim == 2 and label.shape[1] == 1:
            label = label[:, 0]
        if label.ndim not in (1, 2) or len(label) != len(image):
            raise DataError(
                f"{source}: {name}_labels must be (N,), (N, 1) or (N, K) for the {len(image)} images, "
                f"got shape {label.shape}"
            )
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        images.append(image.astype(np.float32) / np.float32(scale))
        labels.append(label.astype(np.int64))
        splits += [name] * len(image)
        ids += [f"{name}-{i:05d}" for i in range(len(image))]
    shapes = {i.shape[1:] for i in images}
    if len(shapes) > 1:
        raise DataError(f"{source}: the splits' images differ in shape: {sorted(shapes)}")
    if len({label.shape[1:] for label in labels}) > 1:
        raise DataError(f"{source}: the splits' labels differ in shape")
    return {
        "image": np.concatenate(images),
        "label": np.concatenate(labels),
        "split": np.array(splits),
        "ids": np.array(ids),
    }
