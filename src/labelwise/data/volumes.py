"""Reading and writing one image or mask with its voxel spacing, through one table of file formats (:data:`FORMATS`):
NIfTI (2D/3D, through nibabel), pictures (PNG/TIFF/GIF/BMP/JPEG, 2D), ``.npy`` arrays, Harvard-GDP ``.npz`` (images).

Arrays are channel-first: an image is ``(C, *spatial)`` float32, a mask ``(*spatial)`` int64. Spatial axes are
kept in the file's order (NIfTI: x, y, z; pictures: row, column), and ``spacing`` gives one physical size per
spatial axis (NIfTI: the header's zooms, in mm; pictures: 1.0)::

    vol = read_volume("case01.nii.gz")            # Volume(array (1, X, Y, Z), spacing (0.3, 0.3, 0.6), affine)
    write_volume("pred01.nii.gz", mask, spacing=vol.spacing, affine=vol.affine)
    format_of("case01.png").spacing               # False: pictures store no spacing (it reads as 1)

A new file format is one :class:`Format` in :data:`FORMATS`: its suffixes, its reader and (optional) writer, and
what it stores. Reading, writing and the question whether a file stores a spacing (:func:`stores_spacing`) go
through it.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from labelwise.data.harvard import read_harvard_image
from labelwise.errors import DataError
from labelwise.io import atomic_open

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Format",
    "Grid",
    "Volume",
    "case_id",
    "format_of",
    "from_grid",
    "orient",
    "read_image",
    "read_map",
    "read_spacing",
    "read_volume",
    "resample",
    "same_spacing",
    "stores_spacing",
    "suffix_of",
    "to_grid",
    "write_volume",
]


@dataclass
class Volume:
    """One image ``(C, *spatial)`` float32 or mask ``(*spatial)`` int64, its spacing and (NIfTI) its affine."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    grid: Grid | None = None  # set by to_grid: the grid the volume was read on, what from_grid returns to

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[-len(self.spacing) :])


# (path, mask, modalities) -> an image (C, *spatial) or a mask's labels (*spatial) with their dtype as stored, the
# spacing and affine; read_volume / read_image finish it (float32 images, int64 labels checked)
Reader = Callable[[Path, bool, Sequence[str]], Volume]
# (path, array, spacing, affine): write array to path (atomically); spacing and affine where the format stores them
Writer = Callable[[Path, np.ndarray, Sequence[float] | None, np.ndarray | None], None]
# path -> (spacing, affine) from the header alone, without reading the voxels
Header = Callable[[Path], tuple[tuple[float, ...], np.ndarray | None]]


@dataclass(frozen=True)
class Format:
    """One file format of images and masks: the one place that says what a file of these ``suffixes`` holds.

    ``read``: the reader (:data:`Reader`); ``write``: the writer (:data:`Writer`; None: read only); ``spacing``:
    whether a file stores its voxel spacing and affine (NIfTI), or they read as 1s and None (pictures, arrays);
    outputs are written as NIfTI where their input stores one; ``header``: reads the spacing and affine without the
    voxels (None: :func:`read_spacing` reads the whole file); ``volume``: :func:`read_volume` takes it (an image or a
    mask), else only :func:`read_image` (an image of channels); ``dims``: the spatial dimensions a file holds;
    ``lossless``: whether ``write`` then ``read`` gives the array back (8-bit values for pictures); ``mask_suffix``:
    the suffix a mask read from this format is written back as (None: its own)."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    write: Writer | None = None
    spacing: bool = False
    header: Header | None = None
    volume: bool = True
    dims: tuple[int, ...] = (2, 3)
    lossless: bool = True
    mask_suffix: str | None = None


def suffix_of(path: str | Path) -> str:
    """``.nii.gz`` or the last suffix, lower case."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _read_nifti(path: Path, mask: bool, modalities: Sequence[str]) -> Volume:
    """NIfTI ``(X, Y[, Z])``, images also ``(X, Y, Z, C)`` -> ``(C, X, Y, Z)``; spacing: the header's zooms."""
    import nibabel as nib

    try:
        image = cast("SpatialImage", nib.load(str(path)))  # a NIfTI file loads as a Nifti1Image or Nifti2Image
        array = np.asarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=np.float64)
        zooms = tuple(round(float(z), 6) for z in image.header.get_zooms()[:3])  # stored as float32
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
        raise DataError(f"{path}: cannot read NIfTI: {err}") from None
    if array.ndim == 4 and not mask:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim not in (2, 3):
        raise DataError(f"{path}: NIfTI of shape {array.shape}; expected (X, Y[, Z]) or, for images, (X, Y, Z, C)")
    spacing = zooms[: min(array.ndim, 3)]
    if not mask and array.ndim in (2, 3) and array.ndim == len(spacing):
        array = array[None]
    return Volume(array, spacing, affine)


def _nifti_header(path: Path) -> tuple[tuple[float, ...], np.ndarray | None]:
    import nibabel as nib

    try:
        image = cast("SpatialImage", nib.load(str(path)))  # a NIfTI file loads as a Nifti1Image or Nifti2Image
        zooms = tuple(round(float(z), 6) for z in image.header.get_zooms()[:3])
        dims = min(len(image.shape), 3)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
        raise DataError(f"{path}: cannot read NIfTI: {err}") from None
    return zooms[:dims], affine


def _write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] | None, affine: np.ndarray | None) -> None:
    import nibabel as nib

    if array.dtype.kind in "biu":
        top = int(array.max(initial=0))
        array = array.astype(
            np.uint8 if top < 256 and array.min(initial=0) >= 0 else np.int16 if top < 2**15 else np.int32
        )
    else:
        array = array.astype(np.float32)
    if array.ndim == 4:  # (C, X, Y, Z) -> (X, Y, Z, C)
        array = np.moveaxis(array, 0, -1)
    if affine is None:
        zooms = list(spacing or (1.0,) * 3)[:3] + [1.0] * (3 - len(spacing or (1.0,) * 3))
        affine = np.diag([*zooms, 1.0])
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    if spacing is not None:
        image.header.set_zooms(tuple(float(s) for s in spacing[: min(array.ndim, 3)]) + image.header.get_zooms()[3:])
    with atomic_open(path) as f:  # what nib.save writes: gzip level 1, no name, mtime 0
        stream = gzip.GzipFile("", "wb", 1, f, 0) if suffix_of(path) == ".nii.gz" else contextlib.nullcontext(f)
        with stream as out:
            # nibabel annotates file maps as io.IOBase; atomic_open's file (typed BinaryIO) is one
            image.to_file_map(image.make_file_map({"image": out, "header": out}))  # type: ignore[dict-item]


def _read_picture(path: Path, mask: bool, modalities: Sequence[str]) -> Volume:
    """Images: scaled to [0, 1] (8-bit; 16-bit and float grey as stored), grey ``(1, H, W)``, colour ``(3, H, W)``.
    Masks: grey values ``(H, W)``, 0/255 as 0/1; a palette picture (PNG, GIF mode ``P``) gives its palette indices."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = im.mode in ("1", "L", "LA", "I", "I;16", "F", "P") or mask
            if mask and im.mode == "P":  # a palette mask: its indices are the labels (VOC-style PNG, GIF)
                raw = np.asarray(im)
            else:
                raw = np.asarray(
                    im.convert("L")
                    if grey and im.mode not in ("I", "I;16", "F")
                    else (im if grey else im.convert("RGB"))
                )
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read image: {err}") from None
    if mask:  # _read makes a 0/255 picture binary
        return Volume(raw, (1.0, 1.0))
    array = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
    return Volume(array[None] if array.ndim == 2 else array.transpose(2, 0, 1), (1.0, 1.0))


def _write_picture(path: Path, array: np.ndarray, spacing: Sequence[float] | None, affine: np.ndarray | None) -> None:
    """2D only: integer masks 0/1 as 0/255, other integers as 8 bit, floats in [0, 1] scaled to 8 bit."""
    from PIL import Image

    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: a picture must be 2D, got shape {array.shape}")
    if array.dtype.kind in "biu":
        array = array.astype(np.uint8) * (255 if array.max(initial=0) <= 1 else 1)
    else:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(array)
    Image.preinit()  # the common formats (PNG, JPEG, BMP...): registered_extensions would load every plugin
    suffix = suffix_of(path)
    image_format = Image.EXTENSION.get(suffix) or Image.registered_extensions()[suffix]
    with atomic_open(path) as f:  # GIF: no palette optimisation, which renumbers a mask's labels ({0, 1, 3} -> 0, 1, 2)
        picture.save(f, format=image_format, **({"optimize": False} if image_format == "GIF" else {}))


def _read_array(path: Path, mask: bool, modalities: Sequence[str]) -> Volume:
    """``.npy``: masks ``(*spatial)``; images ``(*spatial)`` for 2 axes, else ``(C, *spatial)`` (3 axes: 2D)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read array: {err}") from None
    if array.ndim not in (2, 3, 4):
        raise DataError(f"{path}: array of shape {array.shape}; expected 2 to 4 axes")
    if mask:
        return Volume(array, (1.0,) * array.ndim)
    array = array[None] if array.ndim == 2 else array
    return Volume(array, (1.0,) * (array.ndim - 1))


def _write_array(path: Path, array: np.ndarray, spacing: Sequence[float] | None, affine: np.ndarray | None) -> None:
    with atomic_open(path) as f:
        np.save(f, array)


def _read_harvard(path: Path, mask: bool, modalities: Sequence[str]) -> Volume:
    """A Harvard-GDP ``data_XXXX.npz``: its channels ``modalities`` (:func:`read_harvard_image`)."""
    return Volume(read_harvard_image(path, modalities), (1.0, 1.0))


FORMATS: tuple[Format, ...] = (
    Format("NIfTI", (".nii.gz", ".nii"), _read_nifti, _write_nifti, spacing=True, header=_nifti_header),
    Format(
        "picture",
        (".png", ".tif", ".tiff", ".gif", ".bmp"),
        _read_picture,
        _write_picture,
        dims=(2,),
        mask_suffix=".png",
    ),
    Format("JPEG", (".jpg", ".jpeg"), _read_picture, _write_picture, dims=(2,), lossless=False, mask_suffix=".png"),
    Format("array", (".npy",), _read_array, _write_array),
    Format("Harvard-GDP", (".npz",), _read_harvard, volume=False, dims=(2,)),
)


def _suffixes(volume: bool = False, write: bool = False) -> tuple[str, ...]:
    return tuple(
        s for f in FORMATS if (f.volume or not volume) and (f.write is not None or not write) for s in f.suffixes
    )


VOLUME_SUFFIXES = _suffixes(volume=True)  # what read_volume takes: images and masks
IMAGE_SUFFIXES = _suffixes()  # what read_image takes: + Harvard-GDP data_XXXX.npz


_BY_SUFFIX = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}


def format_of(path: str | Path, volume: bool = False, write: bool = False) -> Format:
    """The :class:`Format` of ``path`` by its suffix (:func:`suffix_of`), among the formats :func:`read_image` reads,
    those :func:`read_volume` reads (``volume``) or those :func:`write_volume` writes (``write``); a DataError naming
    the suffixes of those formats for any other."""
    suffix = suffix_of(path)
    fmt = _BY_SUFFIX.get(suffix)
    if fmt is not None and (fmt.volume or not volume) and (fmt.write is not None or not write):
        return fmt
    raise DataError(f"{path}: unknown file type {suffix!r}; use one of {', '.join(_suffixes(volume, write))}")


def stores_spacing(path: str | Path) -> bool:
    """Whether a file of this name stores its voxel spacing (:attr:`Format.spacing`: NIfTI); pictures and ``.npy``
    arrays carry none (their spacing reads as 1), nor does a file of no known format. Outputs are written as NIfTI
    where their input stores one."""
    fmt = _BY_SUFFIX.get(suffix_of(path))
    return fmt is not None and fmt.spacing


def case_id(path: str | Path) -> str:
    """The file name without its suffix (``case01.nii.gz`` -> ``case01``)."""
    name = Path(path).name
    suffix = suffix_of(path)
    return name[: len(name) - len(suffix)] if suffix else name


def read_volume(path: str | Path, mask: bool = False, ignore: Sequence[int] = ()) -> Volume:
    """Read ``path`` (a format of :data:`FORMATS` with ``volume``). Images: pictures scaled to [0, 1] (grey: 1
    channel, colour: 3), NIfTI and ``.npy`` values as stored, NIfTI ``(X, Y, Z[, C])`` -> ``(C, X, Y, Z)``, ``.npy``
    taken as ``(*spatial)`` or ``(C, *spatial)`` (2D when it has 2 axes, else channel-first). Masks
    (``mask=True``): integer labels ``(*spatial)``; a picture holding only 0 and 255 besides the values of
    ``ignore`` (those without a label, ``data.ignore``: kept as stored) has its 255s read as 1; a palette picture
    (PNG, GIF mode ``P``) gives its palette indices."""
    return _read(Path(path), mask, (), volume=True, ignore=ignore)


def read_image(path: str | Path, modalities: Sequence[str] = ("rnflt",)) -> Volume:
    """The one image reader of the package, any format of :data:`FORMATS`: :func:`read_volume`'s for pictures,
    NIfTI and ``.npy``; a Harvard-GDP ``data_XXXX.npz`` as the channels ``modalities``
    (:func:`labelwise.data.harvard.read_harvard_image`)."""
    return _read(Path(path), False, modalities, volume=False)


def _read(path: Path, mask: bool, modalities: Sequence[str], volume: bool, ignore: Sequence[int] = ()) -> Volume:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    reader = format_of(path, volume=volume).read
    raw = reader(path, mask, modalities)
    if mask:
        array = raw.array
        if reader is _read_picture:  # 0/255 pictures (or all 255), besides their ignore values: binary
            values = set(np.unique(array).tolist()) - set(ignore)
            if 255 in values and values <= {0, 255}:
                array = np.where(array == 255, 1, array).astype(np.uint8)
        return Volume(_as_labels(array, path), tuple(raw.spacing), raw.affine)
    array = np.ascontiguousarray(raw.array, dtype=np.float32)
    return Volume(array, tuple(raw.spacing[: array.ndim - 1]), raw.affine)


def read_map(path: str | Path, kind: str = "probability") -> Volume:
    """A per-voxel map ``(*spatial)`` float32: ``kind`` ``probability`` (a soft mask, ``data.soft_labels``: values in
    [0, 1]) or ``weight`` (loss weights, a manifest's ``weight`` column: values >= 0). NIfTI and ``.npy`` as stored;
    8/16-bit pictures holding only 0 and 1 as they are, else probabilities scaled from 0-255 (0-65535) to [0, 1]
    (weights as stored). Probabilities may also be one map per class: ``.npy`` ``(K, *spatial)`` as stored, NIfTI
    ``(X, Y, Z, K)`` read as ``(K, X, Y, Z)`` (:func:`labelwise.data.patches.read_probability` tells them apart)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    reader = format_of(path, volume=True).read
    classes = kind == "probability" and reader is _read_nifti  # (X, Y, Z, K): the classes first, as images' channels
    raw = reader(path, not classes, ())
    array = np.asarray(raw.array)
    if classes and array.shape[0] == 1:  # one map
        array = array[0]
    if reader is _read_picture and kind == "probability" and array.dtype.kind in "ui" and array.max(initial=0) > 1:
        array = array / float(np.iinfo(array.dtype).max)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: the {kind} map holds non-finite values")
    low, high = (float(array.min(initial=0.0)), float(array.max(initial=0.0))) if array.size else (0.0, 0.0)
    if low < 0 or (kind == "probability" and high > 1):
        expected = "probabilities in [0, 1]" if kind == "probability" else "weights >= 0"
        raise DataError(f"{path}: expected {expected}, found values in [{low:g}, {high:g}]")
    return Volume(array, tuple(raw.spacing), raw.affine)


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype.kind == "f" and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise DataError(
            f"{path}: a mask must hold integer labels, found fractional or non-finite values (probability masks: "
            "set data.soft_labels: true)"
        )
    values = np.unique(array)
    if values.size and values.min() < 0:
        raise DataError(f"{path}: a mask must hold labels >= 0, found {values.min()}")
    return np.ascontiguousarray(array.astype(np.int64))


def write_volume(
    path: str | Path, array: np.ndarray, spacing: Sequence[float] | None = None, affine: np.ndarray | None = None
) -> Path:
    """Write ``array`` (``(*spatial)`` or ``(C, *spatial)`` for NIfTI images) to ``path`` (a format of
    :data:`FORMATS` with a writer; parents created; atomically: :func:`labelwise.io.atomic_open`).

    NIfTI: the given ``affine``, else a diagonal one with ``spacing`` (default 1); integer arrays are stored as
    uint8/int16/int32 as they fit, floats as float32. Pictures (2D only): integer masks 0/1 are written 0/255,
    other integers as 8 bit, floats in [0, 1] scaled to 8 bit."""
    path = Path(path)
    writer = format_of(path, write=True).write
    assert writer is not None  # format_of(write=True) gives formats with a writer
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(path, np.asarray(array), spacing, affine)
    return path


# --- the grid a case is trained on: reorientation and resampling, and back ---------------------------------------

CANONICAL = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)  # nibabel's orientation of RAS+ axes


@dataclass
class Grid:
    """Where a volume came from, so that outputs on the training grid go back to it (:func:`from_grid`): its own
    spatial ``shape``, ``spacing`` and ``affine``; ``ornt``: the axis permutation and flips that made it RAS+
    (nibabel's orientation array, None when not reoriented); ``canonical_shape``: its shape after reorientation;
    ``resampled``: whether it was then resampled (to the shape of the arrays trained on)."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    ornt: np.ndarray | None
    canonical_shape: tuple[int, ...]
    resampled: bool

    @property
    def changed(self) -> bool:
        return self.ornt is not None or self.resampled

    def to_json(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "affine": self.affine.tolist() if self.affine is not None else None,
            "ornt": self.ornt.tolist() if self.ornt is not None else None,
            "canonical_shape": list(self.canonical_shape),
            "resampled": self.resampled,
        }

    @classmethod
    def from_json(cls, value: dict) -> Grid:
        return cls(
            tuple(int(n) for n in value["shape"]),
            tuple(float(s) for s in value["spacing"]),
            np.asarray(value["affine"], dtype=np.float64) if value["affine"] is not None else None,
            np.asarray(value["ornt"], dtype=np.float64) if value["ornt"] is not None else None,
            tuple(int(n) for n in value["canonical_shape"]),
            bool(value["resampled"]),
        )


def canonical_ornt(affine: np.ndarray | None, dims: int) -> np.ndarray | None:
    """The orientation (nibabel's ``(3, 2)`` array: target axis and flip per axis) that turns a 3D volume with
    ``affine`` into its closest canonical (RAS+) form, as :func:`nibabel.as_closest_canonical` does; None when it
    is already canonical, has no affine or is not 3D."""
    if affine is None or dims != 3:
        return None
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    return None if np.array_equal(ornt, CANONICAL) else ornt


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    inverse = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inverse[int(target)] = [axis, flip]
    return inverse


def orient(array: np.ndarray, ornt: np.ndarray, inverse: bool = False) -> np.ndarray:
    """``array`` ``(..., X, Y, Z)`` (the last 3 axes spatial) permuted and flipped by ``ornt`` (nibabel's
    ``apply_orientation``), or back (``inverse``); a copy, C-contiguous."""
    from nibabel.orientations import apply_orientation

    ornt = _inverse_ornt(ornt) if inverse else ornt
    lead = array.ndim - 3
    moved = np.moveaxis(array, list(range(lead)), list(range(3, array.ndim))) if lead else array
    moved = apply_orientation(moved, ornt)
    return np.ascontiguousarray(np.moveaxis(moved, list(range(3, array.ndim)), list(range(lead))) if lead else moved)


def same_spacing(spacing: Sequence[float], target: Sequence[float], rtol: float = 1e-3) -> bool:
    """Whether ``spacing`` equals ``target`` within ``rtol`` relative (no resampling then)."""
    return len(spacing) == len(target) and bool(np.allclose(spacing, target, rtol=rtol, atol=0))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The spatial shape of a volume ``shape`` with ``spacing`` resampled to ``target`` spacing (rounded, >= 1)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample(array: np.ndarray, size: Sequence[int], mask: bool = False) -> np.ndarray:
    """``array`` ``(..., *spatial)`` (the last ``len(size)`` axes spatial) resampled to ``size`` with
    :func:`torch.nn.functional.interpolate` (``align_corners=False``: voxel centres, the volume's extent kept):
    linear (bilinear/trilinear) for images and probabilities, nearest (``nearest-exact``) for masks
    (``mask=True``: labels kept, the dtype too)."""
    import torch

    size = tuple(int(n) for n in size)
    dims = len(size)
    shape = array.shape
    if tuple(shape[-dims:]) == size:
        return array
    lead = shape[:-dims]
    flat = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64 if mask else np.float32)).reshape(
        1, -1, *shape[-dims:]
    )
    if mask:
        out = torch.nn.functional.interpolate(flat, size=size, mode="nearest-exact")
    else:
        out = torch.nn.functional.interpolate(
            flat, size=size, mode="bilinear" if dims == 2 else "trilinear", align_corners=False
        )
    result = out.reshape(*lead, *size).numpy()
    return np.ascontiguousarray(result.astype(array.dtype if mask else np.float32))


def _resampled_affine(affine: np.ndarray, old: Sequence[int], new: Sequence[int]) -> np.ndarray:
    """The affine of a resampled grid (voxel centres as :func:`resample` places them)."""
    scale = np.eye(4)
    for axis, (n_old, n_new) in enumerate(zip(old, new)):
        factor = n_old / n_new
        scale[axis, axis], scale[axis, 3] = factor, 0.5 * factor - 0.5
    return np.asarray(affine, dtype=np.float64) @ scale


def to_grid(
    volume: Volume,
    reorient: bool = False,
    spacing: Sequence[float] | None = None,
    masks: Sequence[np.ndarray | None] = (),
) -> tuple[Volume, list[np.ndarray | None]]:
    """``volume`` (an image ``(C, *spatial)``) on the grid training uses, with ``masks`` ``(*spatial)`` on the same:
    reoriented to the closest canonical orientation (``reorient``, 3D with an affine: :func:`canonical_ornt`, axes
    permuted and flipped, no interpolation), then resampled to ``spacing`` (images linearly, masks by nearest
    neighbour: :func:`resample`) unless the spacing already equals it within 1e-3 relative. The returned volume's
    ``grid`` records what was done (:func:`from_grid` undoes it)."""
    array, affine, current = volume.array, volume.affine, tuple(volume.spacing)
    dims = len(current)
    shape = tuple(array.shape[-dims:])
    ornt = canonical_ornt(affine, dims) if reorient else None
    masks = list(masks)
    if ornt is not None:
        from nibabel.orientations import inv_ornt_aff

        array = orient(array, ornt)
        masks = [orient(m, ornt) if m is not None else None for m in masks]
        affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, shape)
        permuted = [0.0] * dims
        for axis, (target, _) in enumerate(ornt):
            permuted[int(target)] = current[axis]
        current = tuple(permuted)
    canonical_shape = tuple(array.shape[-dims:])
    resampled = False
    if spacing is not None:
        if len(spacing) != dims:
            raise DataError(f"data.spacing {list(spacing)} has {len(spacing)} values but the volume is {dims}D")
        if not same_spacing(current, spacing):
            size = resampled_shape(canonical_shape, current, spacing)
            array = resample(array, size)
            masks = [resample(m, size, mask=True) if m is not None else None for m in masks]
            if affine is not None:
                affine = _resampled_affine(affine, canonical_shape, size)
            current, resampled = tuple(float(s) for s in spacing), True
    grid = Grid(shape, tuple(volume.spacing), volume.affine, ornt, canonical_shape, resampled)
    return Volume(array, current, affine, grid), masks


def from_grid(array: np.ndarray, grid: Grid | None, mask: bool = False) -> np.ndarray:
    """``array`` ``(..., *spatial)`` on the grid :func:`to_grid` made back on the volume's own grid: resampled to
    its reoriented shape (linearly; ``mask``: nearest neighbour), then its axes put back in the file's order."""
    if grid is None or not grid.changed:
        return array
    if grid.resampled:
        array = resample(array, grid.canonical_shape, mask=mask)
    if grid.ornt is not None:
        array = orient(array, grid.ornt, inverse=True)
    return array


def read_spacing(path: str | Path, reorient: bool = False, modalities: Sequence[str] = ("rnflt",)) -> tuple[float, ...]:
    """The spacing of the image at ``path`` as :func:`to_grid` sees it before resampling (reoriented: permuted
    like its axes), from the header alone where its format reads one (:attr:`Format.header`: NIfTI)."""
    fmt = _BY_SUFFIX.get(suffix_of(path))
    if fmt is not None and fmt.header is not None:
        spacing, affine = fmt.header(Path(path))
    else:
        volume = read_image(path, modalities)
        spacing, affine = volume.spacing, volume.affine
    ornt = canonical_ornt(affine, len(spacing)) if reorient else None
    if ornt is not None:
        permuted = [0.0] * len(spacing)
        for axis, (target, _) in enumerate(ornt):
            permuted[int(target)] = spacing[axis]
        spacing = tuple(permuted)
    return spacing
