"""Saliency maps on disk: overlays (PNG), raw maps (.npy / NIfTI), 3D montages and MIPs, and the index
``explanations.json`` that the run report's gallery reads (see docs/run-directory.md).

Pure numpy, PIL, matplotlib colormaps and nibabel; every file is written atomically."""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from labelwise.errors import DataError
from labelwise.io import atomic_write

__all__ = [
    "ENTRY_KEYS",
    "INDEX_NAME",
    "mip",
    "overlay_rgb",
    "png_bytes",
    "read_index",
    "slice_indices",
    "upscale",
    "write_explanation",
    "write_index",
]

INDEX_NAME = "explanations.json"
# Keys every index entry has (write_index checks them); "files" is what write_explanation returned.
ENTRY_KEYS = ("input", "method", "target", "class_name", "score", "files")
MIN_SIDE = 256  # 2D overlays and MIPs are upscaled (nearest neighbour) to at least this many pixels on the short side
MAX_SIDE = 4096  # ... unless that would make the long side longer than this
TILE_SIDE = 128  # the short side of one montage tile
MAX_SLICES = 9  # montage slices


def _array(x: Any) -> np.ndarray:
    """``x`` (numpy array, CPU/GPU tensor, nested list) as a float64 numpy array."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _scale(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """``image`` mapped to [0, 1] by ``value_range`` (default: its own min and max); constant images become 0."""
    image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = value_range if value_range is not None else (float(image.min()), float(image.max()))
    if not high > low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def overlay_rgb(
    image: Any, cam: Any, alpha: float = 0.5, cmap: str = "jet", *, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """The colormapped ``cam`` blended over ``image``: uint8 ``(H, W, 3)``.

    image ``(C, H, W)``, C 1 (grey) or 3, any range (min-max scaled for display, or by ``value_range``);
    cam ``(H, W)`` in [0, 1] (clipped). Each pixel is ``(1 - alpha) * image + alpha * cmap(cam)``."""
    image, cam = _array(image), _array(cam)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"overlay: image must be (C, H, W) with C 1 or 3, got shape {image.shape}")
    if cam.shape != image.shape[1:]:
        raise DataError(
            f"overlay: map shape {cam.shape} does not match the image's spatial shape {image.shape[1:]} "
            f"(image {image.shape})"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    grey = _scale(image, value_range)
    rgb = np.repeat(grey, 3, axis=0) if grey.shape[0] == 1 else grey
    from matplotlib import colormaps  # here, not at import: a cold `labelwise predict` needs no matplotlib

    heat = colormaps[cmap](np.clip(np.nan_to_num(cam, nan=0.0), 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * rgb.transpose(1, 2, 0) + alpha * heat
    return np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8)


def mip(image: Any, cam: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-intensity projections along the first spatial axis: image ``(C, D, H, W)`` -> ``(C, H, W)``,
    cam ``(D, H, W)`` -> ``(H, W)``."""
    image, cam = _array(image), _array(cam)
    return np.nan_to_num(image).max(axis=1), np.nan_to_num(cam).max(axis=0)


def upscale(rgb: np.ndarray, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` repeated by an integer factor (nearest neighbour) so its short side is at least
    ``min_side``, without the long side passing ``max_side`` (factor at least 1)."""
    h, w = rgb.shape[:2]
    factor = max(1, math.ceil(min_side / min(h, w)))
    factor = max(1, min(factor, max_side // max(h, w)))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def png_bytes(rgb: np.ndarray, title: str | None = None) -> bytes:
    """uint8 ``(H, W, 3)`` as PNG bytes, with ``title`` as the PNG's Title text."""
    info = PngInfo()
    info.add_text("Software", "labelwise")
    if title:
        info.add_text("Title", title)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font) -> None:
    """Small white ``text`` on a black box with its top-left corner at ``xy``."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255), font=font)


def slice_indices(depth: int, n: int = MAX_SLICES) -> list[int]:
    """Up to ``n`` evenly spaced indices into ``depth`` slices: the middles of ``n`` equal blocks."""
    n = min(n, depth)
    return [int((i + 0.5) * depth / n) for i in range(n)]


def _montage(image: np.ndarray, cam: np.ndarray, alpha: float, cmap: str, title: str | None) -> np.ndarray:
    """A grid of overlays of evenly spaced slices along the first axis of image ``(C, D, H, W)`` and cam
    ``(D, H, W)``, each with its slice index in the top-left corner; uint8 ``(H', W', 3)``."""
    indices = slice_indices(cam.shape[0])
    value_range = (float(np.nan_to_num(image).min()), float(np.nan_to_num(image).max()))  # one scale for all slices
    tiles = [
        upscale(overlay_rgb(image[:, i], cam[i], alpha, cmap, value_range=value_range), TILE_SIDE, 512) for i in indices
    ]
    th, tw = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    gap, band = 2, 18 if title else 0
    canvas = Image.new("RGB", (cols * tw + (cols - 1) * gap, band + rows * th + (rows - 1) * gap), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (index, tile) in enumerate(zip(indices, tiles, strict=True)):
        x, y = (k % cols) * (tw + gap), band + (k // cols) * (th + gap)
        canvas.paste(Image.fromarray(tile, mode="RGB"), (x, y))
        _label(draw, (x + 3, y + 2), str(index), font)
    if title:
        draw.text((4, 3), title, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _check_stem(stem: str) -> None:
    if not stem or stem in (".", "..") or "/" in stem or "\\" in stem:
        raise ValueError(f"explanation file stem must be a plain file name, got {stem!r}")


def _nifti_bytes(cam: np.ndarray, affine: Any, path: Path, title: str | None) -> bytes:
    """``cam`` as gzipped float32 NIfTI-1 bytes with ``affine`` (identity when None)."""
    import nibabel as nib

    matrix = np.eye(4) if affine is None else _array(affine)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise DataError(f"{path}: the NIfTI affine must be a finite 4x4 matrix, got shape {matrix.shape}")
    image = nib.Nifti1Image(cam.astype(np.float32), matrix)
    if title:
        image.header["descrip"] = title.encode("utf-8", errors="replace")[:79]
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def write_explanation(
    out_dir: str | Path,
    stem: str,
    image: Any,
    cam: Any,
    affine: Any = None,
    title: str | None = None,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> dict[str, str]:
    """Write one saliency map; return the files written, relative to ``out_dir`` ({"overlay", "map"[, "montage"]}).

    image ``(C, *S)``, cam ``(*S)`` in [0, 1], S = (H, W) or (D, H, W); images with other than 1 or 3 channels
    are shown by their first channel. 2D: ``<stem>.png`` (overlay, upscaled to >= 256 px) and ``<stem>.npy``
    (the raw cam, float32). 3D: ``<stem>.nii.gz`` (the cam with ``affine``, else identity), ``<stem>_montage.png``
    (slices along D) and ``<stem>_mip.png`` (the image's MIP along D with the cam's MIP over it: "overlay")."""
    _check_stem(stem)
    out_dir = Path(out_dir)
    image, cam = _array(image), _array(cam)
    spatial = image.shape[1:]
    if image.ndim not in (3, 4) or 0 in image.shape:
        raise DataError(f"{out_dir / stem}: image must be (C, H, W) or (C, D, H, W), got shape {image.shape}")
    if cam.shape != spatial:
        raise DataError(
            f"{out_dir / stem}: map shape {cam.shape} does not match the image's spatial shape {spatial} "
            f"(image {image.shape})"
        )
    shown = image if image.shape[0] in (1, 3) else image[:1]
    out_dir.mkdir(parents=True, exist_ok=True)

    if cam.ndim == 2:
        files = {"overlay": f"{stem}.png", "map": f"{stem}.npy"}
        atomic_write(out_dir / files["overlay"], png_bytes(upscale(overlay_rgb(shown, cam, alpha, cmap)), title))
        buffer = io.BytesIO()
        np.save(buffer, cam.astype(np.float32), allow_pickle=False)
        atomic_write(out_dir / files["map"], buffer.getvalue())
        return files

    files = {"overlay": f"{stem}_mip.png", "map": f"{stem}.nii.gz", "montage": f"{stem}_montage.png"}
    atomic_write(out_dir / files["map"], _nifti_bytes(cam, affine, out_dir / files["map"], title))
    atomic_write(out_dir / files["montage"], png_bytes(_montage(shown, cam, alpha, cmap, title), title))
    image_mip, cam_mip = mip(shown, cam)
    atomic_write(out_dir / files["overlay"], png_bytes(upscale(overlay_rgb(image_mip, cam_mip, alpha, cmap)), title))
    return files


def _jsonable(value: Any) -> Any:
    """``value`` with numpy/torch scalars and arrays as plain numbers and lists, paths as strings, and non-finite
    floats as None (so the index is strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_index(out_dir: str | Path, entries: list[dict], metrics: list[dict] | None = None) -> Path:
    """Write ``out_dir/explanations.json`` = {"entries": entries, "metrics": metrics or []} atomically.

    Each entry has at least :data:`ENTRY_KEYS`; a metrics row is one method's scores (None where undefined)."""
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TypeError(f"explanation entry {number} must be a dict, got {type(entry).__name__}")
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            raise ValueError(f"explanation entry {number} lacks {', '.join(missing)}")
    rows = list(metrics or [])
    if not all(isinstance(row, dict) for row in rows):
        raise TypeError("explanation metrics must be a list of dicts (one row per method)")
    document = _jsonable({"entries": list(entries), "metrics": rows})
    return atomic_write(Path(out_dir) / INDEX_NAME, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_index(out_dir: str | Path) -> dict | None:
    """``out_dir/explanations.json`` as {"entries": [...], "metrics": [...]}; None when it is missing."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise DataError(f"{path}: expected a JSON object with 'entries' and 'metrics', got {type(document).__name__}")
    entries, metrics = document.get("entries", []), document.get("metrics") or []
    if not isinstance(entries, list) or not isinstance(metrics, list):
        raise DataError(f"{path}: 'entries' and 'metrics' must be lists")
    return {**document, "entries": entries, "metrics": metrics}
