"""DRIVE resampled by a factor: a stand-in for a higher-resolution fundus camera (issue 27).

Writes a copy of DRIVE's layout (``training/{images,1st_manual,mask}``, ``test/{images,1st_manual,2nd_manual,
mask}``) with every picture resampled by ``factor`` and every file keeping its name (``21_training.tif``,
``21_manual1.gif``, ``21_training_mask.gif``), so that ``labelwise data manifest`` pairs the copy as it pairs DRIVE
and ``benchmarks/drive.py``'s helpers read it unchanged. Photographs: bicubic interpolation per channel (PIL),
written as LZW TIFF (lossless). Vessel masks and fields of view: the 0/1 mask interpolated linearly, then > 0.5
(nearest neighbour would make staircases), joined with the source skeleton's links drawn on the new grid so that
vessels stay as connected as they were (linear interpolation alone cuts a one-pixel vessel at each diagonal step),
written as 0/255 GIF. The new size is ``round(factor * size)`` per axis.

DRIVE (``../shared/data/drive``) is development and benchmark data only: the copy goes under ``runs/`` (ignored by
git), never into the repository. Idempotent: a finished copy (its ``scaled.json`` names the same source and
factor) is left as it is; an interrupted one is completed::

    python benchmarks/drive_scaled.py [--factor 1.75] [--drive ../shared/data/drive] [--out runs/drive-x1.75]
    python benchmarks/drive_scaled.py --factor 1.75 --noise     # also: each degrade kind's Dice at both sizes

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


def skeleton_links(binary: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The skeleton of ``binary`` (2D bool) drawn on a grid of ``shape`` over the same picture: each pair of
    8-neighbour skeleton pixels joined by a digital line between their centres' places on the new grid (bool)."""
    from skimage.draw import line
    from skimage.morphology import skeletonize

    skeleton = skeletonize(binary)
    out = np.zeros(shape, bool)
    scale = np.asarray(shape, np.float64) / np.asarray(binary.shape)
    ys, xs = np.nonzero(skeleton)

    def place(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # centres map onto centres
        row = np.clip(np.rint((y + 0.5) * scale[0] - 0.5), 0, shape[0] - 1).astype(int)
        return row, np.clip(np.rint((x + 0.5) * scale[1] - 0.5), 0, shape[1] - 1).astype(int)

    rows, cols = place(ys, xs)
    out[rows, cols] = True
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny < binary.shape[0]) & (nx >= 0) & (nx < binary.shape[1])
        linked = np.zeros(ys.shape, bool)
        linked[inside] = skeleton[ny[inside], nx[inside]]
        ends = place(ny[linked], nx[linked])
        for r0, c0, r1, c1 in zip(rows[linked], cols[linked], *ends):
            rr, cc = line(r0, c0, r1, c1)
            out[rr, cc] = True
    return out


def resample_mask(path: Path, factor: float):
    """The binary mask at ``path`` (foreground: a label > 0 as labelwise reads it; a palette GIF's indices, as in
    DRIVE's second observer) resampled by ``factor``: the 0/1 mask interpolated linearly, then > 0.5, joined with its
    skeleton's links drawn on the new grid (:func:`skeleton_links`; linear interpolation alone cuts a one-pixel
    vessel wherever it steps diagonally, and turns DRIVE's 1-20 vessel trees into about 100 pieces); a 0/255 PIL
    image of mode L."""
    from PIL import Image

    from labelwise.data.volumes import read_volume

    binary = read_volume(path, mask=True).array > 0
    size = scaled_size((binary.shape[1], binary.shape[0]), factor)
    smooth = Image.fromarray(binary.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    mask = (np.asarray(smooth) > 0.5) | skeleton_links(binary, (size[1], size[0]))
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


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
    record = {"source": str(drive.resolve()), "factor": float(factor), "photographs": "bicubic",
              "masks": "linear interpolation of the 0/1 mask, > 0.5, joined with the skeleton's links"}
    done = out / "scaled.json"
    redo = False  # a copy made by an older version of this script is written again
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("source") != record["source"] or old.get("factor") != record["factor"]:
            raise FileExistsError(f"{out} holds DRIVE scaled by {old.get('factor')} from {old.get('source')}; "
                                  f"give another --out for factor {factor}")
        if old == record:
            return out
        done.unlink()
        redo = True
    for split, folders in FOLDERS.items():
        for folder in folders:
            source = drive / split / folder
            if not source.is_dir():
                raise FileNotFoundError(f"{source}: missing from DRIVE's layout")
            target = out / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
                if (target / path.name).is_file() and not redo:
                    continue  # written by an interrupted run
                resampled = resample_photograph(path, factor) if folder == PHOTOGRAPHS else resample_mask(path, factor)
                _save(resampled, target / path.name)
    done.write_text(json.dumps(record, indent=1) + "\n")
    return out


def noise_dice(root: Path, kind: str, strength: float | None = None, roi: bool = True, seed: int = 0) -> dict:
    """Mean over DRIVE's 20 training images under ``root`` of the Dice (whole picture; the clean masks are empty
    outside the field of view), sensitivity and precision of ``kind``'s degraded mask to the clean one, drawn as
    ``labelwise data degrade`` draws (a generator keyed by ``seed`` and the case id); ``roi``: give semi-automatic
    the field of view (else it estimates it)."""
    import zlib

    from labelwise.data.degrade import degrade_mask
    from labelwise.data.volumes import read_image, read_volume

    rows = []
    for i in range(21, 41):
        clean = read_volume(root / "training" / "1st_manual" / f"{i}_manual1.gif", mask=True).array > 0
        image = read_image(root / "training" / "images" / f"{i}_training.tif").array
        field = read_volume(root / "training" / "mask" / f"{i}_training_mask.gif", mask=True).array if roi else None
        rng = np.random.default_rng([seed, zlib.crc32(str(i).encode())])
        noisy = degrade_mask(kind, clean.astype(np.int64), strength, rng, image=image, roi=field) > 0
        hit = float((noisy & clean).sum())
        rows.append((2 * hit / (noisy.sum() + clean.sum()), hit / clean.sum(), hit / max(noisy.sum(), 1)))
    dice, sensitivity, precision = np.mean(rows, axis=0)
    return {"dice": float(dice), "sensitivity": float(sensitivity), "precision": float(precision)}


def noise_table(drive: Path, scaled: Path, factor: float) -> None:
    """Print each degrade kind's :func:`noise_dice` on DRIVE and on the copy scaled by ``factor``: defaults, and for
    the kinds in pixels (and mixed, whose strength scales them) the strength scaled by ``factor`` as well."""
    from labelwise.data.degrade import DEFAULT_STRENGTH

    settings = [("semi-automatic", "roi", None, True), ("semi-automatic", "no roi", None, False)]
    for kind in ("thin", "erode", "dilate", "drop", "mixed"):
        settings.append((kind, "default", None, True))
        if kind in ("thin", "erode", "dilate", "mixed"):
            settings.append((kind, f"strength x{factor:g}", DEFAULT_STRENGTH[kind] * factor, True))
    print(f"| kind | setting | DRIVE Dice (sens / prec) | DRIVE x{factor:g} Dice (sens / prec) |")
    print("|---|---|---|---|")
    for kind, name, strength, roi in settings:
        cells = []
        for root, value in ((drive, DEFAULT_STRENGTH[kind] if strength is None else strength / factor),
                            (scaled, strength)):
            score = noise_dice(root, kind, value, roi=roi)
            cells.append(f"{score['dice']:.3f} ({score['sensitivity']:.3f} / {score['precision']:.3f})")
        print(f"| {kind} | {name} | {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--factor", type=float, default=1.75)
    parser.add_argument("--out", type=Path, default=None, help="default: runs/drive-x<factor>")
    parser.add_argument("--noise", action="store_true",
                        help="print each degrade kind's Dice to the clean training masks at both sizes")
    args = parser.parse_args()
    out = args.out or REPO / "runs" / f"drive-x{args.factor:g}"
    try:
        root = scaled_drive(args.drive, args.factor, out)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(str(err)) from None
    print(f"DRIVE x{args.factor:g} in {root}")
    if args.noise:
        noise_table(args.drive, root, args.factor)


if __name__ == "__main__":
    main()
