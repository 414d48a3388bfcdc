"""DRIVE resampled by a factor: a stand-in for a higher-resolution fundus camera (issue 27).

Writes a copy of DRIVE's layout (``training/{images,1st_manual,mask}``, ``test/{images,1st_manual,2nd_manual,
mask}``) with every picture resampled by ``factor`` and every file keeping its name (``21_training.tif``,
``21_manual1.gif``, ``21_training_mask.gif``), so that ``labelwise data manifest`` pairs the copy as it pairs DRIVE
and ``benchmarks/drive.py``'s helpers read it unchanged. Photographs: bicubic interpolation per channel (PIL),
written as LZW TIFF (lossless). Vessel masks and fields of view: the 0/1 mask interpolated linearly, then > 0.5
(nearest neighbour would make staircases), written as 0/255 GIF. The new size is ``round(factor * size)`` per axis.

DRIVE (``../shared/data/drive``) is development and benchmark data only: the copy goes under ``runs/`` (ignored by
git), never into the repository. Idempotent: a finished copy (its ``scaled.json`` names the same source and
factor) is left as it is; an interrupted one is completed::

    python benchmarks/drive_scaled.py [--factor 1.75] [--drive ../shared/data/drive] [--out runs/drive-x1.75]

    from drive_scaled import scaled_drive          # benchmarks/ on sys.path
    root = scaled_drive(Path("../shared/data/drive"), 1.75, Path("runs/drive-x1.75"))
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"training": ("images", "1st_manual", "mask"), "test": ("images", "1st_manual", "2nd_manual", "mask")}
PHOTOGRAPHS = "images"


def scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """PIL's ``(width, height)`` of a picture of ``size`` resampled by ``factor`` (each axis rounded, at least 1)."""
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def resample_photograph(path: Path, factor: float):
    """The photograph at ``path`` resampled by ``factor``: bicubic, each channel (a PIL image, RGB or L)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        size = scaled_size(image.size, factor)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        return image.resize(size, Image.Resampling.BICUBIC)


def resample_mask(path: Path, factor: float):
    """The binary mask at ``path`` (foreground: a label > 0 as labelwise reads it; a palette GIF's indices, as in
    DRIVE's second observer) resampled by ``factor``: the 0/1 mask interpolated linearly, then > 0.5; a 0/255 PIL
    image of mode L."""
    from PIL import Image

    from labelwise.data.volumes import read_volume

    binary = read_volume(path, mask=True).array > 0
    size = scaled_size((binary.shape[1], binary.shape[0]), factor)
    smooth = Image.fromarray(binary.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    return Image.fromarray(np.where(np.asarray(smooth) > 0.5, 255, 0).astype(np.uint8), mode="L")


def _save(image, target: Path) -> None:
    """Write ``image`` to ``target`` through a temporary name, so an interrupted copy never leaves a half file."""
    partial = target.with_name(f".{target.name}.partial")
    suffix = target.suffix.lower()
    if suffix in (".tif", ".tiff"):
        image.save(partial, format="TIFF", compression="tiff_lzw")
    elif suffix == ".gif":
        image.save(partial, format="GIF")
    else:
        image.save(partial, format="PNG")
    os.replace(partial, target)


def scaled_drive(drive: Path, factor: float, out: Path) -> Path:
    """Write DRIVE (at ``drive``) resampled by ``factor`` to ``out`` in DRIVE's layout and names; returns ``out``.
    Skips the work when ``out/scaled.json`` records the same source and factor; files already written are kept
    when an interrupted copy is resumed."""
    drive, out = Path(drive), Path(out)
    if not factor > 0 or not np.isfinite(factor):
        raise ValueError(f"scaled_drive: factor must be a positive number, got {factor}")
    if not (drive / "training" / "images").is_dir():
        raise FileNotFoundError(f"{drive}: DRIVE not found (see ../shared/data/drive/SOURCES.md)")
    record = {"source": str(drive.resolve()), "factor": float(factor),
              "photographs": "bicubic", "masks": "linear interpolation of the 0/1 mask, > 0.5"}
    done = out / "scaled.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("source") == record["source"] and old.get("factor") == record["factor"]:
            return out
        raise FileExistsError(f"{out} holds DRIVE scaled by {old.get('factor')} from {old.get('source')}; "
                              f"give another --out for factor {factor}")
    for split, folders in FOLDERS.items():
        for folder in folders:
            source = drive / split / folder
            if not source.is_dir():
                raise FileNotFoundError(f"{source}: missing from DRIVE's layout")
            target = out / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
                if (target / path.name).is_file():
                    continue  # written by an interrupted run
                resampled = resample_photograph(path, factor) if folder == PHOTOGRAPHS else resample_mask(path, factor)
                _save(resampled, target / path.name)
    done.write_text(json.dumps(record, indent=1) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--factor", type=float, default=1.75)
    parser.add_argument("--out", type=Path, default=None, help="default: runs/drive-x<factor>")
    args = parser.parse_args()
    out = args.out or REPO / "runs" / f"drive-x{args.factor:g}"
    try:
        root = scaled_drive(args.drive, args.factor, out)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(str(err)) from None
    print(f"DRIVE x{args.factor:g} in {root}")


if __name__ == "__main__":
    main()
