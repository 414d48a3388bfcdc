"""Reading the Harvard-GDP layout (Luo et al., ICCV 2023): one ``data_XXXX.npz`` per patient.

Keys of a file: ``rnflt`` (225 x 225 retinal nerve fibre layer thickness map, microns), ``glaucoma`` (0/1),
``progression`` (6 binary labels, one per progression criterion), ``md`` (mean deviation of the visual field, dB),
``tds`` (52 total-deviation values of the 24-2 visual field), ``age``, ``male``, ``race``, ``hispanic``.

:func:`read_patients` reads a folder (or a list of files) into arrays plus a table of attributes; which patient is
in which split and whether its label may be used is said by a manifest, never by file order (see
``labelwise.data.manifest`` for the segmentation manifest; the classification one comes with the semi-supervised
capability)."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelwise.errors import DataError

__all__ = ["ATTRIBUTES", "MAP_SIZE", "Patients", "read_harvard_image", "read_patients", "tds_grid"]

MAP_SIZE = (225, 225)
N_PROGRESSION, N_TDS = 6, 52
ATTRIBUTES = ("age", "male", "race", "hispanic")
SCALARS = ("glaucoma", "md", *ATTRIBUTES)


@dataclass
class Patients:
    """Patients in file order: ``rnflt`` ``(N, 225, 225)`` float32, ``glaucoma`` ``(N,)`` int64, ``progression``
    ``(N, 6)`` int64, ``md`` ``(N,)`` float32, ``tds`` ``(N, 52)`` float32, ``attributes`` one array ``(N,)`` per
    name in :data:`ATTRIBUTES`; ``ids`` the file stems (``data_0001``)."""

    ids: list[str]
    rnflt: np.ndarray
    glaucoma: np.ndarray
    progression: np.ndarray
    md: np.ndarray
    tds: np.ndarray
    attributes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)


def _scalar(value: np.ndarray, key: str, path: Path) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise DataError(f"{path}: {key} must be one value, got shape {array.shape}")
    item = array.reshape(-1)[0]
    try:
        return float(item)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key} must be a number, got {item!r}") from None


def _read_one(path: Path) -> dict[str, np.ndarray | float]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    missing = [k for k in ("rnflt", "progression", "tds", *SCALARS) if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)} of the Harvard-GDP layout")
    rnflt = np.asarray(arrays["rnflt"], dtype=np.float32)
    if rnflt.shape != MAP_SIZE:
        raise DataError(f"{path}: rnflt must be {MAP_SIZE[0]} x {MAP_SIZE[1]}, got shape {rnflt.shape}")
    progression = np.asarray(arrays["progression"]).reshape(-1)
    tds = np.asarray(arrays["tds"], dtype=np.float32).reshape(-1)
    if progression.size != N_PROGRESSION or not np.isin(progression, (0, 1)).all():
        raise DataError(f"{path}: progression must be {N_PROGRESSION} values of 0 or 1, got {progression.tolist()}")
    if tds.size != N_TDS:
        raise DataError(f"{path}: tds must hold {N_TDS} visual-field values, got {tds.size}")
    out: dict[str, np.ndarray | float] = {"rnflt": rnflt, "progression": progression.astype(np.int64), "tds": tds}
    for key in SCALARS:
        out[key] = _scalar(arrays[key], key, path)
    if out["glaucoma"] not in (0.0, 1.0):
        raise DataError(f"{path}: glaucoma must be 0 or 1, got {out['glaucoma']}")
    return out


def read_patients(source: str | Path | Sequence[str | Path]) -> Patients:
    """Every ``*.npz`` of a folder (sorted by name), or the given files, checked against the layout."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        files = sorted(Path(source).glob("*.npz"))
        if not files:
            raise DataError(f"{source}: no .npz files (expected data_XXXX.npz of the Harvard-GDP layout)")
    elif isinstance(source, (str, Path)):
        raise DataError(f"{source}: not a folder")
    else:
        files = [Path(f) for f in source]
    records = [_read_one(f) for f in files]
    return Patients(
        ids=[f.stem for f in files],
        rnflt=np.stack([r["rnflt"] for r in records]),
        glaucoma=np.array([r["glaucoma"] for r in records], dtype=np.int64),
        progression=np.stack([r["progression"] for r in records]),
        md=np.array([r["md"] for r in records], dtype=np.float32),
        tds=np.stack([r["tds"] for r in records]),
        attributes={key: np.array([r[key] for r in records]) for key in ATTRIBUTES},
    )


def tds_grid(tds: np.ndarray) -> np.ndarray:
    """The 52 total-deviation values placed on the 24-2 grid ``(8, 9)`` (rows 21 to -21 degrees, columns -27 to 21;
    points outside the field and the blind spot are 0), in the order of
    :data:`labelwise.data.synth.rnflt.VF_POINTS`."""
    from labelwise.data.synth.rnflt import VF_POINTS

    grid = np.zeros((8, 9), dtype=np.float32)
    rows = ((21 - VF_POINTS[:, 1]) // 6).astype(int)
    cols = ((VF_POINTS[:, 0] + 27) // 6).astype(int)
    grid[rows, cols] = np.asarray(tds, dtype=np.float32).reshape(-1)
    return grid


def read_harvard_image(path: Path, modalities: Sequence[str] = ("rnflt",)) -> np.ndarray:
    """One Harvard-GDP file as channels ``modalities`` ``(C, 225, 225)`` float32: ``rnflt`` (the map) and ``tds``
    (the visual field on its 24-2 grid, resized to the map, nearest)."""
    patient = read_patients([path])
    channels = []
    for name in modalities:
        if name == "rnflt":
            channels.append(patient.rnflt[0])
        elif name == "tds":
            import torch

            grid = torch.from_numpy(tds_grid(patient.tds[0]))[None, None]
            channels.append(
                torch.nn.functional.interpolate(grid, size=patient.rnflt.shape[1:], mode="nearest")[0, 0].numpy()
            )
        else:
            raise DataError(f"data.modalities: unknown modality {name!r} of a Harvard-GDP file; use rnflt and/or tds")
    return np.stack(channels).astype(np.float32)
