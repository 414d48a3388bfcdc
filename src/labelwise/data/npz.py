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
    """All arrays of an ``.npz`` file, read without pickles.

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
